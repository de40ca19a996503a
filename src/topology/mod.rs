//! The backends sessions can use, as one snapshot that readers load without locking
//! (`ArcSwap`). The registry (fed by discovery and the monitor) publishes a new snapshot when
//! servers come or go; a session loads the current one per statement. What changes more
//! often (requests in flight, eligibility, the connect breaker) are atomics on the shared
//! per-backend state, so the statement path never takes a lock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing::{info, warn};

use crate::config::{Config, Endpoint};
use crate::signal::{Signal, Subscription};

pub mod discovery;
pub mod dns;
pub mod kube;
pub mod monitor;
pub mod registry;

pub use discovery::Role;

/// How long a backend that refused a connection is left out at first; each further failure
/// in a row doubles it, up to `MAX_CONNECT_BACKOFF`. A passed health check ends it early.
pub const CONNECT_FAILURE_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(10);

/// A kind of failure with a backend, as counted per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A connection attempt failed.
    Connect,
    /// A connection failed during a command.
    Lost,
    /// The server answered a command with an error.
    Query,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 3] = [ErrorKind::Connect, ErrorKind::Lost, ErrorKind::Query];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Lost => "lost",
            ErrorKind::Query => "query",
        }
    }
}

/// What the registry last learned about a backend: for `/status` and the metrics, never read
/// on the statement path.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The last health check reached the server; `None` before the first check, or
    /// without health checks.
    pub up: Option<bool>,
    /// Why the last check failed.
    pub check_error: Option<String>,
    pub read_only: Option<bool>,
    /// Replication as the last check saw it (replicas).
    pub io_running: Option<bool>,
    pub sql_running: Option<bool>,
    pub lag: Option<Duration>,
    pub replication_error: Option<String>,
    /// Why a replica takes no reads; `None` when it does (and for the primary).
    pub why_not: Option<String>,
    /// When the last check ended.
    pub checked_at: Option<Instant>,
}

/// One backend server, shared by every session that talks to it.
#[derive(Debug)]
pub struct Backend {
    /// Distinguishes backends in per-session tables; never reused.
    pub id: u32,
    pub endpoint: Endpoint,
    pub role: Role,
    /// Statements sent to this backend whose answer has not been fully relayed yet.
    in_flight: AtomicU32,
    /// A replica may be sent reads (the registry decides).
    eligible: AtomicBool,
    /// The monitor found the server read-only (for the primary: writes would fail).
    read_only: AtomicBool,
    /// Until when (milliseconds after `epoch`) connection attempts are not made, after one
    /// failed; 0 when the backend is not known to be failing.
    blocked_until_ms: AtomicU64,
    /// Connection attempts that failed in a row.
    connect_failures: AtomicU32,
    /// Counts the times the server was found not answering. Sessions waiting on it watch
    /// this to give up on a read that has not started; sessions holding an idle connection
    /// to it check that connection before using it again.
    down: Signal,
    epoch: Instant,
    /// Client commands sent here.
    statements: AtomicU64,
    /// By `ErrorKind`.
    errors: [AtomicU64; 3],
    /// Sessions' connections open to it.
    connections: AtomicU32,
    observed: Mutex<Observed>,
}

impl Backend {
    pub fn new(id: u32, endpoint: Endpoint, role: Role, eligible: bool) -> Self {
        Self {
            id,
            endpoint,
            role,
            in_flight: AtomicU32::new(0),
            eligible: AtomicBool::new(eligible),
            read_only: AtomicBool::new(false),
            blocked_until_ms: AtomicU64::new(0),
            connect_failures: AtomicU32::new(0),
            down: Signal::new(),
            epoch: Instant::now(),
            statements: AtomicU64::new(0),
            errors: Default::default(),
            connections: AtomicU32::new(0),
            observed: Mutex::new(Observed {
                why_not: (!eligible && role == Role::Replica).then(|| "not checked yet".into()),
                ..Observed::default()
            }),
        }
    }

    pub fn count_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    pub fn count_error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts a session's connection as open until the guard is dropped.
    pub fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// What the registry last learned (a copy).
    pub fn observed(&self) -> Observed {
        self.observe().clone()
    }

    pub(crate) fn observe(&self) -> MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reachable as far as the proxy knows: the last health check passed, or without
    /// checks, connection attempts are not failing.
    pub fn up(&self) -> bool {
        self.observe().up.unwrap_or_else(|| self.available())
    }

    /// Whether reads may go here (replicas only; the registry keeps it current).
    pub fn eligible(&self) -> bool {
        self.eligible.load(Ordering::Relaxed)
    }

    pub(crate) fn set_eligible(&self, eligible: bool) {
        self.eligible.store(eligible, Ordering::Relaxed);
    }

    pub fn read_only(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }

