//! The process's life as Kubernetes runs it: SIGTERM during a load (running statements and
//! open transactions finish, new clients are refused, `/readyz` turns unready, the process
//! exits), the drain deadline, and SIGHUP reloads (a new threshold takes effect, a broken
//! file is rejected and the proxy keeps serving). The binary runs as an operator runs it,
//! with logs in JSON.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::cluster::{MONITOR_PASSWORD, MONITOR_USER, note};
use support::process::ProxyBinary;
use support::*;

const NET: &str = "127.0.32";

/// Every test starts its own proxy process in front of the shared cluster; the tests that
/// change replication take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lifecycle");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The proxy's configuration: the cluster's servers with health checks (the monitor's
/// password from the environment), the application users `users` (`app`, `monitor`), and
/// `extra` keys of `[proxy]`, which comes last.
fn config_text(cluster: &Cluster, max_lag: &str, users: &[&str], extra: &str) -> String {
    let replicas = replica_tables(cluster);
    let users: String = users
        .iter()
        .map(|user| {
            let variable = if *user == APP_USER {
                "APP_PASSWORD"
            } else {
                "MONITOR_PASSWORD"
            };
            format!("[[users]]\nname = '{user}'\npassword_env = '{variable}'\n")
        })
        .collect();
    format!(
        "[health]\nmonitor_user = '{MONITOR_USER}'\nmonitor_password_env = 'MONITOR_PASSWORD'\n\
         check_interval = '200ms'\nmax_replication_lag = '{max_lag}'\nrise = 1\n\
         [primary]\nname = 'mysql-0'\naddress = '{}'\n{replicas}{users}[proxy]\n{extra}\n",
        cluster.primary().address()
    )
}

/// The proxy process, with its JSON logs collected; killed when dropped.
struct Running {
    process: ProxyBinary,
}

