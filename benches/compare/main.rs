//! The end-to-end comparison: sysbench on the local cluster against three targets, run back
//! to back for every cell of test × prepared-statement mode × threads, in one table.
//!
//! - `direct`: the primary itself, the limit no proxy can beat;
//! - `haproxy`: HAProxy in TCP mode, what the Kubernetes `mysql-read` Service does
//!   (connections balanced over every pod, the primary included) for the read-only tests, and
//!   a listener that forwards to the primary only for `oltp_read_write`, whose writes would
//!   fail on the read-only replicas;
//! - `rwsplit`: the release binary as its own process, finding the pods through the cluster's
//!   DNS as in Kubernetes.
//!
//! The three targets of a cell run one after the other, in an order that rotates from cell to
//! cell (and from round to round, with `--rounds`), so that whatever else the machine does
//! falls on all of them alike. The proxies' CPU time and memory come from `/proc`.
//! `benches/compare.sh` builds and runs this; the README's "Benchmarks" section explains
//! every column.

#[path = "../../tests/support/cluster.rs"]
mod cluster;
mod idle;
mod measure;
mod proxies;
mod settings;
#[allow(dead_code)]
#[path = "../../tests/support/sysbench.rs"]
mod sysbench;
mod table;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use cluster::{APP_PASSWORD, APP_USER, Cluster};

use measure::RunResult;
use proxies::Proxies;
pub use settings::{Args, Settings, TARGETS, Target, writes};

/// One cell of the matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    pub test: String,
    pub ps: String,
    pub threads: u32,
}

/// A target's runs of a cell, one per round.
#[derive(Debug, Clone)]
pub struct Row {
    pub target: Target,
    /// Each round's run, in the order the rounds ran.
    pub runs: Vec<RunResult>,
    /// The position of each of those runs within its round: 1 ran first.
    pub positions: Vec<usize>,
    /// The runs combined (`measure::combine`): what the table reports.
    pub result: RunResult,
}

impl Row {
    /// The lowest and highest QPS of the rounds.
    pub fn qps_range(&self) -> Option<(f64, f64)> {
        range(self.runs.iter().map(|r| r.qps))
    }

    /// The lowest and highest of this row's QPS divided by `other`'s, round by round: the
    /// two ran back to back, so what the machine did weighed on both.
    pub fn qps_ratio_range(&self, other: &Row) -> Option<(f64, f64)> {
        range(
            self.runs
                .iter()
                .zip(&other.runs)
                .map(|(mine, theirs)| Some(mine.qps? / theirs.qps.filter(|q| *q > 0.0)?)),
        )
    }
}

/// The lowest and highest of the values, `None` if one is missing.
fn range(values: impl Iterator<Item = Option<f64>>) -> Option<(f64, f64)> {
    values
        .collect::<Option<Vec<f64>>>()?
        .into_iter()
        .fold(None, |acc, v| {
            Some(acc.map_or((v, v), |(lo, hi): (f64, f64)| (lo.min(v), hi.max(v))))
        })
}

/// Memory of a proxy holding idle client connections.
#[derive(Debug, Clone)]
pub struct IdleResult {
    pub target: Target,
    pub wanted: usize,
    pub opened: usize,
    /// Connections that still answered a ping after the measurement.
    pub alive: usize,
    pub rss_before_kib: u64,
    pub rss_with_kib: u64,
    pub rss_after_kib: u64,
    /// The first failure to log in, when some did.
    pub error: Option<String>,
}

impl IdleResult {
    pub fn kib_per_connection(&self) -> Option<f64> {
        (self.opened > 0)
            .then(|| (self.rss_with_kib as f64 - self.rss_before_kib as f64) / self.opened as f64)
    }
}

/// Everything one run of the driver measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub settings: Settings,
    pub cells: Vec<(Cell, Vec<Row>)>,
    pub idle: Vec<IdleResult>,
    /// Statements rwsplit's backends ran over the whole matrix, by name, from `/status`.
    pub rwsplit_statements: Vec<(String, u64)>,
    /// Log lines at WARN or ERROR that rwsplit wrote.
    pub rwsplit_warnings: Vec<String>,
}

