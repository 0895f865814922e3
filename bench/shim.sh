#!/usr/bin/env bash
# Times the nvidia-smi shim, whole process, over the project's stand-in:
#   bare    the stand-in alone (what every case pays)
#   genv    our shim (the genv binary as nvidia-smi) over the stand-in
#   python  genv 1.4.3's Python shim over the same stand-in
# for the default table and for a --query-gpu query, in an environment
# attached to GPUs 0,1 with one compute process of its own.
#
# Needs hyperfine, and genv 1.4.3 for the Python shim:
#   python3 -m venv /tmp/ref-shim && /tmp/ref-shim/bin/pip install genv==1.4.3 psutil
# Usage: bench/shim.sh [RUNS]   (REF_SHIM=path/to/shims/nvidia-smi to override)
set -euo pipefail

runs=${1:-500}
root=$(cd "$(dirname "$0")/.." && pwd)
ref_shim=${REF_SHIM:-$(find /tmp/ref-shim -path '*site-packages/genv/shims/nvidia-smi' 2>/dev/null | head -n1)}

cargo build --quiet --release --bins --manifest-path "$root/Cargo.toml"

work=$(mktemp -d)
sleeper_pid=
cleanup() {
	if [[ -n $sleeper_pid ]]; then kill "$sleeper_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/shims" "$work/real" "$work/py"
ln -s "$root/target/release/genv" "$work/shims/nvidia-smi"
ln -s "$root/target/release/nvidia-smi-sim" "$work/real/nvidia-smi"

# One compute process of the environment, under a name of its own so that
# the stand-in lists only it.
ln -s "$(command -v sleep)" "$work/benchjob"
GENV_ENVIRONMENT_ID=bench CUDA_VISIBLE_DEVICES=0 "$work/benchjob" 100000 &
sleeper_pid=$!

export GENV_ENVIRONMENT_ID=bench CUDA_VISIBLE_DEVICES=0,1
export GENV_MOCK_COMPUTE_APPS_PROCESS_NAME=benchjob GENV_TMPDIR="$work/state"
unset GENV_BYPASS

cases=(bare genv)
if [[ -n $ref_shim ]]; then
	cp "$ref_shim" "$work/py/nvidia-smi"
	chmod +x "$work/py/nvidia-smi"
	cases+=(python)
else
	echo "genv 1.4.3 not found; skipping its shim (see the header of this script)" >&2
fi

program() {
	case $1 in
	bare) echo "$work/real/nvidia-smi" ;;
	genv) echo "$work/shims/nvidia-smi" ;;
	python) echo "$work/py/nvidia-smi" ;;
	esac
}

path_for() {
	case $1 in
	bare) echo "$work/real:/usr/bin:/bin" ;;
	genv) echo "$work/shims:$work/real:/usr/bin:/bin" ;;
	python) echo "$work/py:$work/real:/usr/bin:/bin" ;;
	esac
}

median_ms() {
	python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.2f" % (r["median"]*1000))' "$1"
}

echo "| view | bare stand-in (ms) | genv shim (ms) | genv 1.4.3 shim (ms) | genv adds (ms) |"
echo "|---|---|---|---|---|"
for view in table query; do
	args=()
	if [[ $view == query ]]; then
		# shellcheck disable=SC2054 # commas belong to nvidia-smi's arguments
		args=(--query-gpu=index,memory.used,memory.total --format=csv,noheader,nounits)
	fi
	declare -A median=()
	for case in "${cases[@]}"; do
		out="$work/$case-$view.json"
		PATH=$(path_for "$case") hyperfine -N --style none --warmup 20 --runs "$runs" \
			--export-json "$out" "$(program "$case") ${args[*]}" >/dev/null
		median[$case]=$(median_ms "$out")
	done
	python_ms=${median[python]:-n/a}
	added=$(python3 -c "print('%.2f' % (${median[genv]} - ${median[bare]}))")
	echo "| $view | ${median[bare]} | ${median[genv]} | $python_ms | $added |"
	unset median
done
