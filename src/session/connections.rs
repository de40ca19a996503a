//! The session's backend connections (D3): one to the primary, opened at login, and one to
//! each replica the session has read from, opened on first use. Routing asks for a backend
//! by id and gets a connection that is logged in as the client and carries the session's
//! state; a pool shared by sessions could stand behind the same calls.

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
    pub primary: BackendConn,
    pub replicas: Vec<ReplicaConn>,
}

impl Connections {
    pub fn new(primary_backend: Arc<Backend>, primary: BackendConn) -> Self {
        Self {
            primary_backend,
            primary,
            replicas: Vec::new(),
        }
    }

    pub fn primary_id(&self) -> u32 {
        self.primary_backend.id
    }

    pub fn is_open(&self, backend: u32) -> bool {
        backend == self.primary_id() || self.replica(backend).is_some()
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
            return Some((&self.primary_backend, &mut self.primary));
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
        self.primary.quit().await;
    }
}
