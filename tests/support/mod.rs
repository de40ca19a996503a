//! Test support: the local cluster (with its DNS server), an in-process proxy in front of it, and clients.

#![allow(dead_code)]

pub mod certs;
pub mod cluster;
pub mod process;
pub mod raw;
pub mod sysbench;

use std::net::SocketAddr;
use std::sync::OnceLock;

use mysql_async::prelude::Queryable;
use rwsplit::config::{Config, FileConfig, Overrides};
use rwsplit::server::Proxy;

pub use cluster::{APP_PASSWORD, APP_USER, Cluster};

/// One cluster per test binary, started on first use on the loopback network `net`
/// (each test binary uses its own, so binaries never share servers).
pub fn shared_cluster(net: &'static str) -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let started = std::time::Instant::now();
        let cluster = Cluster::start(net, 2).unwrap_or_else(|e| panic!("local cluster: {e}"));
        cluster::note(&format!(
            "local cluster on {net}.1-3 started in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        cluster
    })
}

/// The proxy's configuration for `cluster`, listening on an ephemeral port. `proxy_extra`
/// goes into the `[proxy]` table; `tail` is appended to the file and so continues the
/// application user's `[[users]]` table (its auth_plugin, say) or adds tables after it.
pub fn proxy_config(cluster: &Cluster, proxy_extra: &str, tail: &str) -> Config {
    let text = format!(
        "[proxy]\nlisten = '127.0.0.1:0'\n{proxy_extra}\n\
         [primary]\nname = 'mysql-0'\naddress = '{}'\n\
         [[users]]\nname = '{APP_USER}'\npassword = '{APP_PASSWORD}'\n{tail}\n",
        cluster.primary().address()
    );
    let file: FileConfig = toml::from_str(&text).expect("test config parses");
    Config::from_file(file, &Overrides::default(), &|_| None).expect("test config is valid")
}

/// The proxy's configuration for read/write splitting over all of `cluster`: its primary
/// and replicas (named `mysql-K` like the StatefulSet's pods). `routing` goes into the
/// `[routing]` table.
pub fn split_config(cluster: &Cluster, routing: &str) -> Config {
    let replicas = replica_tables(cluster);
    let text = format!(
        "[proxy]\nlisten = '127.0.0.1:0'\n[routing]\n{routing}\n\
         [primary]\nname = 'mysql-0'\naddress = '{}'\n{replicas}\
         [[users]]\nname = '{APP_USER}'\npassword = '{APP_PASSWORD}'\n",
        cluster.primary().address()
    );
    let file: FileConfig = toml::from_str(&text).expect("test config parses");
    Config::from_file(file, &Overrides::default(), &|_| None).expect("test config is valid")
}

/// A `[[replicas]]` table for each of `cluster`'s replicas, named `mysql-K` like the pods.
pub fn replica_tables(cluster: &Cluster) -> String {
    cluster
        .replicas()
        .iter()
        .map(|r| {
            format!(
                "[[replicas]]\nname = '{}'\naddress = '{}'\n",
                r.name,
                r.address()
            )
        })
        .collect()
}

/// A global status counter of server `k` (`Com_select`, `Com_insert`, ...), read over the
/// server's socket so that reading it does not count itself.
pub fn status_counter(cluster: &Cluster, k: usize, name: &str) -> u64 {
    let out = cluster
        .sql(k, &format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} on server {k}: {out}"))
}

/// Statements the application user ran on server `k`, by class, as the server's user
/// statistics count them (replication's own work is not the application's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserCommands {
    pub selects: u64,
    /// INSERT, UPDATE, DELETE, REPLACE and the like.
    pub updates: u64,
    pub other: u64,
}

pub fn app_commands(cluster: &Cluster, k: usize) -> UserCommands {
    let out = cluster
        .sql(
            k,
            &format!(
                "SELECT SELECT_COMMANDS, UPDATE_COMMANDS, OTHER_COMMANDS \
                 FROM information_schema.USER_STATISTICS WHERE USER = '{APP_USER}'"
            ),
        )
        .unwrap();
    let n: Vec<u64> = out.split_whitespace().map(|n| n.parse().unwrap()).collect();
    match n[..] {
        [selects, updates, other] => UserCommands {
            selects,
            updates,
            other,
        },
        _ => UserCommands::default(),
    }
}

impl UserCommands {
    pub fn since(self, before: UserCommands) -> UserCommands {
        UserCommands {
            selects: self.selects - before.selects,
            updates: self.updates - before.updates,
            other: self.other - before.other,
        }
    }
}

/// Proxy logs go to the test's captured output (shown for failing tests); `RUST_LOG` sets
/// the level, `warn` by default.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A proxy running on the current runtime.
pub struct Started {
    pub addr: SocketAddr,
    /// The admin endpoints, when the config has `[admin] listen`.
    pub admin: Option<SocketAddr>,
    pub backends: std::sync::Arc<rwsplit::topology::Backends>,
}

