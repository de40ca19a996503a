//! The report: one table of every run, the idle-connection memory, and the targets read off
//! them. Ratios compare figures of the same cell, measured minutes apart at most.

use std::io::Write;

use super::{Cell, IdleResult, Report, Row, Target, measure::clock_ticks_per_second};

/// Where and with what the numbers were made.
pub struct Context {
    pub commit: String,
    pub load_start: String,
    pub load_end: String,
    pub versions: Vec<String>,
}

pub const HEADER: [&str; 18] = [
    "test",
    "ps",
    "thr",
    "target",
    "n",
    "#",
    "qps",
    "qps_spread",
    "p95ms",
    "p99ms",
    "errors",
    "deadlocks",
    "cpu_us",
    "rss_MiB",
    "qps/hap",
    "min-max",
    "qps/direct",
    "cpu/hap",
];
/// Columns aligned left (text); the rest are numbers, aligned right.
const LEFT: usize = 4;

/// The targets the project measures itself by.
const CPU_PER_POINT_SELECT: f64 = 1.5;
const POINT_SELECT_QPS: f64 = 0.9;
const KIB_PER_IDLE_CONNECTION: f64 = 64.0;

pub fn print(out: &mut dyn Write, report: &Report, context: &Context) -> std::io::Result<()> {
    let s = &report.settings;
    writeln!(out, "rwsplit comparison, commit {}", context.commit)?;
    writeln!(
        out,
        "load average (1/5/15 min): {} at start, {} at end; {} CPUs",
        context.load_start,
        context.load_end,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(
        out,
        "settings: {} s per run, {} round(s) per cell, 1 table x {} rows, primary + {} replicas on {}.x, {} s warm-up, \
         {} idle connections per proxy",
        s.time, s.rounds, s.table_size, s.replicas, s.net, s.warmup, s.idle,
    )?;
    writeln!(
        out,
        "  sysbench --db-ps-mode={} --threads={} --histogram=on --mysql-ignore-errors=all; \
         rwsplit proxy.max_connections = {m}, HAProxy maxconn = {m}, servers max_connections = 2000; \
         CPU times in ticks of 1/{} s",
        s.ps.join("|"),
        s.threads
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("|"),
        clock_ticks_per_second(),
        m = s.max_connections,
    )?;
    writeln!(out, "versions: {}", context.versions.join("; "))?;
    writeln!(out)?;

    let mut rows = vec![HEADER.iter().map(|h| (*h).to_owned()).collect()];
    for (cell, cell_rows) in &report.cells {
        for row in cell_rows {
            rows.push(table_row(cell, row, cell_rows));
        }
    }
    write_aligned(out, &rows, LEFT)?;
    writeln!(out)?;
    for line in LEGEND {
        writeln!(out, "{line}")?;
    }

    let details = error_details(report);
    if !details.is_empty() {
        writeln!(out, "\nerrors by run:")?;
        for line in details {
            writeln!(out, "  {line}")?;
        }
    }

    if !report.idle.is_empty() {
        writeln!(
            out,
            "\nidle client connections (logged in through the proxy, then no statement):"
        )?;
        let mut rows = vec![
            [
                "proxy",
                "opened",
                "alive",
                "rss_MiB_before",
                "rss_MiB_with",
                "rss_MiB_after",
                "KiB/conn",
            ]
            .iter()
            .map(|h| (*h).to_owned())
            .collect(),
        ];
        for idle in &report.idle {
            rows.push(idle_row(idle));
        }
        write_aligned(out, &rows, 1)?;
        for idle in &report.idle {
            if let Some(error) = &idle.error {
                writeln!(out, "  {}: a login failed: {error}", idle.target.name())?;
            }
        }
    }

    if !report.rwsplit_statements.is_empty() {
        let by_backend: Vec<String> = report
            .rwsplit_statements
            .iter()
            // mysql-1.mysql.default.svc.cluster.local: the pod's name is enough.
            .map(|(name, n)| format!("{} {n}", name.split('.').next().unwrap_or(name)))
            .collect();
        writeln!(
            out,
            "\nrwsplit's statements by backend over the whole run: {}",
            by_backend.join(", ")
        )?;
    }
    if report.settings.targets.contains(&Target::Rwsplit) {
        writeln!(
            out,
            "rwsplit logged {} line(s) at WARN or ERROR",
            report.rwsplit_warnings.len()
        )?;
        for line in report.rwsplit_warnings.iter().take(10) {
            writeln!(out, "  {line}")?;
        }
    }

    writeln!(
        out,
        "\ntargets (informational; the exit status is about errors only):"
    )?;
    for line in targets(report) {
        writeln!(out, "  {line}")?;
    }
    let verdict = if report.clean() {
        "no errors, reconnects or failed runs"
    } else {
        "ERRORS: see the errors column and the list above"
    };
    writeln!(out, "\n{verdict}")?;
    Ok(())
}

const LEGEND: [&str; 10] = [
    "n: rounds, each running the cell's targets back to back; #: the row's position in each round (the order rotates from round to round and cell to cell)",
    "qps: statements per second, the median of the rounds'; qps_spread: (highest - lowest) / median of the rounds' qps",
    "p95ms, p99ms: latency percentiles of sysbench's events, from its histograms of every round added together",
    "errors: errors sysbench counted, deadlocks aside, + reconnects, over all rounds (FAILED: a run did not complete)",
    "deadlocks: transactions the server aborted (1213) and sysbench retried, over all rounds; direct clients get them too",
    "cpu_us: the proxy process's user + system CPU per statement, in microseconds: all rounds' CPU over all their statements",
    "rss_MiB: the proxy process's largest resident memory seen during any round (proxies restarted after the idle test)",
    "qps/hap, qps/direct, cpu/hap: this row's figure divided by HAProxy's / the direct run's of the same cell; \
     min-max: the lowest and highest qps/hap of single rounds",
    "haproxy:read balances connections over all pods like mysql-read; haproxy:primary forwards to the primary only (oltp_read_write writes)",
    "sysbench runs oltp_read_only and oltp_read_write events in transactions, which rwsplit keeps on the primary; oltp_point_select reads go to its replicas",
];

fn table_row(cell: &Cell, row: &Row, cell_rows: &[Row]) -> Vec<String> {
    let r = &row.result;
    let of = |target: Target| cell_rows.iter().find(|o| o.target == target);
    let ratio = |mine: Option<f64>, theirs: Option<f64>| match (mine, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    };
    let haproxy = of(Target::Haproxy);
    let direct = of(Target::Direct);
    let proxied = row.target != Target::Direct;
    let rounds = row.runs.len();
    let (qps_hap, hap_range, cpu_hap) = match (row.target, haproxy) {
        (Target::Rwsplit, Some(h)) => (
            ratio(r.qps, h.result.qps),
            match row.qps_ratio_range(h) {
                Some((lo, hi)) if rounds > 1 => format!("{lo:.2}-{hi:.2}"),
                _ => "-".to_owned(),
            },
            ratio(r.cpu_us_per_statement, h.result.cpu_us_per_statement),
        ),
        _ => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
    };
    let qps_direct = match (proxied, direct) {
        (true, Some(d)) => ratio(r.qps, d.result.qps),
        _ => "-".to_owned(),
    };
    let qps_spread = match (row.qps_range(), r.qps) {
        (Some((lo, hi)), Some(median)) if rounds > 1 && median > 0.0 => {
            format!("{:.0}%", (hi - lo) / median * 100.0)
        }
        _ => "-".to_owned(),
    };
    let errors = if r.failure.is_some() {
        "FAILED".to_owned()
    } else {
        r.failures().to_string()
    };
    let na = |value: Option<String>| {
        if proxied {
            value.unwrap_or_else(|| "?".into())
        } else {
            "n/a".into()
        }
    };
    let positions: Vec<String> = row.positions.iter().map(usize::to_string).collect();
    vec![
        cell.test.clone(),
        cell.ps.clone(),
        cell.threads.to_string(),
        row.target.label(&cell.test).to_owned(),
        rounds.to_string(),
        positions.join(","),
        number(r.qps, 0),
        qps_spread,
        number(r.p95_ms, 2),
        number(r.p99_ms, 2),
        errors,
        r.deadlocks().to_string(),
        na(r.cpu_us_per_statement.map(|v| format!("{v:.1}"))),
        na(r.rss_kib.map(|kib| format!("{:.1}", kib as f64 / 1024.0))),
        qps_hap,
        hap_range,
        qps_direct,
        cpu_hap,
    ]
}

fn idle_row(idle: &IdleResult) -> Vec<String> {
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    vec![
        idle.target.name().to_owned(),
        format!("{}/{}", idle.opened, idle.wanted),
        idle.alive.to_string(),
        mib(idle.rss_before_kib),
        mib(idle.rss_with_kib),
        mib(idle.rss_after_kib),
        number(idle.kib_per_connection(), 1),
    ]
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn write_aligned(out: &mut dyn Write, rows: &[Vec<String>], left: usize) -> std::io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, text)| {
                if c < left {
                    format!("{text:<w$}", w = widths[c])
                } else {
                    format!("{text:>w$}", w = widths[c])
                }
            })
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

