//! Read/write splitting against the local cluster: which server answered each statement
//! (`@@server_id`: mysql-0 is 1, the replicas 2 and 3), what the servers counted, and what
//! the client got back.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::*;
use support::*;

const NET: &str = "127.0.26";
const PRIMARY: u32 = 1;
const REPLICAS: [u32; 2] = [2, 3];

/// The tests share one cluster and compare its servers' counters, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn proxy(routing: &str) -> SocketAddr {
    start_proxy(split_config(shared_cluster(NET), routing)).await
}

async fn connect(addr: SocketAddr) -> Conn {
    Conn::new(app_opts(addr, Some("app"))).await.unwrap()
}

async fn server_id(conn: &mut Conn, sql: &str) -> u32 {
    query_one::<u32>(conn, sql).await
}

/// Runs `sql` `n` times and counts which servers answered (it must select `@@server_id`).
async fn answered_by(conn: &mut Conn, sql: &str, n: usize) -> BTreeMap<u32, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(server_id(conn, sql).await).or_default() += 1;
    }
    seen
}

fn only_replicas(seen: &BTreeMap<u32, usize>) -> bool {
    seen.keys().all(|id| REPLICAS.contains(id))
}

/// Counter deltas per server.
fn counters(name: &str) -> Vec<u64> {
    let cluster = shared_cluster(NET);
    (0..cluster.servers.len())
        .map(|k| status_counter(cluster, k, name))
        .collect()
}

