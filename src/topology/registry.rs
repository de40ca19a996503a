//! The registry: the one task that knows everything about the servers. Discovery sources
//! (the configured list, the headless Service's DNS records, the Kubernetes API) tell it
//! which servers exist and whether the platform calls them ready; one monitor task per
//! server tells it how each check went. From that it decides which replicas may take reads
//! (D6), with hysteresis, publishes the snapshot sessions read, and logs each change once.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::{debug, error, info, warn};

use super::discovery::{EndpointReadiness, Member, Role, Update};
use super::dns::{self, DnsDiscovery, DnsSettings};
use super::kube::{self, KubeSettings};
use super::monitor::{self, Health, MonitorSettings, Report};
use super::{Backend, Backends, Topology};
use crate::config::{Config, Endpoint, Headless, HealthChecks, KubernetesMode};
use crate::metrics::{DiscoverySource, Metrics};

/// Where an update came from: each source's servers are kept apart, so that one source's
/// news never erases another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Static,
    Headless,
    Kubernetes,
}

impl Source {
    fn metric(self) -> DiscoverySource {
        match self {
            Source::Static => DiscoverySource::ConfiguredDns,
            Source::Headless => DiscoverySource::HeadlessDns,
            Source::Kubernetes => DiscoverySource::Kubernetes,
        }
    }
}

#[derive(Debug)]
enum Event {
    Discovered(Source, Update),
    Checked(Report),
    /// The configuration was reloaded with these checks and thresholds.
    Reconfigured(HealthChecks),
}

/// The running registry, as the proxy holds it.
pub struct Handle {
    /// Turns `true` once every discovery source has answered once (or failed).
    pub ready: watch::Receiver<bool>,
    events: mpsc::Sender<Event>,
}

impl Handle {
    /// New health settings: thresholds apply at the next decision; a changed monitor user,
    /// interval or timeout restarts the checks.
    pub async fn reconfigure(&self, health: HealthChecks) {
        let _ = self.events.send(Event::Reconfigured(health)).await;
    }
}

/// Starts discovery, the monitor and the registry in the background. The handle's `ready`
/// lets the proxy wait for a first topology before taking clients.
pub fn start(config: &Config, backends: Arc<Backends>, metrics: Arc<Metrics>) -> Handle {
    let (events, inbox) = mpsc::channel(256);
    let (ready_tx, ready_rx) = watch::channel(false);
    let mut sources = Vec::new();

    let static_endpoints = static_endpoints(config);
    if !static_endpoints.is_empty() {
        match DnsDiscovery::new(dns_settings(config)) {
            Ok(resolver) => {
                sources.push(Source::Static);
                let forward = forwarder(Source::Static, events.clone());
                let interval = config.discovery.interval;
                tokio::spawn(resolve_static(
                    resolver,
                    static_endpoints,
                    interval,
                    forward,
                ));
            }
            Err(e) => error!(error = %e, "cannot set up the DNS resolver for configured servers"),
        }
    }
    if config.discovery.headless.is_some() {
        match DnsDiscovery::new(dns_settings(config)) {
            Ok(discovery) => {
                sources.push(Source::Headless);
                let forward = forwarder(Source::Headless, events.clone());
                tokio::spawn(dns::run(discovery, forward));
            }
            Err(e) => error!(error = %e, "cannot set up DNS discovery"),
        }
        // Readiness from the API is news on top of DNS; start-up does not wait for it.
        if config.discovery.kubernetes != KubernetesMode::Off {
            let dns = dns_settings(config);
            let settings = KubeSettings {
                namespace: dns.namespace,
                service: dns.headless_service,
            };
            let required = config.discovery.kubernetes == KubernetesMode::On;
            let kubeconfig = config.discovery.kubeconfig.clone();
            let forward = forwarder(Source::Kubernetes, events.clone());
            tokio::spawn(async move {
                match kube::client_if_available(kubeconfig.as_deref()).await {
                    Some(client) => kube::watch_endpoint_slices(client, settings, forward).await,
                    // A configured kubeconfig that cannot be used was logged already.
                    None if required && kubeconfig.is_none() => error!(
                        "discovery.kubernetes is on, but neither a service account nor a \
                         kubeconfig is available; readiness comes from DNS and checks only"
                    ),
                    None => {}
                }
            });
        }
    }

    let topology = backends.load();
    let mut registry = Registry {
        backends: backends.clone(),
        metrics,
        health: config.health.clone(),
        primary_from_headless: config.discovery.primary_from_headless,
        primary: Tracked::new(topology.primary.clone(), false),
        replicas: topology
            .replicas
            .iter()
            .map(|b| (b.name().to_owned(), Tracked::new(b.clone(), false)))
            .collect(),
        members: HashMap::new(),
        kubernetes: None,
        events: events.clone(),
        awaiting: sources,
        ready: ready_tx,
    };
    drop(topology);
    // The configured names are resolved by discovery, through the resolver it is told to
    // use; checked before that, they would go to the system's resolver, which may not know
    // them (a cluster's DNS seen from outside) and fail the first check of every server.
    if registry.awaiting.is_empty() {
        registry.start_missing_monitors();
        registry.ready.send_replace(true);
    }
    tokio::spawn(registry.run(inbox));
    Handle {
        ready: ready_rx,
        events,
    }
}

