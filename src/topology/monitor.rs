//! Health checks: one task per server, one connection each (as the monitor user), one check
//! per `check_interval`. A check asks whether the server is read-only and how its replication
//! stands; every connection attempt and every query has `check_timeout`, so a server that
//! stopped answering (a process stopped with SIGSTOP, a partitioned pod) fails its check
//! within one interval plus the timeout rather than hanging the monitor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use tokio::sync::mpsc;
use tracing::debug;

use super::Backend;
use crate::config::MonitorUser;

/// ER_PARSE_ERROR: `SHOW REPLICA STATUS` on MariaDB < 10.5 and MySQL < 8.0.22.
const ER_PARSE_ERROR: u16 = 1064;

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// `None` when the server could not be reached or did not answer in time; the reason.
    pub failure: Option<String>,
    pub read_only: bool,
    /// `None` when the server replicates from nothing.
    pub replication: Option<Replication>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    pub io_running: bool,
    pub sql_running: bool,
    /// `Seconds_Behind_Master` / `Seconds_Behind_Source`; `None` (NULL) when replication is
    /// broken or stopped.
    pub lag: Option<Duration>,
    /// The last error of either thread, if any.
    pub last_error: Option<String>,
}

impl Health {
    fn unreachable(reason: String) -> Self {
        Self {
            failure: Some(reason),
            read_only: false,
            replication: None,
        }
    }

    pub fn reachable(&self) -> bool {
        self.failure.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct MonitorSettings {
    pub user: MonitorUser,
    pub tls: crate::tls::MonitorTls,
    pub interval: Duration,
    pub timeout: Duration,
}

/// One server's check results, in order.
#[derive(Debug)]
pub struct Report {
    pub backend: u32,
    pub health: Health,
}

/// Checks `backend` every interval and sends each result, until the receiver is gone or
/// the task is aborted (the server left the topology).
pub async fn run(backend: Arc<Backend>, settings: MonitorSettings, reports: mpsc::Sender<Report>) {
    let mut checker = Checker::new(&backend, &settings);
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let started = Instant::now();
        let health = checker.check().await;
        debug!(backend = backend.name(), took = ?started.elapsed(), ?health, "checked");
        let report = Report {
            backend: backend.id,
            health,
        };
        if reports.send(report).await.is_err() {
            break;
        }
    }
    checker.close().await;
}

struct Checker {
    opts: OptsBuilder,
    timeout: Duration,
    conn: Option<Conn>,
    /// The server speaks only the old `SHOW SLAVE STATUS`.
    legacy_status: bool,
}

impl Checker {
    fn new(backend: &Backend, settings: &MonitorSettings) -> Self {
        let (host, port) = split_address(&backend.endpoint.address);
        let opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(settings.user.user.clone()))
            .pass(Some(settings.user.password.clone()))
            .prefer_socket(false)
            .stmt_cache_size(0)
            .ssl_opts(settings.tls.ssl_opts())
            .tcp_nodelay(true);
        Self {
            opts,
            timeout: settings.timeout,
            conn: None,
            legacy_status: false,
        }
    }

    async fn check(&mut self) -> Health {
        if self.conn.is_none() {
            match tokio::time::timeout(self.timeout, Conn::new(self.opts.clone())).await {
                Ok(Ok(conn)) => self.conn = Some(conn),
                Ok(Err(e)) => return Health::unreachable(format!("cannot connect: {e}")),
                Err(_) => {
                    return Health::unreachable(format!(
                        "no answer to connect within {:?}",
                        self.timeout
                    ));
                }
            }
        }
        let conn = self.conn.as_mut().expect("connected above");
        match tokio::time::timeout(self.timeout, query(conn, &mut self.legacy_status)).await {
            Ok(Ok(health)) => health,
            Ok(Err(e)) => {
                // The connection's state is unknown after an error: start afresh next time.
                self.conn = None;
                Health::unreachable(format!("check failed: {e}"))
            }
            Err(_) => {
                // A server that stopped answering keeps the socket open; this one is dropped
                // without the polite goodbye, which would wait for the same server.
                self.conn = None;
                Health::unreachable(format!("no answer to the check within {:?}", self.timeout))
            }
        }
    }

    async fn close(self) {
        if let Some(conn) = self.conn {
            let _ = tokio::time::timeout(self.timeout, conn.disconnect()).await;
        }
    }
}

async fn query(conn: &mut Conn, legacy_status: &mut bool) -> Result<Health, mysql_async::Error> {
    let read_only: Option<i64> = conn.query_first("SELECT @@global.read_only").await?;
    let rows: Vec<Row> = if *legacy_status {
        conn.query("SHOW SLAVE STATUS").await?
    } else {
        match conn.query("SHOW REPLICA STATUS").await {
            Ok(rows) => rows,
            Err(mysql_async::Error::Server(e)) if e.code == ER_PARSE_ERROR => {
                *legacy_status = true;
                conn.query("SHOW SLAVE STATUS").await?
            }
            Err(e) => return Err(e),
        }
    };
    Ok(Health {
        failure: None,
        read_only: read_only.unwrap_or(0) != 0,
        replication: replication(&rows),
    })
}

/// The replication state from `SHOW REPLICA STATUS` rows, under MySQL 8's column names or
/// the older ones MariaDB and MySQL 5.7 use. With several sources (MariaDB multi-source),
/// the worst one counts.
fn replication(rows: &[Row]) -> Option<Replication> {
    rows.iter()
        .map(|row| {
            let text = |names: [&str; 2]| -> Option<String> {
                names.iter().find_map(|name| {
                    let index = row
                        .columns_ref()
                        .iter()
                        .position(|c| c.name_str() == *name)?;
                    row.get::<Option<String>, usize>(index).flatten()
                })
            };
            let running = |names| text(names).is_some_and(|v| v.eq_ignore_ascii_case("yes"));
            let last_error = [
                ["Last_IO_Error", "Last_IO_Error"],
                ["Last_SQL_Error", "Last_SQL_Error"],
            ]
            .into_iter()
            .filter_map(text)
            .find(|e| !e.is_empty());
            Replication {
                io_running: running(["Replica_IO_Running", "Slave_IO_Running"]),
                sql_running: running(["Replica_SQL_Running", "Slave_SQL_Running"]),
                lag: text(["Seconds_Behind_Source", "Seconds_Behind_Master"])
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_secs),
                last_error,
            }
        })
        .max_by_key(|r| {
            (
                !(r.io_running && r.sql_running),
                r.lag.is_none(),
                r.lag.unwrap_or_default(),
            )
        })
}

/// The host and port to connect to; addresses are validated `host:port`, so the default
/// port only covers a bare host.
fn split_address(address: &str) -> (String, u16) {
    match crate::config::split_host_port(address) {
        Some((host, port)) => (host.to_owned(), port),
        None => (address.to_owned(), crate::config::MYSQL_PORT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_address("127.0.0.1:3307"), ("127.0.0.1".into(), 3307));
        assert_eq!(split_address("[::1]:3306"), ("::1".into(), 3306));
        assert_eq!(
            split_address("mysql-0.mysql"),
            ("mysql-0.mysql".into(), 3306)
        );
    }
}
