//! One sysbench run and what it cost the proxy: sysbench's own counters and latency histogram,
//! the proxy's CPU time and resident memory from `/proc`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Cell;
use super::sysbench;

/// What one run measured. A figure is `None` when it could not be had (no proxy, or sysbench
/// ended without its summary).
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Statements per second, as sysbench reports them ("queries: N (Q per sec.)").
    pub qps: Option<f64>,
    /// Statements sysbench counted over the run.
    pub statements: Option<u64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The 95th percentile sysbench printed itself, which `p95_ms` must equal; a single
    /// run's figure, so `None` for rounds combined.
    pub reported_p95_ms: Option<f64>,
    /// sysbench's latency histogram, kept so that rounds combine into one distribution.
    pub histogram: Vec<(f64, u64)>,
    /// Errors sysbench saw and went on after ("ignored errors").
    pub errors: u64,
    pub reconnects: u64,
    /// The ignored errors by code, as sysbench logged them.
    pub error_codes: Vec<(u16, u64)>,
    /// The proxy's user + system CPU time over the run, in microseconds.
    pub cpu_us: Option<f64>,
    /// The same per statement.
    pub cpu_us_per_statement: Option<f64>,
    /// The proxy's largest resident set seen during the run.
    pub rss_kib: Option<u64>,
    /// Why the run did not complete: sysbench's exit status and the end of its output.
    pub failure: Option<String>,
}

impl RunResult {
    /// Errors that were deadlocks (1213), which the server reports to direct clients as well.
    pub fn deadlocks(&self) -> u64 {
        self.error_codes
            .iter()
            .filter(|(code, _)| *code == 1213)
            .map(|(_, n)| n)
            .sum()
    }

    /// Errors that were not deadlocks, and reconnects: what a proxy may have caused.
    pub fn failures(&self) -> u64 {
        self.errors.saturating_sub(self.deadlocks()) + self.reconnects
    }
}

/// How often the proxy's memory is sampled during a run.
const RSS_SAMPLE: Duration = Duration::from_millis(200);

/// Runs sysbench's `cell` for `time` seconds against `addr`; `proxy` is the pid whose CPU
/// time and memory the run is charged with.
pub async fn sysbench_run(
    addr: SocketAddr,
    proxy: Option<u32>,
    cell: &Cell,
    time: u64,
    table_size: u32,
) -> RunResult {
    let args = [
        "--tables=1".to_owned(),
        format!("--table-size={table_size}"),
        format!("--threads={}", cell.threads),
        format!("--time={time}"),
        format!("--db-ps-mode={}", cell.ps),
        // One percentile per run is all sysbench prints; the histogram gives any of them.
        "--histogram=on".to_owned(),
        "--report-interval=0".to_owned(),
        // Every error is counted and the event retried rather than the run ended, so that
        // the table shows how many there were; verbosity 5 logs each one's code.
        "--mysql-ignore-errors=all".to_owned(),
        "--verbosity=5".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Debian's sysbench can run on past --time after a reconnect, or hang in it.
    let limit = Duration::from_secs(2 * time + 60);

    let peak = Arc::new(AtomicU64::new(0));
    let sampler = proxy.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(RSS_SAMPLE).await;
            }
        })
    });
    let cpu_before = proxy.and_then(cpu_ticks);
    let (ok, report) = sysbench::run_within(addr, &cell.test, "run", &args, limit).await;
    let cpu_after = proxy.and_then(cpu_ticks);
    if let Some(sampler) = sampler {
        sampler.abort();
    }

    let mut result = parse_report(&report);
    if !ok || result.qps.is_none() {
        let tail: Vec<&str> = report.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        result.failure = Some(format!(
            "sysbench {} did not complete: {}",
            cell.test,
            tail.join(" | ")
        ));
    }
    if let (Some(before), Some(after), Some(statements)) =
        (cpu_before, cpu_after, result.statements)
        && statements > 0
    {
        let micros = (after - before) as f64 * 1e6 / clock_ticks_per_second() as f64;
        result.cpu_us = Some(micros);
        result.cpu_us_per_statement = Some(micros / statements as f64);
    }
    let peak = peak.load(Ordering::Relaxed);
    result.rss_kib = (peak > 0).then_some(peak);
    result
}

