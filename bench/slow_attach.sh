#!/usr/bin/env bash
# Eight concurrent `genv devices attach` on a machine whose driver takes
# 200 ms to answer (an `nvidia-smi` that sleeps 0.2 s, then answers as the
# project's stand-in), wall time from the first start to the last exit.
#
#   bench/slow_attach.sh [ROUNDS]     # default 10; prints Markdown
#
# Two cases: a fresh state (no devices.json, so every attach asks the
# driver: genv asks before taking the global lock, so the eight queries
# overlap), and the usual state (devices.json recorded: nobody asks).
# genv 1.4.3 (REF, default target/genv-ref/bin/genv; REF= to
# skip) runs the same rounds. Target: under 800 ms for the eight.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-10}
REF=${REF-target/genv-ref/bin/genv}
[[ -x $REF ]] || REF=""
work=$(mktemp -d)
sleeper=
cleanup() {
    if [[ -n $sleeper ]]; then kill "$sleeper" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --bin genv --bin nvidia-smi-sim
ours=$PWD/target/release/genv
mkdir -p "$work/bin"
cat >"$work/bin/nvidia-smi" <<SH
#!/bin/sh
sleep 0.2
exec '$PWD/target/release/nvidia-smi-sim' "\$@"
SH
chmod +x "$work/bin/nvidia-smi"
unset GENV_MOCK_DEVICE_COUNT GENV_MOCK_DEVICE_TOTAL_MEMORY
export PATH="$work/bin:$PATH"
sleep 100000 &
sleeper=$!

# Eight environments, nothing attached; devices.json only when asked.
prepare() { # folder fresh(0|1)
    rm -rf "$1" && mkdir -p "$1"
    python3 -c 'import json,sys; json.dump({"envs": [{"eid": f"a{i}", "uid": 1000, "creation": "01/01/2026 00:00:00", "username": "u", "config": {"name": None, "gpu_memory": None, "gpus": None}, "pids": [int(sys.argv[2])], "kernel_ids": []} for i in range(8)]}, open(sys.argv[1] + "/envs.json", "w"))' "$1" "$sleeper"
    if [[ $2 == 0 ]]; then
        echo '{"devices": [{"index": 0, "total_memory": "16384mi", "attachments": []}, {"index": 1, "total_memory": "16384mi", "attachments": []}]}' >"$1/devices.json"
    fi
}

round() { # genv fresh -> ms
    local dir=$work/state pids=()
    prepare "$dir" "$2"
    local start end
    start=$(date +%s%N)
    for i in $(seq 0 7); do
        GENV_TMPDIR=$dir "$1" devices attach --eid "a$i" --count 1 --allow-over-subscription >/dev/null 2>&1 &
        pids+=($!)
    done
    local failed=0
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    end=$(date +%s%N)
    [[ $failed == 0 ]] || { echo "an attach failed" >&2; exit 1; }
    echo $(((end - start) / 1000))
}

stats() { # microseconds... -> "median (min–max) ms"
    python3 -c 'import sys,statistics; t=[int(x)/1000 for x in sys.argv[1:]]; print("%.0f (%.0f–%.0f)" % (statistics.median(t), min(t), max(t)))' "$@"
}

echo "8 concurrent attaches, driver query 200 ms, $rounds rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| state | genv ms | genv 1.4.3 ms |"
echo "|---|---:|---:|"
for fresh in 1 0; do
    ours_t=() ref_t=()
    for _ in $(seq "$rounds"); do ours_t+=("$(round "$ours" "$fresh")"); done
    if [[ -n $REF ]]; then
        for _ in $(seq $(((rounds + 1) / 2))); do ref_t+=("$(round "$REF" "$fresh")"); done
    fi
    label=$([[ $fresh == 1 ]] && echo "fresh (no devices.json: every attach asks the driver)" || echo "recorded devices.json")
    echo "| $label | $(stats "${ours_t[@]}") | $([[ -n $REF ]] && stats "${ref_t[@]}" || echo n/a) |"
done
