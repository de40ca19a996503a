//! The relay loop's own cost per statement, without a database's noise: an in-process
//! opensrv-mysql backend answers sysbench's point select at once, and the same client runs
//! the same statements against it directly and through rwsplit (in-process, a primary and a
//! replica, health checks on). Reads go to the replica, so classification, routing, the
//! balancer and the relay are all on the path.
//!
//! Criterion reports the time per round and statements per second for each arm. The table
//! printed after it comes from a second measurement that runs the arms in alternation, so
//! that both see the same load on a shared machine: per statement, wall time, the ratio
//! proxy/direct and the CPU time of the proxy's, the backend's and the client's threads,
//! read from their own clocks. Compare ratios from one run, not figures across runs.
//!
//! Every statement wakes each side at least once, so what a wake-up costs is part of every
//! figure. On a virtual machine that cost depends on what else runs: an idle vCPU halts
//! and is slow to wake, a busy one is not. On the 2-vCPU machine this was written on, the
//! direct text arm took ~15 µs per statement with other builds running and ~56 µs with
//! the machine otherwise idle, and the backend's and client's CPU time per statement moved
//! alike (~7 µs against ~27 µs) for the same work.

#[path = "relay/backend.rs"]
mod backend;
#[path = "relay/client.rs"]
mod client;
#[path = "relay/cpu.rs"]
mod cpu;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use rwsplit::config::{Config, FileConfig, Overrides};
use rwsplit::protocol::codes;
use rwsplit::protocol::packet::encode_packet;
use rwsplit::protocol::response::ResponseKind;
use rwsplit::server::Proxy;
use rwsplit::topology::Backends;
use tokio::runtime::Runtime;

use backend::{POINT_SELECT, POINT_SELECT_TEXT, Role};
use client::Client;
use cpu::ThreadClock;

/// Statements per write in the pipelined case.
const PIPELINE: usize = 16;
const ID: i64 = 5014;
/// Rounds per turn in the alternating measurement: a few milliseconds, long enough for the
/// clocks' reading to vanish, short enough for both arms to see the same machine.
const ALTERNATION_ROUNDS: u64 = 200;
/// How long the alternating measurement runs per case.
const ALTERNATION_TIME: Duration = Duration::from_secs(3);
const USER: (&str, &str) = backend::USERS[0];

/// The backends and the proxy, each on a runtime of its own.
struct World {
    proxy_addr: SocketAddr,
    replica_addr: SocketAddr,
    backends: Arc<Backends>,
    proxy_cpu: ThreadClock,
    backend_cpu: ThreadClock,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
    proxy_rt: Runtime,
    backend_rt: Runtime,
}

/// One worker per runtime: on two cores the client, the proxy and the backend already take
/// turns, and a single thread per side is what makes each side's CPU time readable.
fn runtime(name: &str, clock: &ThreadClock) -> Runtime {
    let clock = clock.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .on_thread_start(move || clock.register_current())
        .build()
        .expect("tokio runtime")
}

fn proxy_config(primary: SocketAddr, replica: SocketAddr) -> Config {
    let (user, password) = USER;
    let (monitor, monitor_password) = backend::USERS[1];
    let text = format!(
        "[proxy]\nlisten = '127.0.0.1:0'\n\
         [primary]\nname = 'primary'\naddress = '{primary}'\n\
         [[replicas]]\nname = 'replica'\naddress = '{replica}'\n\
         [health]\nmonitor_user = '{monitor}'\n\
         [[users]]\nname = '{user}'\npassword = '{password}'\n\
         [[users]]\nname = '{monitor}'\npassword = '{monitor_password}'\n"
    );
    let file: FileConfig = toml::from_str(&text).expect("bench config parses");
    Config::from_file(file, &Overrides::default(), &|_| None).expect("bench config is valid")
}

impl World {
    fn start() -> Self {
        let backend_cpu = ThreadClock::default();
        let backend_rt = runtime("bench-backend", &backend_cpu);
        let (primary, replica_addr) = backend_rt.block_on(async {
            (
                backend::start(Role::Primary).await,
                backend::start(Role::Replica).await,
            )
        });
        let proxy_cpu = ThreadClock::default();
        let proxy_rt = runtime("bench-proxy", &proxy_cpu);
        let proxy = proxy_rt
            .block_on(Proxy::bind(proxy_config(primary, replica_addr)))
            .expect("bind the proxy");
        let proxy_addr = proxy.local_addr().expect("proxy address");
        let backends = proxy.backends();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = proxy_rt.spawn(proxy.serve(async {
            let _ = stopped.await;
        }));
        let world = Self {
            proxy_addr,
            replica_addr,
            backends,
            proxy_cpu,
            backend_cpu,
            stop,
            served,
            proxy_rt,
            backend_rt,
        };
        world.wait_for_replica();
        world
    }