/// The rounds of one cell and target as one result. QPS is the median of the rounds', which
/// one round disturbed by the rest of the machine cannot drag; the percentiles come from the
/// rounds' histograms merged, every event weighing the same; counts add up; CPU is the total
/// over the total statements, so a short round weighs less; RSS is the largest.
pub fn combine(rounds: &[RunResult]) -> RunResult {
    if let [one] = rounds {
        return one.clone();
    }
    let mut histogram: Vec<(f64, u64)> = Vec::new();
    let mut error_codes: Vec<(u16, u64)> = Vec::new();
    for r in rounds {
        // sysbench's buckets are fixed, so the same bucket prints the same value every run.
        for &(value, n) in &r.histogram {
            match histogram.iter_mut().find(|(v, _)| *v == value) {
                Some((_, total)) => *total += n,
                None => histogram.push((value, n)),
            }
        }
        for &(code, n) in &r.error_codes {
            match error_codes.iter_mut().find(|(c, _)| *c == code) {
                Some((_, total)) => *total += n,
                None => error_codes.push((code, n)),
            }
        }
    }
    histogram.sort_by(|a, b| a.0.total_cmp(&b.0));
    error_codes.sort();
    let all = |f: fn(&RunResult) -> Option<f64>| rounds.iter().map(f).collect::<Option<Vec<_>>>();
    let statements = rounds
        .iter()
        .map(|r| r.statements)
        .collect::<Option<Vec<_>>>()
        .map(|s| s.iter().sum::<u64>());
    let cpu_us = all(|r| r.cpu_us).map(|c| c.iter().sum::<f64>());
    let failures: Vec<String> = rounds
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some(format!("round {}: {}", i + 1, r.failure.as_ref()?)))
        .collect();
    RunResult {
        qps: median(rounds.iter().filter_map(|r| r.qps).collect()),
        statements,
        p95_ms: percentile(&histogram, 95.0),
        p99_ms: percentile(&histogram, 99.0),
        reported_p95_ms: None,
        histogram,
        errors: rounds.iter().map(|r| r.errors).sum(),
        reconnects: rounds.iter().map(|r| r.reconnects).sum(),
        error_codes,
        cpu_us,
        cpu_us_per_statement: match (cpu_us, statements) {
            (Some(cpu), Some(n)) if n > 0 => Some(cpu / n as f64),
            _ => None,
        },
        rss_kib: rounds.iter().filter_map(|r| r.rss_kib).max(),
        failure: (!failures.is_empty()).then(|| failures.join("; ")),
    }
}

/// The middle value, or the mean of the two middle ones.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Reads sysbench's summary; what is missing stays `None` (or 0 for the error counters).
pub fn parse_report(report: &str) -> RunResult {
    let queries = line_after(report, "queries:");
    let statements = queries
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    // "queries:  123456 (12345.67 per sec.)"
    let qps = queries
        .and_then(|rest| rest.split_once('(')?.1.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let histogram = histogram(report);
    let count = |label: &str| {
        line_after(report, label)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    RunResult {
        qps,
        statements,
        p95_ms: percentile(&histogram, 95.0),
        p99_ms: percentile(&histogram, 99.0),
        reported_p95_ms: line_after(report, "95th percentile:")
            .and_then(|rest| rest.trim().parse().ok()),
        histogram,
        errors: count("ignored errors:"),
        reconnects: count("reconnects:"),
        error_codes: error_codes(report),
        ..RunResult::default()
    }
}

/// The errors sysbench ignored, by code, from its debug log: "Ignoring error 1213 ...", which
/// its logger folds into "(last message repeated N times)" when the next ones are the same.
fn error_codes(report: &str) -> Vec<(u16, u64)> {
    let mut counts: Vec<(u16, u64)> = Vec::new();
    let mut last = None;
    for line in report.lines() {
        let (code, n) = if let Some(rest) = line.split("Ignoring error ").nth(1) {
            (
                rest.split_whitespace().next().and_then(|c| c.parse().ok()),
                1,
            )
        } else if let Some(rest) = line.strip_prefix("(last message repeated ") {
            let n = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            (last, n.unwrap_or(0))
        } else {
            (None, 0)
        };
        last = code;
        let Some(code) = code else { continue };
        match counts.iter_mut().find(|(c, _)| *c == code) {
            Some((_, total)) => *total += n,
            None => counts.push((code, n)),
        }
    }
    counts.sort();
    counts
}

/// The rest of the first line that starts (after blanks) with `label`.
fn line_after<'a>(report: &'a str, label: &str) -> Option<&'a str> {
    report
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
}

/// sysbench's latency histogram: (milliseconds, events) per bucket, in ascending order.
/// ```text
/// Latency histogram (values are in milliseconds)
///        value  ------------- distribution ------------- count
///        0.219 |*                                        1
///        0.223 |**************                           57
/// ```
pub fn histogram(report: &str) -> Vec<(f64, u64)> {
    report
        .lines()
        .skip_while(|line| !line.starts_with("Latency histogram"))
        .skip(2)
        .map_while(|line| {
            let (value, bar) = line.split_once('|')?;
            let count = bar.split_whitespace().last()?.parse().ok()?;
            Some((value.trim().parse().ok()?, count))
        })
        .collect()
}

