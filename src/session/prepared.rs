//! The COM_STMT_* commands (D5). A statement is first prepared where the router sends it
//! and answered under the proxy's id; each execute is routed like the statement would be as
//! a query, and prepared on that backend first if it has not been. Long data goes to the
//! primary and takes the next execute with it; a cursor is fetched from the backend that
//! opened it; a close reaches every backend that prepared the statement.

use tracing::debug;

use super::connections::Connections;
use super::routing::{Command, Ran};
use super::state::execute_effect;
use super::statements::{OnBackend, PreparedStatement};
use super::{Session, SessionError};
use crate::backend::{PrepareOk, RelayFailure};
use crate::classify::{Statement, classify};
use crate::protocol::codes::SqlError;
use crate::protocol::handshake::ok_payload;
use crate::protocol::packet::{HEADER_LEN, Packet};
use crate::protocol::response::ResponseKind;
use crate::protocol::statement::{set_statement_id, statement_id};
use crate::router::{self, Route};

/// Whether a statement is prepared on a backend.
enum Readiness {
    Prepared(OnBackend),
    /// The backend refused to prepare it; its ERR packet.
    Refused(Vec<u8>),
    /// The replica connection failed; it is closed.
    Lost,
}

impl Session {
    /// COM_STMT_PREPARE where the statement would run as a query. A replica that cannot
    /// prepare it (a table it has not replicated yet, say) hands it to the primary, so its
    /// answer is read whole before the client sees it; the primary's is relayed.
    pub(super) async fn prepare(
        &mut self,
        conns: &mut Connections,
        packet: Packet,
    ) -> Result<(), SessionError> {
        let class = classify(&packet.payload[1..]);
        let (route, _) = router::route(&class, &self.state.view());
        self.command.kind = crate::metrics::CommandKind::Prepare;
        self.command.for_replica = route == Route::Replica;
        let command = Command::new(&packet, ResponseKind::Prepare);
        let Some(target) = self.resolve(conns, route, command.reply_seq()).await? else {
            return Ok(());
        };
        let id = self.statements.next_id();
        if target != conns.primary_id()
            && let Some(ok) = self.prepare_on_replica(conns, target, &packet, id).await?
        {
            self.command.ran_on = Some(target);
            self.prepared(&packet, class, target, id, ok);
            return Ok(());
        }
        let Some(primary) = self.primary(conns, command.reply_seq()).await? else {
            return Ok(());
        };
        match self.run_on(conns, primary, &command, Some(id)).await? {
            Ran::Done(outcome) => {
                if let Some(ok) = outcome.prepared {
                    self.prepared(&packet, class, primary, id, ok);
                }
            }
            Ran::Retry | Ran::Answered => {}
        }
        Ok(())
    }

    /// Prepares on a replica and, if it worked, gives the client the answer under `id`.
    async fn prepare_on_replica(
        &mut self,
        conns: &mut Connections,
        target: u32,
        packet: &Packet,
        id: u32,
    ) -> Result<Option<PrepareOk>, SessionError> {
        let (backend, conn) = conns.get_mut(target).expect("routed to an open connection");
        let _in_flight = backend.start_request();
        backend.count_statement();
        match conn
            .run_internal(&packet.payload, ResponseKind::Prepare)
            .await
        {
            Ok(mut collected) => {
                let Some(ok) = collected.outcome.prepared else {
                    debug!(backend = target, "replica cannot prepare the statement");
                    return Ok(None);
                };
                // PREPARE_OK is the first packet: header, 0x00, then the statement id.
                let at = HEADER_LEN + 1;
                collected.framed[at..at + 4].copy_from_slice(&id.to_le_bytes());
                self.client_out
                    .write_through(&collected.framed)
                    .await
                    .map_err(SessionError::ClientIo)?;
                Ok(Some(ok))
            }
            Err(_) => {
                self.drop_replica(conns, target);
                Ok(None)
            }
        }
    }

    fn prepared(&mut self, packet: &Packet, class: Statement, target: u32, id: u32, ok: PrepareOk) {
        self.state.previous = Some(target);
        let statement = PreparedStatement {
            prepare: packet.payload.to_vec(),
            class,
            params: ok.params,
            types: None,
            types_version: 0,
            on: vec![OnBackend {
                backend: target,
                id: ok.statement_id,
                types_version: None,
            }],
            executed_on: None,
            long_data: false,
        };
        self.statements.insert(id, statement);
    }

