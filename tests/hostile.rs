//! Hostile and broken clients, and the limits that contain them: too many clients, too many
//! sessions of one user, logins that never finish, sessions that go quiet, packets that
//! stall, lie about their length or break the sequence, garbage before and after the
//! handshake, password guessing, pipelined commands, and a client that reads nothing of a
//! huge result. Each answer is checked as the client receives it, and so is the proxy's
//! memory (its resident size, read from /proc while it runs as its own process). Clients
//! that behave are never disturbed: the last test runs sysbench through a proxy under a
//! flood of all of the above and requires zero errors.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use rwsplit::protocol::codes::{self, SqlError};
use rwsplit::protocol::handshake::{ServerIdentity, greeting_payload, new_scramble};
use rwsplit::protocol::packet::{HEADER_LEN, MAX_FRAME, encode_packet};
use rwsplit::protocol::response::{PREFIX_LEN, ResponseKind, ResponseTracker, Step};
use rwsplit::server::Proxy;
use support::cluster::{MONITOR_PASSWORD, MONITOR_USER, note};
use support::process::ProxyBinary;
use support::raw::{RawClient, error_of};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NET: &str = "127.0.34";

fn cluster() -> &'static Cluster {
    shared_cluster(NET)
}

/// A result of about 300 MB: far more than any buffer of the proxy.
const HUGE_ROWS: u64 = 300_000;
const HUGE_SELECT: &str = "SELECT seq, REPEAT('x', 1000) FROM seq_1_to_300000";

/// Reads until the peer closes (or `within` passes); the bytes and how long it took.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the proxy kept the connection open for {within:?}"
    );
    (bytes, started.elapsed())
}

/// The packets in `bytes`: (sequence id, payload).
fn packets(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= HEADER_LEN {
        let len = bytes[0] as usize | (bytes[1] as usize) << 8 | (bytes[2] as usize) << 16;
        let end = (HEADER_LEN + len).min(bytes.len());
        out.push((bytes[3], bytes[HEADER_LEN..end].to_vec()));
        bytes = &bytes[end..];
    }
    out
}

/// Connects and reads the greeting, as a client does before it answers.
async fn greeted(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).await.unwrap();
    let len = header[0] as usize | (header[1] as usize) << 8;
    let mut greeting = vec![0u8; len];
    stream.read_exact(&mut greeting).await.unwrap();
    assert_eq!(greeting[0], 10, "a protocol 10 greeting");
    stream
}

/// The error a connection was sent before it closed, if any.
fn last_error(bytes: &[u8]) -> Option<SqlError> {
    packets(bytes)
        .last()
        .and_then(|(_, payload)| SqlError::from_payload(payload))
}

fn status_int(body: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text format");
    sample(&scrape, name, labels) as u64
}

