//! sysbench, the load generator users measure proxies with, run against an address.

use std::net::SocketAddr;
use std::time::Duration;

use super::{APP_PASSWORD, APP_USER};

/// Runs `sysbench <test> <command>` against `addr` as the application user on database
/// `app`, under `timeout` (Debian's build can outlive `--time` after errors); returns
/// whether it succeeded and its whole output.
pub async fn run(addr: SocketAddr, test: &str, command: &str, args: &[&str]) -> (bool, String) {
    run_within(addr, test, command, args, Duration::from_secs(150)).await
}

/// `run`, stopped after `limit` (and killed 5 s later if it is still there).
pub async fn run_within(
    addr: SocketAddr,
    test: &str,
    command: &str,
    args: &[&str],
    limit: Duration,
) -> (bool, String) {
    let output = tokio::process::Command::new("timeout")
        .args([
            "-k",
            "5",
            &limit.as_secs().max(1).to_string(),
            "sysbench",
            test,
        ])
        .args([
            "--db-driver=mysql".to_owned(),
            format!("--mysql-host={}", addr.ip()),
            format!("--mysql-port={}", addr.port()),
            format!("--mysql-user={APP_USER}"),
            format!("--mysql-password={APP_PASSWORD}"),
            "--mysql-db=app".to_owned(),
        ])
        .args(args)
        .arg(command)
        .output()
        .await
        .expect("run sysbench (scripts/install-deps.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The error codes sysbench ignored (it logs each at verbosity 5).
pub fn ignored_error_codes(report: &str) -> Vec<u16> {
    report
        .lines()
        .filter_map(|line| line.split("Ignoring error ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// A counter from sysbench's summary, e.g. `ignored errors:   0   (0.00 per sec.)`.
pub fn counter(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '{label}' in sysbench's report:\n{report}"))
}
