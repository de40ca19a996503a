//! One client connection, one task: the handshake and login (`login`), then a loop that
//! reads a command, hands it to the backend and relays the answer.

mod connections;
mod login;
mod prepared;
mod routing;
mod state;
mod statements;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use mysql_common::constants::CapabilityFlags;
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::backend::{BackendError, RelayError, RelayFailure};
use crate::metrics::{self, CommandKind};
use crate::net;
use crate::protocol::codes::{self as codes, SqlError};
use crate::protocol::handshake::BackendLogin;
use crate::protocol::packet::{PacketError, PacketReader, PacketWriter};
use crate::server::Shared;
use crate::signal::Subscription;
use connections::Connections;
use state::{SessionEffect, SessionState};
use statements::Statements;

/// Which of `read_timeout` (a packet stalled) and `write_timeout` (no answer taken) ended
/// a session, if one did.
fn client_timeout(error: &SessionError) -> Option<metrics::Timeout> {
    let timed_out = |e: &std::io::Error| e.kind() == std::io::ErrorKind::TimedOut;
    match error {
        SessionError::ClientIo(e) if timed_out(e) => Some(metrics::Timeout::Read),
        SessionError::Relay { failure, .. } => match &failure.error {
            RelayError::Client(e) if timed_out(e) => Some(metrics::Timeout::Write),
            RelayError::ClientProtocol(PacketError::Io(e)) if timed_out(e) => {
                Some(metrics::Timeout::Read)
            }
            _ => None,
        },
        _ => None,
    }
}

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
    #[error("login not completed within handshake_timeout ({0:?})")]
    HandshakeTimeout(std::time::Duration),
    #[error("no command for idle_timeout ({0:?})")]
    IdleTimeout(std::time::Duration),
    /// The client was sent the limit's error.
    #[error("user '{0}' holds as many sessions as it may")]
    UserLimit(String),
}

pub struct Session {
    peer: SocketAddr,
    shared: Arc<Shared>,
    client_in: PacketReader<net::Reader>,
    client_out: PacketWriter<net::Writer>,
    /// The scramble sent in the greeting; COM_CHANGE_USER answers are computed from it too.
    scramble: [u8; 20],
    /// Negotiated with the client; every backend connection uses the same.
    capabilities: CapabilityFlags,
    login: Option<BackendLogin>,
    /// The session as its user's limit counts it; set once the password is verified.
    user_slot: Option<crate::limits::UserSlot>,
    /// What the session set up that routing depends on.
    state: SessionState,
    statements: Statements,
    /// What the command being served was and where it ran, for the metrics.
    command: CommandRecord,
    shutdown: Subscription,
    /// Fires `idle_timeout` after the last command was answered, or earlier: it is armed
    /// once and only moved on when it fires, because a timer set anew for every wait costs
    /// a lock on the timer wheel on every statement.
    idle_timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// When the last command was answered (or the login completed).
    idle_since: std::time::Instant,
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

/// After repeated failed logins from the client's address, waits before greeting it.
async fn delay_repeated_failures(
    shared: &Shared,
    peer: SocketAddr,
    settings: &crate::config::LoginDelay,
) {
    let wait = shared.limits.login_delay(peer.ip(), settings);
    if !wait.is_zero() {
        info!(
            ?wait,
            "client address failed to log in repeatedly; greeting delayed"
        );
        shared.metrics.login_delays.inc();
        tokio::time::sleep(wait).await;
    }
}

/// Serves one client until it leaves or the connection fails.
pub async fn run(stream: TcpStream, peer: SocketAddr, id: u32, shared: Arc<Shared>) {
    let span = info_span!("session", conn_id = id, %peer, user = tracing::field::Empty);
    async move {
        let _connected = Connected::new(&shared);
        let shutdown = shared.shutdown_signal();
        let _ = stream.set_nodelay(true);
        let limits = shared.config().limits.clone();
        delay_repeated_failures(&shared, peer, &limits.login_delay).await;
        // The whole connection phase, greeting to the final OK, is bounded by one deadline,
        // as a server's connect_timeout bounds it.
        let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
        let scramble = crate::protocol::handshake::new_scramble();
        let opening = transport::open(stream, &shared, id, &scramble);
        let (read, write, first_answer) = match tokio::time::timeout_at(deadline, opening).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(e @ transport::TransportError::Tls(_))) => {
                info!(error = %e, "connection closed");
                return;
            }
            Ok(Err(e)) => {
                debug!(error = %e, "connection closed");
                return;
            }
            // The proxy waits for the client here: nothing is owed, the connection closes.
            Err(_) => {
                let e = SessionError::HandshakeTimeout(limits.handshake_timeout);
                shared
                    .metrics
                    .rejected(metrics::Rejection::HandshakeTimeout);
                info!(error = %e, "session ended");
                return;
            }
        };
        let config = shared.config();
        let history_limit = config.routing.max_session_history;
        let mut client_in = PacketReader::new(read);
        client_in.set_read_timeout(Some(config.limits.read_timeout));
        let mut client_out = PacketWriter::new(write);
        client_out.set_write_timeout(Some(config.limits.write_timeout));
        // The greeting went out before these existed.
        client_out.set_next_seq(1);
        drop(config);
        let mut session = Session {
            peer,
            shared,
            client_in,
            client_out,
            scramble,
            capabilities: CapabilityFlags::empty(),
            login: None,
            user_slot: None,
            state: SessionState::new(0, history_limit),
            statements: Statements::default(),
            command: CommandRecord::default(),
            shutdown,
            idle_timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            idle_since: std::time::Instant::now(),
        };
        let result = session.serve(first_answer, deadline).await;
        session.ended(result);
    }
    .instrument(span)
    .await
}

