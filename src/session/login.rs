//! The connection phase with the client, and COM_CHANGE_USER, which repeats it: the proxy
//! checks the password itself, then logs in to the primary as that user and relays the
//! server's verdict on the rest (unknown database, account locked, ...).

use mysql_common::constants::CapabilityFlags;
use mysql_common::packets::AuthSwitchRequest;
use mysql_common::proto::MySerialize;
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::transport::FirstAnswer;
use super::{Session, SessionError};
use crate::auth::FrontendPlugin;
use crate::backend::{BackendConn, BackendError, Connected};
use crate::protocol::change_user::ChangeUser;
use crate::protocol::codes::SqlError;
use crate::protocol::handshake::{BackendLogin, HelloError, ok_status_flags, parse_client_hello};
use crate::protocol::packet::PacketError;
use crate::topology::Backend;

/// Handshake packets are small; a client sending more is not a MySQL client.
pub(super) const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;

/// caching_sha2_password's "fast authentication succeeded" message.
const FAST_AUTH_OK: [u8; 2] = [0x01, 0x03];
/// caching_sha2_password's request for the password itself.
const PERFORM_FULL_AUTH: [u8; 2] = [0x01, 0x04];

/// The backend connection a login opened: the primary's, or a replica's while the primary
/// is down.
pub(super) struct Opened {
    pub backend: Arc<Backend>,
    pub conn: BackendConn,
    /// Status flags of the server's OK.
    pub status: u16,
}

/// A client's credentials as it presented them.
struct Credentials<'a> {
    user: &'a str,
    plugin: Option<&'a str>,
    response: &'a [u8],
}

impl Session {
    /// Reads the client's handshake response (the greeting is out), authenticates it and
    /// opens its connection to the primary; returns it with the status flags of the
    /// primary's OK.
    pub(super) async fn login(
        &mut self,
        first_answer: FirstAnswer,
    ) -> Result<Opened, SessionError> {
        let identity = self.shared.identity().await;
        let (expected_seq, read) = match first_answer {
            FirstAnswer::Tls => (
                2,
                self.client_in
                    .read_packet_seq(2, MAX_HANDSHAKE_PACKET)
                    .await,
            ),
            FirstAnswer::Plain(read) => (
                1,
                read.and_then(|packet| match packet.seq {
                    1 => {
                        self.client_in.set_last_seq(packet.last_seq);
                        Ok(packet)
                    }
                    got => Err(PacketError::OutOfOrder { expected: 1, got }),
                }),
            ),
        };
        let packet = match read {
            Ok(packet) => packet,
            Err(e) => return Err(self.client_packet_error(e, expected_seq).await),
        };
        let seq = packet.last_seq.wrapping_add(1);
        let hello = match parse_client_hello(&packet.payload) {
            Ok(hello) => hello,
            Err(e) => {
                let err = match e {
                    HelloError::TlsRequested => {
                        SqlError::handshake("TLS is not enabled on this proxy")
                    }
                    other => SqlError::handshake(&other.to_string()),
                };
                return Err(self.fail_client(seq, err).await);
            }
        };
        tracing::Span::current().record("user", hello.user.as_str());
        let tls_required = self
            .shared
            .config()
            .tls
            .as_ref()
            .is_some_and(|t| t.required);
        if tls_required && !self.client_in.get_ref().is_tls() {
            info!("plaintext login refused: TLS is required");
            let err = SqlError::secure_transport_required();
            return Err(self.fail_client(seq, err).await);
        }
        self.capabilities = hello.capabilities & identity.capabilities;
        // Without CLIENT_PLUGIN_AUTH a 4.1 client answers with a native-password scramble.
        let plugin_name = if hello
            .capabilities
            .contains(CapabilityFlags::CLIENT_PLUGIN_AUTH)
        {
            hello.auth_plugin.as_deref()
        } else {
            Some(crate::protocol::handshake::NATIVE_PASSWORD)
        };
        let credentials = Credentials {
            user: &hello.user,
            plugin: plugin_name,
            response: &hello.auth_response,
        };
        let (seq, password) = self.authenticate(credentials, seq).await?;

        let login = BackendLogin {
            user: hello.user.clone(),
            password,
            database: hello.database.clone(),
            capabilities: self.capabilities,
            collation: hello.collation,
            max_packet_size: hello.max_packet_size,
            connect_attributes: hello.connect_attributes.clone(),
        };
        let backend = self.open_backend(&login, seq).await?;
        match &login.database {
            Some(database) => info!(%database, "client logged in"),
            None => info!("client logged in"),
        }
        self.login = Some(login);
        Ok(backend)
    }

