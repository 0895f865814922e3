#!/usr/bin/env bash
# genv daemon side by side with file mode and the floors, in one run.
#
#   sudo bench/daemon.sh [ENVS]     # default 10000; prints Markdown tables
#
# Needs root (the daemon runs as root; a second user, uid 47101 as in the
# tests, is switched to with setpriv). Times the installed genv (static,
# scripts/build-static --release), in these parts (PARTS, default all):
#   reads   on the realistic state of bench/bigstate.sh (ENVS environments
#           of 21 users, 200 live pids, a third attached across 8 GPUs):
#           `genv envs`, `genv devices`, `genv envs ps --format csv`, and
#           one change (attach, then detach), each interleaved
#           (bench/interleave.rs, RUNS rounds) with /bin/true and the floors
#           (`floor`, the file mode's parse; `floor --change` and txfloor
#           for the change), genv in file mode on one copy of the state and
#           genv through `genv daemon` serving another; and `genv envs` as
#           root and as uid 47101, both through setpriv
#   memory  the daemon's VmRSS and VmHWM (/proc/PID/status) when started,
#           after one `genv envs` (the state parsed and kept), a second,
#           four at once, and after the reads, beside file mode's peak RSS
#           for the same `genv envs`
#   storm   64 loops at once, each running `genv devices attach` and
#           `detach` 25 times (bench/core.sh's storm), in file mode and
#           through the daemon, beside the same loops of /bin/true and of
#           txfloor; STORM_ROUNDS rounds (default 3) taken in turn
#   shim    the nvidia-smi shim (bench/shim.sh's setup) in a folder the
#           daemon serves and in one it does not, as root (who takes the
#           daemon's lock) and as uid 47101 through setpriv (who reads
#           without it), beside the bare stand-in run the same way and
#           the floor of any wrapper (bench/wrapfloor.rs, built as
#           genv-static is: the stand-in run through a pipe, its output
#           copied); SHIM_RUNS rounds (default 500)
#   sdk     bench/sdk_daemon.py with this genv (SDK_PAIRS pairs a round)
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-10000}
RUNS=${RUNS:-20}
STORM_ROUNDS=${STORM_ROUNDS:-3}
SHIM_RUNS=${SHIM_RUNS:-500}
SDK_PAIRS=${SDK_PAIRS:-5000}
PARTS=${PARTS:-reads memory storm shim sdk}
USER_UID=47101

[[ $(id -u) == 0 ]] || {
    echo "bench/daemon.sh: genv daemon runs as root: run it with sudo" >&2
    exit 1
}
wants() { [[ " $PARTS " == *" $1 "* ]]; }

cargo build --release --quiet --bin nvidia-smi-sim --example floor --example interleave --example txfloor
scripts/build-static --release >/dev/null
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static -C debuginfo=0" \
    cargo build --quiet --profile dist --target "$host" --example wrapfloor
wrapfloor=$PWD/target/$host/dist/examples/wrapfloor
ours=$PWD/target/release/genv-static
floor=$PWD/target/release/examples/floor
txfloor=$PWD/target/release/examples/txfloor
interleave=$PWD/target/release/examples/interleave

work=$(mktemp -d)
# Reached by the second user: the state folders, its home.
chmod 755 "$work"
mkdir -p "$work/home"
chown "$USER_UID:$USER_UID" "$work/home"
as_user="setpriv --reuid=$USER_UID --regid=$USER_UID --clear-groups"
as_root="setpriv --reuid=0 --regid=0 --clear-groups"
sleepers=()
daemons=()
daemon_fds=()
cleanup() {
    for p in "${daemons[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    # Each daemon's stderr ends when it has stopped (its socket removed).
    for fd in "${daemon_fds[@]}"; do cat <&"$fd" >/dev/null || true; done
    for p in "${sleepers[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The daemon for each folder is told its GPUs; clients' GENV_MOCK_* are
# ignored by it, and read by file mode.
export GENV_MOCK_DEVICE_COUNT=8 GENV_MOCK_DEVICE_TOTAL_MEMORY=16gi
unset GENV_ENVIRONMENT_ID CUDA_VISIBLE_DEVICES

# start_daemon FOLDER: `genv daemon` serving FOLDER, ready when it says so
# on stderr; its pid in $daemon.
start_daemon() {
    local fd line
    exec {fd}< <(GENV_TMPDIR=$1 exec "$ours" daemon 2>&1 >/dev/null)
    daemon=$!
    daemons+=("$daemon")
    daemon_fds+=("$fd")
    read -r line <&"$fd"
    [[ $line == "genv: daemon serving "* ]] || {
        echo "bench/daemon.sh: genv daemon did not start: $line" >&2
        exit 1
    }
}

# The state of bench/bigstate.sh: N environments of 21 users, each with 1
# or 2 of PIDS, a name, a creation time, a third of them attached to one
# of 8 GPUs (some with a memory fraction), written as genv writes them.
generate() { # folder n pids...
    mkdir -p "$1"
    python3 bench/bigstate.py "$@"
}

cell() { # median q1 q3 min max -> "median (min–max)"
    printf '%.2f (%.2f–%.2f)' "$1" "$4" "$5"
}
ratio() { # a b -> a / b
    python3 -c 'import sys; print("%.2fx" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"
}
minus() { # a b -> a - b
    python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) - float(sys.argv[2])))' "$1" "$2"
}
# kB of a VmRSS/VmHWM line of a process.
vm() { # pid field
    sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$1/status"
}
peak_rss() { # command... -> its max RSS in kB
    /usr/bin/time -v "$@" 2>&1 >/dev/null | sed -n 's/.*Maximum resident set size (kbytes): //p'
}

