//! Every metric the proxy exports, named in this one module after the Prometheus conventions:
//! the `rwsplit_` prefix, `_total` for counters, `_seconds` and `_bytes` for base units.
//!
//! What sessions count on the statement path is a fixed set of handles resolved at start-up
//! (no label lookup, no lock per statement: a handle is an atomic). Per-backend state lives
//! on the backends themselves (atomics the balancer and the registry keep anyway) and is
//! copied into labelled series when Prometheus scrapes, so a backend that leaves the
//! topology leaves the output with it.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::classify::{self, Statement};
use crate::topology::{Backend, Backends, ErrorKind};

/// Where a statement ran, as the `route` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Primary,
    Replica,
    /// A read that went to the primary: no replica could take it.
    Fallback,
    /// The proxy answered itself (an error: no backend could take it, or the primary is
    /// read-only).
    Proxy,
}

impl Route {
    const ALL: [Route; 4] = [
        Route::Primary,
        Route::Replica,
        Route::Fallback,
        Route::Proxy,
    ];

    fn label(self) -> &'static str {
        match self {
            Route::Primary => "primary",
            Route::Replica => "replica",
            Route::Fallback => "fallback",
            Route::Proxy => "proxy",
        }
    }
}

/// What a command was, as the `kind` label says it: the classifier's kinds, grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Read,
    Write,
    Ddl,
    Transaction,
    /// `SET`, `USE`: session state.
    Session,
    /// Table, instance and backup locks.
    Lock,
    Call,
    /// Statements of no other group.
    Other,
    /// COM_STMT_PREPARE.
    Prepare,
    /// A protocol command that is no statement: ping, init_db, fetch, reset, ...
    Command,
}

impl CommandKind {
    const ALL: [CommandKind; 10] = [
        CommandKind::Read,
        CommandKind::Write,
        CommandKind::Ddl,
        CommandKind::Transaction,
        CommandKind::Session,
        CommandKind::Lock,
        CommandKind::Call,
        CommandKind::Other,
        CommandKind::Prepare,
        CommandKind::Command,
    ];

    fn label(self) -> &'static str {
        match self {
            CommandKind::Read => "read",
            CommandKind::Write => "write",
            CommandKind::Ddl => "ddl",
            CommandKind::Transaction => "transaction",
            CommandKind::Session => "session",
            CommandKind::Lock => "lock",
            CommandKind::Call => "call",
            CommandKind::Other => "other",
            CommandKind::Prepare => "prepare",
            CommandKind::Command => "command",
        }
    }

    pub fn of(statement: &Statement) -> Self {
        use classify::Kind;
        match statement.kind {
            Kind::Read | Kind::Show | Kind::Diagnostics | Kind::Handler => CommandKind::Read,
            Kind::Write | Kind::LoadData => CommandKind::Write,
            Kind::Ddl => CommandKind::Ddl,
            Kind::Begin { .. } | Kind::Commit | Kind::Rollback | Kind::Savepoint | Kind::Xa(_) => {
                CommandKind::Transaction
            }
            Kind::Set | Kind::Use => CommandKind::Session,
            Kind::Lock | Kind::Unlock => CommandKind::Lock,
            Kind::Call => CommandKind::Call,
            Kind::SqlPrepared | Kind::Kill | Kind::Other => CommandKind::Other,
        }
    }
}

/// Where discovery news came from, as the `source` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoverySource {
    /// The headless Service's DNS records.
    HeadlessDns,
    /// Configured server names resolved again.
    ConfiguredDns,
    Kubernetes,
}

impl DiscoverySource {
    pub fn label(self) -> &'static str {
        match self {
            DiscoverySource::HeadlessDns => "headless_dns",
            DiscoverySource::ConfiguredDns => "configured_dns",
            DiscoverySource::Kubernetes => "kubernetes",
        }
    }
}

/// Why a client was turned away before its session began, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MaxConnections,
    ShuttingDown,
    /// The user holds as many sessions as it may (counted after authentication).
    UserConnections,
    /// The login did not finish within `handshake_timeout`.
    HandshakeTimeout,
}

/// Which of a session's timeouts ended it, as the `timeout` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// No command for `idle_timeout`.
    Idle,
    /// A packet the client began stalled for `read_timeout`.
    Read,
    /// The client took none of an answer for `write_timeout`.
    Write,
}

/// Statement latency buckets: 100 µs to about 26 s, doubling (a loopback point select
/// takes about 100-200 µs; a report query seconds).
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 19).expect("valid buckets")
}

