#!/usr/bin/env bash
# The proxy's own work per statement, in instructions: runs the release binary under
# callgrind in front of the local cluster and sysbench through it, twice (N1 and N2
# statements), and reports (instructions at N2 - instructions at N1) / (N2 - N1), which
# leaves out start-up, logins and background work. Unlike time, the figure hardly depends
# on what else the machine is doing (a few percent between runs, with how often the runtime's
# workers sleep), so two builds can be compared on a shared machine.
# Only user space is counted: the kernel's share of a statement (the socket calls) is not.
#
#   bash benches/callgrind.sh [--net A.B.C] [--events N1,N2] [--test oltp_point_select]
#
# Prints, per prepared-statement mode, the instructions per statement and the functions
# that executed the most of them; the callgrind files stay in target/callgrind/ for
# callgrind_annotate or kcachegrind.
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
  [ -n "$proxy_pid" ] && kill -INT "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
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

sysbench_base=(sysbench --db-driver=mysql --mysql-user=app --mysql-password=app-password
  --mysql-db=app --tables=1 --table-size=10000)
timeout 300 "${sysbench_base[@]}" --mysql-host="$net.1" --mysql-port=3306 "$test" prepare >/dev/null

# Runs the proxy under callgrind for `events` statements; sets `queries` and `instructions`.
measure() {
  local ps=$1 events=$2 file=$out/$test.$1.$2.out
  valgrind --tool=callgrind --callgrind-out-file="$file" \
    target/release/rwsplit --config "$out/rwsplit.toml" >"$out/proxy.log" 2>&1 &
  proxy_pid=$!
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.3
  done
  # With --events the run ends after that many transactions; its statements are in the report.
  timeout 600 "${sysbench_base[@]}" --mysql-host=127.0.0.1 --mysql-port=$port --threads=4 \
    --events="$events" --time=0 --db-ps-mode="$ps" "$test" run >"$out/sysbench.log"
  if ! grep -qE "ignored errors: +0 " "$out/sysbench.log" ||
    ! grep -qE "reconnects: +0 " "$out/sysbench.log"; then
    echo "sysbench saw errors through the proxy:" >&2
    cat "$out/sysbench.log" >&2
    exit 1
  fi
  kill -INT "$proxy_pid"
  wait "$proxy_pid" || true
  proxy_pid=
  queries=$(awk '/queries:/ {print $2}' "$out/sysbench.log")
  instructions=$(callgrind_annotate "$file" 2>/dev/null |
    awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
}

echo "rwsplit $(git rev-parse --short HEAD), $test, user-space instructions per statement"
for ps in disable auto; do
  measure "$ps" "$n1"
  q1=$queries i1=$instructions
  measure "$ps" "$n2"
  q2=$queries i2=$instructions
  echo
  echo "db-ps-mode=$ps: $(((i2 - i1) / (q2 - q1))) instructions per statement" \
    "($q1 and $q2 statements)"
  callgrind_annotate "$out/$test.$ps.$n2.out" 2>/dev/null |
    awk '/file:function/ {on = 1; next} on && NF && shown++ < 15 {print substr($0, 1, 150)}'
done
