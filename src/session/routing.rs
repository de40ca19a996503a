//! Running a command where the router sends it: choosing the replica, opening its
//! connection and replaying the session history on it, relaying the answer, and what
//! happens when a backend fails (D7): a read that failed before any byte reached the client
//! (the replica refused, reset, or was found hung by the health checks) is retried on another
//! replica, then the primary; after that, the client gets an error and the session goes on
//! without that replica. Writes are never retried. A primary that fails during a statement
//! ends the session, as it would end a direct connection; a primary connection found closed
//! between statements is replaced, unless the session held something only it had.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::connections::Connections;
use super::state::{SessionEffect, query_effect};
use super::{Session, SessionError};
use crate::backend::{BackendError, RelayError, RelayFailure, RelayOutcome};
use crate::classify::{Kind, Statement, classify};
use crate::metrics::CommandKind;
use crate::protocol::codes::SqlError;
use crate::protocol::handshake::ok_status_flags;
use crate::protocol::packet::Packet;
use crate::protocol::response::ResponseKind;
use crate::router::{self, Route};
use crate::topology::Backend;
use crate::topology::ErrorKind;

/// Login refusals that concern the user, not the server: ER_DBACCESS_DENIED_ERROR,
/// ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR, ER_ACCOUNT_HAS_BEEN_LOCKED.
const ACCESS_DENIED: [u16; 4] = [1044, 1045, 1698, 3118];
const ER_BAD_DB_ERROR: u16 = 1049;

/// A primary connection idle this long is checked before use: the server may have closed
/// it (restarted, or `wait_timeout`) without the health checks noticing yet.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// How running a command on a backend went.
pub(super) enum Ran {
    /// The response was relayed.
    Done(RelayOutcome),
    /// A replica failed before any byte reached the client; its connection is closed and
    /// the command can run elsewhere.
    Retry,
    /// The client has its answer (an error) already.
    Answered,
}

/// A command about to run: the packet and how its answer ends.
pub(super) struct Command<'a> {
    pub payload: &'a [u8],
    pub kind: ResponseKind,
    /// Sequence id of the command's last frame.
    pub seq: u8,
}

impl<'a> Command<'a> {
    pub fn new(packet: &'a Packet, kind: ResponseKind) -> Self {
        Self {
            payload: &packet.payload,
            kind,
            seq: packet.last_seq,
        }
    }

    pub fn reply_seq(&self) -> u8 {
        self.seq.wrapping_add(1)
    }
}

impl Session {
    /// COM_QUERY: classify, route, run, and learn what it did to the session.
    pub(super) async fn query(
        &mut self,
        conns: &mut Connections,
        packet: Packet,
    ) -> Result<(), SessionError> {
        let statement = classify(&packet.payload[1..]);
        let (route, reason) = router::route(&statement, &self.state.view());
        self.command.kind = CommandKind::of(&statement);
        self.command.for_replica = route == Route::Replica;
        let command = Command::new(&packet, ResponseKind::Query);
        let Some(mut target) = self.resolve(conns, route, command.reply_seq()).await? else {
            return Ok(());
        };
        debug!(?reason, backend = target, "statement routed");
        if target == conns.primary_id()
            && conns.primary_backend.read_only()
            && matches!(statement.kind, Kind::Write | Kind::Ddl | Kind::LoadData)
        {
            let err = SqlError::primary_read_only(conns.primary_backend.name());
            return self.send_error(command.reply_seq(), &err).await;
        }
        let mut failed = Vec::new();
        loop {
            match self.run_on(conns, target, &command, None).await? {
                Ran::Done(outcome) => {
                    let effect = query_effect(&statement, &packet.payload[1..]);
                    self.learn(conns, target, Some(&statement), effect, &command, outcome);
                    return Ok(());
                }
                Ran::Retry => {
                    failed.push(target);
                    match self
                        .retry_target(conns, &mut failed, command.reply_seq())
                        .await?
                    {
                        Some(next) => target = next,
                        None => return Ok(()),
                    }
                }
                Ran::Answered => return Ok(()),
            }
        }
    }

