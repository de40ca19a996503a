//! sysbench through the proxy in front of the primary and two replicas: a real
//! multi-threaded OLTP load must see no error and no reconnect, transactions must run on the
//! primary, reads outside them on the replicas (spread over both), and nothing written
//! through the proxy may go missing.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::*;

const NET: &str = "127.0.22";
const TABLES: usize = 4;
const THREADS: &str = "--threads=16";
const TIME: &str = "--time=30";

/// The runs share one cluster and compare its servers' counters: one at a time.
static SERIAL: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);

/// Runs sysbench on this file's tables; panics with the output if it fails.
async fn sysbench(addr: SocketAddr, test: &str, command: &str, extra: &[&str]) -> String {
    let tables = format!("--tables={TABLES}");
    let mut args = vec![tables.as_str(), "--table-size=20000"];
    args.extend_from_slice(extra);
    let (ok, report) = support::sysbench::run(addr, test, command, &args).await;
    assert!(ok, "sysbench {test} {command} failed:\n{report}");
    report
}

/// What the servers counted, per server.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// SELECTs in the text protocol.
    reads: u64,
    /// Prepared statements executed (a prepared SELECT counts here, not in Com_select).
    executes: u64,
    /// The application's INSERT/UPDATE/DELETE statements (not what replication applied).
    writes: u64,
}

/// Reading the user statistics is a SELECT itself: before a run it is read first, after a
/// run last, so that it never lands inside the counted interval.
fn counts(cluster: &Cluster, statistics_first: bool) -> Vec<Counts> {
    (0..cluster.servers.len())
        .map(|k| {
            let app = statistics_first.then(|| app_commands(cluster, k));
            let out = cluster
                .sql(
                    k,
                    "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_select', 'Com_stmt_execute')",
                )
                .unwrap();
            let app = app.unwrap_or_else(|| app_commands(cluster, k));
            let values: HashMap<&str, u64> = out
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(name, value)| (name, value.trim().parse().unwrap()))
                .collect();
            Counts {
                reads: values["Com_select"],
                executes: values["Com_stmt_execute"],
                writes: app.updates,
            }
        })
        .collect()
}

fn deltas(before: &[Counts], after: &[Counts]) -> Vec<Counts> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| Counts {
            reads: a.reads - b.reads,
            executes: a.executes - b.executes,
            writes: a.writes - b.writes,
        })
        .collect()
}

/// Statements each server ran: SELECTs or prepared executes (a prepared SELECT counts as
/// an execute, not in Com_select).
fn statements(c: &Counts) -> u64 {
    c.reads + c.executes
}

/// The proxy in front of the shared cluster, with sysbench's tables in place.
async fn setup() -> (
    tokio::sync::MutexGuard<'static, bool>,
    &'static Cluster,
    SocketAddr,
) {
    let mut prepared = SERIAL.lock().await;
    let cluster = shared_cluster(NET);
    let addr = start_proxy(split_config(cluster, "")).await;
    if !*prepared {
        sysbench(addr, "oltp_read_write", "prepare", &[]).await;
        *prepared = true;
    }
    cluster
        .wait_replicas_caught_up(Duration::from_secs(60))
        .unwrap();
    (prepared, cluster, addr)
}