    /// Reads go to the replica only once a health check has passed it.
    fn wait_for_replica(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let topology = self.backends.load();
            let replica = topology
                .replicas
                .first()
                .expect("the replica is configured");
            if replica.eligible() {
                return;
            }
            if Instant::now() > deadline {
                let seen = replica.observed();
                panic!(
                    "the replica takes no reads after 10 s: {:?} (check: {:?})",
                    seen.why_not, seen.check_error
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Statements the proxy sent to the primary and to the replica so far.
    fn routed(&self) -> (u64, u64) {
        let topology = self.backends.load();
        let replicas = topology.replicas.iter().map(|r| r.statements()).sum();
        (topology.primary.statements(), replicas)
    }

    /// Lets sessions end, stops the proxy and both runtimes: no thread or socket survives.
    fn stop(self) {
        let _ = self.stop.send(());
        let served = self.served;
        let drained = self
            .proxy_rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), served).await });
        assert!(drained.is_ok(), "the proxy did not stop within 5 s");
        self.proxy_rt.shutdown_timeout(Duration::from_secs(1));
        self.backend_rt.shutdown_timeout(Duration::from_secs(1));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    Direct,
    Proxy,
}

impl Arm {
    const BOTH: [Arm; 2] = [Arm::Direct, Arm::Proxy];

    fn name(self) -> &'static str {
        match self {
            Arm::Direct => "direct",
            Arm::Proxy => "proxy",
        }
    }
}

/// What a case sends in one timed round: framed requests for each arm (prepared statement
/// ids differ per connection) and how many answers they get.
struct Case {
    name: &'static str,
    kind: ResponseKind,
    statements: usize,
    requests: [Vec<u8>; 2],
}

/// What the alternating measurement found for one case and arm.
#[derive(Default, Clone, Copy)]
struct Tally {
    statements: u64,
    wall: Duration,
    proxy_cpu: Duration,
    backend_cpu: Duration,
    client_cpu: Duration,
}

impl Tally {
    fn per_statement(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e6 / self.statements.max(1) as f64
    }
}

fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in payloads {
        encode_packet(&mut out, 0, payload);
    }
    out
}

fn text_query() -> Vec<u8> {
    let mut payload = vec![codes::COM_QUERY];
    payload.extend_from_slice(format!("{POINT_SELECT_TEXT}{ID}").as_bytes());
    payload
}

/// COM_STMT_EXECUTE with the id as a signed BIGINT. Like libmysqlclient (sysbench), the
/// types go with the first execute after binding only.
fn execute(statement: u32, send_types: bool) -> Vec<u8> {
    let mut payload = vec![codes::COM_STMT_EXECUTE];
    payload.extend_from_slice(&statement.to_le_bytes());
    payload.push(0); // no cursor
    payload.extend_from_slice(&1u32.to_le_bytes()); // iteration count
    payload.push(0); // NULL bitmap
    payload.push(u8::from(send_types));
    if send_types {
        payload.extend_from_slice(&[0x08, 0x00]); // MYSQL_TYPE_LONGLONG, signed
    }
    payload.extend_from_slice(&ID.to_le_bytes());
    payload
}

/// Logs both arms in, checks that they get the same answers and that the proxy sends the
/// reads to the replica, and frames each case's requests.
fn prepare_cases(world: &World) -> ([Client; 2], Vec<Case>) {
    let (user, password) = USER;
    let addrs = [world.replica_addr, world.proxy_addr];
    let mut clients = addrs.map(|addr| {
        let mut client = Client::connect(addr, user, password);
        client.query("SET autocommit=1");
        client
    });
    let (primary_before, replica_before) = world.routed();
    let [direct, proxied] = &mut clients;
    let sql = format!("{POINT_SELECT_TEXT}{ID}");
    let answer = direct.query(&sql);
    assert_eq!(answer, proxied.query(&sql), "the proxy changed the answer");
    let row = [&[120u8][..], &backend::C_VALUE].concat();
    assert!(answer.contains(&row), "no 120-byte row in {answer:02x?}");

    let statements = clients.each_mut().map(|client| {
        let id = client.prepare(POINT_SELECT);
        client.exchange(&framed(&[execute(id, true)]), ResponseKind::Execute, 1);
        id
    });
    let (primary_after, replica_after) = world.routed();
    assert!(
        primary_after == primary_before && replica_after >= replica_before + 3,
        "a query, a prepare and an execute through the proxy must all reach the replica: \
         primary {primary_before} -> {primary_after}, replica {replica_before} -> {replica_after}"
    );

    let text = framed(&[text_query()]);
    let cases = vec![
        Case {
            name: "point_select_text",
            kind: ResponseKind::Query,
            statements: 1,
            requests: [text.clone(), text.clone()],
        },
        Case {
            name: "point_select_prepared",
            kind: ResponseKind::Execute,
            statements: 1,
            requests: statements.map(|id| framed(&[execute(id, false)])),
        },
        Case {
            name: "point_select_pipelined_16",
            kind: ResponseKind::Query,
            statements: PIPELINE,
            requests: [(); 2].map(|_| framed(&vec![text_query(); PIPELINE])),
        },
    ];
    (clients, cases)
}

