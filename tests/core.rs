//! The proxy core against the real local cluster, through real clients: what a user sees when
//! logging in, querying every column type, streaming large values, running multi-statements,
//! procedures, LOAD DATA LOCAL, prepared statements with long data and cursors, changing user,
//! and when clients or backends misbehave.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use rwsplit::protocol::codes::{self, SqlError};
use support::raw::{RawClient, error_of};
use support::*;

const NET: &str = "127.0.21";

fn cluster() -> &'static Cluster {
    shared_cluster(NET)
}

async fn proxy() -> SocketAddr {
    start_proxy(proxy_config(cluster(), "", "")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_reaches_the_primary_and_shows_its_version() {
    let addr = proxy().await;
    let mut via_proxy = Conn::new(app_opts(addr, None)).await.unwrap();
    let direct = Conn::new(direct_opts(cluster(), 0, None)).await.unwrap();
    let server_id: u32 = query_one(&mut via_proxy, "SELECT @@server_id").await;
    assert_eq!(server_id, 1, "mysql-0 answers");
    assert_eq!(via_proxy.server_version(), direct.server_version());
    let user: String = query_one(&mut via_proxy, "SELECT CURRENT_USER()").await;
    assert_eq!(user, "app@%");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_are_denied() {
    let addr = proxy().await;
    let wrong = opts("127.0.0.1", addr.port(), APP_USER, "not-the-password", None);
    let err = server_error(Conn::new(wrong).await);
    assert_eq!((err.code, err.state.as_str()), (1045, "28000"));
    assert!(err.message.contains("'app'@'127.0.0.1'"), "{}", err.message);
    assert!(
        err.message.contains("using password: YES"),
        "{}",
        err.message
    );

    let unknown = opts("127.0.0.1", addr.port(), "nobody", "x", None);
    let err = server_error(Conn::new(unknown).await);
    assert_eq!((err.code, err.state.as_str()), (1045, "28000"));

    let empty = opts("127.0.0.1", addr.port(), APP_USER, "", None);
    let err = server_error(Conn::new(empty).await);
    assert!(
        err.message.contains("using password: NO"),
        "{}",
        err.message
    );

    // The proxy keeps serving after refusing logins.
    let mut conn = Conn::new(app_opts(addr, None)).await.unwrap();
    let one: u8 = query_one(&mut conn, "SELECT 1").await;
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_database_and_unknown_database() {
    let addr = proxy().await;
    let mut conn = Conn::new(app_opts(addr, Some("app"))).await.unwrap();
    let db: String = query_one(&mut conn, "SELECT DATABASE()").await;
    assert_eq!(db, "app");

    let err = server_error(Conn::new(app_opts(addr, Some("no_such_db"))).await);
    assert_eq!(
        (err.code, err.state.as_str()),
        (1049, "42000"),
        "the server's own error"
    );
    assert!(err.message.contains("no_such_db"));
}

/// Starts a proxy with `config`; the application user logs in and queries, a wrong password
/// is denied.
async fn login_and_denial(config: rwsplit::config::Config) {
    let addr = start_proxy(config).await;
    let mut conn = Conn::new(app_opts(addr, None)).await.unwrap();
    let one: u8 = query_one(&mut conn, "SELECT 1").await;
    assert_eq!(one, 1);
    let wrong = opts("127.0.0.1", addr.port(), APP_USER, "wrong", None);
    assert_eq!(server_error(Conn::new(wrong).await).code, 1045);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_password_greeting_and_auth_switch() {
    // The greeting offers caching_sha2_password: mysql_async answers with it (fast auth).
    login_and_denial(proxy_config(
        cluster(),
        "auth_plugin = 'caching_sha2_password'",
        "",
    ))
    .await;
    // The greeting offers native password, but the user must use caching_sha2_password:
    // the client is switched over and logs in.
    login_and_denial(proxy_config(
        cluster(),
        "",
        "auth_plugin = 'caching_sha2_password'",
    ))
    .await;
}

/// Everything a client receives for a result: column metadata and values.
fn describe(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .flat_map(|row| {
            let columns = row.columns_ref().iter().map(|c| {
                format!(
                    "{}:{:?}:{:?}:{}:{}:{}",
                    c.name_str(),
                    c.column_type(),
                    c.flags(),
                    c.character_set(),
                    c.decimals(),
                    c.column_length()
                )
            });
            let values = (0..row.len()).map(|i| format!("{:?}", row.as_ref(i).unwrap()));
            columns.chain(values).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_arrives_exactly_as_directly() {
    let addr = proxy().await;
    let mut direct = Conn::new(direct_opts(cluster(), 0, None)).await.unwrap();
    direct.query_drop(TYPES_TABLE).await.unwrap();
    direct.query_drop(TYPES_ROWS).await.unwrap();
    let mut via_proxy = Conn::new(app_opts(addr, None)).await.unwrap();
    let select = "SELECT * FROM app.all_types ORDER BY id";
    for conn in [&mut direct, &mut via_proxy] {
        conn.query_drop("SET NAMES utf8mb4").await.unwrap();
    }

    let text_direct: Vec<Row> = direct.query(select).await.unwrap();
    let text_proxy: Vec<Row> = via_proxy.query(select).await.unwrap();
    assert_eq!(text_direct.len(), 3);
    assert_eq!(
        describe(&text_proxy),
        describe(&text_direct),
        "text protocol"
    );

    let binary_direct: Vec<Row> = direct.exec(select, ()).await.unwrap();
    let binary_proxy: Vec<Row> = via_proxy.exec(select, ()).await.unwrap();
    assert_eq!(
        describe(&binary_proxy),
        describe(&binary_direct),
        "binary protocol"
    );

    // A charset other than the connection default, chosen at login time by the client.
    let emoji: String = query_one(&mut via_proxy, "SELECT v FROM app.all_types WHERE id = 1").await;
    assert_eq!(emoji, "emoji 🐬 ünïcödé");
    let params: Vec<Row> = via_proxy
        .exec(
            "SELECT ?, ?, ?, ?",
            (Value::NULL, -1.5f64, "ü", vec![0u8, 255]),
        )
        .await
        .unwrap();
    assert_eq!(
        params[0].clone().unwrap(),
        vec![
            Value::NULL,
            Value::Double(-1.5),
            Value::Bytes("ü".into()),
            Value::Bytes(vec![0, 255])
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_16_mib_cross_in_both_directions() {
    let addr = proxy().await;
    let mut conn = Conn::new(app_opts(addr, None)).await.unwrap();
    conn.query_drop("CREATE TABLE IF NOT EXISTS app.big (id INT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    conn.query_drop("DELETE FROM app.big").await.unwrap();
    let blob: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i * 7 + i / 1000) as u8)
        .collect();
    // Binary protocol: the parameter makes the execute packet (or its long data) > 16 MiB.
    conn.exec_drop("INSERT INTO app.big VALUES (1, ?)", (blob.clone(),))
        .await
        .unwrap();
    // Text protocol: an 18 MiB statement travels as two frames.
    let hex: String = blob[..9 * 1024 * 1024]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    conn.query_drop(format!("INSERT INTO app.big VALUES (2, x'{hex}')"))
        .await
        .unwrap();

    let back: Vec<u8> = query_one(&mut conn, "SELECT b FROM app.big WHERE id = 1").await;
    assert!(
        back == blob,
        "20 MiB value read back over the text protocol differs"
    );
    let back: Option<Vec<u8>> = conn
        .exec_first("SELECT b FROM app.big WHERE id = ?", (2,))
        .await
        .unwrap();
    assert!(
        back.as_deref() == Some(&blob[..9 * 1024 * 1024]),
        "binary read back differs"
    );
    let one: u8 = query_one(&mut conn, "SELECT 1").await;
    assert_eq!(
        one, 1,
        "the session is still in step after the large packets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statements_and_procedures_return_every_result() {
    let addr = proxy().await;
    let mut conn = Conn::new(app_opts(addr, None)).await.unwrap();
    let mut result = conn
        .query_iter("SELECT 1 AS a; SELECT 2 AS b, 3 AS c UNION SELECT 4, 5; DO 0; SELECT 'last'")
        .await
        .unwrap();
    let mut sets = Vec::new();
    while !result.is_empty() {
        let rows: Vec<Row> = result.collect().await.unwrap();
        sets.push(rows.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>());
    }
    drop(result);
    // The text protocol sends every value as a string; `DO` answers with an OK of its own.
    let text = |v: &[&str]| {
        v.iter()
            .map(|s| Value::Bytes(s.as_bytes().to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(sets.len(), 4, "{sets:?}");
    assert_eq!(sets[0], vec![text(&["1"])]);
    assert_eq!(sets[1], vec![text(&["2", "3"]), text(&["4", "5"])]);
    assert!(sets[2].is_empty());
    assert_eq!(sets[3], vec![text(&["last"])]);

    conn.query_drop(
        "CREATE PROCEDURE IF NOT EXISTS app.two_results(IN n INT)
         BEGIN SELECT n AS first; SELECT n * 2 AS second, 'x' AS third; END",
    )
    .await
    .unwrap();
    let mut result = conn.query_iter("CALL app.two_results(21)").await.unwrap();
    let mut firsts = Vec::new();
    while !result.is_empty() {
        let rows: Vec<Row> = result.collect().await.unwrap();
        firsts.extend(rows.into_iter().map(|r| r.unwrap()[0].clone()));
    }
    drop(result);
    assert_eq!(
        firsts,
        vec![Value::Bytes(b"21".to_vec()), Value::Bytes(b"42".to_vec())]
    );
    // The same procedure through the binary protocol (PS multi-results).
    let rows: Vec<Row> = conn.exec("CALL app.two_results(?)", (5,)).await.unwrap();
    assert_eq!(rows[0].clone().unwrap(), vec![Value::Int(5)]);
    let still: u8 = query_one(&mut conn, "SELECT 7").await;
    assert_eq!(still, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_local_infile_uploads_through_the_proxy() {
    let addr = proxy().await;
    let mut conn = Conn::new(app_opts(addr, None)).await.unwrap();
    conn.query_drop("CREATE TEMPORARY TABLE app.loaded (id INT, name VARCHAR(20))")
        .await
        .unwrap();
    let lines: Vec<bytes::Bytes> = (0..5000)
        .map(|i| bytes::Bytes::from(format!("{i}\tname-{i}\n")))
        .collect();
    conn.set_infile_handler(async move { Ok(futures_util::stream::iter(lines).map(Ok).boxed()) });
    conn.query_drop("LOAD DATA LOCAL INFILE 'generated' INTO TABLE app.loaded")
        .await
        .unwrap();
    let (count, sum): (u64, u64) = conn
        .query_first("SELECT COUNT(*), SUM(id) FROM app.loaded")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((count, sum), (5000, 4999 * 5000 / 2));
    let last: String = query_one(&mut conn, "SELECT name FROM app.loaded WHERE id = 4999").await;
    assert_eq!(last, "name-4999");
}

fn stmt_id(prepare_ok: &[u8]) -> [u8; 4] {
    assert_eq!(prepare_ok[0], 0x00, "PREPARE_OK");
    prepare_ok[1..5].try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_with_long_data_and_a_cursor() {
    let addr = proxy().await;
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, Some("app"))
        .await
        .unwrap();

    // Long data: the parameter arrives in three COM_STMT_SEND_LONG_DATA chunks (no answer).
    let prepared = client.command(b"\x16SELECT LENGTH(?), MD5(?)").await;
    let id = stmt_id(&prepared[0].1);
    let chunk = vec![b'z'; 100_000];
    for _ in 0..3 {
        let mut long_data = vec![codes::COM_STMT_SEND_LONG_DATA];
        long_data.extend_from_slice(&id);
        long_data.extend_from_slice(&0u16.to_le_bytes());
        long_data.extend_from_slice(&chunk);
        client.writer.send(0, &long_data).await.unwrap();
    }
    // Execute: no cursor, one iteration, null bitmap for 2 params, new-params-bound, two
    // BLOB parameters; the first comes from long data, the second inline ('abc').
    let mut execute = vec![codes::COM_STMT_EXECUTE];
    execute.extend_from_slice(&id);
    execute.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 0xfc, 0, 0xfc, 0, 3]);
    execute.extend_from_slice(b"abc");
    let response = client.command(&execute).await;
    assert!(error_of(&response).is_none(), "{:?}", error_of(&response));
    // Binary row: header 0x00, null bitmap (1 byte for 2 columns), LENGTH() as a 4-byte
    // LONG, then MD5() as a length-encoded string.
    let row = &response[response.len() - 2].1;
    assert_eq!(row[0], 0x00);
    assert_eq!(u32::from_le_bytes(row[2..6].try_into().unwrap()), 300_000);
    assert_eq!(&row[7..], b"900150983cd24fb0d6963f7d28e17f72", "md5('abc')");

    // A cursor: rows come in batches from COM_STMT_FETCH until the last-row flag.
    let prepared = client.command(b"\x16SELECT seq FROM seq_1_to_25").await;
    let id = stmt_id(&prepared[0].1);
    let mut execute = vec![codes::COM_STMT_EXECUTE];
    execute.extend_from_slice(&id);
    execute.extend_from_slice(&[1, 1, 0, 0, 0]); // CURSOR_TYPE_READ_ONLY, iteration count 1
    let opened = client.command(&execute).await;
    assert!(error_of(&opened).is_none(), "{:?}", error_of(&opened));
    let mut rows = 0;
    let mut fetches = 0;
    loop {
        let mut fetch = vec![codes::COM_STMT_FETCH];
        fetch.extend_from_slice(&id);
        fetch.extend_from_slice(&10u32.to_le_bytes());
        let batch = client.command(&fetch).await;
        fetches += 1;
        rows += batch.len() - 1;
        let terminator = &batch.last().unwrap().1;
        let status = rwsplit::protocol::response::ok_status(terminator).unwrap();
        if status & 0x0080 != 0 {
            break; // SERVER_STATUS_LAST_ROW_SENT
        }
        assert!(fetches < 10, "cursor never ended");
    }
    assert_eq!((rows, fetches), (25, 3));
    let mut close = vec![codes::COM_STMT_CLOSE];
    close.extend_from_slice(&id);
    client.writer.send(0, &close).await.unwrap();
    let pong = client.command(&[codes::COM_PING]).await;
    assert_eq!(pong.len(), 1);
    assert_eq!(
        pong[0].1[0], 0x00,
        "COM_STMT_CLOSE has no answer; the next command's follows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_and_reset_connection() {
    cluster()
        .sql(
            0,
            "CREATE USER IF NOT EXISTS 'report'@'%' IDENTIFIED BY 'report-pw';
             GRANT SELECT ON app.* TO 'report'@'%'",
        )
        .unwrap();
    let tail = "[[users]]\nname = 'report'\npassword = 'report-pw'";
    let addr = start_proxy(proxy_config(cluster(), "", tail)).await;
    let mut conn = Conn::new(app_opts(addr, None)).await.unwrap();

    conn.query_drop("SET @kept = 42").await.unwrap();
    assert!(
        conn.reset().await.unwrap(),
        "COM_RESET_CONNECTION is relayed"
    );
    let kept: Option<i64> = query_one(&mut conn, "SELECT @kept").await;
    assert_eq!(kept, None, "the reset cleared session state");

    conn.query_drop("SET @kept = 42").await.unwrap();
    let change = mysql_async::ChangeUserOpts::default()
        .with_user(Some("report".into()))
        .with_pass(Some("report-pw".into()))
        .with_db_name(Some("app".into()));
    conn.change_user(change).await.unwrap();
    let (user, db, kept): (String, String, Option<i64>) = conn
        .query_first("SELECT CURRENT_USER(), DATABASE(), @kept")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (user.as_str(), db.as_str(), kept),
        ("report@%", "app", None)
    );

    let denied = mysql_async::ChangeUserOpts::default()
        .with_user(Some(APP_USER.into()))
        .with_pass(Some("wrong".into()));
    match conn.change_user(denied).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1045),
        other => panic!("change to a wrong password must be denied, got {other:?}"),
    }
}

/// Reads until the proxy closes the connection; returns the errors received on the way.
async fn errors_until_closed(client: &mut RawClient) -> Vec<SqlError> {
    let mut errors = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.reader.read_packet(1 << 20))
            .await
        {
            Ok(Ok(packet)) => errors.extend(SqlError::from_payload(&packet.payload)),
            Ok(Err(_)) => return errors,
            Err(_) => panic!("the proxy kept the connection open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_errors_and_spares_other_clients() {
    let config = proxy_config(cluster(), "max_packet_size = 1048576", "");
    let addr = start_proxy(config).await;
    let mut bystander = Conn::new(app_opts(addr, None)).await.unwrap();

    // An unknown command byte: an error, and the session goes on.
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    let response = client.command(&[0x60, 1, 2, 3]).await;
    let err = error_of(&response).expect("error for an unknown command");
    assert_eq!((err.code, &err.state), (1047, b"08S01"));
    let pong = client.command(&[codes::COM_PING]).await;
    assert_eq!(pong[0].1[0], 0x00);
    // Replication commands are refused the same way.
    let response = client.command(&[0x12, 0, 0, 0, 0]).await;
    assert_eq!(error_of(&response).unwrap().code, 1047);

    // A packet over the limit: refused from its header, and the connection closes.
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    client
        .writer
        .push_raw(&[0xff, 0xff, 0x3f, 0, codes::COM_QUERY]);
    client.writer.flush().await.unwrap();
    let errors = errors_until_closed(&mut client).await;
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].code, &errors[0].state), (1153, b"08S01"));

    // The same while the client goes on sending the oversized packet: the error still arrives.
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    let mut oversized = vec![0xff, 0xff, 0xff, 0, codes::COM_QUERY];
    oversized.resize(4 * 1024 * 1024, b'x');
    let writer = tokio::spawn(async move {
        let _ = client.writer.write_through(&oversized).await;
        client
    });
    let mut client = writer.await.unwrap();
    let errors = errors_until_closed(&mut client).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, 1153);

    // A command that does not start a new sequence.
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    client.writer.send(5, b"\x03SELECT 1").await.unwrap();
    let errors = errors_until_closed(&mut client).await;
    assert_eq!(errors[0].code, 1156);

    // Garbage instead of a handshake response, and a truncated handshake response.
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[5, 0, 0, 1, 0x85, 0xa2][..],
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut greeting = [0u8; 4];
        stream.read_exact(&mut greeting).await.unwrap();
        let len = greeting[0] as usize | (greeting[1] as usize) << 8;
        let mut rest = vec![0u8; len];
        stream.read_exact(&mut rest).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
            .await
            .expect("the proxy closes a connection that sent garbage")
            .ok();
        if !reply.is_empty() {
            let err = SqlError::from_payload(&reply[4..]).expect("an error packet");
            assert!([1043, 1153].contains(&err.code), "{err}");
        }
    }

    // Clients that were already connected, and new ones, are unaffected.
    let one: u8 = query_one(&mut bystander, "SELECT 1").await;
    assert_eq!(one, 1);
    let mut fresh = Conn::new(app_opts(addr, None)).await.unwrap();
    let two: u8 = query_one(&mut fresh, "SELECT 2").await;
    assert_eq!(two, 2);
}

async fn backend_connection_is_gone(id: u64) -> bool {
    for _ in 0..100 {
        let count = cluster()
            .sql(
                0,
                &format!("SELECT COUNT(*) FROM information_schema.processlist WHERE id = {id}"),
            )
            .unwrap();
        if count == "0" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_result_releases_its_backend_connection() {
    let addr = proxy().await;
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, Some("app"))
        .await
        .unwrap();
    let id_frames = client.query("SELECT CONNECTION_ID()").await;
    let id: u64 = String::from_utf8_lossy(&id_frames[2].1[1..])
        .parse()
        .unwrap();
    client
        .writer
        .send(0, b"\x03SELECT seq, REPEAT('x', 200) FROM seq_1_to_2000000")
        .await
        .unwrap();
    let first = client.reader.read_packet(1 << 20).await.unwrap();
    assert!(
        SqlError::from_payload(&first.payload).is_none(),
        "the result started"
    );
    drop(client);
    assert!(
        backend_connection_is_gone(id).await,
        "backend connection {id} still open after its client left"
    );
    let mut conn = Conn::new(app_opts(addr, None)).await.unwrap();
    let one: u8 = query_one(&mut conn, "SELECT 1").await;
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_result_gives_the_client_an_error() {
    // A cluster of its own: this test kills its primary.
    let mut own = Cluster::start("127.0.23", 0).unwrap();
    let addr = start_proxy(proxy_config(&own, "", "")).await;
    let mut client = RawClient::connect(addr, APP_USER, APP_PASSWORD, Some("app"))
        .await
        .unwrap();
    client
        .writer
        .send(
            0,
            b"\x03SELECT seq, REPEAT('x', 1000), IF(seq = 500, SLEEP(30), 0) FROM seq_1_to_1000",
        )
        .await
        .unwrap();
    // Some rows arrive, then the server stalls in SLEEP and is killed.
    for _ in 0..50 {
        let packet = client.reader.read_packet(1 << 20).await.unwrap();
        assert!(
            SqlError::from_payload(&packet.payload).is_none(),
            "rows, not an error"
        );
    }
    own.kill_server(0);
    let mut last = None;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(packet) = client.reader.read_packet(1 << 20).await {
            last = Some(packet.payload.to_vec());
        }
    })
    .await;
    assert!(ended.is_ok(), "the client was left hanging");
    let last = last.expect("packets after the kill");
    let err = SqlError::from_payload(&last).expect("the result ends with an error packet");
    assert_eq!(err.code, 2013, "{err}");
    assert!(err.message.contains("mysql-0"), "{err}");

    // Logins now fail with a clear error naming the backend, and the proxy is still up.
    let err = server_error(Conn::new(app_opts(addr, None)).await);
    assert_eq!(err.code, 2003);
    assert!(err.message.contains("mysql-0"), "{}", err.message);
    own.start_server(0).unwrap();
    // Failed attempts pause new ones for a while (at most MAX_CONNECT_BACKOFF), and
    // statements fail at once meanwhile; then the server is tried again.
    let deadline = std::time::Instant::now() + rwsplit::topology::MAX_CONNECT_BACKOFF * 2;
    let mut conn = loop {
        match Conn::new(app_opts(addr, None)).await {
            Ok(conn) => break conn,
            Err(e) if std::time::Instant::now() < deadline => {
                let err = server_error::<Conn>(Err(e));
                assert!(err.message.contains("mysql-0"), "{}", err.message);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("not served again after the backend came back: {e}"),
        }
    };
    let one: u8 = query_one(&mut conn, "SELECT 1").await;
    assert_eq!(one, 1, "served again once the backend is back");
}