/// The `pct` percentile of a histogram, by the rule sysbench uses for the one it prints:
/// the first bucket at which the events counted so far reach `pct`% of all, rounded.
pub fn percentile(histogram: &[(f64, u64)], pct: f64) -> Option<f64> {
    let total: u64 = histogram.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let wanted = ((total as f64 * pct / 100.0 + 0.5).floor() as u64).max(1);
    let mut seen = 0;
    histogram.iter().find_map(|&(value, n)| {
        seen += n;
        (seen >= wanted).then_some(value)
    })
}

/// User + system CPU time of a process so far, in clock ticks (`/proc/<pid>/stat` fields
/// 14 and 15, all threads included).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A process's resident memory (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// The kernel's clock ticks per second, the unit of `/proc/<pid>/stat`'s times.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// This process's soft limit on open files.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
Latency histogram (values are in milliseconds)
       value  ------------- distribution ------------- count
       0.100 |****************************************  90
       0.200 |****                                      5
       0.300 |**                                        4
       1.500 |*                                         1
 
SQL statistics:
    queries performed:
        read:                            100
        total:                           100
    transactions:                        100    (10.00 per sec.)
    queries:                             100    (10.00 per sec.)
    ignored errors:                      2      (0.20 per sec.)
    reconnects:                          0      (0.00 per sec.)

Latency (ms):
         min:                                    0.09
         95th percentile:                        0.20
";

    #[test]
    fn percentiles_follow_sysbench_rule() {
        let h = histogram(REPORT);
        assert_eq!(h.len(), 4);
        assert_eq!(percentile(&h, 95.0), Some(0.2));
        assert_eq!(percentile(&h, 99.0), Some(0.3));
        assert_eq!(percentile(&h, 100.0), Some(1.5));
        assert_eq!(percentile(&[], 95.0), None);
    }

    #[test]
    fn repeated_errors_are_counted() {
        let log = "\
DEBUG: Ignoring error 1213 Deadlock found when trying to get lock; try restarting transaction,
(last message repeated 452 times)
DEBUG: Ignoring error 1062 Duplicate entry '5' for key 'PRIMARY',
DEBUG: Ignoring error 1213 Deadlock found when trying to get lock; try restarting transaction,
Time limit exceeded, exiting...
(last message repeated 11 times)
";
        assert_eq!(error_codes(log), [(1062, 1), (1213, 454)]);
    }

    #[test]
    fn rounds_combine() {
        let round = |qps: f64, histogram: Vec<(f64, u64)>, cpu_us: f64, rss_kib: u64| RunResult {
            qps: Some(qps),
            statements: Some(histogram.iter().map(|(_, n)| n).sum()),
            histogram,
            errors: 1,
            error_codes: vec![(1213, 1)],
            cpu_us: Some(cpu_us),
            rss_kib: Some(rss_kib),
            ..RunResult::default()
        };
        let rounds = [
            round(300.0, vec![(0.1, 90), (0.2, 10)], 100.0, 10),
            round(100.0, vec![(0.1, 50), (0.3, 50)], 300.0, 30),
            round(200.0, vec![(0.2, 100)], 200.0, 20),
        ];
        let c = combine(&rounds);
        assert_eq!(c.qps, Some(200.0), "the median, not the mean");
        assert_eq!(c.histogram, [(0.1, 140), (0.2, 110), (0.3, 50)]);
        assert_eq!((c.p95_ms, c.p99_ms), (Some(0.3), Some(0.3)));
        assert_eq!(c.statements, Some(300));
        assert_eq!(c.cpu_us_per_statement, Some(2.0));
        assert_eq!((c.errors, c.deadlocks(), c.failures()), (3, 3, 0));
        assert_eq!(c.rss_kib, Some(30));
        assert!(c.failure.is_none() && c.reported_p95_ms.is_none());
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);

        let failed = RunResult {
            failure: Some("timeout".into()),
            ..RunResult::default()
        };
        let c = combine(&[rounds[0].clone(), failed]);
        assert_eq!(c.failure.as_deref(), Some("round 2: timeout"));
        assert_eq!(c.qps, Some(300.0), "the rounds that completed");
        assert_eq!(c.cpu_us_per_statement, None, "not over part of the rounds");
    }

    #[test]
    fn summary_is_read() {
        let r = parse_report(REPORT);
        assert_eq!(r.statements, Some(100));
        assert_eq!(r.qps, Some(10.0));
        assert_eq!(r.errors, 2);
        assert_eq!(r.reconnects, 0);
        assert_eq!(r.reported_p95_ms, Some(0.2));
    }
}
