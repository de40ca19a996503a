#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against a local MariaDB cluster that the
# tests start and stop themselves. Installs what they need first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --all-targets "$@"
# The servers stop when the test processes exit; make sure none is left behind.
for _ in $(seq 50); do
  pgrep -f "target/rwsplit-cluster" >/dev/null || exit 0
  sleep 0.2
done
echo "test.sh: cluster servers still running after the tests:" >&2
pgrep -af "target/rwsplit-cluster" >&2
exit 1