fn dns_settings(config: &Config) -> DnsSettings {
    let discovery = &config.discovery;
    let defaults = Headless {
        service: crate::config::DEFAULT_HEADLESS_SERVICE.to_owned(),
        namespace: crate::config::DEFAULT_NAMESPACE.to_owned(),
        cluster_domain: crate::config::DEFAULT_CLUSTER_DOMAIN.to_owned(),
        port_name: "mysql".to_owned(),
        primary_pod: "mysql-0".to_owned(),
        port: crate::config::MYSQL_PORT,
    };
    let headless = discovery.headless.clone().unwrap_or(defaults);
    DnsSettings {
        headless_service: headless.service,
        namespace: headless.namespace,
        cluster_domain: headless.cluster_domain,
        port_name: headless.port_name,
        primary_pod: headless.primary_pod,
        default_port: headless.port,
        server: discovery.dns_server,
        interval: discovery.interval,
    }
}

/// The configured servers that are not found through the headless Service.
fn static_endpoints(config: &Config) -> Vec<(Endpoint, Role)> {
    let mut endpoints = Vec::new();
    if !config.discovery.primary_from_headless {
        endpoints.push((config.primary.clone(), Role::Primary));
    }
    endpoints.extend(config.replicas.iter().map(|r| (r.clone(), Role::Replica)));
    endpoints
}

