//! TLS on both sides against a cluster whose servers have certificates: clients (the
//! `mariadb` command-line client and mysql_async) verify the proxy's certificate against
//! the CA, plaintext is refused when TLS is required, passthrough users authenticate with
//! caching_sha2_password's full authentication, and the proxy checks the servers'
//! certificates as each `backend_tls.mode` says.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use mysql_async::SslOpts;
use mysql_async::prelude::Queryable;
use rwsplit::config::{Config, FileConfig, Overrides};
use support::certs::{Ca, Leaf};
use support::cluster::{MONITOR_PASSWORD, MONITOR_USER};
use support::*;

const NET: &str = "127.0.33";
/// A user whose password only the servers know.
const PASSTHROUGH_USER: &str = "carol";
const PASSTHROUGH_PASSWORD: &str = "carol-password";

struct Pki {
    ca: Ca,
    /// A CA that signed none of the certificates in play.
    stranger: Ca,
    proxy: Leaf,
}

struct Setup {
    cluster: Cluster,
    pki: Pki,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-pki");
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Ca::new(&dir, "rwsplit-test-ca");
        let stranger = Ca::new(&dir, "stranger-ca");
        let proxy = ca.issue("proxy", &["IP:127.0.0.1", "DNS:localhost"]);
        // The primary's certificate names the address the proxy dials; the replica's names
        // another, so that only verify-identity tells them apart.
        let primary = ca.issue("mysql-0", &[&format!("IP:{NET}.1"), "DNS:mysql-0"]);
        let replica = ca.issue("mysql-1", &["IP:192.0.2.1", "DNS:mysql-1.elsewhere"]);
        let server_args = |leaf: &Leaf| {
            vec![
                format!("--ssl-ca={}", ca.cert.display()),
                format!("--ssl-cert={}", leaf.cert.display()),
                format!("--ssl-key={}", leaf.key.display()),
            ]
        };
        let cluster = Cluster::start_with(NET, 1, vec![server_args(&primary), server_args(&replica)])
            .unwrap_or_else(|e| panic!("local cluster: {e}"));
        // The servers refuse these accounts without TLS: a login that works went over TLS.
        cluster
            .sql(
                0,
                &format!(
                    "ALTER USER '{APP_USER}'@'%' REQUIRE SSL;
                     ALTER USER '{MONITOR_USER}'@'%' REQUIRE SSL;
                     CREATE USER '{PASSTHROUGH_USER}'@'%' IDENTIFIED BY '{PASSTHROUGH_PASSWORD}' REQUIRE SSL;
                     GRANT SELECT, INSERT, CREATE, DROP ON *.* TO '{PASSTHROUGH_USER}'@'%';
                     CREATE TABLE IF NOT EXISTS app.notes (id INT PRIMARY KEY, body LONGTEXT);"
                ),
            )
            .unwrap();
        cluster
            .wait_replicas_caught_up(Duration::from_secs(30))
            .unwrap();
        Setup {
            cluster,
            pki: Pki {
                ca,
                stranger,
                proxy,
            },
        }
    })
}

/// The proxy's configuration: `[tls]` with the proxy's certificate (TLS required), and
/// `[backend_tls]` in `mode` with `ca`.
fn config(setup: &Setup, mode: &str, ca: &Path) -> Config {
    let cluster = &setup.cluster;
    let text = format!(
        "[proxy]\nlisten = '127.0.0.1:0'\nconnect_timeout = '2s'\n\
         [tls]\ncert = '{}'\nkey = '{}'\nrequire = true\n\
         [backend_tls]\nmode = '{mode}'\nca = '{}'\n\
         [health]\nmonitor_user = '{MONITOR_USER}'\ncheck_interval = '300ms'\nrise = 1\n\
         [primary]\nname = 'mysql-0'\naddress = '{}'\n{}\
         [[users]]\nname = '{APP_USER}'\npassword = '{APP_PASSWORD}'\n\
         [[users]]\nname = '{MONITOR_USER}'\npassword = '{MONITOR_PASSWORD}'\n\
         [[users]]\nname = '{PASSTHROUGH_USER}'\npassthrough = true\n",
        setup.pki.proxy.cert.display(),
        setup.pki.proxy.key.display(),
        ca.display(),
        cluster.primary().address(),
        replica_tables(cluster),
    );
    let file: FileConfig = toml::from_str(&text).expect("test config parses");
    Config::from_file(file, &Overrides::default(), &|_| None).expect("test config is valid")
}

