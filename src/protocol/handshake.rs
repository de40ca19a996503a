//! The connection phase, from both sides: the greeting the proxy sends its clients and the
//! response it parses from them, and the response it sends a backend after that backend's
//! greeting (MySQL Internals, "Connection Phase"). Structures come from `mysql_common`.

use std::collections::HashMap;

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse, SslRequest};
use mysql_common::proto::{MyDeserialize, MySerialize};
use rand::Rng;

use super::response::ok_status;

pub const NATIVE_PASSWORD: &str = "mysql_native_password";
pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";

/// The capabilities the relay can carry unchanged. Left out on purpose: compression and TLS
/// (they change the framing), query attributes and optional result-set metadata (they change
/// the COM_QUERY and result-set formats), and MariaDB's extended capabilities, which servers
/// use only when CLIENT_LONG_PASSWORD ("CLIENT_MYSQL") is clear — it is always set here.
pub fn relayable_capabilities() -> CapabilityFlags {
    use CapabilityFlags as C;
    C::CLIENT_LONG_PASSWORD
        | C::CLIENT_FOUND_ROWS
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_CONNECT_WITH_DB
        | C::CLIENT_NO_SCHEMA
        | C::CLIENT_ODBC
        | C::CLIENT_LOCAL_FILES
        | C::CLIENT_IGNORE_SPACE
        | C::CLIENT_PROTOCOL_41
        | C::CLIENT_INTERACTIVE
        | C::CLIENT_IGNORE_SIGPIPE
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_RESERVED
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_CONNECT_ATTRS
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | C::CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
        | C::CLIENT_SESSION_TRACK
        | C::CLIENT_DEPRECATE_EOF
}

/// What the proxy tells clients about "the server": taken from a real backend's greeting, so
/// that drivers detect MariaDB vs MySQL and their features exactly as they would directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    pub version: Vec<u8>,
    pub capabilities: CapabilityFlags,
    pub collation: u8,
}

impl ServerIdentity {
    pub fn from_greeting(greeting: &HandshakePacket<'_>) -> Self {
        Self {
            version: greeting.server_version_ref().to_vec(),
            capabilities: greeting.capabilities() & relayable_capabilities(),
            collation: greeting.default_collation(),
        }
    }

    /// Used only until the first backend greeting is seen: a MariaDB 10.11 look-alike.
    pub fn fallback() -> Self {
        Self {
            version: b"5.5.5-10.11.0-MariaDB-rwsplit".to_vec(),
            capabilities: relayable_capabilities(),
            collation: 45, // utf8mb4_general_ci
        }
    }
}

/// The `major.minor.patch` a server version string starts with (`8.0.36`, `5.5.5-10.11.6-MariaDB`
/// gives 5.5.5, as the server means it to; at most 2, 2 and 3 digits). `HandshakePacket::server_version_parsed` does the
/// same with a regex whose `\d` also matches non-ASCII digits, and then panics converting
/// them; a server's greeting must not be able to do that.
pub fn server_version(version: &[u8]) -> Option<(u16, u16, u16)> {
    let mut parts = [0u16; 3];
    let mut rest = version;
    for (i, (part, max_digits)) in parts.iter_mut().zip([2, 2, 3]).enumerate() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        // The patch level is its first digits; what follows is free text (`8.0.36-log`).
        let digits = if i == 2 {
            digits.min(max_digits)
        } else {
            digits
        };
        if digits == 0 || digits > max_digits {
            return None;
        }
        *part = rest[..digits]
            .iter()
            .fold(0, |n, d| n * 10 + u16::from(d - b'0'));
        rest = &rest[digits..];
        if i < 2 {
            rest = rest.strip_prefix(b".")?;
        }
    }
    Some((parts[0], parts[1], parts[2]))
}

/// A 20-byte scramble for one connection: random bytes in 1..=127 without NUL (the second part
/// is NUL-terminated on the wire) and without '$' (MySQL's own generator avoids it too).
pub fn new_scramble() -> [u8; 20] {
    let mut rng = rand::rng();
    std::array::from_fn(|_| {
        loop {
            let b: u8 = rng.random_range(1..=127);
            if b != b'$' {
                break b;
            }
        }
    })
}

/// The initial handshake packet (protocol version 10) the proxy greets clients with.
pub fn greeting_payload(
    identity: &ServerIdentity,
    connection_id: u32,
    scramble: &[u8; 20],
    auth_plugin: &str,
) -> Vec<u8> {
    let mut scramble_2 = scramble[8..].to_vec();
    scramble_2.push(0);
    let packet = HandshakePacket::new(
        10,
        identity.version.as_slice(),
        connection_id,
        scramble[..8].try_into().expect("8 bytes"),
        Some(scramble_2),
        identity.capabilities,
        identity.collation,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(auth_plugin.as_bytes()),
    );
    let mut out = Vec::with_capacity(96);
    packet.serialize(&mut out);
    out
}