/// Criterion's measurement of each arm; `false` when a command-line filter skipped both.
fn bench_case(c: &mut Criterion, clients: &mut [Client; 2], case: &Case) -> bool {
    let mut ran = false;
    let mut group = c.benchmark_group(case.name);
    group.throughput(Throughput::Elements(case.statements as u64));
    for (i, arm) in Arm::BOTH.into_iter().enumerate() {
        let client = &mut clients[i];
        let request = &case.requests[i];
        let packets = client.exchange(request, case.kind, case.statements);
        group.bench_function(arm.name(), |b| {
            ran = true;
            b.iter(|| {
                let got = client.exchange(request, case.kind, case.statements);
                assert_eq!(got, packets, "the answer changed shape");
            })
        });
    }
    group.finish();
    ran
}

/// The figures behind the table: both arms in turns of `rounds` until `duration` has
/// passed (one turn each at least), so that a change in the machine's load, which
/// criterion's one-arm-after-the-other runs take as a difference between the arms, hits
/// both alike. The clocks are read once per turn.
fn alternate(
    world: &World,
    clients: &mut [Client; 2],
    case: &Case,
    rounds: u64,
    duration: Duration,
) -> [Tally; 2] {
    let mut tallies = [Tally::default(); 2];
    let end = Instant::now() + duration;
    loop {
        for (i, tally) in tallies.iter_mut().enumerate() {
            let client = &mut clients[i];
            let request = &case.requests[i];
            let proxy = world.proxy_cpu.elapsed();
            let backend = world.backend_cpu.elapsed();
            let own = cpu::this_thread();
            let start = Instant::now();
            for _ in 0..rounds {
                client.exchange(request, case.kind, case.statements);
            }
            tally.wall += start.elapsed();
            tally.client_cpu += cpu::this_thread() - own;
            tally.proxy_cpu += world.proxy_cpu.elapsed() - proxy;
            tally.backend_cpu += world.backend_cpu.elapsed() - backend;
            tally.statements += rounds * case.statements as u64;
        }
        if Instant::now() >= end {
            return tallies;
        }
    }
}

fn report(results: &[(&str, [Tally; 2])], routed: (u64, u64)) {
    println!();
    println!(
        "relay overhead per statement (both arms in alternating turns of {ALTERNATION_ROUNDS} \
         rounds for {}s per case)",
        ALTERNATION_TIME.as_secs()
    );
    println!(
        "{:<27} {:<7} {:>9} {:>10} {:>11} {:>11} {:>11}",
        "case", "arm", "wall µs", "stmt/s", "proxy CPU", "backend CPU", "client CPU"
    );
    for (name, tallies) in results {
        for (arm, t) in Arm::BOTH.iter().zip(tallies) {
            let wall = t.per_statement(t.wall);
            println!(
                "{:<27} {:<7} {:>9.2} {:>10.0} {:>9.2}µs {:>9.2}µs {:>9.2}µs",
                name,
                arm.name(),
                wall,
                1e6 / wall,
                t.per_statement(t.proxy_cpu),
                t.per_statement(t.backend_cpu),
                t.per_statement(t.client_cpu),
            );
        }
        let [direct, proxy] = tallies;
        let added = proxy.per_statement(proxy.wall) - direct.per_statement(direct.wall);
        println!(
            "{:<27} proxy/direct: time x{:.2} (+{:.2} µs/stmt), proxy CPU {:.2} µs/stmt",
            name,
            proxy.per_statement(proxy.wall) / direct.per_statement(direct.wall),
            added,
            proxy.per_statement(proxy.proxy_cpu),
        );
    }
    println!(
        "statements the proxy routed: {} to the primary, {} to the replica",
        routed.0, routed.1
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    // `cargo test` runs benches without `--bench`: once each, quickly.
    let (rounds, duration) = if std::env::args().any(|a| a == "--bench") {
        (ALTERNATION_ROUNDS, ALTERNATION_TIME)
    } else {
        (1, Duration::ZERO)
    };
    let world = World::start();
    let (mut clients, cases) = prepare_cases(&world);
    let mut results = Vec::new();
    for case in &cases {
        if bench_case(&mut criterion, &mut clients, case) {
            let tallies = alternate(&world, &mut clients, case, rounds, duration);
            results.push((case.name, tallies));
        }
    }
    report(&results, world.routed());
    for client in clients {
        client.quit();
    }
    world.stop();
    criterion.final_summary();
}