/// Each run that failed, reconnected or saw errors other than deadlocks, with the codes
/// sysbench logged.
fn error_details(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    for (cell, rows) in &report.cells {
        for row in rows {
            for (round, r) in row.runs.iter().enumerate() {
                let of_rounds = if row.runs.len() > 1 {
                    format!(" round {}", round + 1)
                } else {
                    String::new()
                };
                let name = format!(
                    "{} ps={} threads={} {}{of_rounds}",
                    cell.test,
                    cell.ps,
                    cell.threads,
                    row.target.label(&cell.test)
                );
                if let Some(failure) = &r.failure {
                    lines.push(format!("{name}: {failure}"));
                }
                if r.failures() > 0 {
                    let codes: Vec<String> = r
                        .error_codes
                        .iter()
                        .map(|(code, n)| {
                            let what = if *code == 1213 { " (deadlock)" } else { "" };
                            format!("{n} x error {code}{what}")
                        })
                        .collect();
                    lines.push(format!(
                        "{name}: {} errors ({}), {} reconnects",
                        r.errors,
                        codes.join(", "),
                        r.reconnects
                    ));
                }
            }
        }
    }
    lines
}

/// PASS or MISS for each target, with the worst cell behind it.
fn targets(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    let point_selects: Vec<(&Cell, &Row, &Row)> = report
        .cells
        .iter()
        .filter(|(cell, _)| cell.test == "oltp_point_select")
        .filter_map(|(cell, rows)| {
            let find = |t: Target| rows.iter().find(|r| r.target == t);
            Some((cell, find(Target::Rwsplit)?, find(Target::Haproxy)?))
        })
        .collect();
    let cpu: Vec<(f64, &Cell)> = point_selects
        .iter()
        .filter_map(|(cell, rw, hap)| {
            Some((
                rw.result.cpu_us_per_statement? / hap.result.cpu_us_per_statement?,
                *cell,
            ))
        })
        .collect();
    lines.push(verdict(
        &format!("rwsplit CPU per point select <= {CPU_PER_POINT_SELECT}x HAProxy's"),
        worst(cpu, true).map(|(r, cell)| {
            (
                r <= CPU_PER_POINT_SELECT,
                format!("worst {r:.2}x ({})", where_(cell)),
            )
        }),
    ));
    for threads in [1, 16] {
        let qps: Vec<(f64, (&Cell, String))> = point_selects
            .iter()
            .filter(|(cell, _, _)| cell.threads == threads)
            .filter_map(|(cell, rw, hap)| {
                // How far single rounds strayed says whether the median can be trusted.
                let rounds = match rw.qps_ratio_range(hap) {
                    Some((lo, hi)) if rw.runs.len() > 1 => {
                        format!("; {} rounds {lo:.2}-{hi:.2}x", rw.runs.len())
                    }
                    _ => String::new(),
                };
                Some((rw.result.qps? / hap.result.qps?, (*cell, rounds)))
            })
            .collect();
        lines.push(verdict(
            &format!(
                "oltp_point_select QPS at {threads} thread{} >= {POINT_SELECT_QPS}x HAProxy's",
                if threads == 1 { "" } else { "s" }
            ),
            worst(qps, false).map(|(r, (cell, rounds))| {
                (
                    r >= POINT_SELECT_QPS,
                    format!("worst {r:.2}x ({}{rounds})", where_(cell)),
                )
            }),
        ));
    }
    let idle = report
        .idle
        .iter()
        .find(|i| i.target == Target::Rwsplit)
        .and_then(|i| i.kib_per_connection().map(|kib| (kib, i.opened)));
    lines.push(verdict(
        &format!("rwsplit RSS per idle client connection <= {KIB_PER_IDLE_CONNECTION} KiB"),
        idle.map(|(kib, n)| {
            (
                kib <= KIB_PER_IDLE_CONNECTION,
                format!("{kib:.1} KiB over {n} connections"),
            )
        }),
    ));
    lines
}

/// The highest (or lowest) ratio and what goes with it.
fn worst<T>(ratios: Vec<(f64, T)>, highest: bool) -> Option<(f64, T)> {
    ratios
        .into_iter()
        .reduce(|a, b| if (b.0 > a.0) == highest { b } else { a })
}

fn where_(cell: &Cell) -> String {
    let plural = if cell.threads == 1 { "" } else { "s" };
    format!("ps={}, {} thread{plural}", cell.ps, cell.threads)
}

fn verdict(target: &str, outcome: Option<(bool, String)>) -> String {
    match outcome {
        Some((true, detail)) => format!("PASS  {target}: {detail}"),
        Some((false, detail)) => format!("MISS  {target}: {detail}"),
        None => format!("n/a   {target}: not measured in this run"),
    }
}
