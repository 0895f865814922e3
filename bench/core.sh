#!/usr/bin/env bash
# Times genv's query and state commands, side by side with genv 1.4.3 when
# it can be installed (in a virtual environment under $REF_VENV).
#
#   bench/core.sh            # prints a Markdown table on stdout
#
# Both implementations run on the same simulated machine: two 16 GiB GPUs,
# a state folder of their own, and a minimal nvidia-smi stand-in for the
# reference (genv reads GENV_MOCK_* itself).
set -euo pipefail
cd "$(dirname "$0")/.."

REF_VENV=${REF_VENV:-/tmp/genv-ref-venv}
RUNS=${RUNS:-200}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; } >&2
# genv as installed (README): statically linked, scripts/build-static;
# GENV_BUILD=dynamic times the dynamically linked `cargo build --release`.
cargo build --release --quiet
ours=$PWD/target/release/genv
if [[ ${GENV_BUILD:-static} == static ]]; then
    scripts/build-static --release >/dev/null
    ours=$PWD/target/release/genv-static
fi

ref=""
if [[ ! -x $REF_VENV/bin/genv ]]; then
    { python3 -m venv "$REF_VENV" && "$REF_VENV/bin/pip" install -q genv==1.4.3 psutil; } >&2 || true
fi
[[ -x $REF_VENV/bin/genv ]] && ref=$REF_VENV/bin/genv

# genv's own nvidia-smi stand-in answers the reference's query for the
# GPUs' memory when it creates devices.json.
mkdir -p "$work/bin"
cargo build --release --quiet --bin nvidia-smi-sim
ln -s "$PWD/target/release/nvidia-smi-sim" "$work/bin/nvidia-smi"
export PATH="$work/bin:$PATH" GENV_MOCK_DEVICE_COUNT=2 GENV_MOCK_DEVICE_TOTAL_MEMORY=16gi

sleep 100000 &
holder=$!

# Gives each implementation a state with one active, attached environment.
prepare() { # genv tmpdir
    mkdir -p "$2"
    GENV_TMPDIR=$2 "$1" envs activate --eid bench --uid "$(id -u)" --username "$(id -un)" --pid "$holder" >/dev/null
    GENV_TMPDIR=$2 "$1" devices attach --eid bench --count 1 >/dev/null
}

median_ms() { # hyperfine json -> "median (min–max)" in ms
    python3 -c 'import json,sys,statistics; t=json.load(open(sys.argv[1]))["results"][0]["times"]; print("%.2f (%.2f–%.2f)" % (statistics.median(t)*1e3, min(t)*1e3, max(t)*1e3))' "$1"
}

time_cmd() { # label genv tmpdir args...
    local genv=$2 dir=$3
    shift 3
    GENV_TMPDIR=$dir hyperfine -N --runs "$RUNS" --warmup 5 --export-json "$work/h.json" \
        "$genv $*" >/dev/null 2>&1
    median_ms "$work/h.json"
}

prepare "$ours" "$work/ours"
[[ -n $ref ]] && prepare "$ref" "$work/ref"

echo "| command | genv median ms (min–max) | genv 1.4.3 median ms (min–max) | speed-up (medians) |"
echo "|---|---:|---:|---:|"
for args in "envs" "devices" "envs ps --format csv --no-header --timestamp" \
    "devices ps --format csv --no-header --timestamp" \
    "devices attach --eid bench --count 1" "devices detach --eid bench --index 1 --quiet" \
    "usage snapshot --type envs"; do
    a=$(time_cmd ours "$ours" "$work/ours" "$args")
    if [[ -n $ref ]]; then
        b=$(RUNS=$((RUNS / 10 > 10 ? RUNS / 10 : 10)) time_cmd ref "$ref" "$work/ref" "$args")
        x=$(python3 -c 'import sys; print("%.0fx" % (float(sys.argv[1].split()[0]) / float(sys.argv[2].split()[0])))' "$b" "$a")
    else
        b="n/a" x="n/a"
    fi
    echo "| \`genv $args\` | $a | $b | $x |"
done

# 10,000 environments in the state.
big=$work/big
mkdir -p "$big"
python3 - "$big/envs.json" "$holder" <<'PY'
import json, sys
path, pid = sys.argv[1], int(sys.argv[2])
envs = [{"eid": f"e{i}", "uid": 1000, "creation": "01/01/2026 00:00:00", "username": "alice",
         "config": {"name": f"job {i}", "gpu_memory": None, "gpus": None}, "pids": [pid], "kernel_ids": []}
        for i in range(10000)]
json.dump({"envs": envs}, open(path, "w"), indent=2)
PY
echo
echo "With 10,000 environments in the state:"
echo
echo "| command | genv median ms (min–max) |"
echo "|---|---:|"
# (A change is timed by bench/bigstate.sh, which undoes it before each run.)
for args in "envs ps --format csv --no-header" \
    "devices attach --eid e42 --count 1" "devices ps" "usage snapshot --type envs"; do
    a=$(RUNS=30 time_cmd ours "$ours" "$big" "$args")
    echo "| \`genv $args\` | $a |"
done

# The storm: 64 processes attaching and detaching at once.
storm=$work/storm
mkdir -p "$storm"
for i in $(seq 0 63); do
    GENV_TMPDIR=$storm "$ours" envs activate --eid "s$i" --uid 1000 --pid "$holder" >/dev/null
done
cycles=25
tx=$((64 * cycles * 2))
# storm LABEL STEP...: 64 loops at once, each running STEP (a command line,
# with {i} for the loop's number) for every step of every cycle; prints
# the transactions a second.
storm_run() {
    local label=$1
    shift
    local start end
    start=$(date +%s%N)
    local pids=()
    for i in $(seq 0 63); do
        (
            for _ in $(seq "$cycles"); do
                for step in "$@"; do
                    # shellcheck disable=SC2086 # a step is a command line
                    GENV_TMPDIR=$storm ${step//\{i\}/$i} >/dev/null 2>&1 || true
                done
            done
        ) &
        pids+=($!)
    done
    wait "${pids[@]}"
    end=$(date +%s%N)
    python3 -c "import sys; n,ns=int(sys.argv[1]),int(sys.argv[2]); print('%s: %d transactions in %.2f s: %.0f transactions/s' % (sys.argv[3], n, ns/1e9, n/(ns/1e9)))" "$tx" $((end - start)) "$label"
}
echo
storm_run "Command-line storm, 64 processes x $cycles attach/detach cycles" \
    "$ours devices attach --eid s{i} --count 1" "$ours devices detach --eid s{i} --quiet"

# The floor of the storm: the same loops running the minimal transaction
# (bench/txfloor.rs: flock, read, write, rename) for each step.
cargo build --release --quiet --example txfloor
txfloor=$PWD/target/release/examples/txfloor
storm_run "The same storm of minimal transactions (txfloor)" "$txfloor" "$txfloor"
echo
echo "State store alone (no process start per step):"
cargo run --release --quiet --example storm -- 64 50