    /// Where a read goes after the replicas in `failed` failed it before answering: another
    /// replica, else the primary. `None` when the client has been told there is none.
    pub(super) async fn retry_target(
        &mut self,
        conns: &mut Connections,
        failed: &mut Vec<u32>,
        reply_seq: u8,
    ) -> Result<Option<u32>, SessionError> {
        if let Some(replica) = self.ready_replica_excluding(conns, failed).await {
            return Ok(Some(replica));
        }
        self.primary(conns, reply_seq).await
    }

    /// Commands that belong to the primary alone; `effect` says whether the session
    /// remembers them (COM_INIT_DB).
    pub(super) async fn on_primary(
        &mut self,
        conns: &mut Connections,
        packet: Packet,
        effect: SessionEffect,
    ) -> Result<Option<RelayOutcome>, SessionError> {
        let kind = match packet.payload[0] {
            crate::protocol::codes::COM_FIELD_LIST => ResponseKind::FieldList,
            _ => ResponseKind::Single,
        };
        let command = Command::new(&packet, kind);
        let Some(primary) = self.primary(conns, command.reply_seq()).await? else {
            return Ok(None);
        };
        match self.run_on(conns, primary, &command, None).await? {
            Ran::Done(outcome) => {
                self.learn(conns, primary, None, effect, &command, outcome);
                Ok(Some(outcome))
            }
            Ran::Retry | Ran::Answered => Ok(None),
        }
    }

    /// Takes in what a command that ran on `target` tells about the session.
    pub(super) fn learn(
        &mut self,
        conns: &Connections,
        target: u32,
        statement: Option<&Statement>,
        effect: SessionEffect,
        command: &Command<'_>,
        outcome: RelayOutcome,
    ) {
        self.state.previous = Some(target);
        if target != conns.primary_id() {
            return;
        }
        if let Some(status) = outcome.status_flags {
            self.state.primary_status = status;
        }
        match effect {
            SessionEffect::Pin(_) => self.state.apply(effect, command.payload, command.kind),
            _ if outcome.error => {}
            _ => {
                if let Some(statement) = statement {
                    self.state.ran_on_primary(statement);
                }
                self.state.apply(effect, command.payload, command.kind);
            }
        }
    }

    /// The backend a route leads to, with its connection open and up to date. `None` when
    /// no backend may take it; the client has been told.
    pub(super) async fn resolve(
        &mut self,
        conns: &mut Connections,
        route: Route,
        reply_seq: u8,
    ) -> Result<Option<u32>, SessionError> {
        match route {
            Route::Primary => self.primary(conns, reply_seq).await,
            Route::Previous => match self.state.previous.filter(|&id| conns.is_open(id)) {
                Some(previous) => Ok(Some(previous)),
                None => self.primary(conns, reply_seq).await,
            },
            Route::Replica => {
                if let Some(replica) = self.ready_replica_excluding(conns, &mut Vec::new()).await {
                    return Ok(Some(replica));
                }
                if self.shared.config().routing.fallback_to_primary {
                    self.shared.backends.count_fallback();
                    debug!("no replica for a read; it goes to the primary");
                    self.primary(conns, reply_seq).await
                } else {
                    self.send_error(reply_seq, &SqlError::no_replica()).await?;
                    Ok(None)
                }
            }
        }
    }

    /// An eligible replica, other than those in `failed`, with the session's connection to
    /// it open and up to date. Replicas that cannot serve the session now are added to
    /// `failed`.
    async fn ready_replica_excluding(
        &mut self,
        conns: &mut Connections,
        failed: &mut Vec<u32>,
    ) -> Option<u32> {
        while let Some(backend) = self.shared.backends.pick_replica(failed) {
            if self.ready_replica(conns, &backend).await {
                return Some(backend.id);
            }
            failed.push(backend.id);
        }
        None
    }

    /// The primary, with the session's connection to it open. A connection the health
    /// checks may have seen die (the primary was found down since it was last used) is
    /// checked first; a lost one is replaced, with the session history replayed, unless the
    /// session held something only that connection had. `None` when the primary cannot be
    /// reached; the client has been told, by name.
    pub(super) async fn primary(
        &mut self,
        conns: &mut Connections,
        reply_seq: u8,
    ) -> Result<Option<u32>, SessionError> {
        match self.open_primary(conns, reply_seq).await? {
            Ok(id) => Ok(Some(id)),
            Err(err) => {
                self.send_error(reply_seq, &err).await?;
                Ok(None)
            }
        }
    }

