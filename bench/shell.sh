#!/usr/bin/env bash
# Times a whole shell session, init → activate --gpus 1 → status →
# deactivate, in bash, zsh and fish with genv, and in bash with genv 1.4.3
# (installed in a virtual environment under $REF_VENV), side by side.
#
#   bench/shell.sh            # prints a Markdown table
set -euo pipefail
cd "$(dirname "$0")/.."

REF_VENV=${REF_VENV:-/tmp/genv-ref-venv}
RUNS=${RUNS:-100}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; } >&2
for shell in zsh fish; do
    command -v "$shell" >/dev/null || apt-get install -y -qq "$shell" >&2
done
# genv as installed (README): statically linked, scripts/build-static;
# GENV_BUILD=dynamic times the dynamically linked `cargo build --release`.
cargo build --release --quiet
bin=$PWD/target/release
mkdir -p "$work/genv"
if [[ ${GENV_BUILD:-static} == static ]]; then
    scripts/build-static --release >/dev/null
    ln -s "$bin/genv-static" "$work/genv/genv"
else
    ln -s "$bin/genv" "$work/genv/genv"
fi
if [[ ! -x $REF_VENV/bin/genv ]]; then
    { python3 -m venv "$REF_VENV" && "$REF_VENV/bin/pip" install -q genv==1.4.3 psutil; } >&2 || true
fi

# genv 1.4.3 asks nvidia-smi for the GPUs' memory when it creates
# devices.json: genv's own stand-in answers.
mkdir -p "$work/smi"
ln -s "$bin/nvidia-smi-sim" "$work/smi/nvidia-smi"
export GENV_MOCK_DEVICE_TOTAL_MEMORY=16gi
export GENV_MOCK_DEVICE_COUNT=2 HOME=$work

cat >"$work/session.sh" <<'SH'
eval "$(genv shell --init)"
genv activate --gpus 1 >/dev/null || exit 1
genv status | grep -q 'Attached to GPUs at indices 0' || exit 1
genv deactivate || exit 1
SH
cat >"$work/session.fish" <<'FISH'
genv shell --init fish | source
genv activate --gpus 1 >/dev/null; or exit 1
genv status | grep -q 'Attached to GPUs at indices 0'; or exit 1
genv deactivate; or exit 1
FISH

ours_path="$work/genv:$work/smi:/usr/bin:/bin"
ref_path="$REF_VENV/bin:$work/smi:/usr/bin:/bin"
mkdir -p "$work/ours" "$work/ref"

run() { # label path state command...
    local label=$1 path=$2 state=$3
    shift 3
    # A session that fails would time nothing: check one first.
    PATH=$path GENV_TMPDIR=$state "$@" || { echo "$label: the session failed" >&2; return 1; }
    PATH=$path GENV_TMPDIR=$state hyperfine -N --runs "$RUNS" --warmup 3 --export-json "$work/h.json" "$*" >/dev/null 2>&1
    python3 -c 'import json,sys,statistics; t=json.load(open(sys.argv[1]))["results"][0]["times"]; print("| %s | %.1f (%.1f–%.1f) |" % (sys.argv[2], statistics.median(t)*1e3, min(t)*1e3, max(t)*1e3))' "$work/h.json" "$label"
}

echo "| session (init → activate --gpus 1 → status → deactivate) | median ms (min–max) |"
echo "|---|---:|"
run "genv, bash" "$ours_path" "$work/ours" bash --norc --noprofile "$work/session.sh"
run "genv, zsh" "$ours_path" "$work/ours" zsh -f "$work/session.sh"
run "genv, fish" "$ours_path" "$work/ours" fish --no-config "$work/session.fish"
if [[ -x $REF_VENV/bin/genv ]]; then
    RUNS=$((RUNS / 10 > 5 ? RUNS / 10 : 5)) run "genv 1.4.3, bash" "$ref_path" "$work/ref" bash --norc --noprofile "$work/session.sh"
fi
