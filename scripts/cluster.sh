#!/usr/bin/env bash
# Starts the local replicated MariaDB cluster alone (mysql-0 primary on 127.0.10.1:3306,
# replicas on 127.0.10.2, .3, ...) and keeps it running until Ctrl-C.
# Options: --net A.B.C (addresses A.B.C.1..), --replicas N, --exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --quiet --example local_cluster
exec target/debug/examples/local_cluster "$@"