/// A client's handshake response, owned.
#[derive(Debug, Clone)]
pub struct ClientHello {
    pub capabilities: CapabilityFlags,
    pub max_packet_size: u32,
    pub collation: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    pub connect_attributes: Option<HashMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("client does not speak protocol 4.1")]
    OldProtocol,
    #[error("client asked for TLS, which is not enabled")]
    TlsRequested,
    #[error("malformed handshake response: {0}")]
    Malformed(String),
}

/// An SSLRequest is the first 32 bytes of a handshake response and nothing more, with
/// CLIENT_SSL set (MySQL Internals, "Protocol::SSLRequest").
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == 32
        && CapabilityFlags::from_bits_truncate(u32::from_le_bytes(
            payload[..4].try_into().expect("4 bytes"),
        ))
        .contains(CapabilityFlags::CLIENT_SSL | CapabilityFlags::CLIENT_PROTOCOL_41)
}

/// The SSL request the proxy sends a backend before switching to TLS: the handshake
/// response's fixed part, with the capabilities it will log in with.
pub fn backend_ssl_request(login: &BackendLogin) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    SslRequest::new(
        login.capabilities | CapabilityFlags::CLIENT_SSL,
        login.max_packet_size,
        login.collation,
    )
    .serialize(&mut out);
    out
}

pub fn parse_client_hello(payload: &[u8]) -> Result<ClientHello, HelloError> {
    if payload.len() < 4 {
        return Err(HelloError::Malformed("too short".into()));
    }
    let flags = CapabilityFlags::from_bits_truncate(u32::from_le_bytes(
        payload[..4].try_into().expect("4 bytes"),
    ));
    if !flags.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(HelloError::OldProtocol);
    }
    if is_ssl_request(payload) {
        return Err(HelloError::TlsRequested);
    }
    let hello = HandshakeResponse::deserialize((), &mut ParseBuf(payload))
        .map_err(|e| HelloError::Malformed(e.to_string()))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(ClientHello {
        capabilities: hello.capabilities(),
        max_packet_size: u32::from_le_bytes(payload[4..8].try_into().expect("4 bytes")),
        collation: hello.collation(),
        user: text(hello.user()),
        auth_response: hello.scramble_buf().to_vec(),
        database: hello.db_name().map(text).filter(|d| !d.is_empty()),
        auth_plugin: hello.auth_plugin().map(|p| text(p.as_bytes())),
        connect_attributes: hello.connect_attributes(),
    })
}

/// Everything the proxy needs to log a client in to a backend in that client's name.
#[derive(Clone)]
pub struct BackendLogin {
    pub user: String,
    pub password: String,
    pub database: Option<String>,
    /// The capabilities negotiated with the client; the backend gets the same, so that every
    /// relayed packet has the format the client expects.
    pub capabilities: CapabilityFlags,
    pub collation: u8,
    pub max_packet_size: u32,
    pub connect_attributes: Option<HashMap<String, String>>,
}

impl std::fmt::Debug for BackendLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendLogin")
            .field("user", &self.user)
            .field("database", &self.database)
            .field("capabilities", &self.capabilities)
            .field("collation", &self.collation)
            .finish_non_exhaustive()
    }
}

/// The handshake response the proxy sends a backend.
pub fn backend_hello_payload(
    login: &BackendLogin,
    server_version: (u16, u16, u16),
    plugin: AuthPlugin<'_>,
    auth_data: &[u8],
    over_tls: bool,
) -> Vec<u8> {
    let response = HandshakeResponse::new(
        Some(auth_data),
        server_version,
        Some(login.user.as_bytes()),
        login.database.as_deref().map(str::as_bytes),
        Some(plugin),
        if over_tls {
            login.capabilities | CapabilityFlags::CLIENT_SSL
        } else {
            login.capabilities
        },
        login.connect_attributes.clone(),
        login.max_packet_size,
    );
    let mut out = Vec::with_capacity(128);
    response.serialize(&mut out);
    // HandshakeResponse::new always writes utf8mb4_general_ci; the client's own collation is
    // what `SET NAMES` state on the backend must start from. Offset: flags (4), max packet (4).
    out[8] = login.collation;
    out
}

