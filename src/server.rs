//! The listener: accepts clients, caps their number, and gives each a session task.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use arc_swap::ArcSwap;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::backend::BackendConn;
use crate::config::Config;
use crate::limits::Limits;
use crate::metrics::{Metrics, Rejection};
use crate::protocol::codes::SqlError;
use crate::protocol::handshake::ServerIdentity;
use crate::protocol::packet::encode_packet;
use crate::signal::{Signal, Subscription};
use crate::topology::{Backends, registry};

/// How long start-up waits for discovery's first answer before taking clients anyway.
const FIRST_DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// State every session reads.
pub struct Shared {
    /// Replaced whole when the configuration is reloaded; each use loads the current one.
    config: ArcSwap<Config>,
    /// The backends and the balancer's state.
    pub backends: Arc<Backends>,
    pub metrics: Arc<Metrics>,
    /// Sessions per user and failed logins per address.
    pub limits: Arc<Limits>,
    /// Shutting down: no new clients; `/readyz` says so; sessions finish their statements
    /// and transactions, then close.
    pub draining: AtomicBool,
    /// Fires when `draining` is set; idle sessions wait on it.
    shutdown: Signal,
    /// Takes reloaded health settings to the registry, once it runs.
    registry: OnceLock<registry::Handle>,
    /// What the greeting says the server is: learned from the backends' own greetings.
    identity: RwLock<Option<ServerIdentity>>,
    next_connection_id: AtomicU32,
}

impl Shared {
    pub fn new(config: Config) -> Self {
        Self {
            backends: Arc::new(Backends::from_config(&config)),
            metrics: Arc::new(Metrics::new()),
            limits: Arc::new(Limits::default()),
            draining: AtomicBool::new(false),
            shutdown: Signal::new(),
            registry: OnceLock::new(),
            config: ArcSwap::from_pointee(config),
            identity: RwLock::new(None),
            next_connection_id: AtomicU32::new(1),
        }
    }

    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Wakes when the proxy starts shutting down (`draining`): sessions then end as soon as
    /// they hold no transaction.
    pub fn shutdown_signal(&self) -> Subscription {
        self.shutdown.subscribe()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The identity to greet a client with. Until a backend has been seen, the primary is
    /// asked first, so that no client is told a made-up version while the primary is up.
    pub async fn identity(&self) -> ServerIdentity {
        if let Some(known) = self.identity.read().expect("not poisoned").clone() {
            return known;
        }
        let primary = self.backends.load().primary.endpoint.clone();
        let primary = &primary;
        match BackendConn::probe(primary, self.config().connect_timeout).await {
            Ok(identity) => {
                self.learn_identity(&identity);
                identity
            }
            Err(e) => {
                warn!(primary = %primary.name, error = %e, "primary not reachable");
                ServerIdentity::fallback()
            }
        }
    }

    pub fn learn_identity(&self, identity: &ServerIdentity) {
        let known = self.identity.read().expect("not poisoned");
        if known.as_ref() == Some(identity) {
            return;
        }
        drop(known);
        info!(
            version = %String::from_utf8_lossy(&identity.version),
            "backend server identity learned"
        );
        *self.identity.write().expect("not poisoned") = Some(identity.clone());
    }

    fn connection_id(&self) -> u32 {
        // 0 is not a valid connection id for clients; skip it when the counter wraps.
        loop {
            let id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

/// A bound proxy, ready to serve.
pub struct Proxy {
    listener: TcpListener,
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds the client port and, when configured, the admin port: a port that is taken
    /// fails start-up rather than leaving the proxy without probes or metrics.
    pub async fn bind(config: Config) -> std::io::Result<Self> {
        let listener = TcpListener::bind(&config.listen).await?;
        let admin = match &config.admin_listen {
            Some(address) => Some(TcpListener::bind(address).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("admin.listen {address}: {e}"))
            })?),
            None => None,
        };
        Ok(Self {
            listener,
            admin,
            shared: Arc::new(Shared::new(config)),
        })
    }

    /// Applies reloaded configurations to this proxy while it runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
        }
    }

    /// Where the admin endpoints listen, when they do.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The backends as the proxy sees them (for embedding and tests).
    pub fn backends(&self) -> Arc<Backends> {
        self.shared.backends.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts clients until `shutdown` completes.
    /// Accepts clients until `shutdown` completes, then drains: new clients are refused
    /// with ER_SERVER_SHUTDOWN, sessions end as soon as they hold no transaction (idle ones
    /// at once), and whatever still runs at `proxy.drain_timeout` is cut.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Proxy {
            listener,
            admin,
            shared,
        } = self;
        // Up before discovery's first round: the kubelet asks /healthz from the start.
        let _admin = admin
            .map(|admin| AbortOnDrop(tokio::spawn(crate::admin::serve(admin, shared.clone()))));
        let config = shared.config();
        let registry = registry::start(&config, shared.backends.clone(), shared.metrics.clone());
        let mut discovered = registry.ready.clone();
        let _ = shared.registry.set(registry);
        // Clients that arrive before the servers are known would all land on the primary
        // (or fail, if only discovery can name it); a first round takes milliseconds.
        let first_round = discovered.wait_for(|done| *done);
        if tokio::time::timeout(FIRST_DISCOVERY_WAIT, first_round)
            .await
            .is_err()
        {
            warn!("no answer from discovery yet; accepting clients with what is known");
        }
        info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
              primary = %shared.backends.load().primary.endpoint.address, "rwsplit accepting clients");
        tokio::spawn(learn_primary_identity(shared.clone()));
        let max_connections = config.max_connections;
        drop(config);
        let permits = Arc::new(Semaphore::new(max_connections));
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = accept(&listener) => accepted,
                () = &mut shutdown => break,
            };
            while sessions.try_join_next().is_some() {}
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                warn!(%peer, "too many connections; client refused");
                shared.metrics.rejected(Rejection::MaxConnections);
                tokio::spawn(refuse(stream, SqlError::too_many_connections()));
                continue;
            };
            shared.metrics.client_connections_accepted.inc();
            let id = shared.connection_id();
            let shared = shared.clone();
            sessions.spawn(async move {
                crate::session::run(stream, peer, id, shared).await;
                drop(permit);
            });
        }
        drain(&shared, &listener, sessions).await;
    }
}

