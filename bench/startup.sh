#!/usr/bin/env bash
# What a genv command costs as a process, on an empty state, beside the
# floor (/bin/true) and genv 1.4.3:
#
#   bench/startup.sh [RUNS]         # default 300 runs a command a round
#
# Times `genv envs` and `genv devices` (take the lock, read the state,
# print the table) and `genv version` (no state) for the dynamically linked
# build (cargo build --release) and the statically linked one
# (scripts/build-static --release), one run of each in turn
# (bench/interleave.rs), so that the changing load of a shared machine
# falls on all alike; then genv 1.4.3's `genv envs` with hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-300}
REF=${REF-target/genv-ref/bin/genv}
[[ -x $REF ]] || REF=""
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; } >&2
cargo build --release --quiet --bin genv --example interleave
scripts/build-static --release >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GENV_TMPDIR=$work/state GENV_MOCK_DEVICE_COUNT=2
dynamic=$PWD/target/release/genv
static=$PWD/target/release/genv-static
"$dynamic" envs >/dev/null

cmds=(/bin/true "$dynamic envs" "$static envs" "$dynamic devices" "$static devices" "$dynamic version" "$static version")

echo "Load average $(cut -d' ' -f1-3 /proc/loadavg); $runs runs of each, interleaved (bench/interleave.rs); ms, median (quartiles), x /bin/true"
echo
target/release/examples/interleave "$runs" "${cmds[@]}"
if [[ -n $REF ]]; then
    echo
    echo "genv 1.4.3 (hyperfine -N, 10 runs):"
    hyperfine -N --warmup 1 --runs 10 "$REF envs" 2>/dev/null | grep -E "Time|Range"
fi