/// An OK packet payload (protocol 4.1): no rows affected, the given status flags.
pub fn ok_payload(status_flags: u16) -> Vec<u8> {
    let mut out = vec![0x00, 0x00, 0x00];
    out.extend_from_slice(&status_flags.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// Status flags of an OK packet payload, if it is one.
pub fn ok_status_flags(payload: &[u8]) -> Option<u16> {
    if payload.first() != Some(&0x00) {
        return None;
    }
    ok_status(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrambles_are_fresh_and_safe_on_the_wire() {
        let a = new_scramble();
        let b = new_scramble();
        assert_ne!(a, b);
        assert!(a.iter().all(|&c| (1..=127).contains(&c) && c != b'$'));
    }

    #[test]
    fn greeting_parses_back_with_the_same_fields() {
        let identity = ServerIdentity::fallback();
        let scramble = new_scramble();
        let payload = greeting_payload(&identity, 42, &scramble, NATIVE_PASSWORD);
        let parsed = HandshakePacket::deserialize((), &mut ParseBuf(&payload)).unwrap();
        assert_eq!(parsed.connection_id(), 42);
        assert_eq!(parsed.nonce(), scramble.to_vec());
        assert_eq!(parsed.capabilities(), identity.capabilities);
        assert_eq!(
            parsed.auth_plugin_name_ref(),
            Some(NATIVE_PASSWORD.as_bytes())
        );
        assert_eq!(parsed.server_version_ref(), identity.version.as_slice());
    }

    #[test]
    fn backend_hello_keeps_client_collation_and_parses_back() {
        let login = BackendLogin {
            user: "app".into(),
            password: "secret".into(),
            database: Some("shop".into()),
            capabilities: relayable_capabilities(),
            collation: 8, // latin1_swedish_ci
            max_packet_size: 1 << 24,
            connect_attributes: Some(HashMap::from([("_client_name".into(), "x".into())])),
        };
        let payload = backend_hello_payload(
            &login,
            (10, 11, 0),
            AuthPlugin::MysqlNativePassword,
            &[7; 20],
            false,
        );
        let hello = parse_client_hello(&payload).unwrap();
        assert_eq!(hello.collation, 8);
        assert_eq!(hello.user, "app");
        assert_eq!(hello.database.as_deref(), Some("shop"));
        assert_eq!(hello.auth_response, vec![7; 20]);
        assert_eq!(hello.auth_plugin.as_deref(), Some(NATIVE_PASSWORD));
        assert!(!hello.capabilities.contains(CapabilityFlags::CLIENT_SSL));

        // Over TLS the request before the switch is the response's first 32 bytes.
        let request = backend_ssl_request(&login);
        assert!(is_ssl_request(&request));
        let after = backend_hello_payload(
            &login,
            (10, 11, 0),
            AuthPlugin::MysqlNativePassword,
            &[7; 20],
            true,
        );
        assert_eq!(&after[..32], &request[..]);
        assert!(!is_ssl_request(&after));
        let hello = parse_client_hello(&after).unwrap();
        assert!(hello.capabilities.contains(CapabilityFlags::CLIENT_SSL));
        assert_eq!(hello.connect_attributes.unwrap()["_client_name"], "x");
    }

    #[test]
    fn malformed_hellos_are_errors() {
        assert!(matches!(
            parse_client_hello(&[1, 2]),
            Err(HelloError::Malformed(_))
        ));
        assert!(matches!(
            parse_client_hello(&[0; 40]),
            Err(HelloError::OldProtocol)
        ));
        let mut ssl = vec![0u8; 32];
        ssl[..4].copy_from_slice(
            &(CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SSL)
                .bits()
                .to_le_bytes(),
        );
        assert!(matches!(
            parse_client_hello(&ssl),
            Err(HelloError::TlsRequested)
        ));
        // Protocol 4.1 flags, then a truncated body.
        let mut short = relayable_capabilities().bits().to_le_bytes().to_vec();
        short.extend_from_slice(&[0; 10]);
        assert!(matches!(
            parse_client_hello(&short),
            Err(HelloError::Malformed(_))
        ));
    }

    #[test]
    fn server_versions() {
        assert_eq!(server_version(b"8.0.36"), Some((8, 0, 36)));
        assert_eq!(
            server_version(b"5.5.5-10.11.6-MariaDB-log"),
            Some((5, 5, 5))
        );
        assert_eq!(server_version(b"10.11.123x"), Some((10, 11, 123)));
        assert_eq!(server_version(b"8.0"), None);
        assert_eq!(server_version(b"123.0.1"), None);
        assert_eq!(server_version(b"8.0.1234"), Some((8, 0, 123)));
        assert_eq!(server_version(b""), None);
        // Found by fuzzing: U+06F9 (an Arabic-Indic nine) after "9.00.9" made mysql_common's
        // parser panic.
        assert_eq!(
            server_version("9.00.9\u{6f9} 9".as_bytes()),
            Some((9, 0, 9))
        );
        assert_eq!(server_version("\u{6f9}.0.1".as_bytes()), None);
    }

    #[test]
    fn ok_packets() {
        let ok = ok_payload(0x0002);
        assert_eq!(ok_status_flags(&ok), Some(2));
        assert_eq!(ok_status_flags(&[0xff, 0, 0]), None);
        assert_eq!(ok_status_flags(&[0x00, 0xfc]), None);
    }
}
