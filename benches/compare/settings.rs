//! What runs: the options, their defaults (and `--quick`'s), and the targets.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;

pub const TESTS: [&str; 3] = ["oltp_point_select", "oltp_read_only", "oltp_read_write"];
pub const PS_MODES: [&str; 2] = ["auto", "disable"];
pub const TARGETS: [Target; 3] = [Target::Direct, Target::Haproxy, Target::Rwsplit];

#[derive(Parser, Debug)]
#[command(about = "Compare rwsplit with HAProxy and a direct connection under sysbench")]
pub struct Args {
    /// The rwsplit binary to measure (a release build: benches/compare.sh builds one).
    #[arg(long)]
    pub rwsplit: PathBuf,
    /// The HAProxy binary.
    #[arg(long, default_value = "haproxy")]
    pub haproxy: String,
    /// Seconds per sysbench run [default: 10; --quick: 2].
    #[arg(long)]
    pub time: Option<u64>,
    /// sysbench tests, comma-separated [default: oltp_point_select,oltp_read_only,oltp_read_write;
    /// --quick: oltp_point_select].
    #[arg(long, value_delimiter = ',')]
    pub tests: Option<Vec<String>>,
    /// Runs of every target per cell; the table reports their median QPS and their spread.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Client threads, comma-separated [default: 1,16,64; --quick: 1].
    #[arg(long, value_delimiter = ',')]
    pub threads: Option<Vec<u32>>,
    /// Prepared statements (sysbench's --db-ps-mode), comma-separated [default: auto,disable;
    /// --quick: auto].
    #[arg(long, value_delimiter = ',')]
    pub ps: Option<Vec<String>>,
    /// Targets, comma-separated: direct, haproxy, rwsplit [default: all three].
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Rows in the one sysbench table [default: 10000; --quick: 1000].
    #[arg(long)]
    pub table_size: Option<u32>,
    /// First three octets of the cluster's loopback addresses (servers on .1, .2, ...).
    #[arg(long, default_value = "127.0.40")]
    pub net: String,
    /// Replicas behind the primary.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Idle client connections held open through each proxy for the memory figure; 0 skips
    /// it [default: 1000; --quick: 50].
    #[arg(long)]
    pub idle: Option<usize>,
    /// Seconds of unrecorded load through every target before the first cell [default: 3;
    /// --quick: 0].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// A smoke run: 2 s runs of oltp_point_select, 1 thread, prepared statements on, 50 idle
    /// connections; options given explicitly still apply.
    #[arg(long)]
    pub quick: bool,
}

/// What runs, with the defaults and `--quick` applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub time: u64,
    pub rounds: usize,
    pub tests: Vec<String>,
    pub threads: Vec<u32>,
    pub ps: Vec<String>,
    pub targets: Vec<Target>,
    pub table_size: u32,
    pub net: String,
    pub replicas: usize,
    pub idle: usize,
    pub warmup: u64,
    /// Client connections each proxy accepts: the idle ones, sysbench's threads and room to
    /// spare, below the servers' own limit of 2000 (rwsplit holds a primary connection per
    /// client).
    pub max_connections: usize,
}

impl Settings {
    pub fn from_args(args: &Args) -> anyhow::Result<Self> {
        let quick = args.quick;
        let strings = |given: &Option<Vec<String>>, normal: &[&str], short: &[&str]| {
            given.clone().unwrap_or_else(|| {
                let chosen = if quick { short } else { normal };
                chosen.iter().map(|s| (*s).to_owned()).collect()
            })
        };
        let tests = strings(&args.tests, &TESTS, &TESTS[..1]);
        if let Some(unknown) = tests.iter().find(|t| !TESTS.contains(&t.as_str())) {
            bail!("unknown test {unknown}; known: {}", TESTS.join(", "));
        }
        let ps = strings(&args.ps, &PS_MODES, &PS_MODES[..1]);
        if let Some(unknown) = ps.iter().find(|m| !PS_MODES.contains(&m.as_str())) {
            bail!("unknown --ps mode {unknown}; known: auto, disable");
        }
        let all = TARGETS.map(Target::name);
        let targets = strings(&args.targets, &all, &all)
            .iter()
            .map(|name| {
                TARGETS
                    .into_iter()
                    .find(|t| t.name() == name)
                    .with_context(|| format!("unknown target {name}; known: {}", all.join(", ")))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if targets.is_empty() {
            bail!("--targets: at least one");
        }
        let threads = args
            .threads
            .clone()
            .unwrap_or_else(|| if quick { vec![1] } else { vec![1, 16, 64] });
        if threads.contains(&0) {
            bail!("--threads: at least one thread per run");
        }
        if args.rounds == 0 {
            bail!("--rounds: at least one");
        }
        let idle = args.idle.unwrap_or(if quick { 50 } else { 1000 });
        let max_connections = idle + 200;
        if max_connections > 1900 {
            bail!("--idle {idle}: the cluster's servers take 2000 connections at most");
        }
        Ok(Settings {
            time: args.time.unwrap_or(if quick { 2 } else { 10 }).max(1),
            rounds: args.rounds,
            tests,
            threads,
            ps,
            targets,
            table_size: args
                .table_size
                .unwrap_or(if quick { 1000 } else { 10_000 })
                .max(1),
            net: args.net.clone(),
            replicas: args.replicas,
            idle,
            warmup: args.warmup.unwrap_or(if quick { 0 } else { 3 }),
            max_connections,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Direct,
    Haproxy,
    Rwsplit,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Haproxy => "haproxy",
            Target::Rwsplit => "rwsplit",
        }
    }

    /// The name in the table: HAProxy's listener depends on the test.
    pub fn label(self, test: &str) -> &'static str {
        match self {
            Target::Haproxy if writes(test) => "haproxy:primary",
            Target::Haproxy => "haproxy:read",
            other => other.name(),
        }
    }
}

/// Whether a sysbench test writes (and so cannot go through a listener over read-only pods).
pub fn writes(test: &str) -> bool {
    test == "oltp_read_write"
}