impl Session {
    async fn serve(
        &mut self,
        first_answer: transport::FirstAnswer,
        deadline: tokio::time::Instant,
    ) -> Result<(), SessionError> {
        let limit = self.shared.config().limits.handshake_timeout;
        let opened = match tokio::time::timeout_at(deadline, self.login(first_answer)).await {
            Ok(opened) => opened?,
            Err(_) => return Err(self.handshake_timed_out(limit).await),
        };
        let mut conns = Connections::new(self.shared.backends.load().primary.clone());
        self.idle_since = std::time::Instant::now();
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
                self.idle_since = std::time::Instant::now();
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
            let finished = std::time::Instant::now();
            self.idle_since = finished;
            // Commands without an answer are no statements to count or time.
            if !matches!(
                command,
                codes::COM_STMT_CLOSE | codes::COM_STMT_SEND_LONG_DATA
            ) {
                self.count_command(conns, finished - started);
            }
        }
    }

    fn count_command(&self, conns: &Connections, took: std::time::Duration) {
        let record = self.command;
        let route = match record.ran_on {
            None => metrics::Route::Proxy,
            Some(id) if id != conns.primary_id() => metrics::Route::Replica,
            Some(_) if record.for_replica => metrics::Route::Fallback,
            Some(_) => metrics::Route::Primary,
        };
        self.shared.metrics.command(route, record.kind, took);
    }

    /// Logs how the session ended and counts what the metrics count.
    fn ended(&self, result: Result<(), SessionError>) {
        let metrics = &self.shared.metrics;
        match result {
            Ok(()) | Err(SessionError::ClientClosed) => debug!("session ended"),
            Err(SessionError::AuthFailed(_)) => metrics.auth_failures.inc(),
            Err(e @ SessionError::HandshakeTimeout(_)) => {
                metrics.rejected(metrics::Rejection::HandshakeTimeout);
                info!(error = %e, "session ended");
            }
            Err(e @ SessionError::UserLimit(_)) => {
                metrics.rejected(metrics::Rejection::UserConnections);
                warn!(error = %e, "client refused");
            }
            Err(e @ SessionError::IdleTimeout(_)) => {
                metrics.timed_out(metrics::Timeout::Idle);
                info!(error = %e, "session closed");
            }
            Err(e) => match client_timeout(&e) {
                Some(timeout) => {
                    metrics.timed_out(timeout);
                    warn!(error = %e, "session closed: the client stalled");
                }
                // Before a login, a client that leaves or speaks no MySQL is a port scan, a
                // TCP health check or a flood: one line each at warn would flood the logs.
                None if self.login.is_none()
                    && matches!(
                        e,
                        SessionError::ClientIo(_) | SessionError::ClientProtocol(_)
                    ) =>
                {
                    info!(error = %e, "connection closed before a login");
                }
                None => warn!(error = %e, "session ended"),
            },
        }
    }

    /// The login took longer than `handshake_timeout`. Where the client is waiting for the
    /// proxy's verdict (its last packet is the newest), it gets ER_HANDSHAKE_ERROR; where
    /// the proxy is waiting for the client, the connection just closes, as a server's does
    /// after a read timeout: the protocol has no place for a packet there.
    async fn handshake_timed_out(&mut self, limit: std::time::Duration) -> SessionError {
        let owed = self
            .client_in
            .last_seq()
            .filter(|&seq| seq >= self.client_out.next_seq());
        if let Some(seq) = owed
            && self.client_out.pending() == 0
        {
            let err = SqlError::handshake(&format!("login not completed within {limit:?}"));
            let _ = self
                .client_out
                .send(seq.wrapping_add(1), &err.to_payload())
                .await;
        }
        let _ = self.client_out.shutdown().await;
        SessionError::HandshakeTimeout(limit)
    }

    /// Waits for the client to send something. `false` when the proxy is shutting down and
    /// the session holds no transaction: it ends between commands, never inside one. A
    /// client quiet for `idle_timeout` is sent ER_CLIENT_INTERACTION_TIMEOUT with sequence
    /// id 0, as MySQL 8.0.24 and later do, and the connection closes: clients that know
    /// the error report it, the others see the connection end, as with MariaDB.
    async fn next_command_arrives(&mut self) -> Result<bool, SessionError> {
        let idle_timeout = self.shared.config().limits.idle_timeout;
        let deadline = tokio::time::Instant::from_std(self.idle_since + idle_timeout);
        if self.idle_timer.deadline() > deadline {
            // A reload shortened the timeout.
            self.idle_timer.as_mut().reset(deadline);
        }
        loop {
            if self.shared.is_draining() && !self.state.holds_transaction() {
                return Ok(false);
            }
            tokio::select! {
                // The client is the usual case: looked at first, without drawing a random
                // branch order per wait.
                biased;
                read = self.client_in.read_more() => {
                    return match read {
                        Ok(0) => Err(SessionError::ClientClosed),
                        Ok(_) => Ok(true),
                        Err(e) => Err(SessionError::ClientIo(e)),
                    };
                }
                () = self.shutdown.changed() => {}
                () = self.idle_timer.as_mut() => {
                    if self.idle_timer.deadline() < deadline {
                        self.idle_timer.as_mut().reset(deadline);
                        continue;
                    }
                    let err = SqlError::idle_timeout(idle_timeout);
                    let _ = self.client_out.send(0, &err.to_payload()).await;
                    let _ = self.client_out.shutdown().await;
                    return Err(SessionError::IdleTimeout(idle_timeout));
                }
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
