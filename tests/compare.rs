//! The comparison driver (`benches/compare/`, run by `benches/compare.sh`) in its quick mode,
//! so that it keeps working: a cluster of its own, HAProxy and the rwsplit binary, two rounds of
//! short runs per target, a few idle connections. What a user reads in its table must be there
//! and make sense: a row per target with statements per second and how far the rounds spread,
//! no errors, the proxies' CPU and memory, the idle-connection memory and the targets'
//! verdicts.

#[allow(dead_code)]
#[path = "../benches/compare/main.rs"]
mod compare;

use clap::Parser;
use compare::Target;

const NET: &str = "127.0.41";

#[test]
fn a_quick_comparison_measures_every_target() {
    let args = compare::Args::parse_from([
        "compare",
        "--quick",
        "--net",
        NET,
        "--idle",
        "20",
        "--rounds",
        "2",
        "--rwsplit",
        env!("CARGO_BIN_EXE_rwsplit"),
    ]);
    let mut out = Vec::new();
    let report =
        compare::run(&args, &mut out).unwrap_or_else(|e| panic!("the driver failed: {e:#}"));
    let table = String::from_utf8(out).expect("UTF-8 table");
    eprintln!("{table}");

    assert_eq!(report.cells.len(), 1, "one cell in quick mode");
    let (cell, rows) = &report.cells[0];
    assert_eq!(
        (cell.test.as_str(), cell.ps.as_str(), cell.threads),
        ("oltp_point_select", "auto", 1)
    );
    let targets: Vec<Target> = rows.iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        compare::TARGETS,
        "a row per target, in the table's order"
    );
    for row in rows {
        let name = row.target.name();
        assert_eq!(row.runs.len(), 2, "{name}: one run per round");
        assert_eq!(row.positions.len(), 2, "{name}: {:?}", row.positions);
        assert_ne!(
            row.positions[0], row.positions[1],
            "{name}: the order rotates between rounds"
        );
        for r in &row.runs {
            assert!(r.failure.is_none(), "{name}: {:?}", r.failure);
            assert!(
                r.qps.is_some_and(|q| q > 0.0),
                "{name}: no statements per second"
            );
            // The histogram read the way sysbench reads it gives the percentile it printed.
            let p95 = r.p95_ms.expect("p95");
            let reported = r.reported_p95_ms.expect("sysbench's own 95th percentile");
            assert!(
                (p95 - reported).abs() < 0.006,
                "{name}: p95 {p95} ms from the histogram, {reported} ms from sysbench"
            );
        }
        let (lowest, highest) = row.qps_range().expect("every round's QPS");
        let r = &row.result;
        let median = r.qps.expect("the median QPS");
        assert!(
            lowest <= median && median <= highest,
            "{name}: {median} outside {lowest}..{highest}"
        );
        assert_eq!(
            (r.errors, r.reconnects),
            (0, 0),
            "{name}: errors {:?}",
            r.error_codes
        );
        let (p95, p99) = (r.p95_ms.expect("p95"), r.p99_ms.expect("p99"));
        assert!(
            0.0 < p95 && p95 <= p99,
            "{name}: p95 {p95} ms, p99 {p99} ms"
        );
        let statements: u64 = row.runs.iter().map(|r| r.statements.unwrap()).sum();
        assert_eq!(
            r.statements,
            Some(statements),
            "{name}: both rounds' statements"
        );
        let proxied = row.target != Target::Direct;
        assert_eq!(
            r.cpu_us_per_statement.is_some_and(|us| us > 0.0),
            proxied,
            "{name}: CPU per statement {:?}",
            r.cpu_us_per_statement
        );
        // A proxy needs some memory, and not gigabytes for one connection.
        assert_eq!(
            r.rss_kib.is_some_and(|kib| kib > 1024 && kib < 1024 * 1024),
            proxied,
            "{name}: RSS {:?} KiB",
            r.rss_kib
        );
        let line = table
            .lines()
            .find(|l| {
                l.starts_with("oltp_point_select") && l.contains(row.target.label(&cell.test))
            })
            .unwrap_or_else(|| panic!("no table row for {name}"));
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(columns[4], "2", "{name}: rounds in the n column: {line}");
        let qps: f64 = columns[6].parse().unwrap();
        assert!(qps > 0.0, "{name}: {line}");
        assert!(columns[7].ends_with('%'), "{name}: no QPS spread: {line}");
        if row.target == Target::Rwsplit {
            let (lo, hi) = columns[15]
                .split_once('-')
                .unwrap_or_else(|| panic!("no per-round qps/hap range: {line}"));
            let (lo, hi): (f64, f64) = (lo.parse().unwrap(), hi.parse().unwrap());
            assert!(0.0 < lo && lo <= hi, "{line}");
        }
    }

    let idle: Vec<Target> = report.idle.iter().map(|i| i.target).collect();
    assert_eq!(idle, [Target::Haproxy, Target::Rwsplit]);
    for i in &report.idle {
        assert_eq!(
            (i.opened, i.alive),
            (20, 20),
            "{:?}: {:?}",
            i.target,
            i.error
        );
        assert!(i.rss_with_kib > 0 && i.rss_before_kib > 0, "{i:?}");
        assert!(i.kib_per_connection().is_some(), "{i:?}");
    }
    assert!(report.clean(), "{table}");
    assert!(
        table.contains("no errors, reconnects or failed runs"),
        "{table}"
    );
    for target in [
        "rwsplit CPU per point select",
        "QPS at 1 thread",
        "per idle client connection",
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.contains(target) && (l.contains("PASS") || l.contains("MISS"))),
            "no verdict on {target}:\n{table}"
        );
    }
    // Splitting happened: rwsplit's replicas ran the reads.
    let replica_statements: u64 = report
        .rwsplit_statements
        .iter()
        .filter(|(name, _)| !name.starts_with("mysql-0"))
        .map(|(_, n)| n)
        .sum();
    assert!(replica_statements > 100, "{:?}", report.rwsplit_statements);
}
