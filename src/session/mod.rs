//! One client connection, one task: the handshake and login (`login`), then a loop that
//! reads a command, hands it to the backend and relays the answer.

mod connections;
mod login;
mod prepared;
mod routing;
mod state;
mod statements;

use std::net::SocketAddr;
use std::sync::Arc;

use mysql_common::constants::CapabilityFlags;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tracing::{Instrument, debug, info_span, warn};

use crate::backend::{BackendError, RelayError, RelayFailure};
use crate::metrics::{self, CommandKind};
use crate::protocol::codes::{self as codes, SqlError};
use crate::protocol::handshake::BackendLogin;
use crate::protocol::packet::{PacketError, PacketReader, PacketWriter};
use crate::server::{Shared, Stage};
use connections::Connections;
use state::{SessionEffect, SessionState};
use statements::Statements;

/// How long, and how much input, a connection closed for a protocol violation is drained.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 64 << 20;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client closed the connection")]
    ClientClosed,
    #[error("client connection failed: {0}")]
    ClientIo(std::io::Error),
    /// The client broke the protocol; it was sent this error before the connection closed.
    #[error("client protocol violation: {0}")]
    ClientProtocol(SqlError),
    #[error("authentication failed for user '{0}'")]
    AuthFailed(String),
    #[error("backend {name}: {source}")]
    Backend { name: String, source: BackendError },
    #[error("relay from backend {name} failed: {failure}")]
    Relay { name: String, failure: RelayFailure },
    #[error("connection to the primary {name} lost while the session held {held}")]
    PrimaryLost { name: String, held: &'static str },
}

pub struct Session {
    id: u32,
    peer: SocketAddr,
    shared: Arc<Shared>,
    client_in: PacketReader<OwnedReadHalf>,
    client_out: PacketWriter<OwnedWriteHalf>,
    /// The scramble sent in the greeting; COM_CHANGE_USER answers are computed from it too.
    scramble: [u8; 20],
    /// Negotiated with the client; every backend connection uses the same.
    capabilities: CapabilityFlags,
    login: Option<BackendLogin>,
    /// What the session set up that routing depends on.
    state: SessionState,
    statements: Statements,
    /// What the command being served was and where it ran, for the metrics.
    command: CommandRecord,
    shutdown: tokio::sync::watch::Receiver<Stage>,
}

/// A client command as the metrics count it.
#[derive(Debug, Clone, Copy)]
struct CommandRecord {
    kind: CommandKind,
    /// The router sent it to the replicas (so the primary answering it is a fallback).
    for_replica: bool,
    /// The backend that ran it last; `None` when the proxy answered it itself.
    ran_on: Option<u32>,
}

impl Default for CommandRecord {
    fn default() -> Self {
        Self {
            kind: CommandKind::Command,
            for_replica: false,
            ran_on: None,
        }
    }
}

/// Counts a client connection as open for as long as it lives.
struct Connected(Arc<Shared>);

impl Connected {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.metrics.client_connections.inc();
        Self(shared.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.metrics.client_connections.dec();
    }
}

/// Serves one client until it leaves or the connection fails.
pub async fn run(stream: TcpStream, peer: SocketAddr, id: u32, shared: Arc<Shared>) {
    let span = info_span!("session", conn_id = id, %peer, user = tracing::field::Empty);
    async move {
        let _connected = Connected::new(&shared);
        let shared_stage = shared.shutdown_stage();
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let history_limit = shared.config().routing.max_session_history;
        let mut session = Session {
            id,
            peer,
            shared,
            client_in: PacketReader::new(read),
            client_out: PacketWriter::new(write),
            scramble: crate::protocol::handshake::new_scramble(),
            capabilities: CapabilityFlags::empty(),
            login: None,
            state: SessionState::new(0, history_limit),
            statements: Statements::default(),
            command: CommandRecord::default(),
            shutdown: shared_stage,
        };
        match session.serve().await {
            Ok(()) | Err(SessionError::ClientClosed) => debug!("session ended"),
            Err(SessionError::AuthFailed(_)) => session.shared.metrics.auth_failures.inc(),
            Err(e) => warn!(error = %e, "session ended"),
        }
    }
    .instrument(span)
    .await
}