/// The next connection. Failures (out of file descriptors and the like) are waited out
/// with a growing pause rather than ending the listener. Cancel-safe: nothing is lost when
/// dropped during the pause.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The shutdown after accepting stopped: `/readyz` turns unready, sessions are told, and
/// clients that still arrive (the Service may not have noticed yet) get an error that says
/// why. Returns when every session has ended or the deadline cut the rest.
async fn drain(shared: &Shared, listener: &TcpListener, mut sessions: JoinSet<()>) {
    shared.draining.store(true, Ordering::Release);
    shared.shutdown.fire();
    while sessions.try_join_next().is_some() {}
    let deadline = shared.config().drain_timeout;
    info!(
        sessions = sessions.len(),
        deadline = ?deadline,
        "shutting down: new clients are refused; sessions end when their transactions do"
    );
    let cut_off = tokio::time::sleep(deadline);
    tokio::pin!(cut_off);
    loop {
        tokio::select! {
            ended = sessions.join_next() => {
                if ended.is_none() {
                    info!("every session has ended");
                    return;
                }
            }
            (stream, peer) = accept(listener) => {
                debug!(%peer, "client refused: shutting down");
                shared.metrics.rejected(Rejection::ShuttingDown);
                tokio::spawn(refuse(stream, SqlError::server_shutdown()));
            }
            () = &mut cut_off => {
                warn!(
                    sessions = sessions.len(),
                    "drain deadline passed; closing the sessions still open"
                );
                sessions.shutdown().await;
                return;
            }
        }
    }
}

/// Takes a new configuration into a running proxy (SIGHUP).
pub struct Reloader {
    shared: Arc<Shared>,
}

impl Reloader {
    /// Users, routing options, limits checked per session and the health checks' settings
    /// take effect at once: sessions load the configuration per command or login, the
    /// registry re-decides eligibility. What is bound or started once (the listeners, the
    /// connection limit, the servers and their discovery, logging) keeps its running value
    /// until a restart; the names of such settings that changed are returned.
    pub async fn apply(&self, new: Config) -> Vec<&'static str> {
        let old = self.shared.config();
        let mut kept = Vec::new();
        let mut merged = new;
        macro_rules! keep {
            ($($field:ident).+, $name:literal) => {
                if merged.$($field).+ != old.$($field).+ {
                    kept.push($name);
                    merged.$($field).+ = old.$($field).+.clone();
                }
            };
        }
        keep!(listen, "proxy.listen");
        keep!(admin_listen, "admin.listen");
        keep!(max_connections, "proxy.max_connections");
        keep!(primary, "primary");
        keep!(replicas, "replicas");
        keep!(discovery, "discovery");
        keep!(log, "log");
        let health_changed = merged.health != old.health;
        let health = merged.health.clone();
        drop(old);
        self.shared.config.store(Arc::new(merged));
        if health_changed && let Some(registry) = self.shared.registry.get() {
            registry.reconfigure(health).await;
        }
        kept
    }
}

/// Stops a background task when its owner goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers a client with an error in place of the greeting, as a server does when it is full.
async fn refuse(mut stream: TcpStream, err: SqlError) {
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::new();
    encode_packet(&mut out, 0, &err.to_pre_handshake_payload());
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Reads the primary's greeting at start-up, so that the first clients already see the real
/// server version (and an unreachable primary is reported at once); later logins keep it
/// current.
async fn learn_primary_identity(shared: Arc<Shared>) {
    shared.identity().await;
}
