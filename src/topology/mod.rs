//! The backends sessions can use, as one snapshot that readers load without locking
//! (`ArcSwap`). Whatever finds or checks backends publishes a new snapshot; a session loads
//! the current one per statement. Counters that change per statement (requests in flight)
//! are atomics on the shared per-backend state, so balancing never takes a lock either.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing::{info, warn};

use crate::config::{Config, Endpoint};

pub mod discovery;
pub mod kube;

/// How long a backend that refused a connection is left out of the balancing before
/// sessions try it again.
pub const CONNECT_FAILURE_BACKOFF: Duration = Duration::from_secs(2);

/// One backend server, shared by every session that talks to it.
#[derive(Debug)]
pub struct Backend {
    /// Distinguishes backends in per-session tables; never reused.
    pub id: u32,
    pub endpoint: Endpoint,
    /// Statements sent to this backend whose answer has not been fully relayed yet.
    in_flight: AtomicU32,
    /// Until when (milliseconds after `epoch`) connection attempts are not made, after one
    /// failed; 0 when the backend is not known to be failing.
    blocked_until_ms: AtomicU64,
    epoch: Instant,
}

impl Backend {
    pub fn new(id: u32, endpoint: Endpoint) -> Self {
        Self {
            id,
            endpoint,
            in_flight: AtomicU32::new(0),
            blocked_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
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

    /// A connection attempt failed: keep sessions from trying again for a while (at least
    /// as long as one attempt may take), so that a dead replica costs one connect timeout,
    /// not one per statement.
    pub fn connect_failed(&self, connect_timeout: Duration) {
        let until = self.epoch.elapsed() + CONNECT_FAILURE_BACKOFF.max(connect_timeout);
        let previous = self
            .blocked_until_ms
            .swap(until.as_millis() as u64, Ordering::Relaxed);
        if previous == 0 {
            warn!(backend = %self.endpoint.name, "connection failed; backend left out for now");
        }
    }

    pub fn connect_succeeded(&self) {
        if self.blocked_until_ms.swap(0, Ordering::Relaxed) != 0 {
            info!(backend = %self.endpoint.name, "backend reachable again");
        }
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

/// The backends as they stand.
#[derive(Debug)]
pub struct Topology {
    pub primary: Arc<Backend>,
    /// Replicas reads may be sent to.
    pub replicas: Vec<Arc<Backend>>,
}

/// The current topology and the balancer's shared state.
pub struct Backends {
    current: ArcSwap<Topology>,
    /// Where the next tie-break starts, so equally loaded replicas take turns.
    next: AtomicUsize,
    /// Reads sent to the primary because no replica was eligible.
    pub fallbacks: AtomicU64,
    /// Whether the last balancing found no replica (logged once per change).
    no_replica: AtomicBool,
}

impl Backends {
    /// The static topology of the configuration.
    pub fn from_config(config: &Config) -> Self {
        let primary = Arc::new(Backend::new(0, config.primary.clone()));
        let replicas = config
            .replicas
            .iter()
            .zip(1..)
            .map(|(endpoint, id)| Arc::new(Backend::new(id, endpoint.clone())))
            .collect();
        Self {
            current: ArcSwap::from_pointee(Topology { primary, replicas }),
            next: AtomicUsize::new(0),
            fallbacks: AtomicU64::new(0),
            no_replica: AtomicBool::new(false),
        }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.current.load()
    }

    /// The replica for the next read: fewest requests in flight, ties broken round-robin,
    /// skipping `excluded` (a replica that just failed this session). `None` when no replica
    /// can take it.
    pub fn pick_replica(&self, excluded: Option<u32>) -> Option<Arc<Backend>> {
        let topology = self.current.load();
        let replicas = &topology.replicas;
        let count = replicas.len();
        let mut best: Option<&Arc<Backend>> = None;
        if count > 0 {
            let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
            for replica in replicas.iter().cycle().skip(start).take(count) {
                if Some(replica.id) == excluded || !replica.available() {
                    continue;
                }
                if best.is_none_or(|b| replica.in_flight() < b.in_flight()) {
                    best = Some(replica);
                }
            }
        }
        // A retry that excludes the replica that just failed says nothing about the others.
        let none = best.is_none();
        if excluded.is_none() && self.no_replica.swap(none, Ordering::Relaxed) != none {
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

    fn backends(replicas: usize) -> Backends {
        let endpoint = |i: usize| Endpoint {
            name: format!("mysql-{i}"),
            address: format!("127.0.0.{}:3306", i + 1),
        };
        let primary = Arc::new(Backend::new(0, endpoint(0)));
        let replicas = (1..=replicas)
            .map(|i| Arc::new(Backend::new(i as u32, endpoint(i))))
            .collect();
        Backends {
            current: ArcSwap::from_pointee(Topology { primary, replicas }),
            next: AtomicUsize::new(0),
            fallbacks: AtomicU64::new(0),
            no_replica: AtomicBool::new(false),
        }
    }

    #[test]
    fn idle_replicas_take_turns() {
        let backends = backends(3);
        let picks: Vec<u32> = (0..6)
            .map(|_| backends.pick_replica(None).unwrap().id)
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
            assert_eq!(backends.pick_replica(None).unwrap().id, 2);
        }
        drop(busy);
        let picks: Vec<u32> = (0..3)
            .map(|_| backends.pick_replica(None).unwrap().id)
            .collect();
        assert_eq!(picks.len(), 3);
        assert!(picks.contains(&1) && picks.contains(&2) && picks.contains(&3));
    }

    #[test]
    fn excluded_and_failing_replicas_are_skipped() {
        let backends = backends(2);
        for _ in 0..4 {
            assert_eq!(backends.pick_replica(Some(1)).unwrap().id, 2);
        }
        backends.load().replicas[1].connect_failed(Duration::from_secs(1));
        assert!(backends.pick_replica(Some(1)).is_none());
        assert_eq!(backends.pick_replica(None).unwrap().id, 1);
        backends.load().replicas[1].connect_succeeded();
        assert_eq!(backends.pick_replica(Some(1)).unwrap().id, 2);
    }

    #[test]
    fn no_replicas_means_none() {
        assert!(backends(0).pick_replica(None).is_none());
    }
}