    /// COM_CHANGE_USER: authenticates the new user and gives the session a fresh backend
    /// connection logged in as that user (the old one, with all its session state, closes —
    /// exactly the reset the command promises). A failed change ends the session.
    pub(super) async fn change_user(
        &mut self,
        payload: &[u8],
        seq: u8,
    ) -> Result<Opened, SessionError> {
        let Some(change) = ChangeUser::parse(payload, self.capabilities) else {
            let err = SqlError::malformed_packet("COM_CHANGE_USER");
            return Err(self.fail_client(seq, err).await);
        };
        tracing::Span::current().record("user", change.user.as_str());
        let credentials = Credentials {
            user: &change.user,
            plugin: change.auth_plugin.as_deref(),
            response: &change.auth_response,
        };
        let (seq, password) = self.authenticate(credentials, seq).await?;
        let previous = self.login.as_ref().expect("logged in before commands");
        let login = BackendLogin {
            user: change.user.clone(),
            password,
            database: change.database.clone(),
            capabilities: self.capabilities,
            collation: change.collation.unwrap_or(previous.collation),
            max_packet_size: previous.max_packet_size,
            connect_attributes: change
                .connect_attributes
                .clone()
                .or_else(|| previous.connect_attributes.clone()),
        };
        let backend = self.open_backend(&login, seq).await?;
        info!(database = ?login.database, "user changed");
        self.login = Some(login);
        Ok(backend)
    }

    /// Logs in to the primary (or, while it is down, a replica) and relays the server's
    /// final OK (or its refusal) to the client.
    async fn open_backend(
        &mut self,
        login: &BackendLogin,
        seq: u8,
    ) -> Result<Opened, SessionError> {
        match self.connect_for_login(login).await {
            Ok((backend, connected)) => {
                self.client_out
                    .send(seq, &connected.ok_payload)
                    .await
                    .map_err(SessionError::ClientIo)?;
                let status = ok_status_flags(&connected.ok_payload)
                    .unwrap_or(crate::protocol::codes::SERVER_STATUS_AUTOCOMMIT);
                Ok(Opened {
                    backend,
                    conn: connected.conn,
                    status,
                })
            }
            Err(SessionError::Backend { name, source }) => {
                let err = match &source {
                    BackendError::Refused(err) => err.clone(),
                    other => SqlError::backend_unreachable(&name, &other.to_string()),
                };
                let _ = self.client_out.send(seq, &err.to_payload()).await;
                Err(SessionError::Backend { name, source })
            }
            Err(other) => Err(other),
        }
    }

    /// The primary's connection for a login; when the primary cannot be reached, a
    /// replica's, so that reads keep working while it is down (writes then fail with the
    /// primary's name until it is back). A refusal (wrong database, account locked) is the
    /// primary's verdict and final.
    async fn connect_for_login(
        &self,
        login: &BackendLogin,
    ) -> Result<(Arc<Backend>, Connected), SessionError> {
        let primary = self.shared.backends.load().primary.clone();
        let primary_error = match self.connect_to(&primary, login).await {
            Ok(connected) => return Ok((primary, connected)),
            Err(BackendError::Refused(err)) => {
                return Err(SessionError::Backend {
                    name: primary.name().to_owned(),
                    source: BackendError::Refused(err),
                });
            }
            Err(e) => e,
        };
        let mut tried = Vec::new();
        while let Some(replica) = self.shared.backends.pick_replica(&tried) {
            tried.push(replica.id);
            match self.connect_to(&replica, login).await {
                Ok(connected) => {
                    warn!(
                        primary = primary.name(),
                        replica = replica.name(),
                        error = %primary_error,
                        "primary unreachable; logged in through a replica, writes will fail"
                    );
                    return Ok((replica, connected));
                }
                Err(e) => debug!(replica = replica.name(), error = %e, "replica login failed"),
            }
        }
        Err(SessionError::Backend {
            name: primary.name().to_owned(),
            source: primary_error,
        })
    }

    /// Connects to `backend` unless its breaker is open, and keeps the breaker current.
    pub(super) async fn connect_to(
        &self,
        backend: &Backend,
        login: &BackendLogin,
    ) -> Result<Connected, BackendError> {
        let config = self.shared.config();
        if !backend.available() {
            return Err(BackendError::Paused(backend.blocked_for()));
        }
        let connecting = BackendConn::connect(
            &backend.endpoint,
            login,
            &config.backend_tls,
            config.connect_timeout,
        );
        match connecting.await {
            Ok(connected) => {
                backend.connect_succeeded();
                self.shared.learn_identity(&connected.identity);
                Ok(connected)
            }
            Err(BackendError::Refused(err)) => Err(BackendError::Refused(err)),
            Err(e) => {
                backend.connect_failed();
                Err(e)
            }
        }
    }

