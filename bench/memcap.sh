#!/usr/bin/env bash
# The memory cap's cost: cuMemAlloc_v2 + cuMemFree_v2 of 1 MiB against the
# stand-in driver (which takes about 15 ns a call), without the library,
# with it but no capacity, and with a capacity, through cuGetProcAddress
# (as libcudart calls) and by symbol. Prints the median of 7 runs of N
# pairs each, in nanoseconds per pair, and what the cap adds.
#
#   bench/memcap.sh [N]     (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}

cargo build --quiet --release -p genv-memcap
library=$PWD/target/release/libgenv_memcap.so
dir=$PWD/target/memcap-bench
mkdir -p "$dir" "$dir/state"
cc -O2 -fPIC -shared -Wl,-soname,libcuda.so.1 -o "$dir/libcuda.so.1" tests/fixtures/memcap/fake_driver.c
cc -O2 -o "$dir/client" tests/fixtures/memcap/client.c -L"$dir" -l:libcuda.so.1 -ldl -Wl,-rpath,"$dir"

export GENV_TMPDIR=$dir/state GENV_ENVIRONMENT_ID=bench
median() {
    local mode=$1
    shift
    for _ in 1 2 3 4 5 6 7; do
        env "$@" "$dir/client" "$mode" bench "$n" 1mi | sed 's/.*ns_per_pair=//'
    done | sort -n | sed -n 4p
}

printf '%-8s %12s %16s %16s %10s\n' path "bare ns" "no cap ns" "cap 4g ns" "adds ns"
for mode in proc symbol; do
    bare=$(median "$mode" -u LD_PRELOAD -u GENV_GPU_MEMORY)
    nocap=$(median "$mode" -u GENV_GPU_MEMORY LD_PRELOAD="$library")
    cap=$(median "$mode" LD_PRELOAD="$library" GENV_GPU_MEMORY=4g)
    printf '%-8s %12s %16s %16s %10.1f\n' "$mode" "$bare" "$nocap" "$cap" "$(echo "$cap - $bare" | bc -l)"
done