/// A metric's value now.
async fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> u64 {
    let (code, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    status_int(&body, name, labels)
}

/// Waits until `check` holds, for at most `within`.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An in-process proxy with its admin port and its reloader.
async fn proxy_with_admin(
    proxy_extra: &str,
    users_tail: &str,
) -> (SocketAddr, SocketAddr, rwsplit::server::Reloader) {
    let tail = format!("{users_tail}\n[admin]\nlisten = '127.0.0.1:0'\n");
    let config = proxy_config(cluster(), proxy_extra, &tail);
    init_logs();
    let proxy = Proxy::bind(config).await.expect("bind proxy");
    let addr = proxy.local_addr().unwrap();
    let admin = proxy.admin_addr().unwrap();
    let reloader = proxy.reloader();
    tokio::spawn(proxy.serve(std::future::pending()));
    (addr, admin, reloader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_max_connections_get_1040_at_once() {
    let addr = start_proxy(proxy_config(cluster(), "max_connections = 3", "")).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Conn::new(app_opts(addr, None)).await.unwrap());
    }
    let started = Instant::now();
    let err = server_error(Conn::new(app_opts(addr, None)).await);
    assert_eq!(
        (err.code, err.message.as_str()),
        (1040, "Too many connections")
    );
    // Not a hang, also for a client that sends nothing: the error comes in place of the
    // greeting and the connection closes.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (bytes, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(last_error(&bytes).map(|e| e.code), Some(1040));
    assert!(started.elapsed() < Duration::from_secs(2));

    held.pop().unwrap().disconnect().await.unwrap();
    eventually(
        "the freed slot to be taken",
        Duration::from_secs(5),
        move || async move { Conn::new(app_opts(addr, None)).await.is_ok() },
    )
    .await;
    for conn in &mut held {
        let one: u8 = query_one(conn, "SELECT 1").await;
        assert_eq!(one, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_limits_count_authenticated_sessions_and_follow_a_reload() {
    let users = format!(
        "max_connections = 2\n[[users]]\nname = '{MONITOR_USER}'\npassword = '{MONITOR_PASSWORD}'\n"
    );
    let (addr, admin, reloader) = proxy_with_admin("max_user_connections = 1", &users).await;
    let monitor = || {
        opts(
            "127.0.0.1",
            addr.port(),
            MONITOR_USER,
            MONITOR_PASSWORD,
            None,
        )
    };

    // `app` has a limit of its own (2): ER_USER_LIMIT_REACHED.
    let mut a1 = Conn::new(app_opts(addr, None)).await.unwrap();
    let a2 = Conn::new(app_opts(addr, None)).await.unwrap();
    let err = server_error(Conn::new(app_opts(addr, None)).await);
    assert_eq!((err.code, err.state.as_str()), (1226, "42000"), "{err:?}");
    assert!(
        err.message
            .contains("'app' has exceeded the 'max_user_connections' resource (current value: 2)"),
        "{}",
        err.message
    );
    // A wrong password is told so: the limit counts authenticated sessions only.
    let wrong = opts("127.0.0.1", addr.port(), APP_USER, "not it", None);
    assert_eq!(server_error(Conn::new(wrong).await).code, 1045);

    // `monitor` has none: the global limit (1) applies, ER_TOO_MANY_USER_CONNECTIONS.
    let mut m1 = Conn::new(monitor()).await.unwrap();
    let err = server_error(Conn::new(monitor()).await);
    assert_eq!((err.code, err.state.as_str()), (1203, "42000"), "{err:?}");
    assert!(
        err.message.contains("max_user_connections"),
        "{}",
        err.message
    );

    // COM_CHANGE_USER is counted like a login: `app` is full, so the change is refused
    // (and, as every failed change, ends the session) ...
    let to_app = mysql_async::ChangeUserOpts::default()
        .with_user(Some(APP_USER.into()))
        .with_pass(Some(APP_PASSWORD.into()));
    let err = server_error(m1.change_user(to_app.clone()).await);
    assert_eq!(err.code, 1226, "{err:?}");
    // ... which frees monitor's session.
    eventually(
        "monitor's session to be released",
        Duration::from_secs(5),
        move || async move { Conn::new(monitor()).await.is_ok() },
    )
    .await;
    // Changing to the same user does not count twice.
    a1.change_user(to_app.clone()).await.unwrap();
    let user: String = query_one(&mut a1, "SELECT CURRENT_USER()").await;
    assert_eq!(user, "app@%");

    // A session that ends gives its place back.
    a2.disconnect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let a3 = loop {
        match Conn::new(app_opts(addr, None)).await {
            Ok(conn) => break conn,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(server_error::<Conn>(Err(e)).code, 1226);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("app's session was not given back: {e}"),
        }
    };

    // A reload raises app's limit: a third session gets in without a restart.
    let raised = users.replacen("max_connections = 2", "max_connections = 3", 1);
    let tail = format!("{raised}\n[admin]\nlisten = '127.0.0.1:0'\n");
    let kept = reloader
        .apply(proxy_config(cluster(), "max_user_connections = 1", &tail))
        .await;
    assert!(kept.is_empty(), "{kept:?}");
    let mut a4 = Conn::new(app_opts(addr, None)).await.unwrap();
    let one: u8 = query_one(&mut a4, "SELECT 1").await;
    assert_eq!(one, 1);
    drop(a3);

    let refused = metric(
        admin,
        "rwsplit_client_connections_rejected_total",
        &[("reason", "max_user_connections")],
    )
    .await;
    assert_eq!(
        refused, 3,
        "a login of app, one of monitor, one change of user"
    );
}

/// A backend that greets like a server, then never answers a login.
async fn silent_after_greeting() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let payload = greeting_payload(
                    &ServerIdentity::fallback(),
                    7,
                    &new_scramble(),
                    "mysql_native_password",
                );
                let mut framed = Vec::new();
                encode_packet(&mut framed, 0, &payload);
                let _ = stream.write_all(&framed).await;
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_that_do_not_finish_in_time_are_dropped() {
    let (addr, admin, _) =
        proxy_with_admin("handshake_timeout = '1s'\nmax_connections = 3000", "").await;

    // Greeted, then silent: closed at the timeout. The proxy is the one waiting, so no
    // packet has a place in the exchange; the connection just ends, as a server's does.
    let mut silent = greeted(addr).await;
    let (bytes, took) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(bytes.is_empty(), "{bytes:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    // Half a handshake response, then silent: the same.
    let mut half = greeted(addr).await;
    half.write_all(&[80, 0, 0, 1, 0x85, 0xa6, 0xff])
        .await
        .unwrap();
    let (bytes, took) = read_until_closed(&mut half, Duration::from_secs(5)).await;
    assert!(
        bytes.is_empty() && took < Duration::from_secs(3),
        "{bytes:?} {took:?}"
    );
    // A client that never reads the greeting either.
    let mut deaf = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (bytes, _) = read_until_closed(&mut deaf, Duration::from_secs(5)).await;
    assert_eq!(packets(&bytes).len(), 1, "only the greeting");
    eventually(
        "three timeouts counted",
        Duration::from_secs(5),
        move || async move {
            let reason = [("reason", "handshake_timeout")];
            metric(admin, "rwsplit_client_connections_rejected_total", &reason).await == 3
        },
    )
    .await;

    // Two thousand of them at once: each is dropped at its timeout, and a client that
    // means it logs in meanwhile.
    let mut flood = Vec::new();
    for _ in 0..2000 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let mut conn = Conn::new(app_opts(addr, None)).await.unwrap();
    let one: u8 = query_one(&mut conn, "SELECT 1").await;
    assert_eq!(one, 1);
    let logged_in = started.elapsed();
    let ends = futures_util::future::join_all(flood.into_iter().map(|mut stream| async move {
        let (bytes, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        packets(&bytes).len()
    }))
    .await;
    assert!(
        ends.iter().all(|&n| n == 1),
        "each got its greeting, then the end"
    );
    let all_closed = started.elapsed();
    note(&format!(
        "2000 silent connections: a login took {logged_in:?} meanwhile; all closed {all_closed:?} \
         after the last one connected"
    ));
    assert!(all_closed < Duration::from_secs(4), "{all_closed:?}");
    eventually(
        "2003 timeouts counted",
        Duration::from_secs(5),
        move || async move {
            let reason = [("reason", "handshake_timeout")];
            metric(admin, "rwsplit_client_connections_rejected_total", &reason).await == 2003
        },
    )
    .await;
    conn.disconnect().await.unwrap();

    // Where the client waits for the verdict (here, because the server it is logged in to
    // never answers), it is told why: ER_HANDSHAKE_ERROR.
    let silent_server = silent_after_greeting().await;
    let text = format!(
        "[proxy]\nlisten = '127.0.0.1:0'\nhandshake_timeout = '1s'\nconnect_timeout = '10s'\n\
         [primary]\nname = 'mute'\naddress = '{silent_server}'\n\
         [[users]]\nname = '{APP_USER}'\npassword = '{APP_PASSWORD}'\n"
    );
    let file: rwsplit::config::FileConfig = toml::from_str(&text).unwrap();
    let config = rwsplit::config::Config::from_file(file, &Default::default(), &|_| None).unwrap();
    let mute = start_proxy(config).await;
    let started = Instant::now();
    let err = server_error(Conn::new(app_opts(mute, None)).await);
    assert_eq!((err.code, err.state.as_str()), (1043, "08S01"), "{err:?}");
    assert!(err.message.contains("Bad handshake"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_between_commands_only() {
    let (addr, admin, _) = proxy_with_admin("idle_timeout = '1s'", "").await;
    // Two clients go quiet ...
    let mut raw = RawClient::connect(addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    let quiet_since = Instant::now();
    let mut quiet = Conn::new(app_opts(addr, None)).await.unwrap();

    // ... while a statement runs longer than the idle timeout, which is not idleness ...
    let mut busy = Conn::new(app_opts(addr, None)).await.unwrap();
    let slept: i64 = query_one(&mut busy, "SELECT SLEEP(2)").await;
    assert_eq!(slept, 0);
    // ... nor is a session that keeps talking.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let one: u8 = query_one(&mut busy, "SELECT 1").await;
        assert_eq!(one, 1);
    }

    // The quiet ones were sent ER_CLIENT_INTERACTION_TIMEOUT (sequence id 0, as from
    // MySQL 8.0.24) at the timeout, and their connections closed.
    let packet = tokio::time::timeout(Duration::from_secs(5), raw.reader.read_packet(1 << 20))
        .await
        .expect("the proxy spoke first")
        .unwrap();
    assert!(quiet_since.elapsed() >= Duration::from_millis(900));
    assert_eq!(packet.seq, 0);
    let err = SqlError::from_payload(&packet.payload).expect("an error packet");
    assert_eq!((err.code, &err.state), (4031, b"HY000"), "{err}");
    assert!(err.message.contains("inactivity"), "{err}");
    assert!(raw.reader.read_packet(1 << 20).await.is_err(), "closed");
    // A driver's next statement fails; the session is gone.
    assert!(quiet.query_drop("SELECT 1").await.is_err());

    let one: u8 = query_one(&mut busy, "SELECT 1").await;
    assert_eq!(one, 1, "the busy session is still there");
    let idle = [("timeout", "idle")];
    assert_eq!(
        metric(admin, "rwsplit_client_sessions_timed_out_total", &idle).await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncation_and_wrong_sequences_get_errors_and_spare_others() {
    let (addr, admin, _) =
        proxy_with_admin("read_timeout = '1s'\nmax_packet_size = 1048576", "").await;
    let mut bystander = Conn::new(app_opts(addr, Some("app"))).await.unwrap();

    // An HTTP request instead of a handshake response, sent without waiting for the
    // greeting: its first bytes read as a 5 MB packet, which is refused.
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: db\r\n\r\n")
        .await
        .unwrap();
    let (bytes, _) = read_until_closed(&mut http, Duration::from_secs(5)).await;
    let err = last_error(&bytes).expect("an error after the greeting");
    assert!([1043, 1153].contains(&err.code), "{err}");

    // A handshake response with the wrong sequence id.
    let mut early = greeted(addr).await;
    let mut framed = Vec::new();
    encode_packet(&mut framed, 3, &[0x85, 0xa6, 0x0f, 0, 0, 0, 0, 1, 45]);
    early.write_all(&framed).await.unwrap();
    let (bytes, _) = read_until_closed(&mut early, Duration::from_secs(5)).await;
    assert_eq!(last_error(&bytes).map(|e| e.code), Some(1156));

    // After login: unknown command bytes and an empty packet are errors, the session goes
    // on; SQL that is garbage is the server's to refuse.
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    for bad in [&[0xee, 1, 2, 3][..], &[codes::COM_QUIT + 0x40], &[]] {
        client.writer.send(0, bad).await.unwrap();
        let response = client.read_response(ResponseKind::Single).await;
        assert_eq!(error_of(&response).map(|e| e.code), Some(1047), "{bad:?}");
    }
    let response = client.query("\u{1}\u{2}SELEKT ;;; \u{ff}").await;
    assert_eq!(error_of(&response).map(|e| e.code), Some(1064));
    let response = client.query("SELECT 7").await;
    assert!(error_of(&response).is_none());

    // A command out of sequence: an error, then the connection closes.
    client.writer.send(5, b"\x03SELECT 1").await.unwrap();
    let mut errors = Vec::new();
    while let Ok(Ok(packet)) =
        tokio::time::timeout(Duration::from_secs(5), client.reader.read_packet(1 << 20)).await
    {
        errors.extend(SqlError::from_payload(&packet.payload));
    }
    assert_eq!(errors.iter().map(|e| e.code).collect::<Vec<_>>(), [1156]);

    // A truncated command, then the client leaves.
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    client
        .writer
        .write_through(&[100, 0, 0, 0, codes::COM_QUERY, b'S'])
        .await
        .unwrap();
    drop(client);

    // A truncated command, then silence: closed after the read timeout, nothing sent.
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    client
        .writer
        .write_through(&[100, 0, 0, 0, codes::COM_QUERY, b'S'])
        .await
        .unwrap();
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), client.reader.read_packet(1 << 20))
        .await
        .expect("closed by the proxy");
    assert!(end.is_err(), "no packet, the end: {end:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // A header announcing a packet over max_packet_size: refused from the header.
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    client
        .writer
        .write_through(&[0xff, 0xff, 0xff, 0, codes::COM_QUERY])
        .await
        .unwrap();
    let packet = client.reader.read_packet(1 << 20).await.unwrap();
    let err = SqlError::from_payload(&packet.payload).unwrap();
    assert_eq!((err.code, &err.state), (1153, b"08S01"));

    // The bystander saw nothing of it, and every broken session is gone.
    let one: u8 = query_one(&mut bystander, "SELECT 1").await;
    assert_eq!(one, 1);
    eventually(
        "broken sessions to end",
        Duration::from_secs(5),
        move || async move { metric(admin, "rwsplit_client_connections", &[]).await == 1 },
    )
    .await;
    assert_eq!(
        metric(
            admin,
            "rwsplit_client_sessions_timed_out_total",
            &[("timeout", "read")]
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_answered_in_order() {
    cluster()
        .sql(
            0,
            "CREATE TABLE IF NOT EXISTS app.pipelined (id INT PRIMARY KEY); \
             DELETE FROM app.pipelined",
        )
        .unwrap();
    let addr = start_proxy(split_config(cluster(), "")).await;
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, Some("app"))
        .await
        .unwrap();
    // Reads (for the replicas), writes and reads of the writes (for the primary), all in
    // one write.
    let mut statements = Vec::new();
    for i in 0..60 {
        statements.push(match i % 3 {
            0 => format!("SELECT {i}"),
            1 => format!("INSERT INTO pipelined VALUES ({i})"),
            _ => format!("SELECT /* rwsplit:primary */ COUNT(*) + {i} FROM pipelined"),
        });
    }
    let mut wire = Vec::new();
    for sql in &statements {
        let mut payload = vec![codes::COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        encode_packet(&mut wire, 0, &payload);
    }
    client.writer.write_through(&wire).await.unwrap();
    let mut inserted = 0;
    for (i, sql) in statements.iter().enumerate() {
        let frames = client.read_response(ResponseKind::Query).await;
        assert!(error_of(&frames).is_none(), "{sql}: {frames:?}");
        let value = |frames: &[(u8, Vec<u8>)]| -> u64 {
            // Column count, definition, [EOF], row, terminator: the row is second to last.
            let row = &frames[frames.len() - 2].1;
            String::from_utf8_lossy(&row[1..]).parse().unwrap()
        };
        match i % 3 {
            0 => assert_eq!(value(&frames), i as u64, "{sql}"),
            1 => {
                assert_eq!(frames.len(), 1, "an OK for {sql}");
                inserted += 1;
            }
            _ => assert_eq!(value(&frames), inserted + i as u64, "{sql}"),
        }
    }
    let count = cluster()
        .sql(0, "SELECT COUNT(*) FROM app.pipelined")
        .unwrap();
    assert_eq!(count, "20");
}

/// The proxy as its own process (so that its memory can be read), logging JSON.
struct ProxyProcess {
    process: ProxyBinary,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl ProxyProcess {
    /// Starts the binary with the cluster's servers, the application user and `proxy`
    /// keys of its own.
    fn start(name: &str, proxy: &str) -> Self {
        let cluster = cluster();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostile");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.toml"));
        let text = format!(
            "[proxy]\n{proxy}\n[primary]\nname = 'mysql-0'\naddress = '{}'\n{}\
             [[users]]\nname = '{APP_USER}'\npassword = '{APP_PASSWORD}'\n",
            cluster.primary().address(),
            replica_tables(cluster),
        );
        std::fs::write(&path, text).unwrap();
        let process = ProxyBinary::start(&path, &[]);
        Self {
            addr: process.addr,
            admin: process.admin,
            process,
        }
    }

    /// Resident memory now, in bytes.
    fn rss(&self) -> u64 {
        rss_of(self.process.child.id()).expect("the proxy is running")
    }

    /// Samples the resident memory every 20 ms until the returned flag is set; the peak.
    fn watch_rss(&self) -> (Arc<AtomicBool>, Arc<AtomicU64>) {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(self.rss()));
        let pid = self.process.child.id();
        let (stop_flag, peak_seen) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                let Some(rss) = rss_of(pid) else {
                    return;
                };
                peak_seen.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        (stop, peak)
    }

    fn logged(&self, text: &str) -> Vec<serde_json::Value> {
        self.process.logged(text)
    }
}

/// A process's resident memory (VmRSS in /proc/<pid>/status) in bytes; `None` once it
/// has gone.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some(kib * 1024)
}

const MIB: u64 = 1 << 20;

/// Reads a text result to its end without keeping it: the rows and the last row.
async fn count_rows(client: &mut RawClient) -> (u64, Vec<u8>) {
    let deprecate_eof = client
        .capabilities
        .contains(mysql_common::constants::CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let mut tracker = ResponseTracker::new(ResponseKind::Query, deprecate_eof);
    let mut frames = 0u64;
    let mut previous = Vec::new();
    loop {
        let packet = client.reader.read_packet(1 << 24).await.expect("a packet");
        let payload = &packet.payload[..];
        let step = tracker
            .on_frame(&payload[..payload.len().min(PREFIX_LEN)], payload.len())
            .expect("well-formed");
        frames += 1;
        if step == Step::Done {
            assert!(
                SqlError::from_payload(payload).is_none(),
                "ended with an error"
            );
            // Column count, two definitions, [EOF], rows, terminator.
            let metadata = if deprecate_eof { 3 } else { 4 };
            return (frames - metadata - 1, previous);
        }
        previous.clear();
        previous.extend_from_slice(payload);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_gets_backpressure_not_buffering() {
    let proxy = ProxyProcess::start("slow_reader", "write_timeout = '3s'");
    let mut warm = Conn::new(app_opts(proxy.addr, None)).await.unwrap();
    let _: u8 = query_one(&mut warm, "SELECT 1").await;
    let baseline = proxy.rss();

    // 300 MB asked for, nothing read for two seconds: the server is held back, the proxy
    // holds at most a read buffer of it.
    let mut slow = RawClient::connect(proxy.addr, APP_USER, APP_PASSWORD, Some("app"))
        .await
        .unwrap();
    let (stop, peak) = proxy.watch_rss();
    slow.writer
        .send(0, format!("\x03{HUGE_SELECT}").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paused_peak = peak.load(Ordering::Relaxed);
    // Then everything arrives, every row.
    let started = Instant::now();
    let (rows, last) = count_rows(&mut slow).await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let streaming_peak = peak.load(Ordering::Relaxed);
    assert_eq!(rows, HUGE_ROWS);
    assert_eq!(&last[..7], b"\x06300000", "the last row is the last seq");
    note(&format!(
        "slow reader: baseline RSS {:.1} MiB, peak while paused {:.1} MiB, while streaming \
         300 MB {:.1} MiB (in {took:.1?})",
        baseline as f64 / MIB as f64,
        paused_peak as f64 / MIB as f64,
        streaming_peak as f64 / MIB as f64,
    ));
    assert!(
        paused_peak < baseline + 8 * MIB,
        "the proxy buffered for a client that read nothing: {paused_peak} over {baseline}"
    );
    assert!(
        streaming_peak < baseline + 16 * MIB,
        "{streaming_peak} over {baseline}"
    );

    // A client that never reads is dropped after write_timeout, and the statement on the
    // server ends with it.
    let mut stuck = RawClient::connect(proxy.addr, APP_USER, APP_PASSWORD, Some("app"))
        .await
        .unwrap();
    let marked = HUGE_SELECT.replacen("SELECT", "SELECT /* never read */", 1);
    stuck
        .writer
        .send(0, format!("\x03{marked}").as_bytes())
        .await
        .unwrap();
    let running = || {
        (0..3)
            .map(|k| {
                cluster()
                    .sql(
                        k,
                        "SELECT COUNT(*) FROM information_schema.processlist \
                         WHERE info LIKE '%never read%' AND info NOT LIKE '%processlist%'",
                    )
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()
            })
            .sum::<u32>()
    };
    eventually(
        "the statement to start",
        Duration::from_secs(5),
        move || async move { running() == 1 },
    )
    .await;
    eventually(
        "the stuck client's statement to end",
        Duration::from_secs(15),
        move || async move { running() == 0 },
    )
    .await;
    assert_eq!(
        metric(
            proxy.admin,
            "rwsplit_client_sessions_timed_out_total",
            &[("timeout", "write")]
        )
        .await,
        1
    );
    let one: u8 = query_one(&mut warm, "SELECT 1").await;
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_claiming_a_gibibyte_is_refused_without_holding_it() {
    let proxy = ProxyProcess::start("gibibyte", "");
    let mut warm = Conn::new(app_opts(proxy.addr, None)).await.unwrap();
    let _: u8 = query_one(&mut warm, "SELECT 1").await;
    let baseline = proxy.rss();
    let (stop, peak) = proxy.watch_rss();

    // Twenty sessions announce 16 MiB frames and send almost nothing: the announcement
    // alone makes the proxy hold no memory.
    let mut announced = Vec::new();
    for _ in 0..20 {
        let mut client = RawClient::connect(proxy.addr, APP_USER, APP_PASSWORD, None)
            .await
            .unwrap();
        client
            .writer
            .write_through(&[0xff, 0xff, 0xff, 0, codes::COM_QUERY, b'S'])
            .await
            .unwrap();
        announced.push(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_announcements = proxy.rss();

    // One session streams frames that add up to 1 GiB: the proxy stops reading at the
    // limit (max_packet_size, 64 MiB by default), answers ER_NET_PACKET_TOO_LARGE and
    // closes.
    let client = RawClient::connect(proxy.addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    let RawClient {
        mut reader,
        mut writer,
        ..
    } = client;
    let sender = tokio::spawn(async move {
        let mut frame = vec![b'x'; HEADER_LEN + MAX_FRAME];
        frame[..3].copy_from_slice(&[0xff, 0xff, 0xff]);
        frame[HEADER_LEN] = codes::COM_QUERY;
        let mut sent = 0u64;
        for seq in 0..64u8 {
            frame[3] = seq;
            if writer.write_through(&frame).await.is_err() {
                break;
            }
            sent += frame.len() as u64;
        }
        sent
    });
    let packet = tokio::time::timeout(Duration::from_secs(30), reader.read_packet(1 << 20))
        .await
        .expect("an answer")
        .expect("an error packet");
    let err = SqlError::from_payload(&packet.payload).expect("an error packet");
    assert_eq!((err.code, &err.state), (1153, b"08S01"), "{err}");
    let sent = sender.await.unwrap();
    let admin = proxy.admin;
    eventually(
        "the session to end",
        Duration::from_secs(10),
        move || async move { metric(admin, "rwsplit_client_connections", &[]).await == 21 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = proxy.rss();
    stop.store(true, Ordering::Relaxed);
    let peak = peak.load(Ordering::Relaxed);
    note(&format!(
        "1 GiB claim: baseline RSS {:.1} MiB, after 20 announced 16 MiB frames {:.1} MiB, \
         peak {:.1} MiB, after {:.1} MiB; the client got {} MiB out before the error",
        baseline as f64 / MIB as f64,
        after_announcements as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        after as f64 / MIB as f64,
        sent / MIB,
    ));
    assert!(
        after_announcements < baseline + 8 * MIB,
        "announced frames cost memory: {after_announcements} over {baseline}"
    );
    // What the proxy may hold for one packet is max_packet_size (64 MiB), plus the frame
    // being read and the allocator's rounding: well under half as much again.
    assert!(peak < baseline + 96 * MIB, "peak {peak} over {baseline}");
    assert!(
        after < baseline + 16 * MIB,
        "memory was kept after the session ended: {after} over {baseline}"
    );
    let one: u8 = query_one(&mut warm, "SELECT 1").await;
    assert_eq!(one, 1);
    drop(announced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_make_their_address_wait() {
    let proxy = ProxyProcess::start(
        "guessing",
        "login_delay_after = 2\nlogin_delay = '1s'\nlogin_max_delay = '2s'",
    );
    let attempt = |password: String| {
        let addr = proxy.addr;
        async move {
            let started = Instant::now();
            let result = Conn::new(opts("127.0.0.1", addr.port(), APP_USER, &password, None)).await;
            (result, started.elapsed())
        }
    };
    let mut waits = Vec::new();
    for (i, expected_wait) in [0, 0, 1, 2, 2].into_iter().enumerate() {
        let (result, took) = attempt(format!("guess-{i}")).await;
        assert_eq!(server_error(result).code, 1045, "guess {i}");
        waits.push(took);
        let expected = Duration::from_secs(expected_wait);
        assert!(
            took >= expected && took < expected + Duration::from_millis(900),
            "guess {i} took {took:?}, expected about {expected:?}"
        );
    }
    // The right password waits too (so waiting says nothing about the password), then
    // succeeds and lifts the wait.
    let (result, took) = attempt(APP_PASSWORD.to_owned()).await;
    result.unwrap().disconnect().await.unwrap();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    let (result, took) = attempt(APP_PASSWORD.to_owned()).await;
    result.unwrap().disconnect().await.unwrap();
    assert!(took < Duration::from_millis(900), "{took:?}");
    note(&format!("five wrong passwords took {waits:?}"));

    // Each failure is logged with the user and the client's address, never a password.
    let failures = proxy.logged("authentication failed");
    assert_eq!(failures.len(), 5, "{failures:#?}");
    for event in &failures {
        assert_eq!(event["span"]["user"], APP_USER, "{event}");
        assert!(
            event["span"]["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{event}"
        );
    }
    for line in proxy.process.lines.lock().unwrap().iter() {
        assert!(
            !line.contains("guess-") && !line.contains(APP_PASSWORD),
            "a password in the log: {line}"
        );
    }
    assert_eq!(
        metric(proxy.admin, "rwsplit_client_auth_failures_total", &[]).await,
        5
    );
    assert_eq!(
        metric(proxy.admin, "rwsplit_client_login_delays_total", &[]).await,
        4
    );
}

/// What the flood did, for the report.
#[derive(Default)]
struct Flooded {
    unfinished_handshakes: AtomicU64,
    garbage: AtomicU64,
    slow_readers: AtomicU64,
    logins: AtomicU64,
}

/// Connections that never finish the handshake, `concurrent` at a time: silent, half a
/// handshake response, an HTTP request, random bytes. Each waits until the proxy closes it.
async fn flood_handshakes(
    addr: SocketAddr,
    concurrent: usize,
    on: Arc<AtomicBool>,
    n: Arc<Flooded>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrent));
    let mut i = 0u64;
    while on.load(Ordering::Relaxed) {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        i += 1;
        let n = n.clone();
        tokio::spawn(async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return;
            };
            let junk: &[u8] = match i % 4 {
                0 => b"",
                1 => &[80, 0, 0, 1, 0x85, 0xa6, 0xff],
                2 => b"GET /metrics HTTP/1.1\r\nHost: rwsplit\r\n\r\n",
                _ => &[0x17, 0x03, 0x03, 0x00, 0x40, 0x9c, 0x11, 0xfe, 0x00, 0x00],
            };
            let _ = stream.write_all(junk).await;
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            n.unfinished_handshakes.fetch_add(1, Ordering::Relaxed);
            drop(slot);
        });
        // The garbage kinds are answered at once: pace the reconnects.
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Logged-in clients that break the protocol: a frame over max_packet_size, a command out
/// of sequence, a truncated command then gone, unknown commands.
async fn flood_garbage(addr: SocketAddr, on: Arc<AtomicBool>, n: Arc<Flooded>) {
    let mut i = 0u64;
    while on.load(Ordering::Relaxed) {
        i += 1;
        let Ok(mut client) = RawClient::connect(addr, APP_USER, APP_PASSWORD, None).await else {
            continue;
        };
        let bytes: &[u8] = match i % 4 {
            0 => &[0xff, 0xff, 0xff, 0, codes::COM_QUERY, b'S', b'E'],
            1 => b"\x09\x00\x00\x05\x03SELECT 1",
            2 => &[100, 0, 0, 0, codes::COM_QUERY, b'S'],
            _ => b"\x01\x00\x00\x00\xee\x01\x00\x00\x00\x01",
        };
        let _ = client.writer.write_through(bytes).await;
        if i % 4 != 2 {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while client.reader.read_packet(1 << 20).await.is_ok() {}
            })
            .await;
        }
        n.garbage.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that asks for 300 MB and reads none of it, again and again: each is dropped at
/// write_timeout.
async fn flood_slow_reader(addr: SocketAddr, on: Arc<AtomicBool>, n: Arc<Flooded>) {
    while on.load(Ordering::Relaxed) {
        let Ok(mut client) = RawClient::connect(addr, APP_USER, APP_PASSWORD, Some("app")).await
        else {
            continue;
        };
        let _ = client
            .writer
            .send(0, format!("\x03{HUGE_SELECT}").as_bytes())
            .await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        n.slow_readers.fetch_add(1, Ordering::Relaxed);
    }
}

/// A well-behaved client logging in and out all along: every login must work.
async fn keep_logging_in(addr: SocketAddr, on: Arc<AtomicBool>, n: Arc<Flooded>) -> Duration {
    let mut slowest = Duration::ZERO;
    while on.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut conn = Conn::new(app_opts(addr, Some("app")))
            .await
            .expect("a login during the flood");
        let one: u8 = query_one(&mut conn, "SELECT 1").await;
        assert_eq!(one, 1);
        conn.disconnect().await.unwrap();
        slowest = slowest.max(started.elapsed());
        n.logins.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_sees_no_error_while_the_proxy_is_flooded() {
    let cluster = cluster();
    let proxy = ProxyProcess::start(
        "flood",
        "max_connections = 4000\nhandshake_timeout = '2s'\nread_timeout = '2s'\n\
         write_timeout = '3s'\nmax_packet_size = 4194304",
    );
    let addr = proxy.addr;
    let tables = ["--tables=2", "--table-size=10000"];
    let (ok, report) = support::sysbench::run(addr, "oltp_read_only", "prepare", &tables).await;
    assert!(ok, "sysbench prepare:\n{report}");
    cluster
        .wait_replicas_caught_up(Duration::from_secs(60))
        .unwrap();
    let baseline = proxy.rss();
    let (stop_watching, peak) = proxy.watch_rss();

    let on = Arc::new(AtomicBool::new(true));
    let n = Arc::new(Flooded::default());
    let mut flood = Vec::new();
    flood.push(tokio::spawn(flood_handshakes(
        addr,
        1000,
        on.clone(),
        n.clone(),
    )));
    flood.push(tokio::spawn(flood_garbage(addr, on.clone(), n.clone())));
    for _ in 0..3 {
        flood.push(tokio::spawn(flood_slow_reader(addr, on.clone(), n.clone())));
    }
    let prober = tokio::spawn(keep_logging_in(addr, on.clone(), n.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut args = tables.to_vec();
    args.extend([
        "--threads=8",
        "--time=25",
        "--report-interval=0",
        "--skip_trx=on",
    ]);
    let (ok, report) = support::sysbench::run(addr, "oltp_read_only", "run", &args).await;
    on.store(false, Ordering::Relaxed);
    let slowest_login = prober.await.expect("every login during the flood worked");
    for task in flood {
        task.await.unwrap();
    }
    stop_watching.store(true, Ordering::Relaxed);
    let peak = peak.load(Ordering::Relaxed);

    assert!(ok, "sysbench failed under the flood:\n{report}");
    let transactions = support::sysbench::counter(&report, "transactions:");
    let errors = support::sysbench::counter(&report, "ignored errors:");
    let reconnects = support::sysbench::counter(&report, "reconnects:");
    note(&format!(
        "flood: {} unfinished handshakes, {} broken sessions, {} slow readers, {} logins \
         (slowest {slowest_login:.1?}) beside sysbench's {transactions} events, {errors} errors, \
         {reconnects} reconnects; proxy RSS {:.1} MiB before, peak {:.1} MiB",
        n.unfinished_handshakes.load(Ordering::Relaxed),
        n.garbage.load(Ordering::Relaxed),
        n.slow_readers.load(Ordering::Relaxed),
        n.logins.load(Ordering::Relaxed),
        baseline as f64 / MIB as f64,
        peak as f64 / MIB as f64,
    ));
    assert!(transactions > 100, "{report}");
    assert_eq!((errors, reconnects), (0, 0), "{report}");
    assert!(n.unfinished_handshakes.load(Ordering::Relaxed) > 2000);
    assert!(n.slow_readers.load(Ordering::Relaxed) >= 6);
    // A thousand connections in their handshake hold a few KiB each (the greeting written,
    // a read buffer barely touched); sessions and the slow readers' relays hold at most a
    // 64 KiB frame per backend connection; broken sessions at most one 4 MiB packet each,
    // one at a time here. The bound leaves room for the allocator's own keeping.
    assert!(
        peak < baseline + 64 * MIB,
        "peak RSS {peak} over a baseline of {baseline}"
    );

    // Every connection of the flood is gone once its timeouts have run.
    let admin = proxy.admin;
    eventually(
        "the flood's connections to end",
        Duration::from_secs(15),
        move || async move { metric(admin, "rwsplit_client_connections", &[]).await == 0 },
    )
    .await;
}