fn tls_opts(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
    ca: &Path,
) -> mysql_async::Opts {
    mysql_async::OptsBuilder::from_opts(opts("127.0.0.1", addr.port(), user, password, Some("app")))
        .ssl_opts(SslOpts::default().with_root_certs(vec![PathBuf::from(ca).into()]))
        .into()
}

/// The `mariadb` client against the proxy; `tls` are its TLS options.
async fn mariadb(port: u16, user: &str, password: &str, tls: &[&str], sql: &str) -> (bool, String) {
    let output = tokio::process::Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", &format!("-P{port}")])
        .args([&format!("-u{user}"), &format!("-p{password}")])
        .args(tls)
        .args(["--batch", "--skip-column-names", "-e", sql])
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The cipher of the server side of the session's connection: empty without TLS.
const BACKEND_CIPHER: &str = "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'";

/// Waits until the proxy's health checks have found the replica eligible (or not).
async fn wait_replica(backends: &rwsplit::topology::Backends, eligible: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = backends
            .load()
            .replicas
            .iter()
            .any(|r| r.name() == "mysql-1" && r.eligible());
        if now == eligible {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica eligibility never became {eligible}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_mariadb_client_logs_in_over_tls_and_verifies_the_proxy() {
    let setup = setup();
    let ca = setup.pki.ca.cert.to_str().unwrap();
    let (addr, _) = start_proxy_with_backends(config(setup, "verify-ca", &setup.pki.ca.cert)).await;
    let port = addr.port();
    let verify = [
        "--ssl",
        &format!("--ssl-ca={ca}"),
        "--ssl-verify-server-cert",
    ];

    let (ok, out) = mariadb(
        port,
        APP_USER,
        APP_PASSWORD,
        &verify,
        "status; SELECT @@server_id",
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("Cipher in use is"),
        "the client's side is not TLS:\n{out}"
    );
    let (ok, out) = mariadb(port, APP_USER, APP_PASSWORD, &verify, BACKEND_CIPHER).await;
    assert!(
        ok && !out.trim().is_empty(),
        "the server's side is not TLS:\n{out}"
    );

    // TLS is required: a plaintext login gets MySQL's error for it.
    let (ok, out) = mariadb(port, APP_USER, APP_PASSWORD, &["--skip-ssl"], "SELECT 1").await;
    assert!(!ok);
    assert!(out.contains("ERROR 3159 (08004)"), "{out}");

    // A client that trusts another CA refuses the proxy's certificate.
    let stranger = format!("--ssl-ca={}", setup.pki.stranger.cert.display());
    let (ok, out) = mariadb(
        port,
        APP_USER,
        APP_PASSWORD,
        &["--ssl", &stranger, "--ssl-verify-server-cert"],
        "SELECT 1",
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("2026"),
        "expected an SSL connection error:\n{out}"
    );

    // A passthrough user: caching_sha2_password's full authentication over TLS, and the
    // server checks the password.
    let (ok, out) = mariadb(
        port,
        PASSTHROUGH_USER,
        PASSTHROUGH_PASSWORD,
        &verify,
        "SELECT CURRENT_USER()",
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{PASSTHROUGH_USER}@%")), "{out}");
    let (ok, out) = mariadb(port, PASSTHROUGH_USER, "wrong", &verify, "SELECT 1").await;
    assert!(!ok);
    assert!(out.contains("ERROR 1045 (28000)"), "{out}");
}

#[tokio::test]
async fn mysql_async_over_tls_reads_writes_and_large_packets() {
    let setup = setup();
    let ca = &setup.pki.ca.cert;
    let (addr, backends) = start_proxy_with_backends(config(setup, "verify-ca", ca)).await;
    wait_replica(&backends, true).await;
    let mut conn = mysql_async::Conn::new(tls_opts(addr, APP_USER, APP_PASSWORD, ca))
        .await
        .expect("TLS login through the proxy");
    // Reads on the replica, writes on the primary, both over TLS.
    assert_eq!(query_one::<u32>(&mut conn, "SELECT @@server_id").await, 2);
    let cipher: String = query_one(&mut conn, BACKEND_CIPHER).await;
    assert!(!cipher.is_empty());
    // More than one 16 MiB frame each way, through both TLS connections.
    let body = "x".repeat(20 << 20);
    conn.exec_drop("REPLACE INTO app.notes VALUES (1, ?)", (body.as_str(),))
        .await
        .unwrap();
    let (id, len): (u32, u64) = conn
        .query_first("SELECT @@server_id, LENGTH(body) FROM app.notes WHERE id = 1 FOR UPDATE")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((id, len), (1, 20 << 20));
    let back: String = query_one(&mut conn, "SELECT REPEAT('y', 17000000)").await;
    assert_eq!(back.len(), 17_000_000);
    assert!(back.bytes().all(|b| b == b'y'));
    conn.disconnect().await.unwrap();

    // Passthrough with mysql_async: full authentication over TLS.
    let mut carol =
        mysql_async::Conn::new(tls_opts(addr, PASSTHROUGH_USER, PASSTHROUGH_PASSWORD, ca))
            .await
            .expect("passthrough login");
    let user: String = query_one(&mut carol, "SELECT CURRENT_USER()").await;
    assert_eq!(user, format!("{PASSTHROUGH_USER}@%"));
    carol.disconnect().await.unwrap();
    let wrong = mysql_async::Conn::new(tls_opts(addr, PASSTHROUGH_USER, "wrong", ca)).await;
    assert_eq!(server_error(wrong).code, 1045);

    // Without TLS: refused, for stored and passthrough users alike.
    for (user, password) in [
        (APP_USER, APP_PASSWORD),
        (PASSTHROUGH_USER, PASSTHROUGH_PASSWORD),
    ] {
        let plain =
            mysql_async::Conn::new(opts("127.0.0.1", addr.port(), user, password, None)).await;
        let err = server_error(plain);
        assert_eq!((err.code, err.state.as_str()), (3159, "08004"), "{user}");
    }
}

#[tokio::test]
async fn backend_certificates_are_checked_as_the_mode_says() {
    let setup = setup();
    let ca = &setup.pki.ca.cert;

    // verify-identity: the primary's certificate names its address, the replica's does not;
    // the replica is left out and reads go to the primary.
    let (addr, backends) = start_proxy_with_backends(config(setup, "verify-identity", ca)).await;
    let mut conn = mysql_async::Conn::new(tls_opts(addr, APP_USER, APP_PASSWORD, ca))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_replica(&backends, false).await;
    for _ in 0..10 {
        assert_eq!(query_one::<u32>(&mut conn, "SELECT @@server_id").await, 1);
    }
    let replica = backends.load().replicas[0].clone();
    let why = replica.observed().check_error.unwrap_or_default();
    assert!(
        why.contains("certificate") || why.contains("Tls") || why.contains("TLS"),
        "{why}"
    );
    conn.disconnect().await.unwrap();

    // required: any certificate will do.
    let (addr, backends) = start_proxy_with_backends(config(setup, "required", ca)).await;
    wait_replica(&backends, true).await;
    let mut conn = mysql_async::Conn::new(tls_opts(addr, APP_USER, APP_PASSWORD, ca))
        .await
        .unwrap();
    assert_eq!(query_one::<u32>(&mut conn, "SELECT @@server_id").await, 2);
    conn.disconnect().await.unwrap();

    // verify-ca with a CA that signed neither server: no login.
    let stranger = &setup.pki.stranger.cert;
    let (addr, _) = start_proxy_with_backends(config(setup, "verify-ca", stranger)).await;
    let refused = mysql_async::Conn::new(tls_opts(addr, APP_USER, APP_PASSWORD, ca)).await;
    let err = server_error(refused);
    assert!(err.message.contains("TLS"), "{}", err.message);

    // off: the servers require TLS of this account, so they refuse the login.
    let mut plain = config(setup, "verify-ca", ca);
    plain.backend_tls = rwsplit::tls::BackendTls::default();
    let (addr, _) = start_proxy_with_backends(plain).await;
    let refused = mysql_async::Conn::new(tls_opts(addr, APP_USER, APP_PASSWORD, ca)).await;
    assert_eq!(server_error(refused).code, 1045);
}