    pub(super) async fn execute(
        &mut self,
        conns: &mut Connections,
        mut packet: Packet,
    ) -> Result<(), SessionError> {
        let reply_seq = packet.last_seq.wrapping_add(1);
        let Some(id) = self
            .statement_or_error(&packet.payload, reply_seq, "mysqld_stmt_execute")
            .await?
        else {
            return Ok(());
        };
        let statement = self.statements.get_mut(id).expect("known");
        statement.learn_types(&packet.payload);
        let class = statement.class;
        let route = if statement.long_data {
            Route::Primary
        } else {
            router::route(&class, &self.state.view()).0
        };
        self.command.kind = crate::metrics::CommandKind::of(&class);
        self.command.for_replica = route == Route::Replica;
        let Some(mut target) = self.resolve(conns, route, reply_seq).await? else {
            return Ok(());
        };
        let mut failed = Vec::new();
        loop {
            let on = match self.prepared_on(conns, id, target, Some(reply_seq)).await? {
                Readiness::Prepared(on) => on,
                Readiness::Lost => {
                    failed.push(target);
                    match self.retry_target(conns, &mut failed, reply_seq).await? {
                        Some(next) => target = next,
                        None => return Ok(()),
                    }
                    continue;
                }
                Readiness::Refused(_) if target != conns.primary_id() => {
                    debug!(backend = target, "replica cannot prepare the statement");
                    match self.primary(conns, reply_seq).await? {
                        Some(primary) => target = primary,
                        None => return Ok(()),
                    }
                    continue;
                }
                Readiness::Refused(err) => {
                    return self.send_payload(reply_seq, &err).await;
                }
            };
            let statement = self.statements.get_mut(id).expect("known");
            let mut with_bound_types = if statement.needs_types(&on) {
                statement.with_types(&packet.payload)
            } else {
                None
            };
            let payload = match with_bound_types.as_mut() {
                Some(rebuilt) => &mut rebuilt[..],
                None => &mut packet.payload[..],
            };
            set_statement_id(payload, on.id);
            let command = Command {
                payload,
                kind: ResponseKind::Execute,
                seq: packet.last_seq,
            };
            match self.run_on(conns, target, &command, None).await? {
                Ran::Done(outcome) => {
                    let statement = self.statements.get_mut(id).expect("known");
                    statement.set_on(OnBackend {
                        types_version: Some(statement.types_version),
                        ..on
                    });
                    statement.executed_on = Some(target);
                    statement.long_data = false;
                    let effect = execute_effect(&class);
                    self.learn(conns, target, Some(&class), effect, &command, outcome);
                    return Ok(());
                }
                Ran::Retry => {
                    failed.push(target);
                    match self.retry_target(conns, &mut failed, reply_seq).await? {
                        Some(next) => target = next,
                        None => return Ok(()),
                    }
                }
                Ran::Answered => return Ok(()),
            }
        }
    }

    /// COM_STMT_FETCH reads from the cursor the last execute opened, on its backend.
    pub(super) async fn fetch(
        &mut self,
        conns: &mut Connections,
        mut packet: Packet,
    ) -> Result<(), SessionError> {
        let reply_seq = packet.last_seq.wrapping_add(1);
        let client_id = statement_id(&packet.payload).unwrap_or(0);
        let Some(id) = self
            .statement_or_error(&packet.payload, reply_seq, "mysqld_stmt_fetch")
            .await?
        else {
            return Ok(());
        };
        let statement = self.statements.get_mut(id).expect("known");
        let cursor = statement
            .executed_on
            .and_then(|backend| statement.on(backend))
            .filter(|on| conns.is_open(on.backend));
        let Some(on) = cursor else {
            return self
                .send_error(reply_seq, &SqlError::no_open_cursor(client_id))
                .await;
        };
        set_statement_id(&mut packet.payload, on.id);
        let command = Command::new(&packet, ResponseKind::Fetch);
        match self.run_on(conns, on.backend, &command, None).await? {
            Ran::Done(_) | Ran::Answered => Ok(()),
            Ran::Retry => {
                self.send_error(reply_seq, &SqlError::no_open_cursor(client_id))
                    .await
            }
        }
    }

    /// COM_STMT_SEND_LONG_DATA has no answer. The data goes to the primary, which then runs
    /// the next execute; a failure shows in that execute's answer.
    pub(super) async fn send_long_data(
        &mut self,
        conns: &mut Connections,
        mut packet: Packet,
    ) -> Result<(), SessionError> {
        let Some(id) = self.known_statement(&packet.payload) else {
            return Ok(());
        };
        // No answer is due: if the primary cannot be reached, the next execute (which goes
        // there too) carries the error.
        let reply_seq = packet.last_seq.wrapping_add(1);
        let Ok(primary) = self.open_primary(conns, reply_seq).await? else {
            return Ok(());
        };
        let Readiness::Prepared(on) = self.prepared_on(conns, id, primary, None).await? else {
            return Ok(());
        };
        set_statement_id(&mut packet.payload, on.id);
        let (_, conn) = conns.get_mut(primary).expect("open");
        if conn.send_command(&packet.payload).await.is_ok() {
            self.statements.get_mut(id).expect("known").long_data = true;
        }
        Ok(())
    }

