#!/usr/bin/env bash
# Installs the system packages the local cluster, the tests and the benchmarks need:
# MariaDB server, client and backup tool (the local cluster) and sysbench (load tests).
# Does nothing when everything is already installed.
set -euo pipefail

declare -A provides=(
  [mariadb-server]=/usr/sbin/mariadbd
  [mariadb-client]=/usr/bin/mariadb
  [mariadb-backup]=/usr/bin/mariadb-backup
  [sysbench]=/usr/bin/sysbench
)
need=()
for package in "${!provides[@]}"; do
  [ -x "${provides[$package]}" ] || need+=("$package")
done
[ ${#need[@]} -eq 0 ] && exit 0

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
