#!/usr/bin/env bash
# Times the nvidia-smi shim, whole process, over the project's stand-in:
#   bare    the stand-in alone (what every case pays)
#   genv    our shim (the statically linked genv, as installed, run as
#           nvidia-smi) over the stand-in; and the dynamically linked build
#   python  genv 1.4.3's Python shim over the same stand-in
# for the default table and for a --query-gpu query, in an environment
# attached to GPUs 0,1 with one compute process of its own. Ours are run
# interleaved (bench/interleave.rs: one run of each in turn), so that the
# difference to the bare stand-in is not the machine's load changing.
#
# genv 1.4.3's shim reads its child's output only while the child runs
# (`while process.poll() is None`), so over a fast stand-in it prints a
# part of the table or nothing; it is timed with hyperfine as it is (the
# lines it printed are counted) and with GENV_BYPASS=1, where it only
# runs nvidia-smi with its own output: its cheapest complete path.
#
# Needs hyperfine, and genv 1.4.3 for the Python shim (scripts/test installs it in target/genv-ref, or):
#   python3 -m venv /tmp/ref-shim && /tmp/ref-shim/bin/pip install genv==1.4.3 psutil
# Usage: bench/shim.sh [RUNS]   (REF_SHIM=path/to/shims/nvidia-smi to override)
set -euo pipefail

runs=${1:-500}
root=$(cd "$(dirname "$0")/.." && pwd)
ref_shim=${REF_SHIM:-$(find -H "$root/target/genv-ref" /tmp/ref-shim -path "*site-packages/genv/shims/nvidia-smi" 2>/dev/null | head -n1 || true)}

cargo build --quiet --release --bins --example interleave --manifest-path "$root/Cargo.toml"
"$root/scripts/build-static" --release >/dev/null

work=$(mktemp -d)
sleeper_pid=
cleanup() {
	if [[ -n $sleeper_pid ]]; then kill "$sleeper_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/shims" "$work/dynamic" "$work/real" "$work/py"
ln -s "$root/target/release/genv-static" "$work/shims/nvidia-smi"
ln -s "$root/target/release/genv" "$work/dynamic/nvidia-smi"
ln -s "$root/target/release/nvidia-smi-sim" "$work/real/nvidia-smi"

# One compute process of the environment, under a name of its own so that
# the stand-in lists only it.
ln -s "$(command -v sleep)" "$work/benchjob"
GENV_ENVIRONMENT_ID=bench CUDA_VISIBLE_DEVICES=0 "$work/benchjob" 100000 &
sleeper_pid=$!

export GENV_ENVIRONMENT_ID=bench CUDA_VISIBLE_DEVICES=0,1
export GENV_MOCK_COMPUTE_APPS_PROCESS_NAME=benchjob GENV_TMPDIR="$work/state"
unset GENV_BYPASS

export PATH="$work/real:/usr/bin:/bin"
for view in table query; do
	args=()
	# shellcheck disable=SC2054 # commas belong to nvidia-smi's arguments
	[[ $view == query ]] && args=(--query-gpu=index,memory.used,memory.total --format=csv,noheader,nounits)
	echo "### $view: ms, median (quartiles), x the bare stand-in; $runs runs each, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	for program in "$work/real/nvidia-smi" "$work/shims/nvidia-smi" "$work/dynamic/nvidia-smi"; do
		echo "$program: $("$program" "${args[@]}" | wc -l) lines"
	done
	"$root/target/release/examples/interleave" "$runs" "$work/real/nvidia-smi ${args[*]}" \
		"$work/shims/nvidia-smi ${args[*]}" "$work/dynamic/nvidia-smi ${args[*]}"
	if [[ -n $ref_shim ]]; then
		cp "$ref_shim" "$work/py/nvidia-smi"
		chmod +x "$work/py/nvidia-smi"
		echo
		echo "genv 1.4.3's shim printed $("$work/py/nvidia-smi" "${args[@]}" | wc -l) lines this time"
		for bypass in 0 1; do
			echo "genv 1.4.3's shim, GENV_BYPASS=$bypass (hyperfine -N, 20 runs):"
			GENV_BYPASS=$bypass hyperfine -N --warmup 2 --runs 20 "$work/py/nvidia-smi ${args[*]}" 2>/dev/null | grep -E "Time|Range"
		done
	fi
	echo
done