impl Report {
    /// Whether every run completed with no error or reconnect that a proxy could have
    /// caused, and every idle connection opened and stayed open. Deadlocks (1213) are the
    /// server's answer to concurrent transactions and reach direct clients too.
    pub fn clean(&self) -> bool {
        let runs = self
            .cells
            .iter()
            .flat_map(|(_, rows)| rows)
            .flat_map(|row| &row.runs)
            .all(|r| r.failure.is_none() && r.failures() == 0);
        let idle = self
            .idle
            .iter()
            .all(|i| i.error.is_none() && i.opened == i.wanted && i.alive == i.wanted);
        runs && idle
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut stdout = std::io::stdout();
    match run(&args, &mut stdout) {
        Ok(report) if report.clean() => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("compare: some runs had errors, reconnects or failures (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("compare: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the whole comparison and writes the table to `out`; progress goes to stderr. Every
/// server and proxy it starts is stopped when it returns, and, since each runs under a
/// watchdog that follows this process, when the process ends in any other way.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<Report> {
    let settings = Settings::from_args(args)?;
    check_tools(args, &settings)?;
    let load_start = measure::load_average();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    progress(&format!(
        "starting the cluster: mysql-0 and {} replica(s) on {}.1..",
        settings.replicas, settings.net
    ));
    let cluster = Cluster::start(&settings.net, settings.replicas).map_err(anyhow::Error::msg)?;
    prepare_table(&runtime, &cluster, &settings)?;

    let mut idle = Vec::new();
    if settings.idle > 0 {
        let proxies = Proxies::start(args, &cluster, &settings)?;
        idle = measure_idle(&runtime, &proxies, settings.idle);
    }
    // The load runs on proxies started afresh: memory the idle connections took and the
    // allocator kept would otherwise count in every run's RSS.
    let proxies = Proxies::start(args, &cluster, &settings)?;
    if settings.warmup > 0 {
        warm_up(&runtime, &proxies, &settings);
    }
    let cells = run_matrix(&runtime, &cluster, &proxies, &settings)?;
    let load_end = measure::load_average();

    let (rwsplit_statements, rwsplit_warnings) = match &proxies.rwsplit {
        Some(r) => (r.statements_by_backend(), r.warnings()),
        None => (Vec::new(), Vec::new()),
    };
    drop(proxies);
    cluster.stop();

    let report = Report {
        settings,
        cells,
        idle,
        rwsplit_statements,
        rwsplit_warnings,
    };
    let context = table::Context {
        commit: commit(),
        load_start,
        load_end,
        versions: versions(args),
    };
    table::print(out, &report, &context)?;
    Ok(report)
}

/// Idle connections through each proxy, on proxies that have served nothing yet: memory
/// freed by a load would be handed out again and hide what a connection costs.
fn measure_idle(runtime: &tokio::runtime::Runtime, proxies: &Proxies, n: usize) -> Vec<IdleResult> {
    let mut results = Vec::new();
    for target in [Target::Haproxy, Target::Rwsplit] {
        let Some(pid) = proxies.pid(target) else {
            continue;
        };
        progress(&format!("{}: {n} idle client connections", target.name()));
        let addr = proxies.address(target, "oltp_read_only");
        results.push(runtime.block_on(idle::measure(target, addr, pid, n)));
    }
    results
}

/// Unrecorded load through every target: the servers' caches, the proxies' first
/// allocations and connection set-up are not what the first cell should measure.
fn warm_up(runtime: &tokio::runtime::Runtime, proxies: &Proxies, settings: &Settings) {
    let cell = Cell {
        test: "oltp_read_only".into(),
        ps: "auto".into(),
        threads: 16,
    };
    for &target in &settings.targets {
        progress(&format!("warming up through {}", target.name()));
        runtime.block_on(measure::sysbench_run(
            proxies.address(target, &cell.test),
            None,
            &cell,
            settings.warmup,
            settings.table_size,
        ));
    }
}

/// Every cell, round after round, each round its targets back to back.
fn run_matrix(
    runtime: &tokio::runtime::Runtime,
    cluster: &Cluster,
    proxies: &Proxies,
    settings: &Settings,
) -> anyhow::Result<Vec<(Cell, Vec<Row>)>> {
    let mut cells = Vec::new();
    let matrix = matrix(settings);
    let targets = &settings.targets;
    for (n, cell) in matrix.iter().enumerate() {
        let mut rows: Vec<Row> = targets
            .iter()
            .map(|&target| Row {
                target,
                runs: Vec::new(),
                positions: Vec::new(),
                result: RunResult::default(),
            })
            .collect();
        for round in 0..settings.rounds {
            // Rotate the order from round to round and cell to cell, so no target always
            // runs first or last.
            let start = n * settings.rounds + round;
            for position in 0..targets.len() {
                let index = (start + position) % targets.len();
                let target = targets[index];
                if let (Target::Rwsplit, Some(r)) = (target, &proxies.rwsplit) {
                    r.wait_replicas_eligible(Duration::from_secs(30));
                }
                let of_rounds = if settings.rounds > 1 {
                    format!(" round {}/{}", round + 1, settings.rounds)
                } else {
                    String::new()
                };
                progress(&format!(
                    "[{}/{}]{of_rounds} {} ps={} threads={}: {}",
                    n + 1,
                    matrix.len(),
                    cell.test,
                    cell.ps,
                    cell.threads,
                    target.label(&cell.test)
                ));
                let result = runtime.block_on(measure::sysbench_run(
                    proxies.address(target, &cell.test),
                    proxies.pid(target),
                    cell,
                    settings.time,
                    settings.table_size,
                ));
                if let Some(failure) = &result.failure {
                    progress(&format!("  failed: {failure}"));
                }
                rows[index].runs.push(result);
                rows[index].positions.push(position + 1);
                if writes(&cell.test) {
                    // Replicas behind the primary would serve the next reads late, or drop
                    // out of rwsplit's read pool.
                    cluster
                        .wait_replicas_caught_up(Duration::from_secs(120))
                        .map_err(anyhow::Error::msg)?;
                }
            }
        }
        for row in &mut rows {
            row.result = measure::combine(&row.runs);
        }
        rows.sort_by_key(|row| TARGETS.iter().position(|t| *t == row.target));
        cells.push((cell.clone(), rows));
    }
    Ok(cells)
}

/// The cells in the order they run: by test, then prepared statements, then threads.
fn matrix(settings: &Settings) -> Vec<Cell> {
    let mut cells = Vec::new();
    for test in &settings.tests {
        for ps in &settings.ps {
            for &threads in &settings.threads {
                cells.push(Cell {
                    test: test.clone(),
                    ps: ps.clone(),
                    threads,
                });
            }
        }
    }
    cells
}

/// One table, written straight to the primary, every replica caught up before anything runs.
fn prepare_table(
    runtime: &tokio::runtime::Runtime,
    cluster: &Cluster,
    settings: &Settings,
) -> anyhow::Result<()> {
    let primary: SocketAddr = cluster.primary().address().parse()?;
    progress(&format!(
        "preparing 1 sysbench table of {} rows",
        settings.table_size
    ));
    let size = format!("--table-size={}", settings.table_size);
    let (ok, report) = runtime.block_on(sysbench::run_within(
        primary,
        "oltp_read_write",
        "prepare",
        &["--tables=1", &size],
        Duration::from_secs(300),
    ));
    if !ok {
        bail!("sysbench prepare failed:\n{report}");
    }
    cluster
        .wait_replicas_caught_up(Duration::from_secs(120))
        .map_err(anyhow::Error::msg)
}

fn check_tools(args: &Args, settings: &Settings) -> anyhow::Result<()> {
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !runs("sysbench", "--version") {
        bail!("sysbench is missing: run scripts/install-deps.sh");
    }
    if settings.targets.contains(&Target::Haproxy) && !runs(&args.haproxy, "-v") {
        bail!("{} does not run: run scripts/install-deps.sh", args.haproxy);
    }
    if settings.targets.contains(&Target::Rwsplit) && !args.rwsplit.is_file() {
        bail!("no rwsplit binary at {}", args.rwsplit.display());
    }
    // Each idle connection is a socket here and two in each proxy, which inherit this limit.
    let needed = 3 * settings.max_connections as u64 + 256;
    if let Some(limit) = measure::open_files_limit()
        && limit < needed
    {
        bail!("{limit} open files allowed, {needed} needed: raise it with ulimit -n");
    }
    Ok(())
}

/// The commit the binaries were built from, marked when the tree has changes.
fn commit() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    if dirty {
        format!("{head} (with uncommitted changes)")
    } else {
        head
    }
}

/// The first line each program prints about its version.
fn versions(args: &Args) -> Vec<String> {
    let first_line = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                text.lines().next().unwrap_or("").trim().to_owned()
            })
            .filter(|line| !line.is_empty())
            .unwrap_or_else(|| format!("{program}: unknown version"))
    };
    vec![
        first_line(&args.rwsplit.to_string_lossy(), "--version"),
        first_line(&args.haproxy, "-v"),
        first_line("sysbench", "--version"),
        first_line("mariadbd", "--version"),
    ]
}

/// Progress on stderr, so the table on stdout stays clean.
pub fn progress(message: &str) {
    cluster::note(&format!("compare: {message}"));
}
