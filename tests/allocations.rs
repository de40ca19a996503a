//! The statement path allocates nothing once a session is under way: reads on a replica,
//! prepared statements, writes and transactions on the primary reuse the session's buffers
//! and state. Allocations are counted on the proxy's own threads only (the client runs on
//! the test's thread), against the real cluster.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use mysql_async::prelude::Queryable;
use support::{APP_PASSWORD, APP_USER, shared_cluster, split_config};

const NET: &str = "127.0.36";

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the proxy's runtime threads.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

struct CountingAllocator;

// SAFETY: every call is passed to the system allocator unchanged; counting touches only an
// atomic and a const-initialised thread-local without a destructor.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `statements` statements through `run` and returns the proxy's allocations per
/// statement.
async fn allocations_per_statement<F>(statements: u64, mut run: F) -> f64
where
    F: AsyncFnMut(u64),
{
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..statements {
        run(i).await;
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    (after - before) as f64 / statements as f64
}

#[test]
fn statements_in_a_warm_session_allocate_nothing_in_the_proxy() {
    let cluster = shared_cluster(NET);
    // The proxy on its own runtime, whose threads count their allocations.
    let proxy_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| COUNTED.with(|counted| counted.set(true)))
        .build()
        .unwrap();
    let config = split_config(cluster, "");
    let proxy = proxy_runtime
        .block_on(rwsplit::server::Proxy::bind(config))
        .expect("bind");
    let addr = proxy.local_addr().unwrap();
    proxy_runtime.spawn(proxy.serve(std::future::pending()));

    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let workloads = client_runtime.block_on(run_workloads(addr, cluster));
    proxy_runtime.shutdown_background();

    eprintln!("proxy allocations per statement: {workloads:?}");
    for (workload, per_statement) in workloads {
        // Zero in steady state; the margin is for the runtime's own occasional work (a
        // timer wheel level, a queue growing) landing in the window.
        assert!(
            per_statement < 0.01,
            "{workload}: {per_statement:.3} allocations per statement in the proxy"
        );
    }
}

/// Warms a session up with each workload, then measures it.
async fn run_workloads(
    addr: std::net::SocketAddr,
    cluster: &support::Cluster,
) -> Vec<(&'static str, f64)> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some("app"))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts).await.expect("connect");
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS app.alloc (id INT PRIMARY KEY, c CHAR(120) NOT NULL)",
    )
    .await
    .unwrap();
    conn.query_drop("REPLACE INTO app.alloc VALUES (1, REPEAT('x', 120))")
        .await
        .unwrap();
    cluster
        .wait_replicas_caught_up(std::time::Duration::from_secs(30))
        .unwrap();
    let point_select = conn
        .prep("SELECT c FROM app.alloc WHERE id = ?")
        .await
        .unwrap();
    let primary_id: u32 = conn
        .query_first("SELECT @@server_id FOR UPDATE")
        .await
        .unwrap()
        .unwrap();

    let mut workloads = Vec::new();
    // Each workload runs once to warm up (connections opened, buffers grown, statements
    // prepared on the replicas), then is measured.
    for round in ["warm-up", "measured"] {
        // Multiples of three, so that every transaction is committed.
        let statements = if round == "warm-up" { 300 } else { 3_000 };
        let text_reads = allocations_per_statement(statements, async |_| {
            let c: Option<String> = conn
                .query_first("SELECT c FROM app.alloc WHERE id = 1")
                .await
                .unwrap();
            assert_eq!(c.map(|c| c.len()), Some(120));
        })
        .await;
        let prepared_reads = allocations_per_statement(statements, async |_| {
            let c: Option<String> = conn.exec_first(&point_select, (1,)).await.unwrap();
            assert_eq!(c.map(|c| c.len()), Some(120));
        })
        .await;
        let writes = allocations_per_statement(statements, async |i| {
            conn.query_drop(format!(
                "UPDATE app.alloc SET c = REPEAT('{}', 120) WHERE id = 1",
                i % 10
            ))
            .await
            .unwrap();
        })
        .await;
        let transactions = allocations_per_statement(statements, async |i| {
            let statement = match i % 3 {
                0 => "BEGIN",
                1 => "SELECT c FROM app.alloc WHERE id = 1 FOR UPDATE",
                _ => "COMMIT",
            };
            conn.query_drop(statement).await.unwrap();
        })
        .await;
        if round == "measured" {
            workloads = vec![
                ("text reads", text_reads),
                ("prepared reads", prepared_reads),
                ("writes", writes),
                ("transactions", transactions),
            ];
        }
    }

    // The reads were the replicas' and the rest the primary's: the workloads exercised
    // both routes.
    let read_on: u32 = conn
        .query_first("SELECT @@server_id")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(read_on, primary_id, "reads go to a replica");
    conn.disconnect().await.unwrap();
    workloads
}
