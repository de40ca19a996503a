//! What an operator sees: the admin port's metrics (parsed as Prometheus parses them) moving
//! with a sysbench run for the routes and backends that served it, and the health and status
//! endpoints.

mod support;

use std::time::{Duration, Instant};

use rwsplit::config::{Config, FileConfig, Overrides};
use support::cluster::{MONITOR_PASSWORD, MONITOR_USER};
use support::*;

const NET: &str = "127.0.31";

fn parse(text: &str) -> Config {
    let file: FileConfig = toml::from_str(text).expect("test config parses");
    Config::from_file(file, &Overrides::default(), &|_| None).expect("test config is valid")
}

/// Splitting over the whole cluster with health checks, and the admin port.
fn config(cluster: &Cluster) -> Config {
    let replicas = replica_tables(cluster);
    parse(&format!(
        "[proxy]\nlisten = '127.0.0.1:0'\n[admin]\nlisten = '127.0.0.1:0'\n\
         [health]\nmonitor_user = '{MONITOR_USER}'\ncheck_interval = '300ms'\nrise = 1\n\
         [primary]\nname = 'mysql-0'\naddress = '{}'\n{replicas}\
         [[users]]\nname = '{APP_USER}'\npassword = '{APP_PASSWORD}'\n\
         [[users]]\nname = '{MONITOR_USER}'\npassword = '{MONITOR_PASSWORD}'\n",
        cluster.primary().address()
    ))
}

