//! A connection from the proxy to one backend server: the client side of the protocol.
//! It logs in with the client's user and negotiated capabilities, then carries commands and
//! relays their responses (`relay`).

mod relay;

use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, HandshakePacket};
use mysql_common::proto::MyDeserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use relay::{Collected, PrepareOk, RelayError, RelayFailure, RelayOutcome};

use crate::auth::{backend_auth_data, sha2_rsa_encrypt};
use crate::config::Endpoint;
use crate::net;
use crate::protocol::codes::SqlError;
use crate::protocol::handshake::{
    BackendLogin, ServerIdentity, backend_hello_payload, backend_ssl_request,
    relayable_capabilities, server_version,
};
use crate::protocol::packet::{
    PacketError, PacketReader, PacketWriter, encode_packet, read_packet_exact,
};
use crate::tls::BackendTls;

/// Handshake packets are small; anything bigger is not a MySQL server talking.
const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server refused the login; the client gets this error as it is.
    #[error("server refused the login: {0}")]
    Refused(SqlError),
    #[error("server speaks no protocol the proxy can relay: {0}")]
    Incompatible(String),
    #[error("connection broke during the handshake: {0}")]
    Packet(#[from] PacketError),
    /// TLS is configured and the server does not offer it, or the handshake failed (its
    /// certificate did not pass the checks the mode asks for, say).
    #[error("TLS: {0}")]
    Tls(String),
    /// Recent attempts failed; the next is made after this long.
    #[error("not tried: recent connection attempts failed; next attempt in {0:?}")]
    Paused(Duration),
}

pub struct BackendConn {
    /// The endpoint's name, for errors and logs.
    pub name: String,
    reader: PacketReader<net::Reader>,
    writer: PacketWriter<net::Writer>,
    capabilities: CapabilityFlags,
    /// The server's own id for this connection (what `CONNECTION_ID()` returns).
    pub connection_id: u32,
    /// Fires when the health checks find the server not answering: a wait for an answer
    /// that may still be abandoned then ends with an error instead of hanging.
    abandon: Option<crate::signal::Subscription>,
    /// Counts this connection among its backend's open ones while it lives.
    counted: Option<crate::topology::OpenConnection>,
}

/// A fresh, logged-in backend connection and what its handshake told.
pub struct Connected {
    pub conn: BackendConn,
    pub identity: ServerIdentity,
    /// The server's final OK packet of the login, relayed to the client.
    pub ok_payload: Vec<u8>,
}

/// Reads a server's greeting, or the error a server sends instead of one (too many
/// connections, host blocked); returns its sequence id and the parsed handshake.
pub async fn read_greeting<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<(u8, HandshakePacket<'static>), BackendError> {
    let greeting = read_packet_exact(stream, MAX_HANDSHAKE_PACKET).await?;
    if let Some(err) = SqlError::from_payload(&greeting.payload) {
        return Err(BackendError::Refused(err));
    }
    if scramble_length_overflows(&greeting.payload) {
        return Err(BackendError::Incompatible(
            "unreadable greeting: auth-plugin-data length over 127".into(),
        ));
    }
    let handshake = HandshakePacket::deserialize((), &mut ParseBuf(&greeting.payload))
        .map_err(|e| BackendError::Incompatible(format!("unreadable greeting: {e}")))?;
    Ok((greeting.seq, handshake.into_owned()))
}

/// What a server's packet means during login, after the proxy's handshake response (MySQL
/// Internals, "Authentication Method Switch", "caching_sha2_password").
#[derive(Debug, PartialEq, Eq)]
pub enum LoginReply {
    /// OK: logged in.
    Ok,
    /// The server asks to authenticate with another method, with a new nonce.
    Switch {
        plugin: AuthPlugin<'static>,
        nonce: Vec<u8>,
    },
    /// caching_sha2_password: the scramble matched a cached entry; an OK follows.
    FastAuthOk,
    /// caching_sha2_password: full authentication is needed; the server's public key is
    /// asked for next.
    FullAuth,
}