echo "bench/daemon.sh $n, $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg), genv $("$ours" --version)"

if wants reads || wants memory || wants storm; then
    for _ in $(seq 200); do
        sleep 100000 &
        sleepers+=($!)
    done
fi

if wants reads || wants memory; then
    generate "$work/pristine" "$n" "${sleepers[@]}"
    files=$work/files served=$work/served
    cp -a "$work/pristine" "$files"
    cp -a "$work/pristine" "$served"
    start_daemon "$served"
    big_daemon=$daemon
    parsed=$(GENV_TMPDIR=$files "$floor" --rss 2>&1 >/dev/null | sed 's/.*parsed size \([0-9]*\) kB/\1/')
    echo
    echo "State: $n environments, envs.json $(($(stat -c %s "$files/envs.json") / 1024)) KiB, parsed $parsed kB (floor's RSS delta)"
fi

if wants memory; then
    started_rss=$(vm "$big_daemon" VmRSS) started_hwm=$(vm "$big_daemon" VmHWM)
    GENV_TMPDIR=$served "$ours" envs >/dev/null
    first_rss=$(vm "$big_daemon" VmRSS) first_hwm=$(vm "$big_daemon" VmHWM)
    GENV_TMPDIR=$served "$ours" envs >/dev/null
    second_rss=$(vm "$big_daemon" VmRSS) second_hwm=$(vm "$big_daemon" VmHWM)
    # Four at once: each connection is a thread, and threads that run
    # together allocate from malloc arenas of their own.
    pids=()
    for _ in 1 2 3 4; do
        GENV_TMPDIR=$served "$ours" envs >/dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
    four_rss=$(vm "$big_daemon" VmRSS) four_hwm=$(vm "$big_daemon" VmHWM)
    echo
    echo "| memory, $n environments | VmRSS kB | VmHWM kB |"
    echo "|---|---:|---:|"
    echo "| genv daemon, started | $started_rss | $started_hwm |"
    echo "| genv daemon, after one \`genv envs\` | $first_rss | $first_hwm |"
    echo "| genv daemon, after a second \`genv envs\` | $second_rss | $second_hwm |"
    echo "| genv daemon, after four \`genv envs\` at once | $four_rss | $four_hwm |"
    echo "| file mode \`genv envs\`, peak (/usr/bin/time -v) | | $(GENV_TMPDIR=$files peak_rss "$ours" envs) |"
    echo "| floor (\`floor\`), peak | | $(GENV_TMPDIR=$files peak_rss "$floor") |"
fi

