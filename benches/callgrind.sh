#!/usr/bin/env bash
# The proxy's own work per statement, in instructions: runs the release binary under
# callgrind in front of the local cluster and sysbench through it, twice (N1 and N2
# statements), and reports (instructions at N2 - instructions at N1) / (N2 - N1), which
# leaves out start-up, logins and background work. Unlike time, the figure hardly depends
# on what else the machine is doing (a few percent between runs, with how often the runtime's
# workers sleep), so two builds can be compared on a shared machine.
# Only user space is counted: the kernel's share of a statement (the socket calls) is not.
# HAProxy in TCP mode over the same servers is measured the same way, as the baseline.
#
#   bash benches/callgrind.sh [--net A.B.C] [--events N1,N2] [--test oltp_point_select]
#
# Prints, per prepared-statement mode, rwsplit's and HAProxy's instructions per statement,
# their ratio, and the functions of rwsplit that executed the most; the callgrind files stay
# in target/callgrind/ for callgrind_annotate or kcachegrind.
set -euo pipefail
cd "$(dirname "$0")/.."

net=127.0.42
events=5000,25000
test=oltp_point_select
while [ $# -gt 0 ]; do
  case "$1" in
    --net) net=$2; shift 2 ;;
    --events) events=$2; shift 2 ;;
    --test) test=$2; shift 2 ;;
    *) echo "callgrind.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
n1=${events%,*}
n2=${events#*,}

bash scripts/install-deps.sh
bash scripts/install-deps.sh profile
cargo build --quiet --release --bin rwsplit
cargo build --quiet --example local_cluster

out=target/callgrind
mkdir -p "$out"
cluster_log=$out/cluster.log
target/debug/examples/local_cluster --net "$net" >"$cluster_log" 2>&1 &
cluster_pid=$!
proxy_pid=
cleanup() {
  [ -n "$proxy_pid" ] && kill -TERM "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
  kill -INT "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null
  true
}
trap cleanup EXIT
for _ in $(seq 120); do
  grep -q "press Ctrl-C" "$cluster_log" && break
  kill -0 "$cluster_pid" 2>/dev/null || { cat "$cluster_log" >&2; exit 1; }
  sleep 1
done
grep -q "press Ctrl-C" "$cluster_log" || { echo "cluster did not start" >&2; exit 1; }

port=4499
haproxy_port=4498
# Servers named directly and no health checks: nothing runs beside the statements but the
# runtime itself.
cat >"$out/rwsplit.toml" <<EOF
[proxy]
listen = '127.0.0.1:$port'
[primary]
name = 'mysql-0'
address = '$net.1:3306'
[[replicas]]
name = 'mysql-1'
address = '$net.2:3306'
[[replicas]]
name = 'mysql-2'
address = '$net.3:3306'
[[users]]
name = 'app'
password = 'app-password'
EOF
# The baseline, measured the same way: HAProxy in TCP mode over every pod, as
# benches/compare.sh runs it in the role of the mysql-read Service.
cat >"$out/haproxy.cfg" <<EOF
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen mysql-read
    bind 127.0.0.1:$haproxy_port
    balance roundrobin
    server mysql-0 $net.1:3306
    server mysql-1 $net.2:3306
    server mysql-2 $net.3:3306
EOF

sysbench_base=(sysbench --db-driver=mysql --mysql-user=app --mysql-password=app-password
  --mysql-db=app --tables=1 --table-size=10000)
timeout 300 "${sysbench_base[@]}" --mysql-host="$net.1" --mysql-port=3306 "$test" prepare >/dev/null

# Runs a proxy (the command after the first four arguments, listening on 127.0.0.1:port)
# under callgrind for `events` statements; sets `queries` and `instructions`.
measure() {
  local name=$1 ps=$2 events=$3 listen_port=$4
  shift 4
  local file=$out/$name.$test.$ps.$events.out
  valgrind --tool=callgrind --callgrind-out-file="$file" "$@" >"$out/$name.log" 2>&1 &
  proxy_pid=$!
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$listen_port") 2>/dev/null && break
    sleep 0.3
  done
  # With --events the run ends after that many transactions; its statements are in the report.
  timeout 600 "${sysbench_base[@]}" --mysql-host=127.0.0.1 --mysql-port="$listen_port" \
    --threads=4 --events="$events" --time=0 --db-ps-mode="$ps" "$test" run >"$out/sysbench.log"
  if ! grep -qE "ignored errors: +0 " "$out/sysbench.log" ||
    ! grep -qE "reconnects: +0 " "$out/sysbench.log"; then
    echo "sysbench saw errors through $name:" >&2
    cat "$out/sysbench.log" >&2
    exit 1
  fi
  # HAProxy stops at once on TERM (under valgrind it ignores INT); rwsplit drains, with no
  # session left.
  kill -TERM "$proxy_pid"
  wait "$proxy_pid" || true
  proxy_pid=
  queries=$(awk '/queries:/ {print $2}' "$out/sysbench.log")
  instructions=$(callgrind_annotate "$file" 2>/dev/null |
    awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
}

# One proxy's instructions per statement, the difference between its two runs; sets
# `per_statement` and `counted`.
per_statement() {
  local name=$1 ps=$2 listen_port=$3
  shift 3
  measure "$name" "$ps" "$n1" "$listen_port" "$@"
  local q1=$queries i1=$instructions
  measure "$name" "$ps" "$n2" "$listen_port" "$@"
  per_statement=$(((instructions - i1) / (queries - q1)))
  counted="$q1 and $queries statements"
}

echo "rwsplit $(git rev-parse --short HEAD) and $(haproxy -v | head -n 1 | cut -d' ' -f1-3)," \
  "$test, user-space instructions per statement"
for ps in disable auto; do
  per_statement rwsplit "$ps" "$port" target/release/rwsplit --config "$out/rwsplit.toml"
  rwsplit=$per_statement
  per_statement haproxy "$ps" "$haproxy_port" haproxy -db -f "$out/haproxy.cfg"
  haproxy=$per_statement
  echo
  echo "db-ps-mode=$ps: rwsplit $rwsplit, HAProxy $haproxy instructions per statement" \
    "(rwsplit/HAProxy $(awk -v r="$rwsplit" -v h="$haproxy" 'BEGIN {printf "%.2f", r / h}');" \
    "$counted)"
  echo "rwsplit's functions that executed the most:"
  callgrind_annotate "$out/rwsplit.$test.$ps.$n2.out" 2>/dev/null |
    awk '/file:function/ {on = 1; next} on && NF && shown++ < 15 {print substr($0, 1, 150)}'
done