/// Reads one login packet from a server whose current method is `plugin`.
pub fn parse_login_reply(
    payload: &[u8],
    plugin: &AuthPlugin<'_>,
) -> Result<LoginReply, BackendError> {
    match payload.first() {
        Some(0x00) => Ok(LoginReply::Ok),
        Some(0xff) => Err(BackendError::Refused(
            SqlError::from_payload(payload)
                .unwrap_or_else(|| SqlError::internal("malformed error from backend")),
        )),
        Some(0xfe) => {
            let switch = AuthSwitchRequest::deserialize((), &mut ParseBuf(payload))
                .map_err(|e| BackendError::Incompatible(format!("auth switch: {e}")))?;
            Ok(LoginReply::Switch {
                plugin: switch.auth_plugin().into_owned(),
                nonce: switch.plugin_data().to_vec(),
            })
        }
        // caching_sha2_password: 0x03 = fast auth succeeded (OK follows),
        // 0x04 = full authentication needed.
        Some(0x01) if *plugin == AuthPlugin::CachingSha2Password => match payload.get(1) {
            Some(0x03) => Ok(LoginReply::FastAuthOk),
            Some(0x04) => Ok(LoginReply::FullAuth),
            _ => Err(BackendError::Incompatible(
                "unexpected caching_sha2_password message".into(),
            )),
        },
        _ => Err(BackendError::Incompatible(
            "unexpected packet during login".into(),
        )),
    }
}

/// mysql_common reads the length of the greeting's second scramble part as
/// `max(13, len as i8 - 8)`, which overflows (a panic where overflow checks are on) for a
/// length byte of 0x80..=0x87. Servers send 21 (MySQL Internals, "Protocol::HandshakeV10"),
/// so such a greeting is refused before it is parsed. The byte follows the NUL-terminated
/// server version and 20 bytes: connection id, scramble part 1, filler, lower capabilities
/// (whose CLIENT_SECURE_CONNECTION bit says whether the length is used), collation, status,
/// upper capabilities.
fn scramble_length_overflows(greeting: &[u8]) -> bool {
    let Some(version_len) = greeting.iter().skip(1).position(|&b| b == 0) else {
        return false;
    };
    let fixed = &greeting[(2 + version_len).min(greeting.len())..];
    let secure_connection = fixed.get(14).is_some_and(|&caps| caps & 0x80 != 0);
    secure_connection
        && fixed
            .get(20)
            .is_some_and(|&len| (0x80..=0x87).contains(&len))
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        BackendError::Packet(PacketError::Io(e))
    }
}

impl BackendConn {
    /// Keeps `count` (the backend's open-connection count) for as long as this lives.
    pub fn count_as(&mut self, count: crate::topology::OpenConnection) {
        self.counted = Some(count);
    }

    /// Gives up waiting on this connection when `signal` changes (see `abandon`).
    pub fn abandon_when(&mut self, signal: crate::signal::Subscription) {
        self.abandon = Some(signal);
    }

