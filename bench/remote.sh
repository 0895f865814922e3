#!/usr/bin/env bash
# `genv remote devices` over 8 hosts, each an sshd on a loopback port
# running this genv on 2 simulated GPUs: against one SSH round trip to one
# host (`ssh h1 true`) and one host's snapshot, and against genv 1.4.3's
# `genv remote devices` on the same hosts. Both reach the hosts through the
# same `ssh -F` wrapper. Needs openssh-server, hyperfine and
# target/genv-ref (scripts/test installs the first and the last).
#
#   bench/remote.sh [RUNS]     (default 30)
#
# BENCH_KEX=ALGORITHM sets the key exchange of every ssh in the run (the
# round trip it is compared with included), e.g. curve25519-sha256, which
# costs less CPU than OpenSSH 9.2's default sntrup761x25519-sha512.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
cargo build --quiet --bins
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p /run/sshd "$dir/bin"
ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$dir/user_key"
cp "$dir/user_key.pub" "$dir/authorized_keys"
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
hosts=()
for i in 1 2 3 4 5 6 7 8; do
    port=$(free_port)
    mkdir -p "$dir/state$i"
    cat >"$dir/sshd$i" <<CONF
HostKey $dir/host_key
Port $port
ListenAddress 127.0.0.1
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd$i.pid
StrictModes no
UsePAM no
PasswordAuthentication no
PermitRootLogin yes
LogLevel ERROR
SetEnv GENV_TMPDIR=$dir/state$i GENV_MOCK_DEVICE_COUNT=2 PATH=$PWD/target/debug:/usr/bin:/bin
CONF
    /usr/sbin/sshd -D -f "$dir/sshd$i" &
    pids+=($!)
    printf 'Host h%s\n  Port %s\n' "$i" "$port" >>"$dir/ssh_config"
    hosts+=("h$i")
done
cat >>"$dir/ssh_config" <<CONF
Host *
  HostName 127.0.0.1
  IdentityFile $dir/user_key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
CONF
if [ -n "${BENCH_KEX:-}" ]; then
    printf '  KexAlgorithms %s\n' "$BENCH_KEX" >>"$dir/ssh_config"
fi
printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$dir/ssh_config" >"$dir/bin/ssh"
chmod +x "$dir/bin/ssh"
# Wait for every sshd to answer, with a deadline.
for host in "${hosts[@]}"; do
    for _ in $(seq 200); do
        "$dir/bin/ssh" -o BatchMode=yes "$host" true 2>/dev/null && continue 2
    done
    echo "sshd for $host did not start" >&2
    exit 1
done
all=$(IFS=,; echo "${hosts[*]}")
export GENV_SSH=$dir/bin/ssh
export PATH=$dir/bin:$PATH
hyperfine -N --warmup 3 --runs "$runs" --export-markdown "$dir/results.md" \
    -n "ssh h1 true (one round trip)" "$dir/bin/ssh -o BatchMode=yes h1 true" \
    -n "ssh h1 genv usage snapshot --type devices" "$dir/bin/ssh -o BatchMode=yes h1 genv usage snapshot --type devices" \
    -n "genv remote -H h1 devices" "target/debug/genv remote -H h1 devices" \
    -n "genv remote -H h1..h8 devices" "target/debug/genv remote -H $all devices" \
    -n "genv 1.4.3 remote -H h1..h8 devices" "target/genv-ref/bin/genv remote -H $all devices" >&2
cat "$dir/results.md"
