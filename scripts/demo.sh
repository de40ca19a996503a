#!/usr/bin/env bash
# Quick start: installs what is missing, builds rwsplit, starts a local replicated MariaDB
# cluster (mysql-0 primary on 127.0.10.1:3306, replicas mysql-1 and mysql-2 on .2 and .3),
# runs rwsplit in front of it on 127.0.0.1:3306 and shows the mariadb client talking through
# it. Runs until Ctrl-C. Options: --listen HOST:PORT, --admin-listen HOST:PORT (default
# 127.0.0.1:9090), --replicas N, --exit (stop after the demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --quiet --bin rwsplit --example local_cluster
exec target/debug/examples/local_cluster --proxy target/debug/rwsplit "$@"