impl Session {
    async fn serve(&mut self) -> Result<(), SessionError> {
        let opened = self.login().await?;
        let mut conns = Connections::new(self.shared.backends.load().primary.clone());
        self.state.restart(opened.status);
        conns.adopt(opened);
        let result = self.command_loop(&mut conns).await;
        if result.is_ok() {
            conns.quit().await;
        }
        result
    }

    async fn command_loop(&mut self, conns: &mut Connections) -> Result<(), SessionError> {
        loop {
            if self.client_in.buffered().is_empty() && !self.next_command_arrives().await? {
                debug!("session closed: the proxy is shutting down");
                return Ok(());
            }
            let max_packet = self.shared.config().max_packet_size;
            let packet = match self.client_in.read_packet(max_packet).await {
                Ok(packet) => packet,
                Err(e) => return Err(self.client_packet_error(e, 0).await),
            };
            if packet.seq != 0 {
                let err = SqlError::packets_out_of_order();
                return Err(self.fail_client(packet.last_seq.wrapping_add(1), err).await);
            }
            let Some(&command) = packet.payload.first() else {
                let reply_seq = packet.last_seq.wrapping_add(1);
                self.send_error(reply_seq, &SqlError::unknown_command(codes::COM_SLEEP))
                    .await?;
                continue;
            };
            if self.state.pinned && !conns.replicas.is_empty() {
                self.release_replicas(conns).await;
            }
            let started = std::time::Instant::now();
            self.command = CommandRecord::default();
            match command {
                codes::COM_QUIT => return Ok(()),
                codes::COM_QUERY => self.query(conns, packet).await?,
                codes::COM_STMT_PREPARE => self.prepare(conns, packet).await?,
                codes::COM_STMT_EXECUTE => self.execute(conns, packet).await?,
                codes::COM_STMT_FETCH => self.fetch(conns, packet).await?,
                codes::COM_STMT_SEND_LONG_DATA => self.send_long_data(conns, packet).await?,
                codes::COM_STMT_RESET => self.reset_statement(conns, packet).await?,
                codes::COM_STMT_CLOSE => self.close_statement(conns, packet).await,
                codes::COM_CHANGE_USER => {
                    let reply_seq = packet.last_seq.wrapping_add(1);
                    let opened = self.change_user(&packet.payload, reply_seq).await?;
                    conns.close_replicas().await;
                    if let Some(old) = conns.primary.take() {
                        old.quit().await;
                    }
                    self.state.restart(opened.status);
                    conns.adopt(opened);
                    self.statements.clear();
                }
                codes::COM_INIT_DB => {
                    self.on_primary(conns, packet, SessionEffect::ChangeSchema)
                        .await?;
                }
                codes::COM_RESET_CONNECTION => {
                    if let Some(outcome) =
                        self.on_primary(conns, packet, SessionEffect::None).await?
                        && !outcome.error
                    {
                        conns.close_replicas().await;
                        let status = outcome.status_flags.unwrap_or(self.state.primary_status);
                        self.state.reset(status);
                        self.statements.clear();
                    }
                }
                codes::COM_FIELD_LIST
                | codes::COM_PING
                | codes::COM_STATISTICS
                | codes::COM_SET_OPTION
                | codes::COM_PROCESS_KILL
                | codes::COM_DEBUG
                | codes::COM_REFRESH => {
                    self.on_primary(conns, packet, SessionEffect::None).await?;
                }
                // Replication, shutdown and obsolete commands have no place behind a proxy.
                other => {
                    debug!(command = other, "unsupported command");
                    let reply_seq = packet.last_seq.wrapping_add(1);
                    self.send_error(reply_seq, &SqlError::unknown_command(other))
                        .await?;
                }
            }
            // Commands without an answer are no statements to count or time.
            if !matches!(
                command,
                codes::COM_STMT_CLOSE | codes::COM_STMT_SEND_LONG_DATA
            ) {
                self.count_command(conns, started);
            }
        }
    }