/// The per-backend series, filled from the topology at each scrape.
struct BackendSeries {
    statements: IntCounterVec,
    errors: IntCounterVec,
    connections: IntGaugeVec,
    in_flight: IntGaugeVec,
    up: IntGaugeVec,
    eligible: IntGaugeVec,
    lag: prometheus::GaugeVec,
    read_only: IntGaugeVec,
}

pub struct Metrics {
    registry: Registry,
    /// Client connections in a session now.
    pub client_connections: IntGauge,
    pub client_connections_accepted: IntCounter,
    client_connections_rejected: IntCounterVec,
    pub auth_failures: IntCounter,
    /// Connections that waited before their greeting: their address kept failing to log in.
    pub login_delays: IntCounter,
    sessions_timed_out: IntCounterVec,
    /// By route, then kind.
    statements: Vec<Vec<IntCounter>>,
    /// By route.
    latency: Vec<Histogram>,
    /// Reads run again elsewhere after a replica failed them before answering.
    pub retries: IntCounter,
    pub bytes_to_client: IntCounter,
    pub bytes_to_backends: IntCounter,
    discovery_updates: IntCounterVec,
    discovery_failures: IntCounterVec,
    backends: BackendSeries,
    /// Scrapes rebuild the per-backend series: one at a time.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |collector: Box<dyn prometheus::core::Collector>| {
            registry
                .register(collector)
                .expect("metric names are unique")
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let gauge_vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["backend", "role"])
                .expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };

        let client_connections = IntGauge::new(
            "rwsplit_client_connections",
            "Client connections open now (handshake included).",
        )
        .expect("valid metric");
        reg(Box::new(client_connections.clone()));

        let statements_vec = counter_vec(
            "rwsplit_statements_total",
            "Client commands by where they ran (route) and what they were (kind).",
            &["route", "kind"],
        );
        let statements = Route::ALL
            .iter()
            .map(|route| {
                CommandKind::ALL
                    .iter()
                    .map(|kind| statements_vec.with_label_values(&[route.label(), kind.label()]))
                    .collect()
            })
            .collect();
        let latency_vec = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "rwsplit_statement_duration_seconds",
                "Time from a client command's arrival to the end of its answer, by route.",
            )
            .buckets(latency_buckets()),
            &["route"],
        )
        .expect("valid metric");
        reg(Box::new(latency_vec.clone()));
        let latency = Route::ALL
            .iter()
            .map(|route| latency_vec.with_label_values(&[route.label()]))
            .collect();
        let bytes = counter_vec(
            "rwsplit_relayed_bytes_total",
            "Bytes relayed: commands to backends, answers to clients.",
            &["direction"],
        );

        let lag = prometheus::GaugeVec::new(
            Opts::new(
                "rwsplit_backend_replication_lag_seconds",
                "Seconds_Behind_Source at the last check (replicas replicating only).",
            ),
            &["backend", "role"],
        )
        .expect("valid metric");
        reg(Box::new(lag.clone()));
        let backends = BackendSeries {
            statements: counter_vec(
                "rwsplit_backend_statements_total",
                "Client commands sent to the backend.",
                &["backend", "role"],
            ),
            errors: counter_vec(
                "rwsplit_backend_errors_total",
                "Failures with the backend: connect (a connection attempt failed), lost (a \
                 connection failed during a command), query (the server answered an error).",
                &["backend", "role", "error"],
            ),
            connections: gauge_vec(
                "rwsplit_backend_connections",
                "Sessions' connections to the backend open now.",
            ),
            in_flight: gauge_vec(
                "rwsplit_backend_in_flight",
                "Commands (and connection attempts) the backend has not finished answering.",
            ),
            up: gauge_vec(
                "rwsplit_backend_up",
                "1 when the last health check reached the server (or, without checks, \
                 connections to it are not failing).",
            ),
            eligible: gauge_vec(
                "rwsplit_backend_eligible",
                "1 when the replica may be sent reads.",
            ),
            lag,
            read_only: gauge_vec(
                "rwsplit_backend_read_only",
                "1 when the last check found @@read_only set.",
            ),
        };

        let process = prometheus::process_collector::ProcessCollector::for_self();
        reg(Box::new(process));

        Self {
            client_connections,
            client_connections_accepted: counter(
                "rwsplit_client_connections_accepted_total",
                "Client connections accepted.",
            ),
            client_connections_rejected: counter_vec(
                "rwsplit_client_connections_rejected_total",
                "Client connections turned away before their session began, by reason.",
                &["reason"],
            ),
            auth_failures: counter(
                "rwsplit_client_auth_failures_total",
                "Client logins (and COM_CHANGE_USER) refused: wrong password or unknown user.",
            ),
            login_delays: counter(
                "rwsplit_client_login_delays_total",
                "Client connections made to wait before their greeting because their address \
                 failed to log in login_delay_after times in a row.",
            ),
            sessions_timed_out: counter_vec(
                "rwsplit_client_sessions_timed_out_total",
                "Sessions closed by a timeout: idle (no command), read (a packet stalled), \
                 write (the client took no answer).",
                &["timeout"],
            ),
            statements,
            latency,
            retries: counter(
                "rwsplit_retries_total",
                "Reads run again on another backend after a replica failed them before \
                 any byte of the answer was relayed.",
            ),
            bytes_to_client: bytes.with_label_values(&["to_client"]),
            bytes_to_backends: bytes.with_label_values(&["to_backend"]),
            discovery_updates: counter_vec(
                "rwsplit_discovery_updates_total",
                "Answers from discovery (each DNS round, each Kubernetes change), by source.",
                &["source"],
            ),
            discovery_failures: counter_vec(
                "rwsplit_discovery_failures_total",
                "Discovery rounds that failed (the last good answer stands), by source.",
                &["source"],
            ),
            backends,
            scrape: Mutex::new(()),
            registry,
        }
    }

    /// A client command has been answered.
    pub fn command(&self, route: Route, kind: CommandKind, took: Duration) {
        // The handles were built in `ALL` order, which is declaration order.
        self.statements[route as usize][kind as usize].inc();
        self.latency[route as usize].observe(took.as_secs_f64());
    }

    pub fn rejected(&self, reason: Rejection) {
        let label = match reason {
            Rejection::MaxConnections => "max_connections",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::UserConnections => "max_user_connections",
            Rejection::HandshakeTimeout => "handshake_timeout",
        };
        self.client_connections_rejected
            .with_label_values(&[label])
            .inc();
    }

    pub fn timed_out(&self, which: Timeout) {
        let label = match which {
            Timeout::Idle => "idle",
            Timeout::Read => "read",
            Timeout::Write => "write",
        };
        self.sessions_timed_out.with_label_values(&[label]).inc();
    }

    pub fn discovery_update(&self, source: DiscoverySource, failed: bool) {
        let counter = if failed {
            &self.discovery_failures
        } else {
            &self.discovery_updates
        };
        counter.with_label_values(&[source.label()]).inc();
    }

    /// The text exposition of every metric, with the backends as they stand now.
    pub fn render(&self, backends: &Backends) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.fill_backends(backends);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    fn fill_backends(&self, backends: &Backends) {
        let series = &self.backends;
        // Counters are set by resetting and adding the backend's own running total: the
        // backend keeps counting between scrapes without knowing about Prometheus.
        series.statements.reset();
        series.errors.reset();
        for vec in [
            &series.connections,
            &series.in_flight,
            &series.up,
            &series.eligible,
            &series.read_only,
        ] {
            vec.reset();
        }
        series.lag.reset();
        let topology = backends.load();
        let all = std::iter::once(&topology.primary).chain(topology.replicas.iter());
        for backend in all {
            self.fill_backend(backend);
        }
    }

    fn fill_backend(&self, backend: &Backend) {
        let series = &self.backends;
        let labels = [backend.name(), backend.role.label()];
        let set = |vec: &IntGaugeVec, value: u64| {
            vec.with_label_values(&labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        series
            .statements
            .with_label_values(&labels)
            .inc_by(backend.statements());
        for kind in ErrorKind::ALL {
            series
                .errors
                .with_label_values(&[labels[0], labels[1], kind.label()])
                .inc_by(backend.errors(kind));
        }
        set(&series.connections, backend.connections().into());
        set(&series.in_flight, backend.in_flight().into());
        let observed = backend.observed();
        set(&series.up, backend.up().into());
        if backend.role == crate::topology::Role::Replica {
            set(&series.eligible, backend.eligible().into());
        }
        if let Some(read_only) = observed.read_only {
            set(&series.read_only, read_only.into());
        }
        if let Some(lag) = observed.lag {
            series.lag.with_label_values(&labels).set(lag.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_indexed_by_declaration_order() {
        for (i, route) in Route::ALL.iter().enumerate() {
            assert_eq!(*route as usize, i, "{route:?}");
        }
        for (i, kind) in CommandKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
    }
}