/// Starts a proxy that serves until `shutdown` completes or the runtime ends.
pub async fn start_proxy_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Started, tokio::task::JoinHandle<()>) {
    init_logs();
    let proxy = Proxy::bind(config).await.expect("bind proxy");
    let started = Started {
        addr: proxy.local_addr().unwrap(),
        admin: proxy.admin_addr(),
        backends: proxy.backends(),
    };
    (started, tokio::spawn(proxy.serve(shutdown)))
}

/// An HTTP GET to the admin port: the status code and the body.
pub async fn http_get(admin: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("admin port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// Scrapes `/metrics` and parses it as Prometheus does.
pub async fn scrape(admin: SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text format")
}

/// The value of the sample `name` whose labels include all of `labels`; 0 when absent.
/// Histograms are read through their `_count` and `_sum`.
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name} is not a plain value: {other:?}"),
        })
        .collect();
    found.iter().sum()
}

/// The error the server (or the proxy, speaking as one) answered; panics on anything else.
pub fn server_error<T>(result: Result<T, mysql_async::Error>) -> mysql_async::ServerError {
    match result {
        Err(mysql_async::Error::Server(e)) => e,
        Err(other) => panic!("expected a server error, got {other}"),
        Ok(_) => panic!("expected a server error, it succeeded"),
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a proxy on the current runtime; it serves until the runtime ends.
pub async fn start_proxy(config: Config) -> SocketAddr {
    start_proxy_with_backends(config).await.0
}

/// `start_proxy`, also returning the proxy's view of its backends.
pub async fn start_proxy_with_backends(
    config: Config,
) -> (SocketAddr, std::sync::Arc<rwsplit::topology::Backends>) {
    init_logs();
    let proxy = Proxy::bind(config).await.expect("bind proxy");
    let addr = proxy.local_addr().unwrap();
    let backends = proxy.backends();
    tokio::spawn(proxy.serve(std::future::pending()));
    (addr, backends)
}

pub fn opts(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: Option<&str>,
) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_owned())
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

pub fn app_opts(addr: SocketAddr, db: Option<&str>) -> mysql_async::Opts {
    opts(
        &addr.ip().to_string(),
        addr.port(),
        APP_USER,
        APP_PASSWORD,
        db,
    )
}

/// A direct connection to server `k`, bypassing the proxy.
pub fn direct_opts(cluster: &Cluster, k: usize, db: Option<&str>) -> mysql_async::Opts {
    opts(
        &cluster.servers[k].ip,
        cluster::PORT,
        APP_USER,
        APP_PASSWORD,
        db,
    )
}

pub async fn query_one<T: mysql_async::prelude::FromValue + Send + 'static>(
    conn: &mut mysql_async::Conn,
    sql: &str,
) -> T {
    conn.query_first::<T, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// A table with a column of every kind, and rows that exercise them (NULLs included).
pub const TYPES_TABLE: &str = "CREATE TABLE IF NOT EXISTS app.all_types (
    id INT PRIMARY KEY,
    t TINYINT, s SMALLINT UNSIGNED, m MEDIUMINT, i INT, b BIGINT UNSIGNED,
    d DECIMAL(30,10), f FLOAT, db DOUBLE, bits BIT(10),
    dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(4), y YEAR,
    c CHAR(10) CHARACTER SET latin1, v VARCHAR(100) CHARACTER SET utf8mb4,
    v2 VARCHAR(50) CHARACTER SET cp1251, v3 VARCHAR(50) CHARACTER SET ujis,
    bin BINARY(4), vb VARBINARY(20), tx TEXT, bl BLOB, j JSON,
    e ENUM('red','green'), st SET('a','b','c'), g POINT
)";

pub const TYPES_ROWS: &str = "INSERT IGNORE INTO app.all_types VALUES
    (1, -128, 65535, -8388608, 2147483647, 18446744073709551615,
     12345678901234567890.0123456789, 3.25, -2.5e-300, b'1010101010',
     '2024-02-29', '2024-02-29 23:59:59.999999', '2038-01-19 03:14:07.123', '-838:59:59.9999', 2155,
     'latin é', 'emoji 🐬 ünïcödé', 'кириллица', '日本語テキスト',
     x'00ff10ab', x'deadbeef', REPEAT('text ', 100), x'000102030405', '{\"k\": [1, 2, {\"n\": null}]}',
     'green', 'a,c', ST_GeomFromText('POINT(1 2)')),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (3, 0, 0, 0, 0, 0, 0, 0, 0, b'0', '1000-01-01', '1000-01-01 00:00:00', '1970-01-01 00:00:01',
     '00:00:00', 1901, '', '', '', '', x'00000000', '', '', '', '[]', 'red', '', ST_GeomFromText('POINT(0 0)'))";
