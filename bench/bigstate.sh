#!/usr/bin/env bash
# A realistic big state, side by side with its floor and genv 1.4.3.
#
#   bench/bigstate.sh [ENVS]        # default 10000; prints Markdown tables
#
# Generates (not checked in) a state folder with ENVS environments owned by
# 21 users, each with 1 or 2 live pids out of 200 sleeping processes, a
# name, a creation time, and a third of them attached to one of 8 GPUs
# (some with a memory fraction), written as genv writes them (indented).
# Then times, one run of each in turn (bench/interleave.rs), RUNS rounds:
#   floor   cargo's `floor` example: read and parse envs.json and
#           devices.json into genv's types and print the CSV table (the
#           floor of the reads); `floor --change`: lock, parse, rename an
#           environment, serialise, write and rename (the floor of the
#           changes, attach and config)
#   genv    this genv's commands
#   1.4.3   genv 1.4.3 (REF, default target/genv-ref/bin/genv; REF= to
#           skip; REF_RUNS runs each, default 5)
# and, for each command, the peak resident memory (/usr/bin/time -v) beside
# the parsed size of the state (the floor's RSS after parsing less before).
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-10000}
RUNS=${RUNS:-20}
REF_RUNS=${REF_RUNS:-5}
REF=${REF-target/genv-ref/bin/genv}
[[ -x $REF ]] || REF=""
work=$(mktemp -d)
sleepers=()
cleanup() {
    for p in "${sleepers[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# genv as installed (README): statically linked, scripts/build-static;
# GENV_BUILD=dynamic times the dynamically linked `cargo build --release`.
cargo build --release --quiet --bin genv --example floor --example interleave
interleave=$PWD/target/release/examples/interleave
ours=$PWD/target/release/genv
if [[ ${GENV_BUILD:-static} == static ]]; then
    scripts/build-static --release >/dev/null
    ours=$PWD/target/release/genv-static
fi
floor=$PWD/target/release/examples/floor

for _ in $(seq 200); do
    sleep 100000 &
    sleepers+=($!)
done

# genv 1.4.3 asks nvidia-smi only when it creates devices.json; it exists
# here, and genv reads GENV_MOCK_* itself.
export GENV_MOCK_DEVICE_COUNT=8 GENV_MOCK_DEVICE_TOTAL_MEMORY=16gi
state=$work/state
mkdir -p "$state"
python3 bench/bigstate.py "$state" "$n" "${sleepers[@]}"
cp -a "$state" "$work/pristine"
size=$(stat -c %s "$state/envs.json")
parsed=$(GENV_TMPDIR=$state "$floor" --rss 2>&1 >/dev/null | sed 's/.*parsed size \([0-9]*\) kB/\1/')

rss() { # command... -> max RSS in kB
    GENV_TMPDIR=$state /usr/bin/time -v "$@" 2>&1 >/dev/null | sed -n 's/.*Maximum resident set size (kbytes): //p'
}

echo "State: $n environments, envs.json $((size / 1024)) KiB, parsed $parsed kB (floor's RSS delta); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| command | floor ms | genv ms | genv / floor | genv 1.4.3 ms | 1.4.3 / genv | genv max RSS kB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
# Each row: the floor and this genv run one after the other, RUNS rounds
# (bench/interleave.rs), so that both see the same load; then genv 1.4.3,
# REF_RUNS runs (interleaved with ours, each of its runs, a second of
# Python on both cores, left ours twice as slow as alone). A change is
# undone before each run (untimed).
cell() { # median q1 q3 min max -> "median (min–max)"
    printf '%.1f (%.1f–%.1f)' "$1" "$4" "$5"
}
row() { # label floor prepare args...
    local label=$1 floor_cmd=$2 prep=$3
    shift 3
    mapfile -t lines < <(GENV_TMPDIR=$state INTERLEAVE_TSV=1 "$interleave" "$RUNS" \
        "$floor_cmd" "${prep:+$ours $prep ;; }$ours $*")
    local f o r="n/a" x="n/a"
    read -r -a f <<<"${lines[0]}"
    read -r -a o <<<"${lines[1]}"
    if [[ -n $REF ]]; then
        mapfile -t lines < <(GENV_TMPDIR=$state INTERLEAVE_TSV=1 "$interleave" "$REF_RUNS" \
            "${prep:+$REF $prep ;; }$REF $*")
        read -r -a rr <<<"${lines[0]}"
        r=$(cell "${rr[@]}")
        x=$(python3 -c 'import sys; print("%.0fx" % (float(sys.argv[1]) / float(sys.argv[2])))' "${rr[0]}" "${o[0]}")
    fi
    rm -rf "$state" && cp -a "$work/pristine" "$state"
    local ratio
    ratio=$(python3 -c 'import sys; print("%.2fx" % (float(sys.argv[1]) / float(sys.argv[2])))' "${o[0]}" "${f[0]}")
    echo "| \`genv $label\` | $(cell "${f[@]}") | $(cell "${o[@]}") | $ratio | $r | $x | $(rss "$ours" "$@") |"
}
row "envs" "$floor" "" envs
row "devices" "$floor" "" devices
row "envs ps --format csv" "$floor" "" envs ps --format csv
row "envs ps --format csv --timestamp" "$floor" "" envs ps --format csv --timestamp
row "devices attach --eid e4 --count 1 --allow-over-subscription" "$floor --change" "devices detach --eid e4 --quiet" devices attach --eid e4 --count 1 --allow-over-subscription
row "envs config --eid e5000 name --name b" "$floor --change" "envs config --eid e5000 name --name a" envs config --eid e5000 name --name b
echo
echo "floor max RSS: $(rss "$floor") kB"