    /// Checks the client's password, switching it to another method first if needed.
    /// Returns the sequence id for the next packet and the user's password.
    async fn authenticate(
        &mut self,
        credentials: Credentials<'_>,
        mut seq: u8,
    ) -> Result<(u8, String), SessionError> {
        let config = self.shared.config();
        let account = config.users.get(credentials.user).cloned();
        let required = account.as_ref().and_then(|a| a.auth_plugin);
        let offered = credentials.plugin.and_then(FrontendPlugin::from_name);
        let mut response = credentials.response.to_vec();
        let plugin = match (offered, required) {
            (Some(offered), None) => offered,
            (Some(offered), Some(required)) if offered == required => offered,
            _ => {
                let target = required.unwrap_or(config.auth_plugin);
                let mut nonce = self.scramble.to_vec();
                nonce.push(0);
                let mut switch = Vec::new();
                AuthSwitchRequest::new(target.name().as_bytes(), nonce).serialize(&mut switch);
                self.client_out
                    .send(seq, &switch)
                    .await
                    .map_err(SessionError::ClientIo)?;
                let reply = match self
                    .client_in
                    .read_packet_seq(seq.wrapping_add(1), MAX_HANDSHAKE_PACKET)
                    .await
                {
                    Ok(reply) => reply,
                    Err(e) => return Err(self.client_packet_error(e, seq.wrapping_add(1)).await),
                };
                seq = reply.last_seq.wrapping_add(1);
                response = reply.payload.to_vec();
                target
            }
        };
        let stored = account.as_ref().map(|a| a.password.as_deref());
        if let Some(None) = stored {
            let (seq, password) = self.passthrough(&credentials, seq).await?;
            self.take_user_slot(credentials.user, seq, &config).await?;
            return Ok((seq, password));
        }
        // An unknown user costs the same scramble computation as a known one, so that the
        // time to answer does not tell which users exist.
        let password = stored.flatten().unwrap_or("no such user");
        if account.is_none() || !plugin.verify(&self.scramble, password, &response) {
            let known_user = account.is_some();
            return Err(self
                .deny(&credentials, plugin, known_user, seq, &response, &config)
                .await);
        }
        self.shared.limits.login_succeeded(self.peer.ip());
        self.take_user_slot(credentials.user, seq, &config).await?;
        if plugin == FrontendPlugin::CachingSha2Password && !response.is_empty() {
            seq = self
                .client_out
                .send(seq, &FAST_AUTH_OK)
                .await
                .map_err(SessionError::ClientIo)?;
        }
        Ok((seq, password.to_owned()))
    }

    /// Counts the session against its user's limit once the user is known, before a
    /// backend connection is opened for it. A changed user's session stops counting for the
    /// previous user first.
    async fn take_user_slot(
        &mut self,
        user: &str,
        seq: u8,
        config: &crate::config::Config,
    ) -> Result<(), SessionError> {
        self.user_slot = None;
        match self.shared.limits.open_session(user, config) {
            Ok(slot) => {
                self.user_slot = Some(slot);
                Ok(())
            }
            Err(err) => {
                let _ = self.client_out.send(seq, &err.to_payload()).await;
                Err(SessionError::UserLimit(user.to_owned()))
            }
        }
    }

    /// A passthrough user's password comes from the client: caching_sha2_password's full
    /// authentication, which sends it in clear and so only over TLS. The proxy does not
    /// check it; the primary does when the proxy logs in with it.
    async fn passthrough(
        &mut self,
        credentials: &Credentials<'_>,
        seq: u8,
    ) -> Result<(u8, String), SessionError> {
        if !self.client_in.get_ref().is_tls() {
            info!("passthrough user refused: its password may only travel over TLS");
            let err = SqlError::secure_transport_required();
            let _ = self.client_out.send(seq, &err.to_payload()).await;
            return Err(SessionError::AuthFailed(credentials.user.to_owned()));
        }
        let seq = self
            .client_out
            .send(seq, &PERFORM_FULL_AUTH)
            .await
            .map_err(SessionError::ClientIo)?;
        let reply = match self
            .client_in
            .read_packet_seq(seq, MAX_HANDSHAKE_PACKET)
            .await
        {
            Ok(reply) => reply,
            Err(e) => return Err(self.client_packet_error(e, seq).await),
        };
        // The password, NUL-terminated.
        let clear = reply.payload.strip_suffix(&[0]).unwrap_or(&reply.payload);
        let Ok(password) = std::str::from_utf8(clear) else {
            let err = SqlError::malformed_packet("authentication data");
            return Err(self.fail_client(reply.last_seq.wrapping_add(1), err).await);
        };
        Ok((reply.last_seq.wrapping_add(1), password.to_owned()))
    }

    /// Refuses a login: the client gets "access denied", the log gets user and peer, never
    /// what the client sent.
    async fn deny(
        &mut self,
        credentials: &Credentials<'_>,
        plugin: FrontendPlugin,
        known_user: bool,
        seq: u8,
        response: &[u8],
        config: &crate::config::Config,
    ) -> SessionError {
        // Counted before the client hears the verdict, so that its next attempt already
        // finds the count (and its wait) in place.
        let in_a_row = self.shared.limits.login_failed(self.peer.ip());
        warn!(
            user = credentials.user,
            known_user,
            method = plugin.name(),
            failures_in_a_row = in_a_row,
            "authentication failed"
        );
        let delay = &config.limits.login_delay;
        if delay.after > 0 && in_a_row == delay.after {
            warn!(
                "logins from this address failed {in_a_row} times in a row; its connections \
                 now wait before they are greeted, until one logs in"
            );
        }
        let host = self.peer.ip().to_string();
        let err = SqlError::access_denied(credentials.user, &host, !response.is_empty());
        let _ = self.client_out.send(seq, &err.to_payload()).await;
        SessionError::AuthFailed(credentials.user.to_owned())
    }
}