/// One sysbench run through the proxy; returns what each server did meanwhile. Errors other
/// than `allowed` fail the test, as does any reconnect.
async fn run(
    cluster: &Cluster,
    addr: SocketAddr,
    test: &str,
    extra: &[&str],
    allowed: &[u16],
) -> Vec<Counts> {
    let ignore = format!(
        "--mysql-ignore-errors={}",
        allowed
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut args = vec![THREADS, TIME, "--report-interval=0", "--verbosity=5"];
    if !allowed.is_empty() {
        args.push(&ignore);
    }
    args.extend_from_slice(extra);
    let before = counts(cluster, true);
    let report = sysbench(addr, test, "run", &args).await;
    let counts = deltas(&before, &counts(cluster, false));
    let transactions = support::sysbench::counter(&report, "transactions:");
    assert!(
        transactions > 100,
        "only {transactions} events in {test} {extra:?}:\n{report}"
    );
    // sysbench ignores (and retries) exactly the errors in --mysql-ignore-errors; any
    // other error ends the run, which `sysbench` reports as a failure.
    let ignored_count = support::sysbench::counter(&report, "ignored errors:");
    assert!(
        !allowed.is_empty() || ignored_count == 0,
        "{test} {extra:?}: {ignored_count} errors:\n{report}"
    );
    let ignored = support::sysbench::ignored_error_codes(&report);
    assert!(
        ignored.iter().all(|code| allowed.contains(code)),
        "{test} {extra:?}: errors {ignored:?}, allowed only {allowed:?}:\n{report}"
    );
    assert_eq!(
        support::sysbench::counter(&report, "reconnects:"),
        0,
        "{test} {extra:?}:\n{report}"
    );
    support::cluster::note(&format!(
        "sysbench {test} {extra:?}: {transactions} events, {} server-side conflicts retried; \
         per server (statements, writes): {:?}",
        ignored_count,
        counts
            .iter()
            .map(|c| (statements(c), c.writes))
            .collect::<Vec<_>>()
    ));
    counts
}

/// Every write went through the proxy to the primary and replicated: all servers agree.
fn assert_nothing_lost(cluster: &Cluster) {
    cluster
        .wait_replicas_caught_up(Duration::from_secs(60))
        .unwrap();
    let tables: Vec<String> = (1..=TABLES).map(|i| format!("app.sbtest{i}")).collect();
    let checksum = format!("CHECKSUM TABLE {}", tables.join(", "));
    let on_primary = cluster.sql(0, &checksum).unwrap();
    assert_eq!(on_primary.lines().count(), TABLES);
    for k in 1..cluster.servers.len() {
        assert_eq!(
            cluster.sql(k, &checksum).unwrap(),
            on_primary,
            "mysql-{k} differs"
        );
    }
}

const PS_MODES: [&[&str]; 2] = [&[], &["--db-ps-mode=disable"]];

/// By default sysbench wraps each event in BEGIN ... COMMIT: all of it is the primary's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_run_on_the_primary() {
    let (_serial, cluster, addr) = setup().await;
    for test in ["oltp_read_only", "oltp_read_write", "oltp_write_only"] {
        for mode in PS_MODES {
            // Concurrent transactions on the same rows deadlock now and then directly
            // against the server too (1213); the server reports them and sysbench retries.
            let counts = run(cluster, addr, test, mode, &[1213]).await;
            assert!(
                statements(&counts[0]) + counts[0].writes > 0,
                "{test} {mode:?}"
            );
            for (k, c) in counts.iter().enumerate().skip(1) {
                assert_eq!(
                    (statements(c), c.writes),
                    (0, 0),
                    "{test} {mode:?}: mysql-{k} ran statements of a transaction"
                );
            }
        }
    }
    assert_nothing_lost(cluster);
}

/// Reads outside transactions go to the replicas, spread over both; writes stay on the
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_outside_transactions_are_spread_over_the_replicas() {
    let (_serial, cluster, addr) = setup().await;
    let skip_trx = "--skip_trx=on";
    for (test, skip) in [
        ("oltp_point_select", None),
        ("oltp_read_only", Some(skip_trx)),
    ] {
        for mode in PS_MODES {
            let mut extra = mode.to_vec();
            extra.extend(skip);
            let counts = run(cluster, addr, test, &extra, &[]).await;
            let total: u64 = counts.iter().map(statements).sum();
            let on_replicas = statements(&counts[1]) + statements(&counts[2]);
            assert!(
                on_replicas * 100 >= total * 95,
                "{test} {extra:?}: replicas served {on_replicas} of {total} reads: {counts:?}"
            );
            for k in 1..=2 {
                assert!(
                    statements(&counts[k]) * 3 >= total,
                    "{test} {extra:?}: mysql-{k} served under a third: {counts:?}"
                );
            }
        }
    }
    for mode in PS_MODES {
        let mut extra = mode.to_vec();
        extra.push(skip_trx);
        // Without transactions sysbench's threads race on the same ids' delete + insert:
        // duplicate keys (1062) and deadlocks happen directly against the server too.
        let counts = run(cluster, addr, "oltp_read_write", &extra, &[1062, 1213]).await;
        assert!(counts[0].writes > 0, "{extra:?}: {counts:?}");
        for (k, c) in counts.iter().enumerate().skip(1) {
            assert_eq!(c.writes, 0, "{extra:?}: a write ran on mysql-{k}");
            assert!(statements(c) > 0, "{extra:?}: mysql-{k} served no read");
        }
    }
    assert_nothing_lost(cluster);
}