    /// `primary` for commands that get no answer: the error is returned, not sent.
    pub(super) async fn open_primary(
        &mut self,
        conns: &mut Connections,
        reply_seq: u8,
    ) -> Result<Result<u32, SqlError>, SessionError> {
        let current = self.shared.backends.load().primary.clone();
        let now = Instant::now();
        let idle = now.duration_since(std::mem::replace(&mut conns.primary_used, now));
        if let Some(conn) = &mut conns.primary {
            let same = conns.primary_backend.id == current.id;
            if same && conns.primary_down_seen == current.down_count() && idle < IDLE_CHECK_AFTER {
                return Ok(Ok(current.id));
            }
            if conn.is_alive()
                && (same || conns.primary_backend.down_count() == conns.primary_down_seen)
            {
                conns.primary_down_seen = conns.primary_backend.down_count();
                return Ok(Ok(conns.primary_id()));
            }
            let name = conns.primary_backend.name().to_owned();
            warn!(primary = %name, "the session's primary connection was lost");
            conns.primary = None;
            self.statements.forget_backend(conns.primary_id());
            if let Some(held) = self.state.primary_only_state() {
                let err = SqlError::primary_lost(&name, held);
                let _ = self.client_out.send(reply_seq, &err.to_payload()).await;
                return Err(SessionError::PrimaryLost { name, held });
            }
        }
        let Some(login) = self.login.clone() else {
            return Ok(Err(SqlError::internal("not logged in".to_owned())));
        };
        let connected = match self.connect_to(&current, &login).await {
            Ok(connected) => connected,
            Err(e) => {
                debug!(primary = current.name(), error = %e, "primary connection failed");
                return Ok(Err(match e {
                    BackendError::Refused(err) => err,
                    other => SqlError::primary_unavailable(
                        current.name(),
                        &current.endpoint.address,
                        &other.to_string(),
                    ),
                }));
            }
        };
        let mut conn = connected.conn;
        for entry in &self.state.history {
            match conn.run_internal(&entry.payload, entry.kind).await {
                Ok(collected) if !collected.outcome.error => {}
                outcome => {
                    let reason = match outcome {
                        Ok(collected) => SqlError::from_payload(collected.first_payload())
                            .map(|e| e.message)
                            .unwrap_or_default(),
                        Err(failure) => failure.to_string(),
                    };
                    return Ok(Err(SqlError::primary_unavailable(
                        current.name(),
                        &current.endpoint.address,
                        &format!("the session could not be set up again: {reason}"),
                    )));
                }
            }
        }
        if let Some(status) = ok_status_flags(&connected.ok_payload) {
            self.state.primary_status = status;
        }
        info!(primary = current.name(), "connected to the primary");
        self.statements.forget_backend(current.id);
        conns.set_primary(current.clone(), conn);
        Ok(Ok(current.id))
    }

    /// Makes sure the session has a connection to `backend` that has replayed the whole
    /// session history. `false` when the replica cannot serve this session now.
    async fn ready_replica(&mut self, conns: &mut Connections, backend: &Arc<Backend>) -> bool {
        if self.state.pinned {
            return false;
        }
        if conns.replica(backend.id).is_none() {
            let Some(login) = self.login.as_ref() else {
                return false;
            };
            // Counted as busy while connecting: a replica that accepts connections but does
            // not answer must not look idle to the balancer.
            let connecting = backend.start_request();
            // A replica found hung while this waits for its greeting is given up on.
            let mut down = backend.down_signal();
            let connected = tokio::select! {
                connected = self.connect_to(backend, login) => connected,
                () = down.changed() => Err(BackendError::Timeout(Duration::ZERO)),
            };
            drop(connecting);
            match connected {
                Ok(connected) => conns.add_replica(backend.clone(), connected.conn),
                // The server will not take this user: this session reads from the primary.
                Err(BackendError::Refused(err)) if ACCESS_DENIED.contains(&err.code) => {
                    warn!(backend = backend.name(), error = %err, "replica refused the login");
                    self.state.apply(
                        SessionEffect::Pin("a replica refused the login"),
                        b"",
                        ResponseKind::Single,
                    );
                    return false;
                }
                // The database is not there yet (replication is behind): this read goes
                // elsewhere, the next one tries again.
                Err(BackendError::Refused(err)) if err.code == ER_BAD_DB_ERROR => {
                    debug!(backend = backend.name(), error = %err, "replica lacks the database");
                    return false;
                }
                // Too many connections, host blocked, down: `connect_to` left the replica out
                // for a while.
                Err(e) => {
                    debug!(backend = backend.name(), error = %e, "replica connection failed");
                    return false;
                }
            }
        }
        self.replay_history(conns, backend).await
    }