impl Running {
    fn start(config: &Path) -> Self {
        let env = [
            ("APP_PASSWORD", APP_PASSWORD),
            ("MONITOR_PASSWORD", MONITOR_PASSWORD),
        ];
        Running {
            process: ProxyBinary::start(config, &env),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.process.addr
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.process.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit status and how long it took.
    async fn exited(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < within, "still running after {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Log events whose message contains `text`.
    fn logged(&self, text: &str) -> Vec<serde_json::Value> {
        self.process.logged(text)
    }

    /// Waits until `count` events whose message contains `text` were logged.
    async fn wait_logged(&self, text: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.logged(text).len() < count {
            assert!(
                Instant::now() < deadline,
                "'{text}' logged fewer than {count} times"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.process.admin, "/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) {
        let started = Instant::now();
        while !check(&self.status().await) {
            assert!(started.elapsed() < within, "waited {within:?} for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_statements_and_transactions_finish_and_refuses_new_clients() {
    let _serial = SERIAL.lock().await;
    let cluster = shared_cluster(NET);
    cluster
        .sql(
            0,
            "CREATE TABLE IF NOT EXISTS app.drained (id INT PRIMARY KEY, body TEXT)",
        )
        .unwrap();
    cluster.sql(0, "DELETE FROM app.drained").unwrap();
    let config = config_file(
        "drain",
        &config_text(cluster, "10s", &[APP_USER], "drain_timeout = '20s'"),
    );
    let mut proxy = Running::start(&config);
    let addr = proxy.addr();
    proxy
        .wait_until("replicas to take reads", Duration::from_secs(10), |s| {
            s["eligible_replicas"] == 2
        })
        .await;

    // A client in the middle of a slow statement, one inside a transaction, one idle.
    let mut slow = mysql_async::Conn::new(app_opts(addr, Some("app")))
        .await
        .unwrap();
    let slow_read = tokio::spawn(async move {
        let answer: Option<(i64, u32)> = slow
            .query_first("SELECT SLEEP(2), @@server_id")
            .await
            .unwrap();
        (answer, slow)
    });
    let mut in_transaction = mysql_async::Conn::new(app_opts(addr, Some("app")))
        .await
        .unwrap();
    in_transaction.query_drop("BEGIN").await.unwrap();
    in_transaction
        .query_drop("INSERT INTO drained VALUES (1, 'begun before SIGTERM')")
        .await
        .unwrap();
    let mut idle = mysql_async::Conn::new(app_opts(addr, Some("app")))
        .await
        .unwrap();
    idle.query_drop("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    proxy.signal("TERM");
    let signalled = Instant::now();
    // Unready at once, so the Service stops sending clients here.
    let (code, body) = http_get(proxy.process.admin, "/readyz").await;
    assert_eq!((code, body.as_str()), (503, "not ready: shutting down\n"));
    // A client that still arrives is told why it cannot get in.
    let err = server_error(mysql_async::Conn::new(app_opts(addr, None)).await);
    assert_eq!(
        (err.code, err.message.as_str()),
        (1053, "Server shutdown in progress")
    );
    // The transaction goes on and commits.
    in_transaction
        .query_drop("INSERT INTO drained VALUES (2, 'after SIGTERM')")
        .await
        .unwrap();
    in_transaction.query_drop("COMMIT").await.unwrap();
    // The slow statement completes with its answer.
    let (answer, mut slow) = slow_read.await.unwrap();
    let (slept, server) = answer.expect("a row");
    assert_eq!(slept, 0);
    assert!(server == 2 || server == 3, "a replica answered: {server}");
    // Sessions close once they hold no transaction; their next statement finds the
    // connection gone, as after a server's shutdown.
    for conn in [&mut slow, &mut in_transaction, &mut idle] {
        assert!(
            conn.query_drop("SELECT 1").await.is_err(),
            "a session stayed open"
        );
    }

    let (status, took) = proxy.exited(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    note(&format!(
        "the proxy exited {:?} after SIGTERM ({took:?} after it was looked for)",
        signalled.elapsed()
    ));
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let rows = cluster
        .sql(0, "SELECT id FROM app.drained ORDER BY id")
        .unwrap();
    assert_eq!(rows, "1\n2", "the transaction committed whole");
    assert_eq!(proxy.logged("every session has ended").len(), 1);
    // The session span travels with every JSON event of a session.
    let logins = proxy.logged("client logged in");
    assert_eq!(logins.len(), 3, "{logins:#?}");
    for login in &logins {
        let span = &login["span"];
        assert!(
            span["conn_id"].is_u64() && span["peer"].is_string(),
            "{login}"
        );
        assert_eq!(span["user"], APP_USER);
        assert_eq!(login["database"], "app");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_ends_transactions_that_never_finish() {
    let _serial = SERIAL.lock().await;
    let cluster = shared_cluster(NET);
    cluster
        .sql(
            0,
            "CREATE TABLE IF NOT EXISTS app.abandoned (id INT PRIMARY KEY)",
        )
        .unwrap();
    cluster.sql(0, "DELETE FROM app.abandoned").unwrap();
    let config = config_file(
        "deadline",
        &config_text(cluster, "10s", &[APP_USER], "drain_timeout = '1500ms'"),
    );
    let mut proxy = Running::start(&config);
    let mut open = mysql_async::Conn::new(app_opts(proxy.addr(), Some("app")))
        .await
        .unwrap();
    open.query_drop("BEGIN").await.unwrap();
    open.query_drop("INSERT INTO abandoned VALUES (1)")
        .await
        .unwrap();

    proxy.signal("TERM");
    let signalled = Instant::now();
    let (status, _) = proxy.exited(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "exited {took:?} after SIGTERM"
    );
    assert_eq!(proxy.logged("drain deadline passed").len(), 1);
    // The server rolled the transaction back when its connection closed.
    assert!(open.query_drop("COMMIT").await.is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = cluster
            .sql(0, "SELECT COUNT(*) FROM app.abandoned")
            .unwrap();
        if rows == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the open transaction was not rolled back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_thresholds_and_users_and_rejects_a_broken_file() {
    let _serial = SERIAL.lock().await;
    let cluster = shared_cluster(NET);
    cluster
        .sql(
            0,
            "CREATE TABLE IF NOT EXISTS app.ticks (id INT AUTO_INCREMENT PRIMARY KEY)",
        )
        .unwrap();
    cluster
        .wait_replicas_caught_up(Duration::from_secs(30))
        .unwrap();
    let path = config_file("reload", &config_text(cluster, "60s", &[APP_USER], ""));
    let proxy = Running::start(&path);
    proxy
        .wait_until("replicas to take reads", Duration::from_secs(10), |s| {
            s["eligible_replicas"] == 2
        })
        .await;

    // mysql-1 falls a few seconds behind: well within 60 s.
    cluster.set_replication_delay(1, 30).unwrap();
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let opts = direct_opts(cluster, 0, Some("app"));
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await.unwrap();
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                conn.query_drop("INSERT INTO ticks () VALUES ()")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    proxy
        .wait_until("mysql-1 to lag 3 s", Duration::from_secs(15), |s| {
            s["replicas"][0]["replication_lag_seconds"].as_u64() >= Some(3)
        })
        .await;
    assert_eq!(proxy.status().await["replicas"][0]["state"], "eligible");

    // The threshold drops to 2 s: mysql-1 is out without a restart.
    std::fs::write(&path, config_text(cluster, "2s", &[APP_USER], "")).unwrap();
    proxy.signal("HUP");
    proxy
        .wait_until(
            "mysql-1 out after the reload",
            Duration::from_secs(5),
            |s| s["replicas"][0]["state"] == "excluded",
        )
        .await;
    let why = proxy.status().await["replicas"][0]["why_not"].clone();
    assert!(
        why.as_str().unwrap().contains("over the maximum 2s"),
        "{why}"
    );
    assert_eq!(proxy.logged("configuration reloaded").len(), 1);

    // A broken file is rejected whole; the proxy goes on with what it had.
    std::fs::write(&path, "[proxy\nlisten = ").unwrap();
    proxy.signal("HUP");
    proxy.wait_logged("configuration rejected", 1).await;
    let mut conn = mysql_async::Conn::new(app_opts(proxy.addr(), Some("app")))
        .await
        .unwrap();
    let server: u32 = query_one(&mut conn, "SELECT @@server_id").await;
    assert_eq!(server, 3, "mysql-2 serves reads; mysql-1 is still out");

    // A user added to the file can log in after the next reload; one removed cannot, but
    // its sessions stay.
    let monitor = || {
        opts(
            "127.0.0.1",
            proxy.addr().port(),
            MONITOR_USER,
            MONITOR_PASSWORD,
            None,
        )
    };
    let err = server_error(mysql_async::Conn::new(monitor()).await);
    assert_eq!(err.code, 1045, "{err:?}");
    std::fs::write(&path, config_text(cluster, "2s", &[MONITOR_USER], "")).unwrap();
    proxy.signal("HUP");
    proxy.wait_logged("configuration reloaded", 2).await;
    mysql_async::Conn::new(monitor())
        .await
        .unwrap()
        .disconnect()
        .await
        .unwrap();
    let err = server_error(mysql_async::Conn::new(app_opts(proxy.addr(), None)).await);
    assert_eq!(err.code, 1045, "{err:?}");
    let still: u32 = query_one(&mut conn, "SELECT 1").await;
    assert_eq!(still, 1);

    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    cluster.set_replication_delay(1, 0).unwrap();
}

/// Started as the shipped configuration runs it: no server named, the pods from the
/// headless Service's DNS records, served by a nameserver the machine's own resolver does
/// not ask, and slow to answer. Every server is checked at the address discovery found, not
/// at its name before that, so the start leaves no failed check behind: no warning in the
/// log, none in `/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_discovers_its_servers_starts_without_a_failed_check() {
    use support::cluster::{CLUSTER_DOMAIN, NAMESPACE, SERVICE};
    let _serial = SERIAL.lock().await;
    let cluster = shared_cluster(NET);
    let text = format!(
        "[discovery]\nheadless_service = '{SERVICE}'\nnamespace = '{NAMESPACE}'\n\
         cluster_domain = '{CLUSTER_DOMAIN}'\ndns_server = '{}'\nkubernetes = 'off'\n\
         [health]\nmonitor_user = '{MONITOR_USER}'\nmonitor_password_env = 'MONITOR_PASSWORD'\n\
         check_interval = '200ms'\nrise = 1\n\
         [[users]]\nname = '{APP_USER}'\npassword_env = 'APP_PASSWORD'\n",
        cluster.dns_address()
    );
    cluster.dns().set_delay(Duration::from_millis(300));
    let proxy = Running::start(&config_file("discovered", &text));
    proxy
        .wait_until(
            "the primary checked and both replicas taking reads",
            Duration::from_secs(10),
            |s| s["eligible_replicas"] == 2 && s["primary"]["last_check_seconds_ago"].is_number(),
        )
        .await;
    cluster.dns().set_delay(Duration::ZERO);
    let status = proxy.status().await;
    let primary = &status["primary"];
    assert_eq!(primary["state"], "up", "{primary}");
    assert!(primary["check_error"].is_null(), "{primary}");
    assert_eq!(
        primary["name"],
        format!("mysql-0.{SERVICE}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}")
    );

    let mut conn = mysql_async::Conn::new(app_opts(proxy.addr(), Some("app")))
        .await
        .unwrap();
    let reader: u32 = query_one(&mut conn, "SELECT @@server_id").await;
    assert_ne!(reader, 1, "a read goes to a replica");
    conn.query_drop("BEGIN").await.unwrap();
    let writer: u32 = query_one(&mut conn, "SELECT @@server_id").await;
    assert_eq!(writer, 1, "a transaction runs on the primary");
    conn.query_drop("COMMIT").await.unwrap();
    conn.disconnect().await.unwrap();

    let complaints: Vec<String> = proxy
        .process
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            matches!(event["level"].as_str(), Some("WARN" | "ERROR"))
        })
        .cloned()
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
}
