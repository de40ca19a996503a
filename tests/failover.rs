//! Health checks and failures under load: sysbench reads through the proxy while a replica
//! is killed, stopped with SIGSTOP, or made to lag, and while the primary is killed. What the
//! user sees is what is asserted: sysbench's error and reconnect counts, which server
//! answered, and when the proxy stopped (and started again) sending reads to a server.

#[path = "support/kube_api.rs"]
mod kube_api;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use rwsplit::config::{Config, FileConfig, Overrides};
use rwsplit::topology::{Backend, Backends};
use support::cluster::{MONITOR_PASSWORD, MONITOR_USER, note};
use support::*;

const NET: &str = "127.0.30";
/// As in `HEALTH`.
const MAX_LAG_SECS: u64 = 2;

/// Every test kills or stops servers of its own cluster, on the same addresses: one at a
/// time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    cluster: Cluster,
    addr: SocketAddr,
    /// The admin endpoints.
    admin: SocketAddr,
    backends: Arc<Backends>,
}

/// A fresh cluster with sysbench's tables, and a proxy with health checks in front of it,
/// configured with the cluster's servers.
async fn setup() -> Setup {
    setup_with(config).await
}

/// `setup`, with a proxy that finds the servers through the cluster's DNS, as in Kubernetes.
async fn setup_discovered() -> Setup {
    setup_with(discovery_config).await
}

async fn setup_with(config: impl FnOnce(&Cluster) -> Config) -> Setup {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(NET, 2).unwrap())
        .await
        .unwrap();
    let (started, _) = start_proxy_until(config(&cluster), std::future::pending()).await;
    let Started {
        addr,
        admin,
        backends,
    } = started;
    let admin = admin.expect("the admin port is configured");
    let (ok, report) = support::sysbench::run(addr, "oltp_read_only", "prepare", TABLES).await;
    assert!(ok, "prepare:\n{report}");
    cluster
        .wait_replicas_caught_up(Duration::from_secs(60))
        .unwrap();
    let setup = Setup {
        cluster,
        addr,
        admin,
        backends,
    };
    for k in 1..=2 {
        setup
            .wait_for(&format!("mysql-{k} to take reads"), 10, |b| {
                b.replica(k).eligible()
            })
            .await;
    }
    setup
}

const TABLES: &[&str] = &["--tables=2", "--table-size=5000"];

const HEALTH: &str = "[admin]\nlisten = '127.0.0.1:0'\n\
                      [health]\nmonitor_user = 'monitor'\ncheck_interval = '300ms'\n\
                      check_timeout = '1s'\nmax_replication_lag = '2s'\nrise = 2\n";

fn parse(text: &str) -> Config {
    let file: FileConfig = toml::from_str(text).expect("test config parses");
    Config::from_file(file, &Overrides::default(), &|_| None).expect("test config is valid")
}

/// No server named: the headless Service's records in the cluster's DNS say it all.
fn discovery_config(cluster: &Cluster) -> Config {
    discovery_config_with(cluster, "kubernetes = 'off'")
}

/// `discovery_config` with `kubernetes` settings in the `[discovery]` table.
fn discovery_config_with(cluster: &Cluster, kubernetes: &str) -> Config {
    parse(&format!(
        "[proxy]\nlisten = '127.0.0.1:0'\nconnect_timeout = '2s'\n{HEALTH}\
         [discovery]\nheadless_service = '{}'\nnamespace = '{}'\ncluster_domain = '{}'\n\
         dns_server = '{}'\ninterval = '1s'\n{kubernetes}\n\
         [[users]]\nname = '{APP_USER}'\npassword = '{APP_PASSWORD}'\n\
         [[users]]\nname = '{MONITOR_USER}'\npassword = '{MONITOR_PASSWORD}'\n",
        support::cluster::SERVICE,
        support::cluster::NAMESPACE,
        support::cluster::CLUSTER_DOMAIN,
        cluster.dns_address()
    ))
}

fn config(cluster: &Cluster) -> Config {
    let replicas = replica_tables(cluster);
    parse(&format!(
        "[proxy]\nlisten = '127.0.0.1:0'\nconnect_timeout = '2s'\n{HEALTH}\
         [primary]\nname = 'mysql-0'\naddress = '{}'\n{replicas}\
         [[users]]\nname = '{APP_USER}'\npassword = '{APP_PASSWORD}'\n\
         [[users]]\nname = '{MONITOR_USER}'\npassword = '{MONITOR_PASSWORD}'\n",
        cluster.primary().address()
    ))
}