    /// Reads more of the server's answer; with `may_abandon`, a down signal ends the wait.
    async fn read_more(&mut self, may_abandon: bool) -> std::io::Result<usize> {
        match (&mut self.abandon, may_abandon) {
            (Some(signal), true) => tokio::select! {
                // The answer is the usual case: looked at first, without drawing a random
                // branch order per read.
                biased;
                read = self.reader.read_more() => read,
                () = signal.changed() => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the health checks found the server not answering",
                )),
            },
            _ => self.reader.read_more().await,
        }
    }

    /// Whether an idle connection is still open: nothing may be waiting to be read on it,
    /// and the server must not have closed it.
    pub fn is_alive(&mut self) -> bool {
        self.reader.buffered().is_empty() && self.reader.get_mut().idle_and_open()
    }

    pub async fn connect(
        endpoint: &Endpoint,
        login: &BackendLogin,
        tls: &BackendTls,
        timeout: Duration,
    ) -> Result<Connected, BackendError> {
        tokio::time::timeout(timeout, Self::connect_inner(endpoint, login, tls))
            .await
            .map_err(|_| BackendError::Timeout(timeout))?
    }

    async fn connect_inner(
        endpoint: &Endpoint,
        login: &BackendLogin,
        tls: &BackendTls,
    ) -> Result<Connected, BackendError> {
        let connect_error = |source| BackendError::Connect {
            address: endpoint.address.clone(),
            source,
        };
        let mut stream = TcpStream::connect(&endpoint.address)
            .await
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;

        let (greeting_seq, handshake) = read_greeting(&mut stream).await?;
        let mut seq = greeting_seq.wrapping_add(1);
        let (read, write) = match &tls.connector {
            None => net::plain(stream),
            Some(connector) => {
                if !handshake
                    .capabilities()
                    .contains(CapabilityFlags::CLIENT_SSL)
                {
                    return Err(BackendError::Tls(format!(
                        "backend_tls.mode is {}, but the server does not offer TLS",
                        tls.mode.name()
                    )));
                }
                let server_name = crate::tls::server_name(&endpoint.address).ok_or_else(|| {
                    BackendError::Tls(format!("'{}' is not a valid server name", endpoint.address))
                })?;
                let mut request = Vec::with_capacity(36);
                seq = encode_packet(&mut request, seq, &backend_ssl_request(login));
                stream.write_all(&request).await?;
                let stream = connector
                    .connect(server_name, stream)
                    .await
                    .map_err(|e| BackendError::Tls(e.to_string()))?;
                net::tls(stream)
            }
        };
        let over_tls = read.is_tls();
        let mut reader = PacketReader::new(read);
        let mut writer = PacketWriter::new(write);
        let identity = ServerIdentity::from_greeting(&handshake);
        let missing = login.capabilities & relayable_capabilities() & !handshake.capabilities();
        // MariaDB clears CLIENT_LONG_PASSWORD ("CLIENT_MYSQL") to announce its extended
        // capabilities; the proxy asks for none of those, so the bit changes nothing.
        let missing = missing
            - (CapabilityFlags::CLIENT_CONNECT_WITH_DB
                | CapabilityFlags::CLIENT_CONNECT_ATTRS
                | CapabilityFlags::CLIENT_LONG_PASSWORD);
        if !missing.is_empty() {
            return Err(BackendError::Incompatible(format!(
                "the client negotiated {missing:?}, which this server lacks"
            )));
        }
        let mut nonce = handshake.nonce();
        let mut plugin = handshake
            .auth_plugin()
            .map(AuthPlugin::into_owned)
            .unwrap_or(AuthPlugin::MysqlNativePassword);
        // A server whose default method the proxy cannot use gets a native-password answer;
        // it then asks for the account's real method with an auth switch.
        let data = backend_auth_data(&plugin, &nonce, &login.password).unwrap_or_else(|| {
            plugin = AuthPlugin::MysqlNativePassword;
            backend_auth_data(&plugin, &nonce, &login.password).expect("native is supported")
        });
        let version = server_version(handshake.server_version_ref()).unwrap_or((5, 7, 0));
        let hello = backend_hello_payload(login, version, plugin.clone(), &data, over_tls);
        seq = writer.send(seq, &hello).await?;

        loop {
            let packet = reader.read_packet_seq(seq, MAX_HANDSHAKE_PACKET).await?;
            seq = packet.seq.wrapping_add(1);
            let payload = &packet.payload[..];
            match parse_login_reply(payload, &plugin)? {
                LoginReply::Ok => {
                    let conn = BackendConn {
                        name: endpoint.name.clone(),
                        reader,
                        writer,
                        capabilities: login.capabilities,
                        connection_id: handshake.connection_id(),
                        abandon: None,
                        counted: None,
                    };
                    return Ok(Connected {
                        conn,
                        identity,
                        ok_payload: payload.to_vec(),
                    });
                }
                LoginReply::Switch {
                    plugin: switched,
                    nonce: switched_nonce,
                } => {
                    plugin = switched;
                    nonce = switched_nonce;
                    let data =
                        backend_auth_data(&plugin, &nonce, &login.password).ok_or_else(|| {
                            BackendError::Incompatible(format!(
                                "authentication method {} is not supported",
                                String::from_utf8_lossy(plugin.as_bytes())
                            ))
                        })?;
                    seq = writer.send(seq, &data).await?;
                }
                LoginReply::FastAuthOk => {}
                // Over TLS the password itself, NUL-terminated.
                LoginReply::FullAuth if over_tls => {
                    let mut clear = login.password.as_bytes().to_vec();
                    clear.push(0);
                    seq = writer.send(seq, &clear).await?;
                }
                LoginReply::FullAuth => {
                    seq = writer.send(seq, &[0x02]).await?;
                    let key = reader.read_packet_seq(seq, MAX_HANDSHAKE_PACKET).await?;
                    seq = key.seq.wrapping_add(1);
                    let pem = key.payload.get(1..).unwrap_or_default();
                    let encrypted =
                        sha2_rsa_encrypt(&login.password, &nonce, pem).ok_or_else(|| {
                            BackendError::Incompatible(
                                "caching_sha2_password: unusable public key or nonce".into(),
                            )
                        })?;
                    seq = writer.send(seq, &encrypted).await?;
                }
            }
        }
    }

    /// Reads the greeting only: what the server is, without logging in.
    pub async fn probe(
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<ServerIdentity, BackendError> {
        let probe = async {
            let mut stream = TcpStream::connect(&endpoint.address)
                .await
                .map_err(|source| BackendError::Connect {
                    address: endpoint.address.clone(),
                    source,
                })?;
            let (_, handshake) = read_greeting(&mut stream).await?;
            Ok(ServerIdentity::from_greeting(&handshake))
        };
        tokio::time::timeout(timeout, probe)
            .await
            .map_err(|_| BackendError::Timeout(timeout))?
    }

    /// Sends a command packet (sequence id 0) without waiting for an answer.
    pub async fn send_command(&mut self, payload: &[u8]) -> std::io::Result<u8> {
        self.writer.send(0, payload).await
    }

    /// Tells the server the session ends; errors do not matter, the socket closes anyway.
    pub async fn quit(mut self) {
        let _ = self
            .writer
            .send(0, &[crate::protocol::codes::COM_QUIT])
            .await;
        let _ = self.writer.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn greeting_with_an_overflowing_scramble_length_is_refused() {
        // Found by fuzzing: auth-plugin-data length 0x85 with CLIENT_SECURE_CONNECTION set
        // made mysql_common's greeting parser overflow.
        let wire: &[u8] = b"\x3b\x00\x00\x20\x21\x00\x00\x2e\x01\x00\x2e\x2e\x2e\x2e\x2e\x2e\
            \x2e\x13\x00\x21\x8d\x00\x1a\x20\x59\x8e\x85\x00\x1d\x00\x00\x00\
            \x00\x00\x00\x00\x60\x60\x60\x60\x00\x00\x02\x20\x20\x20\x20\x20\
            \x89\x20\x20\x20\x20\x20\x2e\x2e\x13\x13\x20\x20\x20\x00\xf8\x64\
            \x64";
        let result = read_greeting(&mut &wire[..]).await;
        assert!(
            matches!(result, Err(BackendError::Incompatible(_))),
            "{:?}",
            result.err()
        );
    }

    #[test]
    fn login_replies() {
        let native = AuthPlugin::MysqlNativePassword;
        let sha2 = AuthPlugin::CachingSha2Password;
        assert_eq!(
            parse_login_reply(&[0, 0, 0, 2, 0], &native).unwrap(),
            LoginReply::Ok
        );
        let err = SqlError::access_denied("app", "h", true).to_payload();
        assert!(matches!(
            parse_login_reply(&err, &native),
            Err(BackendError::Refused(e)) if e.code == 1045
        ));
        let switch = parse_login_reply(b"\xfecaching_sha2_password\x00nonce\x00", &native);
        assert_eq!(
            switch.unwrap(),
            LoginReply::Switch {
                plugin: sha2.clone(),
                nonce: b"nonce".to_vec()
            }
        );
        assert_eq!(
            parse_login_reply(&[1, 3], &sha2).unwrap(),
            LoginReply::FastAuthOk
        );
        assert_eq!(
            parse_login_reply(&[1, 4], &sha2).unwrap(),
            LoginReply::FullAuth
        );
        for garbage in [&[1, 4][..], &[1, 9], &[], &[0x42]] {
            let plugin = if garbage == [1, 4] { &native } else { &sha2 };
            assert!(matches!(
                parse_login_reply(garbage, plugin),
                Err(BackendError::Incompatible(_))
            ));
        }
    }
}