    /// Sends a replica connection the session commands it has not seen yet.
    async fn replay_history(&mut self, conns: &mut Connections, backend: &Arc<Backend>) -> bool {
        let replica = conns.replica_mut(backend.id).expect("just opened");
        while let Some(entry) = self.state.history.get(replica.synced) {
            match replica.conn.run_internal(&entry.payload, entry.kind).await {
                Ok(collected) if !collected.outcome.error => replica.synced += 1,
                Ok(collected) => {
                    let error = SqlError::from_payload(collected.first_payload());
                    warn!(
                        backend = backend.name(),
                        error = ?error.map(|e| e.message),
                        "replica rejected a session command"
                    );
                    self.state.apply(
                        SessionEffect::Pin("a replica cannot set up this session"),
                        b"",
                        ResponseKind::Single,
                    );
                    self.drop_replica(conns, backend.id);
                    return false;
                }
                Err(failure) => {
                    warn!(backend = backend.name(), error = %failure, "replica connection lost");
                    self.drop_replica(conns, backend.id);
                    return false;
                }
            }
        }
        true
    }

    pub(super) fn drop_replica(&mut self, conns: &mut Connections, backend: u32) {
        conns.drop_replica(backend);
        self.statements.forget_backend(backend);
    }

    /// Sends a command to a backend the session has open and relays the answer.
    /// `client_statement_id` is the id a PREPARE_OK is rewritten to.
    pub(super) async fn run_on(
        &mut self,
        conns: &mut Connections,
        target: u32,
        command: &Command<'_>,
        client_statement_id: Option<u32>,
    ) -> Result<Ran, SessionError> {
        let is_primary = target == conns.primary_id();
        let (backend, conn) = conns.get_mut(target).expect("routed to an open connection");
        let _in_flight = backend.start_request();
        backend.count_statement();
        // Owned, so that the session's connections can be changed below.
        let backend = backend.clone();
        self.command.ran_on = Some(target);
        let metrics = &self.shared.metrics;
        metrics
            .bytes_to_backends
            .inc_by(command.payload.len() as u64);
        let result = match conn.send_command(command.payload).await {
            Ok(_) => {
                conn.relay_response(
                    command.kind,
                    command.seq,
                    &mut self.client_in,
                    &mut self.client_out,
                    client_statement_id,
                )
                .await
            }
            Err(e) => Err(RelayFailure {
                error: RelayError::Backend(e),
                error_seq: Some(command.reply_seq()),
                bytes: 0,
            }),
        };
        let failure = match result {
            Ok(outcome) => {
                self.shared.metrics.bytes_to_client.inc_by(outcome.bytes);
                if outcome.error {
                    backend.count_error(ErrorKind::Query);
                }
                return Ok(Ran::Done(outcome));
            }
            Err(failure) => failure,
        };
        self.shared.metrics.bytes_to_client.inc_by(failure.bytes);
        let client_side = matches!(
            failure.error,
            RelayError::Client(_) | RelayError::ClientProtocol(_)
        );
        if !client_side {
            backend.count_error(ErrorKind::Lost);
        }
        // A statement the primary was running may have been applied: it is never run
        // again, and the client sees what a direct connection shows, an error and the end.
        if is_primary || client_side {
            return Err(self.backend_failed(backend.name(), failure).await);
        }
        warn!(backend = backend.name(), error = %failure, "replica failed during a read");
        self.drop_replica(conns, target);
        if failure.bytes == 0 {
            self.shared.metrics.retries.inc();
            return Ok(Ran::Retry);
        }
        match failure.error_seq {
            Some(seq) => {
                self.send_error(seq, &SqlError::replica_lost(backend.name()))
                    .await?;
                Ok(Ran::Answered)
            }
            // Cut in the middle of a packet: the client's stream cannot be repaired.
            None => Err(SessionError::Relay {
                name: backend.name().to_owned(),
                failure,
            }),
        }
    }
}