trait Topology {
    fn replica(&self, k: usize) -> Arc<Backend>;
    fn primary(&self) -> Arc<Backend>;
}

impl Topology for Backends {
    fn replica(&self, k: usize) -> Arc<Backend> {
        let name = format!("mysql-{k}");
        let pod = format!("mysql-{k}.");
        self.load()
            .replicas
            .iter()
            .find(|b| b.name() == name || b.name().starts_with(&pod))
            .unwrap_or_else(|| panic!("{name} is not in the topology"))
            .clone()
    }

    fn primary(&self) -> Arc<Backend> {
        self.load().primary.clone()
    }
}

impl Setup {
    /// Waits until `condition` holds of the proxy's backends; returns how long it took.
    async fn wait_for(
        &self,
        what: &str,
        timeout_secs: u64,
        condition: impl Fn(&Backends) -> bool,
    ) -> Duration {
        let started = Instant::now();
        while !condition(&self.backends) {
            assert!(
                started.elapsed() < Duration::from_secs(timeout_secs),
                "waited {timeout_secs}s for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    /// sysbench reads (no transactions, so they go to the replicas) for `secs`, in the
    /// background.
    fn read_load(&self, secs: u64) -> tokio::task::JoinHandle<String> {
        let addr = self.addr;
        tokio::spawn(async move {
            let time = format!("--time={secs}");
            let mut args = TABLES.to_vec();
            args.extend([
                "--threads=16",
                time.as_str(),
                "--skip_trx=on",
                "--report-interval=0",
                "--verbosity=5",
            ]);
            let (ok, report) = support::sysbench::run(addr, "oltp_read_only", "run", &args).await;
            assert!(ok, "sysbench failed:\n{report}");
            report
        })
    }

    /// The proxy's `/status`.
    async fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.admin, "/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Reads by the application on server `k` (the server's own user statistics).
    fn app_reads(&self, k: usize) -> u64 {
        app_commands(&self.cluster, k).selects
    }

    /// Reads the application ran on server `k` during `window`.
    async fn reads_during(&self, k: usize, window: Duration) -> u64 {
        let before = self.app_reads(k);
        tokio::time::sleep(window).await;
        self.app_reads(k) - before
    }
}

/// sysbench saw no error and no reconnect.
fn assert_clean(report: &str) {
    let events = support::sysbench::counter(report, "transactions:");
    assert!(events > 100, "only {events} events:\n{report}");
    assert_eq!(
        support::sysbench::counter(report, "ignored errors:"),
        0,
        "{report}"
    );
    assert_eq!(
        support::sysbench::counter(report, "reconnects:"),
        0,
        "{report}"
    );
    note(&format!("sysbench: {events} events, no errors"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_left_out_and_taken_back() {
    let _serial = SERIAL.lock().await;
    let mut setup = setup().await;
    let load = setup.read_load(25);
    tokio::time::sleep(Duration::from_secs(5)).await;

    setup.cluster.kill_server(1);
    let took = setup
        .wait_for("mysql-1 to be left out", 5, |b| !b.replica(1).eligible())
        .await;
    note(&format!("killed replica left out after {took:?}"));
    let on_other = setup.reads_during(2, Duration::from_secs(3)).await;
    assert!(on_other > 100, "mysql-2 served {on_other} reads meanwhile");
    // What an operator sees meanwhile.
    let status = setup.status().await;
    let killed = &status["replicas"][0];
    assert_eq!(killed["name"], "mysql-1");
    assert_eq!(killed["state"], "down", "{status:#}");
    assert_eq!(killed["up"], false);
    assert!(
        killed["why_not"].as_str().unwrap().contains("unreachable"),
        "{killed:#}"
    );
    assert!(killed["check_error"].is_string(), "{killed:#}");
    assert_eq!(status["replicas"][1]["state"], "eligible");
    assert_eq!(status["ready"], true, "the primary and mysql-2 serve");
    let metrics = scrape(setup.admin).await;
    let of = |name: &str, k: &str| sample(&metrics, name, &[("backend", k)]);
    assert_eq!(of("rwsplit_backend_up", "mysql-1"), 0.0);
    assert_eq!(of("rwsplit_backend_eligible", "mysql-1"), 0.0);
    assert_eq!(of("rwsplit_backend_up", "mysql-2"), 1.0);
    assert!(
        sample(&metrics, "rwsplit_retries_total", &[]) > 0.0,
        "reads the killed replica failed were retried"
    );

    setup.cluster.start_server(1).unwrap();
    let took = setup
        .wait_for("mysql-1 to take reads again", 15, |b| {
            b.replica(1).eligible()
        })
        .await;
    note(&format!("restarted replica takes reads after {took:?}"));
    let back = setup.reads_during(1, Duration::from_secs(3)).await;
    assert!(back > 100, "mysql-1 served {back} reads after it came back");

    assert_clean(&load.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_shut_down_and_started_again_costs_no_errors() {
    let _serial = SERIAL.lock().await;
    let mut setup = setup().await;
    let load = setup.read_load(20);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // As when its pod is deleted: SIGTERM, the server closes its connections and exits.
    setup.cluster.stop_server(2);
    setup
        .wait_for("mysql-2 to be left out", 5, |b| !b.replica(2).eligible())
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    setup.cluster.start_server(2).unwrap();
    setup
        .wait_for("mysql-2 to take reads again", 15, |b| {
            b.replica(2).eligible()
        })
        .await;
    assert_clean(&load.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_loses_its_reads_within_three_seconds() {
    let _serial = SERIAL.lock().await;
    let setup = setup().await;
    let load = setup.read_load(22);
    tokio::time::sleep(Duration::from_secs(5)).await;

    let replica = setup.backends.replica(1);
    setup.cluster.pause_server(1);
    let stopped = Instant::now();
    setup
        .wait_for("mysql-1 to be left out", 3, |b| !b.replica(1).eligible())
        .await;
    // Reads that were waiting on it were given up and ran elsewhere; none is sent anew.
    setup
        .wait_for("reads waiting on mysql-1 to be abandoned", 3, |_| {
            replica.in_flight() == 0
        })
        .await;
    let took = stopped.elapsed();
    assert!(took <= Duration::from_secs(3), "took {took:?}");
    note(&format!(
        "stopped replica left out, its reads moved, after {took:?}"
    ));
    for _ in 0..20 {
        assert_eq!(
            replica.in_flight(),
            0,
            "a read was sent to the stopped replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_other = setup.reads_during(2, Duration::from_secs(2)).await;
    assert!(on_other > 100, "mysql-2 served {on_other} reads meanwhile");

    setup.cluster.resume_server(1);
    setup
        .wait_for("mysql-1 to take reads again", 10, |b| {
            b.replica(1).eligible()
        })
        .await;
    assert_clean(&load.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_gets_no_reads_until_it_catches_up() {
    let _serial = SERIAL.lock().await;
    let setup = setup().await;
    let mut writer = Conn::new(app_opts(setup.addr, Some("app"))).await.unwrap();
    writer
        .query_drop("CREATE TABLE ticks (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(3))")
        .await
        .unwrap();
    setup
        .cluster
        .wait_replicas_caught_up(Duration::from_secs(30))
        .unwrap();
    // The delay holds back only what is written from now on; while nothing is, the replica
    // is not behind (restarting replication takes it out briefly, for its threads stop).
    setup.cluster.set_replication_delay(1, 60).unwrap();
    setup
        .wait_for("mysql-1 to take reads with nothing to delay", 10, |b| {
            b.replica(1).eligible()
        })
        .await;

    let load = setup.read_load(30);
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writes = {
        let writing = writing.clone();
        tokio::spawn(async move {
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                writer
                    .query_drop("INSERT INTO ticks (at) VALUES (NOW(3))")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let writes_began = Instant::now();
    setup
        .wait_for("mysql-1 to be left out", MAX_LAG_SECS + 5, |b| {
            !b.replica(1).eligible()
        })
        .await;
    // The lag passes the maximum about MAX_LAG_SECS after the first delayed write; from
    // then on the replica must be out within 3 s.
    let took = writes_began.elapsed();
    note(&format!(
        "lagging replica left out {took:?} after delayed writes began"
    ));
    assert!(
        took >= Duration::from_secs(MAX_LAG_SECS) && took <= Duration::from_secs(MAX_LAG_SECS + 3),
        "took {took:?}"
    );
    let on_lagging = setup.reads_during(1, Duration::from_secs(3)).await;
    assert_eq!(on_lagging, 0, "the lagging replica served reads");
    let status = setup.status().await;
    let lagging = &status["replicas"][0];
    assert_eq!(lagging["state"], "excluded", "{status:#}");
    assert_eq!(lagging["up"], true);
    let lag = lagging["replication_lag_seconds"].as_u64().unwrap();
    assert!(lag > MAX_LAG_SECS, "{lagging:#}");
    let why = lagging["why_not"].as_str().unwrap();
    assert!(why.contains("replication lag"), "{why}");
    let metrics = scrape(setup.admin).await;
    let of = |name: &str| sample(&metrics, name, &[("backend", "mysql-1")]);
    assert!(of("rwsplit_backend_replication_lag_seconds") > MAX_LAG_SECS as f64);
    assert_eq!(of("rwsplit_backend_eligible"), 0.0);
    assert_eq!(of("rwsplit_backend_up"), 1.0);

    setup.cluster.set_replication_delay(1, 0).unwrap();
    setup
        .wait_for("mysql-1 to take reads again", 10, |b| {
            b.replica(1).eligible()
        })
        .await;
    let back = setup.reads_during(1, Duration::from_secs(3)).await;
    assert!(back > 100, "mysql-1 served {back} reads after catching up");

    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writes.await.unwrap();
    assert_clean(&load.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_primary_down_reads_go_on_and_writes_fail_clearly_until_it_is_back() {
    let _serial = SERIAL.lock().await;
    let mut setup = setup().await;
    let mut writer = Conn::new(app_opts(setup.addr, Some("app"))).await.unwrap();
    writer
        .query_drop("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    writer
        .query_drop("INSERT INTO notes VALUES (1, 'before')")
        .await
        .unwrap();
    let load = setup.read_load(20);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let primary = setup.backends.primary();
    let seen = primary.down_count();
    setup.cluster.kill_server(0);
    setup
        .wait_for("the primary to be found down", 3, |b| {
            b.primary().down_count() > seen
        })
        .await;
    let err = server_error(
        writer
            .query_drop("INSERT INTO notes VALUES (2, 'during')")
            .await,
    );
    assert_eq!(err.code, 1429, "{err:?}");
    assert!(err.message.contains("mysql-0"), "{}", err.message);

    // A new client gets in (through a replica) and reads; its writes fail the same way.
    let mut late = Conn::new(app_opts(setup.addr, Some("app"))).await.unwrap();
    let count: u64 = query_one(&mut late, "SELECT COUNT(*) FROM notes").await;
    assert_eq!(count, 1);
    let err = server_error(late.query_drop("DELETE FROM notes").await);
    assert_eq!(err.code, 1429, "{err:?}");
    // The proxy still serves reads, so it stays in the Service; the status says why
    // writes fail.
    assert_eq!(http_get(setup.admin, "/readyz").await.0, 200);
    let status = setup.status().await;
    assert_eq!(status["primary"]["state"], "down", "{status:#}");
    assert!(status["primary"]["check_error"].is_string());

    setup.cluster.start_server(0).unwrap();
    let back = Instant::now();
    loop {
        match writer
            .query_drop("INSERT INTO notes VALUES (2, 'after')")
            .await
        {
            Ok(()) => break,
            Err(mysql_async::Error::Server(e)) if e.code == 1429 => {
                assert!(
                    back.elapsed() < Duration::from_secs(15),
                    "writes still fail 15 s after the primary came back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    note(&format!(
        "writes work again {:?} after the primary came back",
        back.elapsed()
    ));
    let rows = setup
        .cluster
        .sql(0, "SELECT id, body FROM app.notes ORDER BY id")
        .unwrap();
    assert_eq!(rows, "1\tbefore\n2\tafter");
    late.query_drop("DELETE FROM notes WHERE id = 2")
        .await
        .unwrap();
    assert_clean(&load.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_found_through_dns_come_and_go_with_the_statefulset() {
    let _serial = SERIAL.lock().await;
    let mut setup = setup_discovered().await;
    let primary = setup.backends.primary();
    assert_eq!(
        primary.name(),
        format!("mysql-0.{}", support::cluster::service_name()),
        "the primary pod, found through DNS"
    );
    let load = setup.read_load(35);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The nameserver fails (SERVFAIL) for three discovery intervals: the last topology
    // stands, and both replicas keep serving.
    setup.cluster.dns().set_failing(true);
    let (one, two) = tokio::join!(
        setup.reads_during(1, Duration::from_millis(1500)),
        setup.reads_during(2, Duration::from_millis(1500))
    );
    setup.cluster.dns().set_failing(false);
    assert!(
        one > 100 && two > 100,
        "reads while DNS failed: mysql-1 {one}, mysql-2 {two}"
    );
    let topology = setup.backends.load();
    assert_eq!(topology.replicas.len(), 2, "replicas after the DNS outage");
    assert!(topology.replicas.iter().all(|r| r.eligible()));
    drop(topology);

    // Scale out: a new pod clones the primary, replicates, and appears in DNS.
    let k = tokio::task::block_in_place(|| setup.cluster.add_replica()).unwrap();
    let published = Instant::now();
    setup
        .wait_for("the new replica to take reads", 10, |b| {
            b.load()
                .replicas
                .iter()
                .any(|r| r.name().starts_with(&format!("mysql-{k}.")) && r.eligible())
        })
        .await;
    let took = published.elapsed();
    note(&format!(
        "mysql-{k} takes reads {took:?} after it appeared in DNS"
    ));
    // One discovery interval (1 s) and TTL (1 s), then its first check.
    assert!(took <= Duration::from_secs(4), "took {took:?}");
    let on_new = setup.reads_during(k, Duration::from_secs(2)).await;
    assert!(on_new > 100, "mysql-{k} served {on_new} reads");

    // Scale in: the pod leaves DNS, then stops; sessions move on without an error.
    tokio::task::block_in_place(|| setup.cluster.remove_replica());
    setup
        .wait_for("the removed replica to leave the topology", 5, |b| {
            !b.load()
                .replicas
                .iter()
                .any(|r| r.name().starts_with(&format!("mysql-{k}.")))
        })
        .await;
    assert_clean(&load.await.unwrap());
}

/// `serving` as the EndpointSlice controller reports a pod whose readiness probe fails
/// behind a headless Service with publishNotReadyAddresses: still `ready`, not `serving`.
const PROBE_FAILING: kube_api::Conditions = kube_api::Conditions {
    ready: true,
    serving: false,
    terminating: false,
};

/// The headless Service's EndpointSlice for the cluster's three pods.
fn cluster_slice(cluster: &Cluster, conditions: [kube_api::Conditions; 3]) -> serde_json::Value {
    let pods = (0..3)
        .map(|k| kube_api::pod_at(k as u32, &cluster.servers[k].ip, conditions[k]))
        .collect();
    kube_api::slice("mysql-4kd9w", pods)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failing_its_readiness_probe_loses_reads_at_once() {
    use kube_api::{READY, TERMINATING};
    let _serial = SERIAL.lock().await;
    let api = kube_api::FakeApi::start().await;
    let kubeconfig =
        std::env::temp_dir().join(format!("rwsplit-kubeconfig-{}", std::process::id()));
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let setup = setup_with(|cluster| {
        api.apply(cluster_slice(cluster, [READY; 3]));
        discovery_config_with(
            cluster,
            &format!("kubernetes = 'on'\nkubeconfig = '{}'", kubeconfig.display()),
        )
    })
    .await;
    std::fs::remove_file(&kubeconfig).unwrap();
    assert!(api.lists() >= 1, "the proxy listed the EndpointSlices");
    let load = setup.read_load(20);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // mysql-1's probe fails: the API says so long before DNS or a failed check would.
    api.apply(cluster_slice(&setup.cluster, [READY, PROBE_FAILING, READY]));
    let took = setup
        .wait_for("mysql-1 to lose reads", 5, |b| !b.replica(1).eligible())
        .await;
    note(&format!(
        "mysql-1 out {took:?} after its endpoint stopped serving"
    ));
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    // Statements already running there finish; no new ones start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (on_1, on_2) = tokio::join!(
        setup.reads_during(1, Duration::from_secs(2)),
        setup.reads_during(2, Duration::from_secs(2))
    );
    assert_eq!(on_1, 0, "reads on mysql-1 while not serving");
    assert!(on_2 > 100, "mysql-2 served {on_2} reads");

    // mysql-1 ready again while mysql-2 is being deleted (terminating, still serving).
    api.apply(cluster_slice(&setup.cluster, [READY, READY, TERMINATING]));
    setup
        .wait_for("mysql-1 back and mysql-2 out", 5, |b| {
            b.replica(1).eligible() && !b.replica(2).eligible()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (on_1, on_2) = tokio::join!(
        setup.reads_during(1, Duration::from_secs(2)),
        setup.reads_during(2, Duration::from_secs(2))
    );
    assert!(on_1 > 100, "mysql-1 served {on_1} reads once ready");
    assert_eq!(on_2, 0, "reads on the terminating mysql-2");

    api.apply(cluster_slice(&setup.cluster, [READY; 3]));
    setup
        .wait_for("both replicas to take reads", 5, |b| {
            b.replica(1).eligible() && b.replica(2).eligible()
        })
        .await;
    assert_clean(&load.await.unwrap());
}