async fn start(cluster: &Cluster) -> Started {
    let (started, _) = start_proxy_until(config(cluster), std::future::pending()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !started
        .backends
        .load()
        .replicas
        .iter()
        .all(|r| r.eligible())
    {
        assert!(Instant::now() < deadline, "replicas never became eligible");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started
}

const TABLES: &[&str] = &["--tables=2", "--table-size=2000"];

/// Statements counted for `route`, all kinds.
fn on_route(scrape: &prometheus_parse::Scrape, route: &str) -> f64 {
    sample(scrape, "rwsplit_statements_total", &[("route", route)])
}

fn backend(scrape: &prometheus_parse::Scrape, name: &str, k: &str) -> f64 {
    sample(scrape, name, &[("backend", k)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_sysbench_run_route_by_route() {
    let cluster = shared_cluster(NET);
    let proxy = start(cluster).await;
    let admin = proxy.admin.expect("admin port");
    let (ok, report) = sysbench::run(proxy.addr, "oltp_read_only", "prepare", TABLES).await;
    assert!(ok, "prepare:\n{report}");
    cluster
        .wait_replicas_caught_up(Duration::from_secs(30))
        .unwrap();

    let before = scrape(admin).await;
    let selects_before = [1, 2].map(|k| app_commands(cluster, k).selects);
    let run = tokio::spawn(async move {
        let mut args = TABLES.to_vec();
        args.extend(["--threads=16", "--time=6", "--skip_trx=on"]);
        sysbench::run(proxy.addr, "oltp_read_only", "run", &args).await
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = scrape(admin).await;
    let (ok, report) = run.await.unwrap();
    assert!(ok, "run:\n{report}");
    assert_eq!(sysbench::counter(&report, "ignored errors:"), 0, "{report}");

    // Sixteen sysbench threads, each one client connection, while it ran.
    assert_eq!(sample(&during, "rwsplit_client_connections", &[]), 16.0);
    assert!(on_route(&during, "replica") > on_route(&before, "replica"));

    // Every client connection is gone once sysbench is; the gauge says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let now = scrape(admin).await;
        if sample(&now, "rwsplit_client_connections", &[]) == 0.0 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "client connections never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Reads went to the replicas, and the proxy counted exactly what the servers ran.
    let selects = [1, 2].map(|k| app_commands(cluster, k).selects);
    let served = (selects[0] - selects_before[0]) + (selects[1] - selects_before[1]);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    let reads = delta(
        "rwsplit_statements_total",
        &[("route", "replica"), ("kind", "read")],
    );
    assert!(reads > 1000.0, "{reads} reads counted");
    assert_eq!(reads, served as f64, "reads counted vs run by the replicas");
    assert_eq!(
        delta("rwsplit_statements_total", &[("route", "primary")]),
        0.0,
        "nothing of a read-only run went to the primary"
    );
    for k in ["mysql-1", "mysql-2"] {
        let on_k = delta("rwsplit_backend_statements_total", &[("backend", k)]);
        assert!(on_k > reads / 4.0, "{k} ran {on_k} of {reads}");
    }
    // sysbench prepares its statements (on each replica a connection reads from) and
    // executes them: both are commands the replicas ran.
    assert_eq!(
        delta("rwsplit_backend_statements_total", &[("role", "replica")]),
        delta("rwsplit_statements_total", &[("route", "replica")])
    );
    assert!(
        delta(
            "rwsplit_statements_total",
            &[("route", "replica"), ("kind", "prepare")]
        ) > 0.0
    );
    // Every statement was timed on its route.
    assert_eq!(
        delta(
            "rwsplit_statement_duration_seconds_count",
            &[("route", "replica")]
        ),
        delta("rwsplit_statements_total", &[("route", "replica")])
    );
    assert!(delta("rwsplit_relayed_bytes_total", &[("direction", "to_client")]) > 0.0);
    assert!(
        delta("rwsplit_client_connections_accepted_total", &[]) >= 16.0,
        "accepted connections"
    );

    // A read-write run: its transactions are the primary's.
    let mut args = TABLES.to_vec();
    args.extend(["--threads=4", "--time=2"]);
    let (ok, report) = sysbench::run(proxy.addr, "oltp_read_write", "run", &args).await;
    assert!(ok, "{report}");
    let rw = scrape(admin).await;
    let grew = |labels: &[(&str, &str)]| {
        sample(&rw, "rwsplit_statements_total", labels)
            - sample(&after, "rwsplit_statements_total", labels)
    };
    assert!(grew(&[("route", "primary"), ("kind", "write")]) > 100.0);
    assert!(grew(&[("route", "primary"), ("kind", "transaction")]) > 100.0);
    assert!(grew(&[("route", "primary"), ("kind", "read")]) > 100.0);
    // Inside transactions no read leaves the primary (the SELECTs were prepared on a
    // replica as well, outside any transaction).
    assert_eq!(grew(&[("route", "replica"), ("kind", "read")]), 0.0);

    // The servers, as the health checks see them.
    for k in ["mysql-0", "mysql-1", "mysql-2"] {
        assert_eq!(backend(&rw, "rwsplit_backend_up", k), 1.0, "{k} up");
    }
    assert_eq!(backend(&rw, "rwsplit_backend_read_only", "mysql-0"), 0.0);
    for k in ["mysql-1", "mysql-2"] {
        assert_eq!(backend(&rw, "rwsplit_backend_eligible", k), 1.0);
        assert_eq!(backend(&rw, "rwsplit_backend_read_only", k), 1.0);
        let lagging = rw.samples.iter().any(|s| {
            s.metric == "rwsplit_backend_replication_lag_seconds"
                && s.labels.get("backend") == Some(k)
        });
        assert!(lagging, "no replication lag reported for {k}");
    }
    assert!(sample(&rw, "process_resident_memory_bytes", &[]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_counted_and_logins_are_not() {
    let cluster = shared_cluster(NET);
    let proxy = start(cluster).await;
    let admin = proxy.admin.unwrap();
    let before = scrape(admin).await;
    let wrong = opts(
        &proxy.addr.ip().to_string(),
        proxy.addr.port(),
        APP_USER,
        "not the password",
        None,
    );
    let err = mysql_async::Conn::new(wrong).await.unwrap_err();
    assert!(err.to_string().contains("1045"), "{err}");
    let conn = mysql_async::Conn::new(app_opts(proxy.addr, None))
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    // The failed session is counted as it ends, just after the client saw the error.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = scrape(admin).await;
    let grew = |name: &str| sample(&after, name, &[]) - sample(&before, name, &[]);
    assert_eq!(grew("rwsplit_client_auth_failures_total"), 1.0);
    assert_eq!(grew("rwsplit_client_connections_accepted_total"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_status_describe_the_cluster() {
    let cluster = shared_cluster(NET);
    let proxy = start(cluster).await;
    let admin = proxy.admin.unwrap();

    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(
        http_get(admin, "/readyz").await,
        (200, "ready\n".to_owned())
    );
    let (code, body) = http_get(admin, "/nowhere").await;
    assert_eq!(code, 404, "{body}");

    let (code, body) = http_get(admin, "/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(status["ready"], true, "{status:#}");
    assert_eq!(status["primary"]["name"], "mysql-0");
    assert_eq!(status["primary"]["state"], "up");
    assert_eq!(status["primary"]["read_only"], false);
    assert_eq!(
        status["primary"]["address"],
        cluster.primary().address().to_string()
    );
    let replicas = status["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{status:#}");
    for (k, replica) in replicas.iter().enumerate() {
        assert_eq!(replica["name"], format!("mysql-{}", k + 1));
        assert_eq!(replica["state"], "eligible", "{replica:#}");
        assert_eq!(replica["why_not"], serde_json::Value::Null);
        assert_eq!(replica["io_running"], true);
        assert_eq!(replica["sql_running"], true);
        assert!(replica["replication_lag_seconds"].as_u64().unwrap() <= 1);
        assert!(replica["last_check_seconds_ago"].as_f64().unwrap() < 2.0);
    }
    assert_eq!(status["eligible_replicas"], 2);
    let discovery = status["discovery"].as_array().unwrap();
    assert_eq!(discovery[0]["source"], "configured_dns", "{status:#}");
    assert_eq!(discovery[0]["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reachable_server_the_proxy_is_not_ready() {
    // Nothing listens on port 1; the health checks find the primary down at once.
    let config = parse(&format!(
        "[proxy]\nlisten = '127.0.0.1:0'\n[admin]\nlisten = '127.0.0.1:0'\n\
         [health]\nmonitor_user = '{MONITOR_USER}'\ncheck_interval = '200ms'\n\
         [primary]\nname = 'nowhere-0'\naddress = '127.0.0.1:1'\n\
         [[users]]\nname = '{MONITOR_USER}'\npassword = '{MONITOR_PASSWORD}'\n"
    ));
    let (proxy, _) = start_proxy_until(config, std::future::pending()).await;
    let admin = proxy.admin.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (code, body) = loop {
        let answer = http_get(admin, "/readyz").await;
        if answer.0 != 200 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("nowhere-0"), "{body}");
    // Alive all the same: the kubelet must not restart a proxy for its servers' sake.
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    let status: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/status").await.1).unwrap();
    assert_eq!(status["primary"]["state"], "down", "{status:#}");
    assert_eq!(status["ready"], false);
}