fn delta(before: &[u64], after: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_spread_over_both_replicas_and_writes_reach_only_the_primary() {
    let _serial = SERIAL.lock().await;
    let addr = proxy("").await;
    let mut conn = connect(addr).await;
    conn.query_drop("CREATE TABLE IF NOT EXISTS split_rw (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    conn.query_drop("DELETE FROM split_rw").await.unwrap();
    shared_cluster(NET)
        .wait_replicas_caught_up(Duration::from_secs(30))
        .unwrap();

    // (Reading the user statistics is a SELECT itself: it comes before and after.)
    let cluster = shared_cluster(NET);
    let app_before: Vec<UserCommands> = (0..3).map(|k| app_commands(cluster, k)).collect();
    let selects = counters("Com_select");
    let inserts = counters("Com_insert");
    let seen = answered_by(&mut conn, "SELECT @@server_id", 60).await;
    for i in 0..20 {
        conn.query_drop(format!("INSERT INTO split_rw VALUES ({i}, {})", i * 10))
            .await
            .unwrap();
    }
    let selects = delta(&selects, &counters("Com_select"));
    let inserts = delta(&inserts, &counters("Com_insert"));
    let app: Vec<UserCommands> = (0..3)
        .map(|k| app_commands(cluster, k).since(app_before[k]))
        .collect();

    assert!(only_replicas(&seen), "reads answered by {seen:?}");
    for id in REPLICAS {
        assert!(
            seen[&id] >= 20,
            "replica {id} served too few reads: {seen:?}"
        );
    }
    assert_eq!(selects[0], 0, "the primary ran SELECTs: {selects:?}");
    assert_eq!(selects[1] + selects[2], 60, "Com_select deltas {selects:?}");
    // Replicas count the inserts they apply from the primary's binary log too; the
    // application's own statements are told apart by the user statistics.
    assert_eq!(inserts[0], 20, "Com_insert deltas {inserts:?}");
    assert_eq!(
        app[0].updates, 20,
        "the application's writes on the primary: {app:?}"
    );
    assert_eq!(
        (app[1].updates, app[2].updates),
        (0, 0),
        "writes on replicas: {app:?}"
    );
    assert_eq!(app[0].selects, 0, "{app:?}");
    assert_eq!(app[1].selects + app[2].selects, 60, "{app:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_that_need_the_primary_get_it() {
    let _serial = SERIAL.lock().await;
    let addr = proxy("").await;
    let mut conn = connect(addr).await;
    conn.query_drop("CREATE TABLE IF NOT EXISTS split_primary (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    conn.query_drop("INSERT IGNORE INTO split_primary VALUES (1, 1)")
        .await
        .unwrap();
    shared_cluster(NET)
        .wait_replicas_caught_up(Duration::from_secs(30))
        .unwrap();
    let on_primary = [
        "SELECT @@server_id FROM split_primary WHERE id = 1 FOR UPDATE",
        "SELECT @@server_id FROM split_primary WHERE id = 1 /* locking */ FOR /* really */ UPDATE",
        "SELECT @@server_id FROM split_primary WHERE id = 1 LOCK IN SHARE MODE",
        "/* rwsplit:primary */ SELECT @@server_id",
        "SELECT @@server_id + 0 * LAST_INSERT_ID()",
        "SELECT @@server_id + 0 * GET_LOCK('split', 0) + 0 * RELEASE_LOCK('split')",
        "SELECT @@server_id + 0 * @@last_insert_id",
    ];
    for sql in on_primary {
        assert_eq!(server_id(&mut conn, sql).await, PRIMARY, "{sql}");
    }
    let on_replica = [
        "SELECT @@server_id",
        "  ( SELECT @@server_id )",
        "WITH x AS (SELECT @@server_id AS id) SELECT id FROM x",
        "SELECT @@server_id FROM split_primary WHERE id = 1 AND 'FOR UPDATE' <> ''",
        "select /* FOR UPDATE */ @@server_id",
        "/* rwsplit:replica */ SELECT @@server_id",
    ];
    for sql in on_replica {
        let id = server_id(&mut conn, sql).await;
        assert!(REPLICAS.contains(&id), "{sql} answered by {id}");
    }

    // Inside a transaction everything is the primary's, reads included.
    for begin in [
        "BEGIN",
        "START TRANSACTION",
        "START TRANSACTION READ ONLY",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
    ] {
        conn.query_drop(begin).await.unwrap();
        assert_eq!(
            server_id(&mut conn, "SELECT @@server_id").await,
            PRIMARY,
            "{begin}"
        );
        conn.query_drop("COMMIT").await.unwrap();
        let after = server_id(&mut conn, "SELECT @@server_id").await;
        assert!(
            REPLICAS.contains(&after),
            "after COMMIT of {begin}: {after}"
        );
    }
    // A hint can still send a report query inside one to a replica.
    conn.query_drop("BEGIN").await.unwrap();
    let hinted = server_id(&mut conn, "SELECT /*+ rwsplit:replica */ @@server_id").await;
    assert!(REPLICAS.contains(&hinted));
    conn.query_drop("ROLLBACK").await.unwrap();

    // autocommit=0 is one long transaction: the primary until it is switched back.
    conn.query_drop("SET autocommit = 0").await.unwrap();
    assert_eq!(server_id(&mut conn, "SELECT @@server_id").await, PRIMARY);
    conn.query_drop("COMMIT").await.unwrap();
    assert_eq!(server_id(&mut conn, "SELECT @@server_id").await, PRIMARY);
    conn.query_drop("SET autocommit = 1").await.unwrap();
    let back = server_id(&mut conn, "SELECT @@server_id").await;
    assert!(REPLICAS.contains(&back));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_see_the_session_the_client_set_up() {
    let _serial = SERIAL.lock().await;
    let addr = proxy("").await;
    let mut conn = connect(addr).await;
    // Open a connection to both replicas first: state set later must reach open ones too.
    let seen = answered_by(&mut conn, "SELECT @@server_id", 4).await;
    assert_eq!(seen.len(), 2, "{seen:?}");

    conn.query_drop("CREATE DATABASE IF NOT EXISTS split_other")
        .await
        .unwrap();
    shared_cluster(NET)
        .wait_replicas_caught_up(Duration::from_secs(30))
        .unwrap();
    conn.query_drop("SET NAMES latin1").await.unwrap();
    conn.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES,NO_ENGINE_SUBSTITUTION'")
        .await
        .unwrap();
    conn.query_drop("SET time_zone = '+05:30'").await.unwrap();
    conn.query_drop("SET @greeting = 'hello', @answer = 42")
        .await
        .unwrap();
    conn.query_drop("USE split_other").await.unwrap();

    let sql = "SELECT @@server_id, @@character_set_client, @@sql_mode, @@time_zone, \
               @greeting, @answer, DATABASE()";
    let mut servers = BTreeMap::new();
    for _ in 0..6 {
        let row: (u32, String, String, String, String, i64, String) =
            conn.query_first(sql).await.unwrap().unwrap();
        assert!(REPLICAS.contains(&row.0), "answered by {}", row.0);
        assert_eq!(
            (
                &row.1[..],
                &row.2[..],
                &row.3[..],
                &row.4[..],
                row.5,
                &row.6[..]
            ),
            (
                "latin1",
                "ANSI_QUOTES,NO_ENGINE_SUBSTITUTION",
                "+05:30",
                "hello",
                42,
                "split_other"
            ),
            "session on server {}",
            row.0
        );
        *servers.entry(row.0).or_insert(0) += 1;
    }
    assert_eq!(servers.len(), 2, "both replicas checked: {servers:?}");

    // COM_INIT_DB (what drivers send to change the default database) is replayed as well.
    let mut raw = raw::RawClient::connect(addr, APP_USER, APP_PASSWORD, Some("app"))
        .await
        .unwrap();
    let frames = raw.query("SELECT @@server_id").await;
    assert!(raw::error_of(&frames).is_none());
    let frames = raw.command(b"\x02split_other").await;
    assert!(raw::error_of(&frames).is_none(), "COM_INIT_DB failed");
    let mut databases = BTreeMap::new();
    for _ in 0..4 {
        let frames = raw
            .query("SELECT CONCAT(DATABASE(), '@', @@server_id)")
            .await;
        let row = frames
            .iter()
            .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
            .find(|p| p.contains("split_other") || p.contains("app@"))
            .expect("a row");
        *databases.entry(row).or_insert(0) += 1;
    }
    let rows: Vec<&String> = databases.keys().collect();
    assert!(
        rows.iter()
            .all(|r| r.contains("split_other@2") || r.contains("split_other@3")),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_bound_results_come_from_the_primary() {
    let _serial = SERIAL.lock().await;
    let addr = proxy("").await;
    let mut conn = connect(addr).await;
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS split_auto (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    )
    .await
    .unwrap();
    for _ in 0..3 {
        conn.query_drop("INSERT INTO split_auto (v) VALUES (1)")
            .await
            .unwrap();
        let inserted = conn.last_insert_id().unwrap();
        let last: u64 = query_one(&mut conn, "SELECT LAST_INSERT_ID()").await;
        assert_eq!(last, inserted);
    }

    // A temporary table exists on the primary only; reads of it must find it.
    conn.query_drop("CREATE TEMPORARY TABLE split_tmp (id INT)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO split_tmp VALUES (7), (8)")
        .await
        .unwrap();
    let count: u64 = query_one(&mut conn, "SELECT COUNT(*) FROM split_tmp").await;
    assert_eq!(count, 2);

    // A variable assigned inside a query lives on the primary: reads using it go there.
    let mut conn = connect(addr).await;
    let _: Option<u32> = conn.query_first("SELECT @pick := 5").await.unwrap();
    let row: (Option<u32>, u32) = conn
        .query_first("SELECT @pick, @@server_id")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row, (Some(5), PRIMARY));

    // SHOW WARNINGS asks the server that ran the statement before.
    let mut conn = connect(addr).await;
    let cast: (i64, u32) = conn
        .query_first("SELECT CAST('12abc' AS SIGNED), @@server_id")
        .await
        .unwrap()
        .unwrap();
    assert!(REPLICAS.contains(&cast.1));
    let warnings: Vec<(String, u32, String)> = conn.query("SHOW WARNINGS").await.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].2.contains("12abc"), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_their_kind_under_one_client_id() {
    let _serial = SERIAL.lock().await;
    let addr = proxy("").await;
    let mut conn = connect(addr).await;
    conn.query_drop("CREATE TABLE IF NOT EXISTS split_ps (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    conn.query_drop("DELETE FROM split_ps").await.unwrap();
    shared_cluster(NET)
        .wait_replicas_caught_up(Duration::from_secs(30))
        .unwrap();

    let read = conn
        .prep("SELECT @@server_id, ? + 1, CONCAT(?, '!')")
        .await
        .unwrap();
    let executes_before = counters("Com_stmt_execute");
    let mut seen = BTreeMap::new();
    for i in 0..10u32 {
        let row: (u32, u32, String) = conn
            .exec_first(&read, (i, format!("n{i}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((row.1, &row.2[..]), (i + 1, &format!("n{i}!")[..]));
        *seen.entry(row.0).or_insert(0) += 1;
    }
    assert!(only_replicas(&seen), "{seen:?}");
    assert_eq!(
        seen.len(),
        2,
        "both replicas prepared it on first use: {seen:?}"
    );

    // The same client statement, now inside a transaction: prepared on the primary too.
    let write = conn
        .prep("INSERT INTO split_ps VALUES (?, ?)")
        .await
        .unwrap();
    conn.query_drop("BEGIN").await.unwrap();
    conn.exec_drop(&write, (1, "one")).await.unwrap();
    let row: (u32, u32, String) = conn.exec_first(&read, (1, "x")).await.unwrap().unwrap();
    assert_eq!(row, (PRIMARY, 2, "x!".to_owned()));
    conn.query_drop("COMMIT").await.unwrap();
    conn.exec_drop(&write, (2, "two")).await.unwrap();
    let executes = delta(&executes_before, &counters("Com_stmt_execute"));
    assert_eq!(executes[0], 3, "executes on the primary: {executes:?}");
    assert_eq!(
        executes[1] + executes[2],
        10,
        "executes on replicas: {executes:?}"
    );

    let row: (u32, u32, String) = conn.exec_first(&read, (5, "y")).await.unwrap().unwrap();
    assert!(REPLICAS.contains(&row.0));
    conn.close(read).await.unwrap();
    conn.close(write).await.unwrap();
    let stored: Vec<(u32, String)> = conn
        .query("SELECT /* rwsplit:primary */ id, v FROM split_ps ORDER BY id")
        .await
        .unwrap();
    assert_eq!(stored, [(1, "one".to_owned()), (2, "two".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_change_user_forget_the_session_everywhere() {
    let _serial = SERIAL.lock().await;
    let addr = proxy("").await;
    let mut conn = connect(addr).await;
    conn.query_drop("SET @kept = 'before'").await.unwrap();
    let row: (Option<String>, u32) = conn
        .query_first("SELECT @kept, @@server_id")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.0.as_deref(), Some("before"));
    conn.reset().await.unwrap();
    for _ in 0..4 {
        let row: (Option<String>, u32) = conn
            .query_first("SELECT @kept, @@server_id")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.0, None, "server {} still has the variable", row.1);
        assert!(REPLICAS.contains(&row.1));
    }
    conn.query_drop("SET @kept = 'again'").await.unwrap();
    conn.change_user(Default::default()).await.unwrap();
    let row: (Option<String>, u32) = conn
        .query_first("SELECT @kept, @@server_id")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.0, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_its_history_bound_stays_on_the_primary() {
    let _serial = SERIAL.lock().await;
    let addr = proxy("max_session_history = 3").await;
    let mut conn = connect(addr).await;
    for i in 0..3 {
        conn.query_drop(format!("SET @v{i} = {i}")).await.unwrap();
        let id = server_id(&mut conn, "SELECT @@server_id").await;
        assert!(REPLICAS.contains(&id));
    }
    conn.query_drop("SET @v3 = 3").await.unwrap();
    let seen = answered_by(&mut conn, "SELECT @@server_id", 5).await;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [PRIMARY]);
    let vars: (u32, u32, u32, u32) = conn
        .query_first("SELECT @v0, @v1, @v2, @v3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(vars, (0, 1, 2, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_replica_reads_fall_back_or_fail_as_configured() {
    let _serial = SERIAL.lock().await;
    let cluster = shared_cluster(NET);
    // Replicas nobody listens on (a closed port on the replicas' own addresses).
    let dead = |k: usize| {
        format!(
            "[[replicas]]\nname = 'gone-{k}'\naddress = '{}:1'\n",
            cluster.servers[k].ip
        )
    };
    let text = |routing: &str| {
        format!(
            "[proxy]\nlisten = '127.0.0.1:0'\nconnect_timeout = '2s'\n[routing]\n{routing}\n\
             [primary]\nname = 'mysql-0'\naddress = '{}'\n{}{}\
             [[users]]\nname = '{APP_USER}'\npassword = '{APP_PASSWORD}'\n",
            cluster.primary().address(),
            dead(1),
            dead(2)
        )
    };
    let config = |routing: &str| {
        let file = toml::from_str(&text(routing)).unwrap();
        rwsplit::config::Config::from_file(file, &Default::default(), &|_| None).unwrap()
    };

    let addr = start_proxy(config("")).await;
    let mut conn = connect(addr).await;
    let seen = answered_by(&mut conn, "SELECT @@server_id", 5).await;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [PRIMARY]);

    // (A raw client: drivers read settings with a SELECT when they connect.)
    let addr = start_proxy(config("fallback_to_primary = false")).await;
    let mut raw = raw::RawClient::connect(addr, APP_USER, APP_PASSWORD, Some("app"))
        .await
        .unwrap();
    let err = raw::error_of(&raw.query("SELECT 1").await).expect("an error");
    assert_eq!((err.code, &err.state), (1105, b"HY000"));
    assert!(
        err.message.contains("fallback_to_primary"),
        "{}",
        err.message
    );
    // The session goes on, and writes do not need a replica.
    assert!(raw::error_of(&raw.query("DO 1").await).is_none());
    let err = raw::error_of(&raw.query("SELECT 2").await).expect("an error");
    assert_eq!(err.code, 1105);
}

/// Killing a replica under a session: reads carry on elsewhere without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_replica_that_dies() {
    let mut cluster = Cluster::start("127.0.27", 2).unwrap();
    let addr = start_proxy(split_config(&cluster, "")).await;
    let mut conn = connect(addr).await;
    let read = conn.prep("SELECT @@server_id").await.unwrap();
    let seen = answered_by(&mut conn, "SELECT @@server_id", 4).await;
    assert_eq!(seen.len(), 2);

    cluster.kill_server(2);
    let mut after = BTreeMap::new();
    for _ in 0..10 {
        let text: u32 = query_one(&mut conn, "SELECT @@server_id").await;
        let prepared: u32 = conn.exec_first(&read, ()).await.unwrap().unwrap();
        *after.entry(text).or_insert(0) += 1;
        *after.entry(prepared).or_insert(0) += 1;
    }
    assert!(
        !after.contains_key(&3),
        "the dead replica answered: {after:?}"
    );
    assert!(
        after.contains_key(&2),
        "the live replica took the reads: {after:?}"
    );
    cluster.stop();
}

/// COM_STMT_EXECUTE for a statement with one string parameter, with or without its type.
fn execute_one_string(id: [u8; 4], value: &str, bind_types: bool) -> Vec<u8> {
    let mut p = vec![0x17];
    p.extend_from_slice(&id);
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0]); // no cursor, one iteration, null bitmap
    if bind_types {
        p.extend_from_slice(&[1, 0xfe, 0x00]); // new-params-bound, MYSQL_TYPE_STRING
    } else {
        p.push(0);
    }
    p.push(value.len() as u8);
    p.extend_from_slice(value.as_bytes());
    p
}

/// The binary row of `SELECT @@server_id, CONCAT(...)`: header, null bitmap, an 8-byte
/// integer, a length-prefixed string.
fn server_and_text(response: &[raw::Frame]) -> (u64, String) {
    let row = &response[response.len() - 2].1;
    assert_eq!(row[0], 0x00, "a binary row: {response:?}");
    let id = u64::from_le_bytes(row[2..10].try_into().unwrap());
    let len = row[10] as usize;
    (id, String::from_utf8_lossy(&row[11..11 + len]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_protocol_details_survive_backend_changes() {
    let _serial = SERIAL.lock().await;
    let addr = proxy("").await;
    let mut client = raw::RawClient::connect(addr, APP_USER, APP_PASSWORD, Some("app"))
        .await
        .unwrap();
    let prepared = client
        .command(b"\x16SELECT @@server_id, CONCAT('v=', ?)")
        .await;
    assert_eq!(prepared[0].1[0], 0x00, "{prepared:?}");
    let id: [u8; 4] = prepared[0].1[1..5].try_into().unwrap();

    // Drivers bind the types once and then send executes without them; a replica that has
    // not seen the statement yet still needs them, and gets them from the proxy.
    let mut servers = BTreeMap::new();
    for i in 0..6 {
        let response = client
            .command(&execute_one_string(id, &format!("{i}"), i == 0))
            .await;
        assert!(
            raw::error_of(&response).is_none(),
            "{:?}",
            raw::error_of(&response)
        );
        let (server, text) = server_and_text(&response);
        assert_eq!(text, format!("v={i}"));
        *servers.entry(server as u32).or_insert(0) += 1;
    }
    assert!(only_replicas(&servers) && servers.len() == 2, "{servers:?}");

    // MariaDB's "the statement prepared last" id.
    let response = client
        .command(&execute_one_string([0xff; 4], "last", false))
        .await;
    assert_eq!(server_and_text(&response).1, "v=last");

    // Long data takes the next execute to the primary, which has the data.
    let mut long_data = vec![0x18];
    long_data.extend_from_slice(&id);
    long_data.extend_from_slice(&[0, 0]);
    long_data.extend_from_slice(b"from long data");
    client.writer.send(0, &long_data).await.unwrap();
    let mut execute = vec![0x17];
    execute.extend_from_slice(&id);
    execute.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 0xfe, 0x00]);
    let response = client.command(&execute).await;
    assert_eq!(
        server_and_text(&response),
        (PRIMARY as u64, "v=from long data".to_owned())
    );
    let response = client.command(&execute_one_string(id, "after", true)).await;
    let (server, text) = server_and_text(&response);
    assert!(REPLICAS.contains(&(server as u32)) && text == "v=after");

    let mut reset = vec![0x1a];
    reset.extend_from_slice(&id);
    let response = client.command(&reset).await;
    assert_eq!(response[0].1[0], 0x00, "COM_STMT_RESET: {response:?}");

    // A cursor opened on a replica is fetched from that replica.
    let prepared = client
        .command(b"\x16SELECT @@server_id FROM seq_1_to_25")
        .await;
    let cursor_id: [u8; 4] = prepared[0].1[1..5].try_into().unwrap();
    let mut fetch = vec![0x1c];
    fetch.extend_from_slice(&cursor_id);
    fetch.extend_from_slice(&10u32.to_le_bytes());
    let no_cursor = raw::error_of(&client.command(&fetch).await).expect("no cursor yet");
    assert_eq!(no_cursor.code, 1421);
    for _ in 0..2 {
        let mut open = vec![0x17];
        open.extend_from_slice(&cursor_id);
        open.extend_from_slice(&[1, 1, 0, 0, 0]);
        let opened = client.command(&open).await;
        assert!(
            raw::error_of(&opened).is_none(),
            "{:?}",
            raw::error_of(&opened)
        );
        let mut rows = Vec::new();
        for _ in 0..3 {
            let batch = client.command(&fetch).await;
            assert!(
                raw::error_of(&batch).is_none(),
                "{:?}",
                raw::error_of(&batch)
            );
            for (_, row) in &batch[..batch.len() - 1] {
                rows.push(u64::from_le_bytes(row[2..10].try_into().unwrap()) as u32);
            }
        }
        assert_eq!(rows.len(), 25);
        assert!(REPLICAS.contains(&rows[0]), "{rows:?}");
        assert!(
            rows.iter().all(|&r| r == rows[0]),
            "one server answered: {rows:?}"
        );
    }

    // Closed or never prepared: error 1243, and the session goes on.
    let mut close = vec![0x19];
    close.extend_from_slice(&id);
    client.writer.send(0, &close).await.unwrap();
    let err =
        raw::error_of(&client.command(&execute_one_string(id, "x", true)).await).expect("closed");
    assert_eq!((err.code, &err.state), (1243, b"HY000"));
    let err = raw::error_of(
        &client
            .command(&execute_one_string([9, 9, 9, 9], "x", true))
            .await,
    )
    .expect("unknown");
    assert_eq!(err.code, 1243);
    let pong = client.command(&[0x0e]).await;
    assert_eq!(pong[0].1[0], 0x00);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_only_the_primary_has_are_read_there() {
    let _serial = SERIAL.lock().await;
    let addr = proxy("").await;
    let mut conn = connect(addr).await;

    // An OUT parameter is set on the primary by the procedure.
    conn.query_drop(
        "CREATE PROCEDURE IF NOT EXISTS app.split_out(IN n INT, OUT doubled INT) \
         SET doubled = n * 2",
    )
    .await
    .unwrap();
    conn.query_drop("SET @doubled = 1").await.unwrap();
    conn.query_drop("CALL split_out(21, @doubled)")
        .await
        .unwrap();
    let doubled: i64 = query_one(&mut conn, "SELECT @doubled").await;
    assert_eq!(doubled, 42);

    // A value each server would compute for itself is the primary's alone.
    let mut conn = connect(addr).await;
    conn.query_drop("SET @batch = UUID()").await.unwrap();
    let on_primary: String = query_one(&mut conn, "SELECT /* rwsplit:primary */ @batch").await;
    for _ in 0..4 {
        let read: String = query_one(&mut conn, "SELECT @batch").await;
        assert_eq!(read, on_primary);
    }
    // ... while reads without user variables still go to the replicas.
    let id = server_id(&mut conn, "SELECT @@server_id").await;
    assert!(REPLICAS.contains(&id));

    // Drivers toggle autocommit around every transaction: that never fills the history.
    let mut conn = connect(addr).await;
    for _ in 0..300 {
        conn.query_drop("SET autocommit = 0").await.unwrap();
        conn.query_drop("COMMIT").await.unwrap();
        conn.query_drop("SET autocommit = 1").await.unwrap();
    }
    let seen = answered_by(&mut conn, "SELECT @@server_id", 4).await;
    assert!(only_replicas(&seen), "{seen:?}");

    // A temporary table's definition is the primary's too.
    conn.query_drop("CREATE TEMPORARY TABLE split_tmp_show (id INT)")
        .await
        .unwrap();
    let columns: Vec<(String, String, String, String, Option<String>, String)> = conn
        .query("SHOW COLUMNS FROM split_tmp_show")
        .await
        .unwrap();
    assert_eq!(columns.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_session_keeps_its_database_on_replicas() {
    let _serial = SERIAL.lock().await;
    let addr = proxy("").await;
    let mut conn = connect(addr).await;
    conn.query_drop("CREATE DATABASE IF NOT EXISTS split_reset")
        .await
        .unwrap();
    shared_cluster(NET)
        .wait_replicas_caught_up(Duration::from_secs(30))
        .unwrap();
    conn.query_drop("USE split_reset").await.unwrap();
    conn.reset().await.unwrap();
    let on_primary: String = query_one(&mut conn, "SELECT /* rwsplit:primary */ DATABASE()").await;
    assert_eq!(on_primary, "split_reset", "the server keeps the database");
    for _ in 0..4 {
        let row: (String, u32) = conn
            .query_first("SELECT DATABASE(), @@server_id")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.0, "split_reset", "on server {}", row.1);
        assert!(REPLICAS.contains(&row.1));
    }
}
