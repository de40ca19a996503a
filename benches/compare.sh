#!/usr/bin/env bash
# The end-to-end comparison: sysbench against the primary directly, HAProxy in TCP mode (as
# the mysql-read Service balances) and rwsplit, on a local replicated cluster, in one table.
# Installs what is missing (HAProxy and sysbench included), builds rwsplit and the driver
# (benches/compare/) in release mode, and runs it. Options go to the driver; see --help and
# the README's "Benchmarks" section. Examples:
#   benches/compare.sh                          # the full matrix, ~12 minutes
#   benches/compare.sh --quick                  # a smoke run, under a minute
#   benches/compare.sh --tests oltp_point_select --threads 1,16 --time 30
#   benches/compare.sh --tests oltp_point_select --threads 1 --rounds 3   # median of 3
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --quiet --release --bin rwsplit --example compare
target=${CARGO_TARGET_DIR:-target}
# 1,000 idle connections are a socket each in the driver and two in each proxy.
ulimit -n 65536 2>/dev/null || true
exec "$target/release/examples/compare" --rwsplit "$target/release/rwsplit" "$@"