/// Turns a source's updates into registry events.
fn forwarder(source: Source, events: mpsc::Sender<Event>) -> mpsc::Sender<Update> {
    let (tx, mut rx) = mpsc::channel::<Update>(16);
    tokio::spawn(async move {
        while let Some(update) = rx.recv().await {
            if events
                .send(Event::Discovered(source, update))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tx
}

/// The configured servers, their names resolved again every interval: a configured name
/// may point elsewhere later (a pod that was rescheduled).
async fn resolve_static(
    resolver: DnsDiscovery,
    endpoints: Vec<(Endpoint, Role)>,
    interval: Duration,
    updates: mpsc::Sender<Update>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut members = Vec::new();
        let mut failures = Vec::new();
        for (endpoint, role) in &endpoints {
            match resolve(&resolver, &endpoint.address).await {
                Ok(addresses) => {
                    members.extend(addresses.into_iter().take(1).map(|address| Member {
                        name: endpoint.name.clone(),
                        hostname: endpoint.name.clone(),
                        address,
                        role: *role,
                    }))
                }
                Err(e) => failures.push(format!("{}: {e}", endpoint.address)),
            }
        }
        let update = if failures.is_empty() {
            Update::Dns(members)
        } else {
            Update::DnsFailed(failures.join("; "))
        };
        if updates.send(update).await.is_err() {
            break;
        }
    }
}

async fn resolve(resolver: &DnsDiscovery, address: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = crate::config::split_host_port(address)
        .ok_or_else(|| format!("'{address}' is not host:port"))?;
    resolver
        .resolve_host(host, port)
        .await
        .map_err(|e| e.to_string())
}

/// One server the registry follows.
struct Tracked {
    backend: Arc<Backend>,
    /// Found through the headless Service (so Kubernetes readiness applies to it).
    from_headless: bool,
    hostname: String,
    monitor: Option<AbortHandle>,
    health: Option<Health>,
    /// Passed checks in a row.
    passes: u32,
    /// It failed a check and has not yet passed `rise` in a row since.
    recovering: bool,
    /// When a check last saw the replication IO thread running.
    io_last_running: Option<std::time::Instant>,
}

impl Tracked {
    fn new(backend: Arc<Backend>, from_headless: bool) -> Self {
        let hostname = backend.name().to_owned();
        Self {
            backend,
            from_headless,
            hostname,
            monitor: None,
            health: None,
            passes: 0,
            recovering: false,
            io_last_running: None,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(monitor) = self.monitor.take() {
            monitor.abort();
        }
    }
}

struct Registry {
    backends: Arc<Backends>,
    metrics: Arc<Metrics>,
    health: HealthChecks,
    primary_from_headless: bool,
    primary: Tracked,
    /// By name.
    replicas: BTreeMap<String, Tracked>,
    /// Each source's last good list.
    members: HashMap<Source, Vec<Member>>,
    /// Every endpoint of the headless Service by hostname, while the API is followed.
    kubernetes: Option<HashMap<String, EndpointReadiness>>,
    events: mpsc::Sender<Event>,
    /// Sources that have not answered yet.
    awaiting: Vec<Source>,
    ready: watch::Sender<bool>,
}

impl Registry {
    async fn run(mut self, mut inbox: mpsc::Receiver<Event>) {
        while let Some(event) = inbox.recv().await {
            match event {
                Event::Discovered(source, update) => self.discovered(source, update),
                Event::Checked(report) => self.checked(report),
                Event::Reconfigured(health) => self.reconfigure(health),
            }
            self.decide();
        }
    }

    fn discovered(&mut self, source: Source, update: Update) {
        self.apply(source, update);
        // Only once the answer is published: the proxy starts taking clients then.
        if let Some(at) = self.awaiting.iter().position(|s| *s == source) {
            self.awaiting.swap_remove(at);
            if self.awaiting.is_empty() {
                // Servers discovery did not replace (a name it could not resolve) are
                // checked at the address they have.
                self.start_missing_monitors();
                self.ready.send_replace(true);
            }
        }
    }

    fn apply(&mut self, source: Source, update: Update) {
        let failure = match &update {
            Update::DnsFailed(reason) | Update::KubernetesUnavailable(reason) => Some(reason),
            Update::Dns(_) | Update::Kubernetes(_) => None,
        };
        self.metrics
            .discovery_update(source.metric(), failure.is_some());
        self.backends
            .source_reported(source.metric().label(), failure.cloned());
        match update {
            Update::Dns(members) => {
                if self.members.get(&source) != Some(&members) {
                    self.members.insert(source, members);
                    self.reconcile();
                }
            }
            Update::DnsFailed(reason) => {
                // Logged by the source; the last good list stays.
                debug!(?source, %reason, "discovery failed; keeping the last servers");
            }
            Update::Kubernetes(endpoints) => {
                self.kubernetes = Some(
                    endpoints
                        .into_iter()
                        .map(|e| (e.hostname.clone(), e))
                        .collect(),
                );
            }
            Update::KubernetesUnavailable(reason) => {
                debug!(%reason, "Kubernetes API unavailable; keeping the last readiness");
            }
        }
    }

    /// Makes the followed servers match what the sources found, and publishes the result.
    fn reconcile(&mut self) {
        let mut primary = None;
        let mut replicas: BTreeMap<String, (Member, bool)> = BTreeMap::new();
        for (source, members) in &self.members {
            let from_headless = *source == Source::Headless;
            for member in members {
                match member.role {
                    Role::Primary if from_headless == self.primary_from_headless => {
                        primary = Some(member.clone());
                    }
                    Role::Primary => {}
                    Role::Replica => {
                        replicas.insert(member.name.clone(), (member.clone(), from_headless));
                    }
                }
            }
        }
        // A replica that is also the configured primary (the same pod reached two ways)
        // takes no reads as a replica.
        let primary_address = primary
            .as_ref()
            .map(|p| p.address.to_string())
            .unwrap_or_else(|| self.primary.backend.endpoint.address.clone());
        replicas.retain(|_, (m, _)| m.address.to_string() != primary_address);

        let mut changed = false;
        // The primary is never dropped: while discovery does not see it (its pod restarts),
        // the last known address is the best guess, and writes fail with its name.
        if let Some(member) = primary
            && member.address.to_string() != self.primary.backend.endpoint.address
        {
            let backend = self.new_backend(&member, false);
            info!(primary = %member.name, address = %member.address, "primary found");
            self.primary = Tracked::new(backend, self.primary_from_headless);
            self.primary.hostname = member.hostname.clone();
            self.start_primary_monitor();
            changed = true;
        }
        let before = self.replicas.len();
        self.replicas.retain(|name, tracked| {
            let keep = replicas
                .get(name)
                .is_some_and(|(m, _)| m.address.to_string() == tracked.backend.endpoint.address);
            if !keep {
                info!(replica = %name, "replica left the topology");
                tracked.backend.set_eligible(false);
            }
            keep
        });
        changed |= self.replicas.len() != before;
        for (name, (member, from_headless)) in replicas {
            if self.replicas.contains_key(&name) {
                continue;
            }
            let eligible = self.health.monitor.is_none();
            let backend = self.new_backend(&member, eligible);
            info!(replica = %name, address = %member.address, "replica found");
            let mut tracked = Tracked::new(backend, from_headless);
            tracked.hostname = member.hostname.clone();
            self.replicas.insert(name.clone(), tracked);
            self.start_monitor_for(&name);
            changed = true;
        }
        if changed {
            self.backends.publish(Topology {
                primary: self.primary.backend.clone(),
                replicas: self.replicas.values().map(|t| t.backend.clone()).collect(),
            });
        }
    }

    fn new_backend(&self, member: &Member, eligible: bool) -> Arc<Backend> {
        let endpoint = Endpoint {
            name: member.name.clone(),
            address: member.address.to_string(),
        };
        Arc::new(Backend::new(
            self.backends.new_id(),
            endpoint,
            member.role,
            eligible,
        ))
    }

    /// Starts the checks of every server that has none running.
    fn start_missing_monitors(&mut self) {
        if self.primary.monitor.is_none() {
            self.start_primary_monitor();
        }
        let names: Vec<String> = self
            .replicas
            .iter()
            .filter(|(_, tracked)| tracked.monitor.is_none())
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            self.start_monitor_for(&name);
        }
    }

    fn start_monitor_for(&mut self, name: &str) {
        let Some(settings) = self.monitor_settings() else {
            return;
        };
        let events = self.events.clone();
        if let Some(tracked) = self.replicas.get_mut(name) {
            tracked.monitor = Some(spawn_monitor(tracked.backend.clone(), settings, events));
        }
    }

    fn start_primary_monitor(&mut self) {
        let Some(settings) = self.monitor_settings() else {
            return;
        };
        let events = self.events.clone();
        self.primary.monitor = Some(spawn_monitor(
            self.primary.backend.clone(),
            settings,
            events,
        ));
    }

    fn reconfigure(&mut self, health: HealthChecks) {
        let restart = health.monitor != self.health.monitor
            || health.check_interval != self.health.check_interval
            || health.check_timeout != self.health.check_timeout;
        self.health = health;
        if restart {
            info!("health check settings changed; checks restart");
            self.stop_monitors();
            if self.awaiting.is_empty() {
                self.start_missing_monitors();
            }
        }
    }

    fn stop_monitors(&mut self) {
        let all = std::iter::once(&mut self.primary).chain(self.replicas.values_mut());
        for tracked in all {
            if let Some(monitor) = tracked.monitor.take() {
                monitor.abort();
            }
        }
    }

    fn monitor_settings(&self) -> Option<MonitorSettings> {
        self.health.monitor.as_ref().map(|user| MonitorSettings {
            user: user.clone(),
            tls: self.health.tls.clone(),
            interval: self.health.check_interval,
            timeout: self.health.check_timeout,
        })
    }

    fn checked(&mut self, report: Report) {
        let max_lag = self.health.max_replication_lag;
        let primary_down = self.primary_down();
        let tracked = if self.primary.backend.id == report.backend {
            &mut self.primary
        } else if let Some(t) = self
            .replicas
            .values_mut()
            .find(|t| t.backend.id == report.backend)
        {
            t
        } else {
            // A server that has just left; its monitor is being stopped.
            return;
        };
        let backend = tracked.backend.clone();
        let was_reachable = tracked.health.as_ref().is_none_or(Health::reachable);
        let health = report.health;
        match &health.failure {
            Some(reason) => {
                // Sessions waiting on it give up on reads that have not started.
                backend.mark_down();
                if was_reachable {
                    warn!(backend = backend.name(), %reason, "health check failed");
                }
            }
            None => {
                backend.connect_succeeded();
                if !was_reachable {
                    info!(backend = backend.name(), "health check passed again");
                }
            }
        }
        if backend.role == Role::Primary {
            let read_only = health.reachable() && health.read_only;
            if read_only != backend.read_only() {
                backend.set_read_only(read_only);
                if read_only {
                    error!(
                        primary = backend.name(),
                        "the primary is read-only (@@read_only = 1): writes are refused until \
                         it is writable; is it really the primary?"
                    );
                } else {
                    info!(primary = backend.name(), "the primary is writable");
                }
            }
        } else {
            if health.replication.as_ref().is_some_and(|r| r.io_running) {
                tracked.io_last_running = Some(std::time::Instant::now());
            }
            let io_grace = io_grace(tracked.io_last_running, max_lag, primary_down);
            if replica_problem(&health, max_lag, io_grace).is_none() {
                tracked.passes += 1;
            } else {
                tracked.passes = 0;
                tracked.recovering = true;
            }
        }
        record(&backend, &health);
        tracked.health = Some(health);
    }

    /// The monitor's last check of the primary failed.
    fn primary_down(&self) -> bool {
        self.primary.health.as_ref().is_some_and(|h| !h.reachable())
    }

    /// Decides, for every replica, whether it takes reads, and logs what changed.
    fn decide(&mut self) {
        let monitored = self.health.monitor.is_some();
        let primary_down = self.primary_down();
        let max_lag = self.health.max_replication_lag;
        for (name, tracked) in &mut self.replicas {
            let mut why_not = None;
            if tracked.from_headless
                && let Some(endpoints) = &self.kubernetes
            {
                why_not = kubernetes_problem(endpoints, tracked);
            }
            if why_not.is_none() && monitored {
                why_not = match &tracked.health {
                    None => Some("not checked yet".to_owned()),
                    Some(health) => replica_problem(
                        health,
                        max_lag,
                        io_grace(tracked.io_last_running, max_lag, primary_down),
                    ),
                };
            }
            if why_not.is_none() && tracked.recovering {
                if tracked.passes >= self.health.rise {
                    tracked.recovering = false;
                } else {
                    why_not = Some(format!(
                        "recovering: {} of {} checks passed",
                        tracked.passes, self.health.rise
                    ));
                }
            }
            let eligible = why_not.is_none();
            if eligible != tracked.backend.eligible() {
                tracked.backend.set_eligible(eligible);
                match &why_not {
                    None => info!(replica = %name, "replica takes reads"),
                    Some(reason) => warn!(replica = %name, %reason, "replica takes no reads"),
                }
            }
            tracked.backend.observe().why_not = why_not;
        }
    }
}

/// Copies what a check found to the backend, for `/status` and the metrics.
fn record(backend: &Backend, health: &Health) {
    let mut observed = backend.observe();
    observed.up = Some(health.reachable());
    observed.check_error = health.failure.clone();
    observed.checked_at = Some(std::time::Instant::now());
    if health.reachable() {
        observed.read_only = Some(health.read_only);
        let replication = health.replication.as_ref();
        observed.io_running = replication.map(|r| r.io_running);
        observed.sql_running = replication.map(|r| r.sql_running);
        observed.lag = replication.and_then(|r| r.lag);
        observed.replication_error = replication.and_then(|r| r.last_error.clone());
    }
}

fn spawn_monitor(
    backend: Arc<Backend>,
    settings: MonitorSettings,
    events: mpsc::Sender<Event>,
) -> AbortHandle {
    let (reports_tx, mut reports) = mpsc::channel(4);
    let checks = tokio::spawn(monitor::run(backend, settings, reports_tx));
    tokio::spawn(async move {
        while let Some(report) = reports.recv().await {
            if events.send(Event::Checked(report)).await.is_err() {
                break;
            }
        }
    });
    checks.abort_handle()
}

/// Whether a replica whose IO thread is not running (it is reconnecting to the primary) may
/// still take reads: while the primary is down, nothing fresher exists, and a replica that
/// lost the primary only recently is behind by at most the time since.
fn io_grace(
    io_last_running: Option<std::time::Instant>,
    max_lag: Duration,
    primary_down: bool,
) -> bool {
    primary_down || io_last_running.is_some_and(|at| at.elapsed() <= max_lag)
}

/// Why a replica's last check disqualifies it, if it does. With `io_grace`, a stopped IO
/// thread (and the unknown lag that comes with it) is forgiven while the SQL thread runs.
fn replica_problem(health: &Health, max_lag: Duration, io_grace: bool) -> Option<String> {
    if let Some(failure) = &health.failure {
        return Some(format!("unreachable: {failure}"));
    }
    let Some(replication) = &health.replication else {
        return Some("not replicating (no replication configured)".to_owned());
    };
    let error = replication
        .last_error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    if !replication.sql_running {
        return Some(format!("replication SQL thread not running{error}"));
    }
    if !replication.io_running {
        return (!io_grace).then(|| format!("replication IO thread not running{error}"));
    }
    match replication.lag {
        None => Some("replication lag unknown (NULL)".to_owned()),
        Some(lag) if lag > max_lag => Some(format!(
            "replication lag {}s is over the maximum {:?}",
            lag.as_secs(),
            max_lag
        )),
        Some(_) => None,
    }
}

/// Why the Kubernetes API keeps a replica from reads, if it does.
fn kubernetes_problem(
    endpoints: &HashMap<String, EndpointReadiness>,
    tracked: &Tracked,
) -> Option<String> {
    let ip = tracked
        .backend
        .endpoint
        .address
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip());
    let endpoint = endpoints.get(&tracked.hostname).or_else(|| {
        endpoints
            .values()
            .find(|e| ip.is_some_and(|ip| e.addresses.contains(&ip)))
    });
    // `serving`, not `ready`: with publishNotReadyAddresses (usual for a StatefulSet's
    // headless Service) every endpoint is ready, and only `serving` follows the probe.
    match endpoint {
        None => Some("not an endpoint of the Service (Kubernetes)".to_owned()),
        Some(e) if e.terminating => Some("terminating (Kubernetes)".to_owned()),
        Some(e) if !e.serving => Some("not ready (Kubernetes readiness probe)".to_owned()),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::monitor::Replication;

    fn replicating(lag: Option<u64>) -> Health {
        Health {
            failure: None,
            read_only: true,
            replication: Some(Replication {
                io_running: true,
                sql_running: true,
                lag: lag.map(Duration::from_secs),
                last_error: None,
            }),
        }
    }

    #[test]
    fn replica_checks() {
        let max = Duration::from_secs(10);
        let replica_problem = |h: &Health, max| replica_problem(h, max, false);
        assert_eq!(replica_problem(&replicating(Some(0)), max), None);
        assert_eq!(replica_problem(&replicating(Some(10)), max), None);
        assert!(
            replica_problem(&replicating(Some(11)), max)
                .unwrap()
                .contains("lag 11s")
        );
        assert!(
            replica_problem(&replicating(None), max)
                .unwrap()
                .contains("NULL")
        );
        let mut stopped = replicating(Some(0));
        if let Some(r) = stopped.replication.as_mut() {
            r.sql_running = false;
            r.last_error = Some("Duplicate entry".into());
        }
        let problem = replica_problem(&stopped, max).unwrap();
        assert!(problem.contains("SQL thread") && problem.contains("Duplicate entry"));
        let mut standalone = replicating(Some(0));
        standalone.replication = None;
        assert!(
            replica_problem(&standalone, max)
                .unwrap()
                .contains("not replicating")
        );
        let down = Health {
            failure: Some("no answer".into()),
            read_only: false,
            replication: None,
        };
        assert!(replica_problem(&down, max).unwrap().contains("unreachable"));
    }

    #[test]
    fn a_replica_reconnecting_to_the_primary_is_forgiven_for_a_while() {
        let max = Duration::from_secs(10);
        let mut reconnecting = replicating(None);
        if let Some(r) = reconnecting.replication.as_mut() {
            r.io_running = false;
            r.last_error = Some("error reconnecting to master".into());
        }
        assert!(
            replica_problem(&reconnecting, max, false)
                .unwrap()
                .contains("IO thread")
        );
        assert_eq!(replica_problem(&reconnecting, max, true), None);
        let recently = Some(std::time::Instant::now());
        assert!(io_grace(recently, max, false));
        assert!(!io_grace(None, max, false));
        assert!(
            io_grace(None, max, true),
            "the primary is down: nothing fresher exists"
        );
        let mut stopped = reconnecting.clone();
        if let Some(r) = stopped.replication.as_mut() {
            r.sql_running = false;
        }
        assert!(replica_problem(&stopped, max, true).is_some());
    }
}
