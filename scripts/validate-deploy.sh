#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/ without a cluster: renders them with kustomize
# (and the overlays deploy/README.md shows), validates every object against the Kubernetes
# API schemas (unknown fields are errors), checks references between objects and the
# containers' shell scripts, and runs `rwsplit check` on the configuration the proxy's pods
# get. Installs its tools on first use (scripts/install-deps.sh deploy); prints nothing when
# all is well. Details: scripts/validate-deploy.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh deploy

# The binary cargo builds, wherever CARGO_TARGET_DIR or a cargo config puts it.
rwsplit=$(cargo build --quiet --bin rwsplit --message-format=json-render-diagnostics |
  target/deploy-tools/venv/bin/python -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "rwsplit" \
            and message.get("executable"):
        print(message["executable"])')
if [ -z "$rwsplit" ]; then
  echo "validate-deploy: cargo built no rwsplit binary" >&2
  exit 1
fi

exec target/deploy-tools/venv/bin/python scripts/validate-deploy.py \
  --kustomize target/deploy-tools/kustomize --rwsplit "$rwsplit"
