//! The listener: accepts clients, caps their number, and gives each a session task.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::backend::BackendConn;
use crate::config::Config;
use crate::metrics::{Metrics, Rejection};
use crate::protocol::codes::SqlError;
use crate::protocol::handshake::ServerIdentity;
use crate::protocol::packet::encode_packet;
use crate::topology::{Backends, registry};

/// How long start-up waits for discovery's first answer before taking clients anyway.
const FIRST_DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// State every session reads.
pub struct Shared {
    pub config: Config,
    /// The backends and the balancer's state.
    pub backends: Arc<Backends>,
    pub metrics: Arc<Metrics>,
    /// Shutting down: no new clients; `/readyz` says so.
    pub draining: AtomicBool,
    /// What the greeting says the server is: learned from the backends' own greetings.
    identity: RwLock<Option<ServerIdentity>>,
    next_connection_id: AtomicU32,
}

impl Shared {
    pub fn new(config: Config) -> Self {
        Self {
            backends: Arc::new(Backends::from_config(&config)),
            metrics: Arc::new(Metrics::new()),
            draining: AtomicBool::new(false),
            config,
            identity: RwLock::new(None),
            next_connection_id: AtomicU32::new(1),
        }
    }

    /// The identity to greet a client with. Until a backend has been seen, the primary is
    /// asked first, so that no client is told a made-up version while the primary is up.
    pub async fn identity(&self) -> ServerIdentity {
        if let Some(known) = self.identity.read().expect("not poisoned").clone() {
            return known;
        }
        let primary = self.backends.load().primary.endpoint.clone();
        let primary = &primary;
        match BackendConn::probe(primary, self.config.connect_timeout).await {
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
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Proxy {
            listener,
            admin,
            shared,
        } = self;
        // Up before discovery's first round: the kubelet asks /healthz from the start.
        let _admin = admin
            .map(|admin| AbortOnDrop(tokio::spawn(crate::admin::serve(admin, shared.clone()))));
        let mut discovered = registry::start(
            &shared.config,
            shared.backends.clone(),
            shared.metrics.clone(),
        );
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
        let permits = Arc::new(Semaphore::new(shared.config.max_connections));
        let mut backoff = Duration::from_millis(5);
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => {
                    backoff = Duration::from_millis(5);
                    pair
                }
                // Out of file descriptors and the like: wait and try again rather than stop.
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                warn!(%peer, "too many connections; client refused");
                shared.metrics.rejected(Rejection::MaxConnections);
                tokio::spawn(refuse(stream, SqlError::too_many_connections()));
                continue;
            };
            shared.metrics.client_connections_accepted.inc();
            let id = shared.connection_id();
            let shared = shared.clone();
            tokio::spawn(async move {
                crate::session::run(stream, peer, id, shared).await;
                drop(permit);
            });
        }
        info!("stopped accepting clients");
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
    encode_packet(&mut out, 0, &err.to_payload());
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Reads the primary's greeting at start-up, so that the first clients already see the real
/// server version (and an unreachable primary is reported at once); later logins keep it
/// current.
async fn learn_primary_identity(shared: Arc<Shared>) {
    shared.identity().await;
}
