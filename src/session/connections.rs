//! The session's backend connections (D3): one to the primary and one to each replica the
//! session has read from, each opened on first use. Routing asks for a backend by id and
//! gets a connection that is logged in as the client and carries the session's state; a
//! pool shared by sessions could stand behind the same calls.
//!
//! The primary's connection may be missing: the session logged in while the primary was
//! down (through a replica), or lost it between statements. It is opened again when a
//! statement needs it.

use std::sync::Arc;

use crate::backend::BackendConn;
use crate::topology::Backend;

pub(super) struct ReplicaConn {
    pub backend: Arc<Backend>,
    pub conn: BackendConn,
    /// How many entries of the session history this connection has replayed.
    pub synced: usize,
}

pub(super) struct Connections {
    pub primary_backend: Arc<Backend>,
    pub primary: Option<BackendConn>,
    /// `primary_backend.down_count()` when the primary connection was last known open.
    pub primary_down_seen: u64,
    /// When the primary connection was last handed out.
    pub primary_used: std::time::Instant,
    pub replicas: Vec<ReplicaConn>,
}

impl Connections {
    pub fn new(primary_backend: Arc<Backend>) -> Self {
        Self {
            primary_down_seen: primary_backend.down_count(),
            primary_used: std::time::Instant::now(),
            primary_backend,
            primary: None,
            replicas: Vec::new(),
        }
    }

    /// Takes the connection a login opened, to the primary or a replica.
    pub fn adopt(&mut self, opened: super::login::Opened) {
        match opened.backend.role {
            crate::topology::Role::Primary => self.set_primary(opened.backend, opened.conn),
            crate::topology::Role::Replica => self.add_replica(opened.backend, opened.conn),
        }
    }

    /// Takes a fresh connection to the primary.
    pub fn set_primary(&mut self, backend: Arc<Backend>, mut conn: BackendConn) {
        conn.count_as(backend.open_connection());
        self.primary_down_seen = backend.down_count();
        self.primary_backend = backend;
        self.primary = Some(conn);
    }

    /// Takes a fresh replica connection, which has replayed nothing yet.
    pub fn add_replica(&mut self, backend: Arc<Backend>, mut conn: BackendConn) {
        conn.abandon_when(backend.down_signal());
        conn.count_as(backend.open_connection());
        self.replicas.push(ReplicaConn {
            backend,
            conn,
            synced: 0,
        });
    }

    pub fn primary_id(&self) -> u32 {
        self.primary_backend.id
    }

    pub fn is_open(&self, backend: u32) -> bool {
        if backend == self.primary_id() {
            return self.primary.is_some();
        }
        self.replica(backend).is_some()
    }

    pub fn replica(&self, backend: u32) -> Option<&ReplicaConn> {
        self.replicas.iter().find(|r| r.backend.id == backend)
    }

    pub fn replica_mut(&mut self, backend: u32) -> Option<&mut ReplicaConn> {
        self.replicas.iter_mut().find(|r| r.backend.id == backend)
    }

    /// The backend and connection for an id the session has open.
    pub fn get_mut(&mut self, backend: u32) -> Option<(&Arc<Backend>, &mut BackendConn)> {
        if backend == self.primary_backend.id {
            return self.primary.as_mut().map(|c| (&self.primary_backend, c));
        }
        self.replica_mut(backend).map(|r| (&r.backend, &mut r.conn))
    }

    /// Forgets a replica connection (it failed, or it cannot mirror the session).
    pub fn drop_replica(&mut self, backend: u32) {
        self.replicas.retain(|r| r.backend.id != backend);
    }

    /// Closes every replica connection politely (the session was reset).
    pub async fn close_replicas(&mut self) {
        for replica in self.replicas.drain(..) {
            replica.conn.quit().await;
        }
    }

    pub async fn quit(mut self) {
        self.close_replicas().await;
        if let Some(primary) = self.primary {
            primary.quit().await;
        }
    }
}
