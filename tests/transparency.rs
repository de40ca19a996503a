//! Transparency: every response packet a client gets through the proxy is byte for byte the
//! one it gets from the server directly, for a corpus of commands. This binary has a cluster
//! of its own, so no concurrent test changes the server's state between the two runs.

mod support;

use std::net::SocketAddr;

use mysql_async::Conn;
use mysql_async::prelude::*;
use rwsplit::protocol::codes;
use support::raw::{RawClient, error_of};
use support::*;

const NET: &str = "127.0.25";

/// Placeholder for the statement id of the last successful PREPARE on the connection.
const LAST_STMT: [u8; 4] = [0xee, 0xee, 0xee, 0xee];

/// Replaces `LAST_STMT` in a COM_STMT_* command with `id`.
fn with_statement_id(mut command: Vec<u8>, id: Option<[u8; 4]>) -> Vec<u8> {
    if let Some(id) = id
        && command.get(1..5) == Some(&LAST_STMT[..])
    {
        command[1..5].copy_from_slice(&id);
    }
    command
}

/// One step of the transparency corpus: a raw command payload.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let query = |sql: &str| {
        (
            sql.to_owned(),
            [&[codes::COM_QUERY][..], sql.as_bytes()].concat(),
        )
    };
    let mut steps = vec![
        query("SELECT 1"),
        query("SELECT NULL, 'a', 1.5, -3, 0x00ff, _latin1 'é', CAST(2 AS UNSIGNED)"),
        query("SELECT * FROM app.all_types ORDER BY id"),
        query("SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 300) FROM app.seq_1_to_1500"),
        query("SELECT 1 FROM DUAL WHERE 1 = 0"),
        query("SELECT * FROM app.no_such_table"),
        query("SELEC 1"),
        query("SELECT CAST('12abc' AS INT)"),
        query("SHOW WARNINGS"),
        query("SHOW VARIABLES LIKE 'max_allowed_packet'"),
        query("SET @v = 'session value', NAMES latin1"),
        query("SELECT @v, @@character_set_client"),
        query("SET NAMES utf8mb4"),
        query("USE app"),
        query("CREATE TEMPORARY TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10))"),
        query("INSERT INTO t (v) VALUES ('a'), ('b'), ('c')"),
        query("UPDATE t SET v = 'z' WHERE id > 1"),
        query("BEGIN"),
        query("DELETE FROM t WHERE id = 1"),
        query("ROLLBACK"),
        query("SELECT * FROM t ORDER BY id; SELECT COUNT(*) FROM t; DO 1"),
        query("SELECT 1; SELECT * FROM no_such_table; SELECT 2"),
        query("CALL app.two_results(3)"),
        query("DO SLEEP(0)"),
        ("COM_INIT_DB app".into(), b"\x02app".to_vec()),
        ("COM_INIT_DB missing".into(), b"\x02no_such_db".to_vec()),
        ("COM_PING".into(), vec![codes::COM_PING]),
        ("COM_FIELD_LIST".into(), b"\x04all_types\x00".to_vec()),
        (
            "COM_SET_OPTION off".into(),
            vec![codes::COM_SET_OPTION, 1, 0],
        ),
        (
            "multi-statements while switched off: error".into(),
            b"\x03SELECT 1; SELECT 2".to_vec(),
        ),
        (
            "COM_SET_OPTION on".into(),
            vec![codes::COM_SET_OPTION, 0, 0],
        ),
        (
            "COM_STMT_PREPARE".into(),
            b"\x16SELECT id, v, ? FROM t WHERE id >= ?".to_vec(),
        ),
        ("COM_STMT_PREPARE error".into(), b"\x16SELECT FROM".to_vec()),
    ];
    // Execute the prepared statement with (varchar 'p', longlong 2), then reset it. Statement
    // ids are the server's per-connection counter: LAST_STMT stands for the id each
    // connection's last PREPARE returned.
    let mut execute = vec![codes::COM_STMT_EXECUTE];
    execute.extend_from_slice(&LAST_STMT);
    execute.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1]);
    execute.extend_from_slice(&[0xfd, 0, 0x08, 0, 1, b'p']);
    execute.extend_from_slice(&2i64.to_le_bytes());
    steps.push(("COM_STMT_EXECUTE".into(), execute));
    steps.push((
        "COM_STMT_RESET".into(),
        vec![codes::COM_STMT_RESET, 1, 0, 0, 0],
    ));
    steps.push((
        "COM_STMT_RESET unknown".into(),
        vec![codes::COM_STMT_RESET, 9, 0, 0, 0],
    ));
    steps.push((
        "COM_RESET_CONNECTION".into(),
        vec![codes::COM_RESET_CONNECTION],
    ));
    steps.push(query("SELECT @v, DATABASE()"));
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_byte_for_byte_those_of_the_server() {
    let cluster = shared_cluster(NET);
    let addr = start_proxy(proxy_config(cluster, "", "")).await;
    let mut setup = Conn::new(direct_opts(cluster, 0, None)).await.unwrap();
    setup.query_drop(TYPES_TABLE).await.unwrap();
    setup.query_drop(TYPES_ROWS).await.unwrap();
    setup
        .query_drop(
            "CREATE PROCEDURE IF NOT EXISTS app.two_results(IN n INT)
             BEGIN SELECT n AS first; SELECT n * 2 AS second, 'x' AS third; END",
        )
        .await
        .unwrap();
    let primary: SocketAddr = cluster.primary().address().parse().unwrap();
    let mut direct = RawClient::connect(primary, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    let mut proxied = RawClient::connect(addr, APP_USER, APP_PASSWORD, None)
        .await
        .unwrap();
    assert_eq!(
        direct.capabilities, proxied.capabilities,
        "same capabilities negotiated"
    );
    let mut compared = 0;
    let (mut direct_stmt, mut proxied_stmt) = (None, None);
    for (name, command) in corpus() {
        let expected = direct
            .command(&with_statement_id(command.clone(), direct_stmt))
            .await;
        let mut got = proxied
            .command(&with_statement_id(command.clone(), proxied_stmt))
            .await;
        if command[0] == codes::COM_STMT_PREPARE && error_of(&expected).is_none() {
            // The statement id is the server's per-connection counter, the one field of a
            // response that belongs to the connection rather than to the statement.
            direct_stmt = Some(expected[0].1[1..5].try_into().unwrap());
            proxied_stmt = Some(got[0].1[1..5].try_into().unwrap());
            got[0].1[1..5].copy_from_slice(&expected[0].1[1..5]);
        }
        assert_eq!(
            got.len(),
            expected.len(),
            "{name}: {} packets through the proxy, {} directly",
            got.len(),
            expected.len()
        );
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                g == e,
                "{name}: packet {i} differs\n proxy:  {g:?}\n direct: {e:?}"
            );
        }
        let expect_error = name.contains("missing")
            || name.contains("unknown")
            || name.contains("error")
            || name.contains("no_such")
            || name.starts_with("SELEC ");
        assert_eq!(
            error_of(&expected).is_some(),
            expect_error,
            "{name}: {:?}",
            error_of(&expected)
        );
        compared += expected.len();
    }
    assert!(compared > 1500, "the corpus compared {compared} packets");
}