    fn count_command(&self, conns: &Connections, started: std::time::Instant) {
        let record = self.command;
        let route = match record.ran_on {
            None => metrics::Route::Proxy,
            Some(id) if id != conns.primary_id() => metrics::Route::Replica,
            Some(_) if record.for_replica => metrics::Route::Fallback,
            Some(_) => metrics::Route::Primary,
        };
        self.shared
            .metrics
            .command(route, record.kind, started.elapsed());
    }

    /// Waits for the client to send something. `false` when the proxy is shutting down and
    /// the session holds no transaction: it ends between commands, never inside one.
    async fn next_command_arrives(&mut self) -> Result<bool, SessionError> {
        loop {
            if *self.shutdown.borrow_and_update() != Stage::Serving
                && !self.state.holds_transaction()
            {
                return Ok(false);
            }
            tokio::select! {
                read = self.client_in.read_more() => {
                    return match read {
                        Ok(0) => Err(SessionError::ClientClosed),
                        Ok(_) => Ok(true),
                        Err(e) => Err(SessionError::ClientIo(e)),
                    };
                }
                // Should the sender be gone, this branch is off and only the client counts.
                Ok(()) = self.shutdown.changed() => {}
            }
        }
    }

    /// A session pinned to the primary has no more use for its replica connections.
    async fn release_replicas(&mut self, conns: &mut Connections) {
        for replica in &conns.replicas {
            self.statements.forget_backend(replica.backend.id);
        }
        conns.close_replicas().await;
    }

    /// A relay failed: tell the client where the protocol allows it, then end the session.
    /// The backend connection is in an unknown state and is dropped with the session; the
    /// client sees what a direct connection would show: an error, then a lost connection.
    async fn backend_failed(&mut self, name: &str, failure: RelayFailure) -> SessionError {
        let name = name.to_owned();
        let message = match &failure.error {
            RelayError::Client(_) | RelayError::ClientProtocol(_) => None,
            RelayError::Backend(_) => Some(SqlError::backend_lost(&name)),
            RelayError::BackendSequence { .. } | RelayError::BackendResponse(_) => Some(
                SqlError::internal(format!("backend {name} sent a malformed response")),
            ),
        };
        if let (Some(message), Some(seq)) = (message, failure.error_seq) {
            let _ = self.client_out.send(seq, &message.to_payload()).await;
        }
        SessionError::Relay { name, failure }
    }

    /// Maps a failure to read a client packet to the session's end, answering with an error
    /// where one is due. `seq` is the sequence id the error would carry.
    async fn client_packet_error(&mut self, error: PacketError, seq: u8) -> SessionError {
        match error {
            PacketError::Closed => SessionError::ClientClosed,
            PacketError::Io(e) => SessionError::ClientIo(e),
            PacketError::TooLarge { max, .. } => {
                self.fail_client(seq.wrapping_add(1), SqlError::packet_too_large(max))
                    .await
            }
            PacketError::OutOfOrder { got, .. } => {
                self.fail_client(got.wrapping_add(1), SqlError::packets_out_of_order())
                    .await
            }
        }
    }

    /// Sends `err` and ends the session with it. The client may still be sending (the rest
    /// of an oversized packet, say): closing a socket with unread input resets the connection,
    /// which can destroy the error before the client reads it. So the proxy half-closes and
    /// discards the client's input for a bounded time first.
    async fn fail_client(&mut self, seq: u8, err: SqlError) -> SessionError {
        let _ = self.client_out.send(seq, &err.to_payload()).await;
        let _ = self.client_out.shutdown().await;
        let drain = async {
            let mut discarded = 0usize;
            while discarded < LINGER_MAX_BYTES {
                match self.client_in.read_more().await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let n = self.client_in.buffered().len();
                        self.client_in.consume(n);
                        discarded += n;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        SessionError::ClientProtocol(err)
    }

    async fn send_error(&mut self, seq: u8, err: &SqlError) -> Result<(), SessionError> {
        self.client_out
            .send(seq, &err.to_payload())
            .await
            .map(drop)
            .map_err(SessionError::ClientIo)
    }
}