    pub(crate) fn set_read_only(&self, read_only: bool) {
        self.read_only.store(read_only, Ordering::Relaxed);
    }

    /// The server stopped answering: reads waiting on it are abandoned.
    pub(crate) fn mark_down(&self) {
        self.down.fire();
    }

    /// Wakes when the server is next marked down.
    pub fn down_signal(&self) -> Subscription {
        self.down.subscribe()
    }

    /// How often the server has been marked down so far.
    pub fn down_count(&self) -> u64 {
        self.down.count()
    }

    pub fn name(&self) -> &str {
        &self.endpoint.name
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a statement (or a connection attempt) as outstanding on this backend until
    /// the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A connection attempt failed: keep sessions from trying again for a while (longer
    /// with each failure in a row), so that a dead server costs a failed attempt now and
    /// then, not one per statement, and statements for it fail at once meanwhile.
    pub fn connect_failed(&self) {
        self.count_error(ErrorKind::Connect);
        let failures = self.connect_failures.fetch_add(1, Ordering::Relaxed);
        let backoff = CONNECT_FAILURE_BACKOFF * 2u32.pow(failures.min(8));
        let until = self.epoch.elapsed() + backoff.min(MAX_CONNECT_BACKOFF);
        let previous = self
            .blocked_until_ms
            .swap(until.as_millis() as u64, Ordering::Relaxed);
        if previous == 0 {
            warn!(backend = %self.endpoint.name, "connection failed; backend left out for now");
        }
    }

    /// A connection (a session's or the monitor's) got through: the breaker closes.
    pub fn connect_succeeded(&self) {
        self.connect_failures.store(0, Ordering::Relaxed);
        if self.blocked_until_ms.swap(0, Ordering::Relaxed) != 0 {
            info!(backend = %self.endpoint.name, "backend reachable again");
        }
    }

    /// How long until connection attempts are made again; zero when they may be made now.
    pub fn blocked_for(&self) -> Duration {
        let until = self.blocked_until_ms.load(Ordering::Relaxed);
        Duration::from_millis(until.saturating_sub(self.epoch.elapsed().as_millis() as u64))
    }

    /// Whether sessions may try to connect.
    pub fn available(&self) -> bool {
        let until = self.blocked_until_ms.load(Ordering::Relaxed);
        until == 0 || self.epoch.elapsed().as_millis() as u64 >= until
    }
}

/// Marks one outstanding request; dropping it ends the request.
pub struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks one session connection open; dropping it closes it in the count.
#[derive(Debug)]
pub struct OpenConnection(Arc<Backend>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backends as they stand.
#[derive(Debug)]
pub struct Topology {
    pub primary: Arc<Backend>,
    /// Replicas reads may be sent to.
    pub replicas: Vec<Arc<Backend>>,
}

/// How a discovery source's last round went.
#[derive(Debug, Clone)]
pub struct SourceState {
    /// The last round's error; `None` when it succeeded.
    pub error: Option<String>,
    pub at: Instant,
}

/// The current topology and the balancer's shared state.
pub struct Backends {
    /// Discovery sources by name, as they last reported.
    sources: Mutex<std::collections::BTreeMap<&'static str, SourceState>>,
    current: ArcSwap<Topology>,
    /// Where the next tie-break starts, so equally loaded replicas take turns.
    next: AtomicUsize,
    /// Reads sent to the primary because no replica was eligible.
    pub fallbacks: AtomicU64,
    /// Whether the last balancing found no replica (logged once per change).
    no_replica: AtomicBool,
    next_id: AtomicU32,
}

impl Backends {
    /// The servers the configuration names, before discovery has run. Without health
    /// checks the configured replicas take reads at once; with them, after their first
    /// passed check.
    pub fn from_config(config: &Config) -> Self {
        let eligible = config.health.monitor.is_none();
        let primary = Arc::new(Backend::new(
            0,
            config.primary.clone(),
            Role::Primary,
            false,
        ));
        let replicas = config
            .replicas
            .iter()
            .zip(1..)
            .map(|(endpoint, id)| {
                Arc::new(Backend::new(id, endpoint.clone(), Role::Replica, eligible))
            })
            .collect::<Vec<_>>();
        let next_id = replicas.len() as u32 + 1;
        Self::new(Topology { primary, replicas }, next_id)
    }

    fn new(topology: Topology, next_id: u32) -> Self {
        Self {
            sources: Mutex::default(),
            current: ArcSwap::from_pointee(topology),
            next: AtomicUsize::new(0),
            fallbacks: AtomicU64::new(0),
            no_replica: AtomicBool::new(false),
            next_id: AtomicU32::new(next_id),
        }
    }

    pub(crate) fn source_reported(&self, source: &'static str, error: Option<String>) {
        let state = SourceState {
            error,
            at: Instant::now(),
        };
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(source, state);
    }

    /// Each discovery source's last round.
    pub fn sources(&self) -> Vec<(&'static str, SourceState)> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// An id no backend has had.
    pub(crate) fn new_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn publish(&self, topology: Topology) {
        self.current.store(Arc::new(topology));
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.current.load()
    }

    /// The replica for the next read: fewest requests in flight, ties broken round-robin,
    /// skipping `excluded` (replicas that just failed this session). `None` when no replica
    /// can take it.
    pub fn pick_replica(&self, excluded: &[u32]) -> Option<Arc<Backend>> {
        let topology = self.current.load();
        let replicas = &topology.replicas;
        let count = replicas.len();
        let mut best: Option<&Arc<Backend>> = None;
        if count > 0 {
            let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
            for replica in replicas.iter().cycle().skip(start).take(count) {
                if excluded.contains(&replica.id) || !replica.eligible() || !replica.available() {
                    continue;
                }
                if best.is_none_or(|b| replica.in_flight() < b.in_flight()) {
                    best = Some(replica);
                }
            }
        }
        // A retry that excludes the replica that just failed says nothing about the others.
        let none = best.is_none();
        // Read before it is written: a write on every read would bounce the cache line
        // between the cores serving sessions.
        if excluded.is_empty()
            && self.no_replica.load(Ordering::Relaxed) != none
            && self.no_replica.swap(none, Ordering::Relaxed) != none
        {
            if none {
                warn!("no replica is eligible for reads");
            } else {
                info!("replicas are eligible for reads again");
            }
        }
        best.cloned()
    }

    /// Counts a read that went to the primary for want of a replica.
    pub fn count_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(count: usize) -> Backends {
        let endpoint = |i: usize| Endpoint {
            name: format!("mysql-{i}"),
            address: format!("127.0.0.{}:3306", i + 1),
        };
        let primary = Arc::new(Backend::new(0, endpoint(0), Role::Primary, false));
        let replicas = (1..=count)
            .map(|i| Arc::new(Backend::new(i as u32, endpoint(i), Role::Replica, true)))
            .collect();
        Backends::new(Topology { primary, replicas }, count as u32 + 1)
    }

    #[test]
    fn idle_replicas_take_turns() {
        let backends = backends(3);
        let picks: Vec<u32> = (0..6)
            .map(|_| backends.pick_replica(&[]).unwrap().id)
            .collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn the_least_busy_replica_wins() {
        let backends = backends(3);
        let busy: Vec<InFlight> = [1, 3]
            .iter()
            .map(|&id| {
                let topology = backends.load();
                topology.replicas[id - 1].start_request()
            })
            .collect();
        for _ in 0..4 {
            assert_eq!(backends.pick_replica(&[]).unwrap().id, 2);
        }
        drop(busy);
        let picks: Vec<u32> = (0..3)
            .map(|_| backends.pick_replica(&[]).unwrap().id)
            .collect();
        assert_eq!(picks.len(), 3);
        assert!(picks.contains(&1) && picks.contains(&2) && picks.contains(&3));
    }

    #[test]
    fn excluded_and_failing_replicas_are_skipped() {
        let backends = backends(2);
        for _ in 0..4 {
            assert_eq!(backends.pick_replica(&[1]).unwrap().id, 2);
        }
        backends.load().replicas[1].connect_failed();
        assert!(backends.pick_replica(&[1]).is_none());
        assert_eq!(backends.pick_replica(&[]).unwrap().id, 1);
        backends.load().replicas[1].connect_succeeded();
        assert_eq!(backends.pick_replica(&[1]).unwrap().id, 2);
        backends.load().replicas[0].set_eligible(false);
        for _ in 0..4 {
            assert_eq!(backends.pick_replica(&[]).unwrap().id, 2);
        }
    }

    #[test]
    fn the_breaker_backs_off_longer_after_each_failure() {
        let backends = backends(1);
        let replica = backends.load().replicas[0].clone();
        replica.connect_failed();
        let first = replica.blocked_for();
        replica.connect_failed();
        let second = replica.blocked_for();
        assert!(first <= CONNECT_FAILURE_BACKOFF && first > CONNECT_FAILURE_BACKOFF / 2);
        assert!(second > first * 3 / 2, "{first:?} then {second:?}");
        for _ in 0..10 {
            replica.connect_failed();
        }
        assert!(replica.blocked_for() <= MAX_CONNECT_BACKOFF);
        replica.connect_succeeded();
        assert_eq!(replica.blocked_for(), Duration::ZERO);
        assert!(replica.available());
    }

    #[test]
    fn no_replicas_means_none() {
        assert!(backends(0).pick_replica(&[]).is_none());
    }
}
