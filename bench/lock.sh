#!/usr/bin/env bash
# The hand-over latency of `genv lock` (release of one holder to the start
# of the next waiter's command), exclusive and fractional, as a Markdown
# table on stdout. See bench/lock.rs.
#
#   bench/lock.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin genv --example lock
exec target/release/examples/lock "${1:-200}"