if wants reads; then
    for args in "envs" "devices" "envs ps --format csv"; do
        # The daemon prints what file mode prints (the same state, read
        # within a second of each other).
        # shellcheck disable=SC2086 # args are words
        if ! cmp -s <(GENV_TMPDIR=$files "$ours" $args) <(GENV_TMPDIR=$served "$ours" $args); then
            echo "note: \`genv $args\` differs between file mode and the daemon" >&2
        fi
    done
    echo
    echo "Reads, $RUNS rounds interleaved, ms median (min–max):"
    echo
    echo "| command | \`/bin/true\` | floor | genv, files | genv, daemon | floor / daemon | files / daemon |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for args in "envs" "devices" "envs ps --format csv"; do
        mapfile -t t < <(GENV_TMPDIR=$files INTERLEAVE_TSV=1 "$interleave" "$RUNS" /bin/true "$floor" \
            "$ours $args" "GENV_TMPDIR=$served $ours $args")
        read -r -a tru <<<"${t[0]}"
        read -r -a flo <<<"${t[1]}"
        read -r -a fil <<<"${t[2]}"
        read -r -a dae <<<"${t[3]}"
        echo "| \`genv $args\` | $(cell "${tru[@]}") | $(cell "${flo[@]}") | $(cell "${fil[@]}") | $(cell "${dae[@]}") | $(ratio "${flo[0]}" "${dae[0]}") | $(ratio "${fil[0]}" "${dae[0]}") |"
    done
    echo
    echo "A change, $RUNS rounds interleaved (each run undone, untimed, before the next), ms median (min–max):"
    echo
    echo "| command | txfloor | \`floor --change\` | genv, files | genv, daemon | floor / daemon | files / daemon |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    attach="devices attach --eid e4 --count 1 --allow-over-subscription"
    detach="devices detach --eid e4 --quiet"
    for pair in "$detach;$attach" "$attach;$detach"; do
        undo=${pair%;*} args=${pair#*;}
        mapfile -t t < <(GENV_TMPDIR=$files INTERLEAVE_TSV=1 "$interleave" "$RUNS" "$txfloor" "$floor --change" \
            "$ours $undo ;; $ours $args" \
            "GENV_TMPDIR=$served $ours $undo ;; GENV_TMPDIR=$served $ours $args")
        read -r -a txf <<<"${t[0]}"
        read -r -a flo <<<"${t[1]}"
        read -r -a fil <<<"${t[2]}"
        read -r -a dae <<<"${t[3]}"
        echo "| \`genv $args\` | $(cell "${txf[@]}") | $(cell "${flo[@]}") | $(cell "${fil[@]}") | $(cell "${dae[@]}") | $(ratio "${flo[0]}" "${dae[0]}") | $(ratio "${fil[0]}" "${dae[0]}") |"
    done
    echo
    echo "\`genv envs\` through the daemon as root and as uid $USER_UID, both started by setpriv, $RUNS rounds interleaved:"
    echo
    echo "| command | ms median (min–max) |"
    echo "|---|---:|"
    mapfile -t t < <(GENV_TMPDIR=$served INTERLEAVE_TSV=1 "$interleave" "$RUNS" "$as_root /bin/true" \
        "$as_root $ours envs" "HOME=$work/home $as_user $ours envs")
    read -r -a tru <<<"${t[0]}"
    read -r -a roo <<<"${t[1]}"
    read -r -a usr <<<"${t[2]}"
    echo "| \`setpriv (root) /bin/true\` | $(cell "${tru[@]}") |"
    echo "| \`setpriv (root) genv envs\` | $(cell "${roo[@]}") |"
    echo "| \`setpriv (uid $USER_UID) genv envs\` | $(cell "${usr[@]}") |"
fi

if wants memory; then
    echo
    echo "genv daemon after the reads: VmRSS $(vm "$big_daemon" VmRSS) kB, VmHWM $(vm "$big_daemon" VmHWM) kB"
fi

if wants storm; then
    holder=${sleepers[0]}
    storm_files=$work/storm-files storm_served=$work/storm-served storm_floor=$work/storm-floor
    mkdir -p "$storm_files" "$storm_floor"
    start_daemon "$storm_served"
    for i in $(seq 0 63); do
        for folder in "$storm_files" "$storm_served"; do
            GENV_TMPDIR=$folder "$ours" envs activate --eid "s$i" --uid 1000 --pid "$holder" >/dev/null
        done
    done
    cycles=25
    steps=$((64 * cycles * 2))
    # storm FOLDER STEP...: 64 loops at once, each running every STEP (a
    # command line, {i} the loop's number) every cycle; prints steps/s.
    storm() {
        local folder=$1 start end pids=()
        shift
        start=$(date +%s%N)
        for i in $(seq 0 63); do
            (
                for _ in $(seq "$cycles"); do
                    for step in "$@"; do
                        # shellcheck disable=SC2086 # a step is a command line
                        GENV_TMPDIR=$folder ${step//\{i\}/$i} >/dev/null 2>&1 || true
                    done
                done
            ) &
            pids+=($!)
        done
        wait "${pids[@]}"
        end=$(date +%s%N)
        python3 -c 'import sys; print("%.0f" % (int(sys.argv[1]) / (int(sys.argv[2]) / 1e9)))' "$steps" $((end - start))
    }
    summary() { # rates... -> "median (min–max)"
        python3 -c 'import sys, statistics; r = [float(a) for a in sys.argv[1:]]; print("%.0f (%.0f–%.0f)" % (statistics.median(r), min(r), max(r)))' "$@"
    }
    true_rates=() txfloor_rates=() files_rates=() served_rates=()
    for _ in $(seq "$STORM_ROUNDS"); do
        true_rates+=("$(storm "$storm_floor" /bin/true /bin/true)")
        txfloor_rates+=("$(storm "$storm_floor" "$txfloor" "$txfloor")")
        files_rates+=("$(storm "$storm_files" "$ours devices attach --eid s{i} --count 1" "$ours devices detach --eid s{i} --quiet")")
        served_rates+=("$(storm "$storm_served" "$ours devices attach --eid s{i} --count 1" "$ours devices detach --eid s{i} --quiet")")
    done
    echo
    echo "Storm: 64 loops x $cycles cycles of two steps ($steps steps), $STORM_ROUNDS rounds in turn; steps a second, median (min–max); load average now $(cut -d' ' -f1-3 /proc/loadavg):"
    echo
    echo "| 64 loops of | steps/s |"
    echo "|---|---:|"
    echo "| \`/bin/true\` (process start) | $(summary "${true_rates[@]}") |"
    echo "| txfloor (flock, read, write, rename) | $(summary "${txfloor_rates[@]}") |"
    echo "| \`genv devices attach\` / \`detach\`, files | $(summary "${files_rates[@]}") |"
    echo "| \`genv devices attach\` / \`detach\`, daemon | $(summary "${served_rates[@]}") |"
fi

if wants shim; then
    mkdir -p "$work/shims" "$work/real"
    ln -s "$ours" "$work/shims/nvidia-smi"
    ln -s "$PWD/target/release/nvidia-smi-sim" "$work/real/nvidia-smi"
    ln -s "$(command -v sleep)" "$work/benchjob"
    # The environment's compute process, the user's, known to the shim
    # only from envs.json (no GENV_ENVIRONMENT_ID of its own), and no
    # CUDA_VISIBLE_DEVICES: the shim reads devices.json and envs.json.
    $as_user "$work/benchjob" 100000 &
    sleepers+=($!)
    shim_files=$work/shim-files shim_served=$work/shim-served
    mkdir -p "$shim_files"
    chmod 777 "$shim_files"
    start_daemon "$shim_served"
    for folder in "$shim_files" "$shim_served"; do
        GENV_TMPDIR=$folder GENV_MOCK_DEVICE_COUNT=2 "$ours" envs activate --eid bench --uid "$USER_UID" --pid "${sleepers[-1]}" >/dev/null
        GENV_TMPDIR=$folder GENV_MOCK_DEVICE_COUNT=2 "$ours" devices attach --eid bench --count 2 >/dev/null
    done
    echo
    echo "nvidia-smi shim (table), $SHIM_RUNS rounds interleaved, ms median (min–max):"
    echo
    echo "| as | bare stand-in | wrapper floor | shim, files | shim, daemon's folder | floor adds | shim adds, files | shim adds, daemon's folder |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for who in root user; do
        run_as=""
        [[ $who == user ]] && run_as="HOME=$work/home $as_user"
        mapfile -t t < <(GENV_ENVIRONMENT_ID=bench GENV_MOCK_COMPUTE_APPS_PROCESS_NAME=benchjob \
            PATH="$work/real:/usr/bin:/bin" GENV_TMPDIR=$shim_files INTERLEAVE_TSV=1 \
            "$interleave" "$SHIM_RUNS" "$run_as $work/real/nvidia-smi" \
            "$run_as $wrapfloor $work/real/nvidia-smi" "$run_as $work/shims/nvidia-smi" \
            "GENV_TMPDIR=$shim_served $run_as $work/shims/nvidia-smi")
        read -r -a bare <<<"${t[0]}"
        read -r -a wrap <<<"${t[1]}"
        read -r -a fil <<<"${t[2]}"
        read -r -a dae <<<"${t[3]}"
        label=root
        [[ $who == user ]] && label="uid $USER_UID (setpriv)"
        echo "| $label | $(cell "${bare[@]}") | $(cell "${wrap[@]}") | $(cell "${fil[@]}") |" \
            "$(cell "${dae[@]}") | $(minus "${wrap[0]}" "${bare[0]}") ms |" \
            "$(minus "${fil[0]}" "${bare[0]}") ms | $(minus "${dae[0]}" "${bare[0]}") ms |"
    done
fi

if wants sdk; then
    echo
    echo "SDK (\`python3 bench/sdk_daemon.py --genv $ours --pairs $SDK_PAIRS\`):"
    echo
    python3 bench/sdk_daemon.py --genv "$ours" --pairs "$SDK_PAIRS" | sed 's/^/    /'
fi
echo
echo "done $(date -u '+%H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