    /// COM_STMT_RESET on every backend that prepared the statement; the client gets the
    /// first error, or OK.
    pub(super) async fn reset_statement(
        &mut self,
        conns: &mut Connections,
        packet: Packet,
    ) -> Result<(), SessionError> {
        let reply_seq = packet.last_seq.wrapping_add(1);
        let Some(id) = self
            .statement_or_error(&packet.payload, reply_seq, "mysqld_stmt_reset")
            .await?
        else {
            return Ok(());
        };
        let statement = self.statements.get_mut(id).expect("known");
        statement.long_data = false;
        statement.executed_on = None;
        let on: Vec<OnBackend> = statement.on.clone();
        let mut answer = None;
        for on in on {
            let mut reset = packet.payload.to_vec();
            set_statement_id(&mut reset, on.id);
            let Some((_, conn)) = conns.get_mut(on.backend) else {
                continue;
            };
            match conn.run_internal(&reset, ResponseKind::Single).await {
                Ok(collected) if collected.outcome.error => {
                    answer.get_or_insert_with(|| collected.first_payload().to_vec());
                }
                Ok(_) => {}
                Err(failure) if on.backend == conns.primary_id() => {
                    let name = conns.primary_backend.name().to_owned();
                    let failure = RelayFailure {
                        error_seq: Some(reply_seq),
                        ..failure
                    };
                    return Err(self.backend_failed(&name, failure).await);
                }
                Err(_) => self.drop_replica(conns, on.backend),
            }
        }
        let answer = answer.unwrap_or_else(|| ok_payload(self.state.primary_status));
        self.send_payload(reply_seq, &answer).await
    }

    /// COM_STMT_CLOSE has no answer: the statement is closed wherever it was prepared.
    pub(super) async fn close_statement(&mut self, conns: &mut Connections, packet: Packet) {
        let Some(id) = self.known_statement(&packet.payload) else {
            return;
        };
        let statement = self.statements.remove(id).expect("known");
        let mut close = packet.payload.to_vec();
        for on in statement.on {
            set_statement_id(&mut close, on.id);
            if let Some((_, conn)) = conns.get_mut(on.backend) {
                // A backend that is gone has forgotten the statement anyway.
                let _ = conn.send_command(&close).await;
            }
        }
    }

    /// The proxy's id of the statement a COM_STMT_* packet names, if the session has it.
    fn known_statement(&mut self, payload: &[u8]) -> Option<u32> {
        let id = self.statements.resolve(statement_id(payload)?);
        self.statements.get_mut(id).map(|_| id)
    }

    /// Like `known_statement`, but a statement the session does not have is answered with
    /// error 1243 as the server words it for `command`.
    async fn statement_or_error(
        &mut self,
        payload: &[u8],
        reply_seq: u8,
        command: &str,
    ) -> Result<Option<u32>, SessionError> {
        if let Some(id) = self.known_statement(payload) {
            return Ok(Some(id));
        }
        let client_id = statement_id(payload).unwrap_or(0);
        let err = SqlError::unknown_statement(client_id, command);
        self.send_error(reply_seq, &err).await.map(|()| None)
    }

    /// Prepares statement `id` on `target` unless it already is. `reply_seq` is where an
    /// error may go if the primary fails: none for a command that has no answer.
    async fn prepared_on(
        &mut self,
        conns: &mut Connections,
        id: u32,
        target: u32,
        reply_seq: Option<u8>,
    ) -> Result<Readiness, SessionError> {
        let statement = self.statements.get_mut(id).expect("known");
        if let Some(on) = statement.on(target) {
            return Ok(Readiness::Prepared(on));
        }
        let (_, conn) = conns.get_mut(target).expect("routed to an open connection");
        match conn
            .run_internal(&statement.prepare, ResponseKind::Prepare)
            .await
        {
            Ok(collected) => match collected.outcome.prepared {
                Some(ok) => {
                    let on = OnBackend {
                        backend: target,
                        id: ok.statement_id,
                        types_version: None,
                    };
                    statement.set_on(on);
                    Ok(Readiness::Prepared(on))
                }
                None => Ok(Readiness::Refused(collected.first_payload().to_vec())),
            },
            Err(failure) if target == conns.primary_id() => {
                let name = conns.primary_backend.name().to_owned();
                let failure = RelayFailure {
                    error_seq: reply_seq,
                    bytes: 0,
                    ..failure
                };
                Err(self.backend_failed(&name, failure).await)
            }
            Err(_) => {
                self.drop_replica(conns, target);
                Ok(Readiness::Lost)
            }
        }
    }

    async fn send_payload(&mut self, seq: u8, payload: &[u8]) -> Result<(), SessionError> {
        self.client_out
            .send(seq, payload)
            .await
            .map(drop)
            .map_err(SessionError::ClientIo)
    }
}
