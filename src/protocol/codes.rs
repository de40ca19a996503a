//! Command bytes, status flags and the server errors the proxy itself originates.
//! Codes and SQL states are the ones MySQL and MariaDB servers use for the same condition
//! (MariaDB KB "MariaDB Error Codes"; MySQL "Server Error Message Reference").

pub const COM_SLEEP: u8 = 0x00;
pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_FIELD_LIST: u8 = 0x04;
pub const COM_REFRESH: u8 = 0x07;
pub const COM_STATISTICS: u8 = 0x09;
pub const COM_PROCESS_KILL: u8 = 0x0c;
pub const COM_DEBUG: u8 = 0x0d;
pub const COM_PING: u8 = 0x0e;
pub const COM_CHANGE_USER: u8 = 0x11;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;
pub const COM_STMT_RESET: u8 = 0x1a;
pub const COM_SET_OPTION: u8 = 0x1b;
pub const COM_STMT_FETCH: u8 = 0x1c;
pub const COM_RESET_CONNECTION: u8 = 0x1f;

pub const SERVER_STATUS_IN_TRANS: u16 = 0x0001;
pub const SERVER_STATUS_AUTOCOMMIT: u16 = 0x0002;
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
pub const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

/// A server error: code, SQL state, and the message the client will show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: u16,
    pub state: [u8; 5],
    pub message: String,
}

impl SqlError {
    pub fn new(code: u16, state: &[u8; 5], message: impl Into<String>) -> Self {
        Self {
            code,
            state: *state,
            message: message.into(),
        }
    }

    /// The ERR packet payload (protocol 4.1 form, with SQL state).
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.message.len());
        out.push(0xff);
        out.extend_from_slice(&self.code.to_le_bytes());
        out.push(b'#');
        out.extend_from_slice(&self.state);
        out.extend_from_slice(self.message.as_bytes());
        out
    }

    /// The ERR packet for a client that has not said it speaks protocol 4.1: sent in place
    /// of the greeting, before any capabilities are known, so without the SQL state marker
    /// (as a server refusing a connection sends it; clients would show `#08004` as part of
    /// the message otherwise).
    pub fn to_pre_handshake_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.message.len());
        out.push(0xff);
        out.extend_from_slice(&self.code.to_le_bytes());
        out.extend_from_slice(self.message.as_bytes());
        out
    }

    /// Parses an ERR packet payload; `None` if it is not one.
    pub fn from_payload(payload: &[u8]) -> Option<Self> {
        if payload.len() < 3 || payload[0] != 0xff {
            return None;
        }
        let code = u16::from_le_bytes([payload[1], payload[2]]);
        let rest = &payload[3..];
        let (state, message) = match rest {
            [b'#', s @ ..] if s.len() >= 5 => {
                let mut state = [0u8; 5];
                state.copy_from_slice(&s[..5]);
                (state, &s[5..])
            }
            _ => (*b"HY000", rest),
        };
        Some(Self {
            code,
            state,
            message: String::from_utf8_lossy(message).into_owned(),
        })
    }

    pub fn too_many_connections() -> Self {
        Self::new(1040, b"08004", "Too many connections")
    }

    /// ER_SERVER_SHUTDOWN, what a server answers while it shuts down.
    pub fn server_shutdown() -> Self {
        Self::new(1053, b"08S01", "Server shutdown in progress")
    }

    pub fn handshake(detail: &str) -> Self {
        Self::new(1043, b"08S01", format!("Bad handshake: {detail}"))
    }

    pub fn access_denied(user: &str, host: &str, using_password: bool) -> Self {
        let using = if using_password { "YES" } else { "NO" };
        Self::new(
            1045,
            b"28000",
            format!("Access denied for user '{user}'@'{host}' (using password: {using})"),
        )
    }

    /// MySQL's and MariaDB's answer to a plaintext login when TLS is required (MariaDB's
    /// SQL state: the connection is rejected).
    pub fn secure_transport_required() -> Self {
        Self::new(
            3159,
            b"08004",
            "Connections using insecure transport are prohibited while --require_secure_transport=ON.",
        )
    }

    /// ER_TOO_MANY_USER_CONNECTIONS: the user is at `proxy.max_user_connections`.
    pub fn too_many_user_connections(user: &str) -> Self {
        Self::new(
            1203,
            b"42000",
            format!("User {user} already has more than 'max_user_connections' active connections"),
        )
    }

    /// ER_USER_LIMIT_REACHED: the user is at the `max_connections` of its own entry.
    pub fn user_limit_reached(user: &str, limit: usize) -> Self {
        Self::new(
            1226,
            b"42000",
            format!(
                "User '{user}' has exceeded the 'max_user_connections' resource (current value: {limit})"
            ),
        )
    }

    /// ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8.0.24+), sent before an idle session is closed.
    pub fn idle_timeout(after: std::time::Duration) -> Self {
        Self::new(
            4031,
            b"HY000",
            format!(
                "The client was disconnected by the server because of inactivity \
                 (idle for {}s; see idle_timeout)",
                after.as_secs()
            ),
        )
    }

    pub fn unknown_command(command: u8) -> Self {
        Self::new(1047, b"08S01", format!("Unknown command 0x{command:02x}"))
    }

    /// ER_UNKNOWN_STMT_HANDLER: a statement id the client never prepared (or closed).
    pub fn unknown_statement(id: u32, command: &str) -> Self {
        Self::new(
            1243,
            b"HY000",
            format!("Unknown prepared statement handler ({id}) given to {command}"),
        )
    }

    /// ER_STMT_HAS_NO_OPEN_CURSOR.
    pub fn no_open_cursor(id: u32) -> Self {
        Self::new(
            1421,
            b"HY000",
            format!("The statement ({id}) has no open cursor."),
        )
    }

    /// No replica can serve a read and the configuration forbids using the primary.
    pub fn no_replica() -> Self {
        Self::new(
            1105,
            b"HY000",
            "No replica is available for reads, and fallback_to_primary is off",
        )
    }

    pub fn shutdown() -> Self {
        Self::new(1053, b"08S01", "Server shutdown in progress")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(1105, b"HY000", message)
    }

    pub fn packet_too_large(max: usize) -> Self {
        Self::new(
            1153,
            b"08S01",
            format!("Got a packet bigger than 'max_allowed_packet' bytes ({max})"),
        )
    }

    pub fn packets_out_of_order() -> Self {
        Self::new(1156, b"08S01", "Got packets out of order")
    }

    pub fn malformed_packet(detail: &str) -> Self {
        Self::new(
            1835,
            b"HY000",
            format!("Malformed communication packet: {detail}"),
        )
    }

    /// The primary (or another backend) refused or did not answer the connection.
    /// 2003 is the code clients report for "can't connect"; a driver treats it the same way.
    pub fn backend_unreachable(name: &str, detail: &str) -> Self {
        Self::new(
            2003,
            b"HY000",
            format!("Can't connect to backend {name}: {detail}"),
        )
    }

    /// The backend connection broke while a command was running (clients know this as 2013).
    /// A statement for the primary while it cannot be reached: ER_CONNECT_TO_FOREIGN_DATA_SOURCE,
    /// a server code. Client-range codes (2003) in an ERR packet are taken for a broken
    /// packet by Connector/C in the prepared-statement protocol (it reports 2027).
    pub fn primary_unavailable(name: &str, address: &str, detail: &str) -> Self {
        Self::new(
            1429,
            b"HY000",
            format!(
                "Can't connect to the primary {name} ({address}): {detail}; writes fail until it is back"
            ),
        )
    }

    /// The primary's connection went away with state the session cannot get back.
    pub fn primary_lost(name: &str, held: &str) -> Self {
        Self::new(
            2013,
            b"HY000",
            format!("Lost connection to the primary {name}; the session's {held} is gone"),
        )
    }

    /// ER_OPTION_PREVENTS_STATEMENT, said by the proxy: the server named as the primary is
    /// read-only, so a write would fail there anyway, with an error that blames the option.
    pub fn primary_read_only(name: &str) -> Self {
        Self::new(
            1290,
            b"HY000",
            format!(
                "The primary {name} is read-only (@@read_only = 1), so it cannot execute this \
                 statement; check which server is the primary"
            ),
        )
    }

    /// A replica failed after part of a read's answer reached the client; the session goes
    /// on. ER_QUERY_INTERRUPTED: a server code, for the reason `primary_unavailable` gives.
    pub fn replica_lost(name: &str) -> Self {
        Self::new(
            1317,
            b"70100",
            format!("Query execution was interrupted: lost connection to replica {name}"),
        )
    }

    pub fn backend_lost(name: &str) -> Self {
        Self::new(
            2013,
            b"HY000",
            format!("Lost connection to backend {name} during query"),
        )
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code,
            String::from_utf8_lossy(&self.state),
            self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_payload_round_trips() {
        let err = SqlError::access_denied("app", "10.0.0.7", true);
        let payload = err.to_payload();
        assert_eq!(&payload[..3], &[0xff, 0x15, 0x04], "1045 little-endian");
        assert_eq!(&payload[3..9], b"#28000");
        assert_eq!(SqlError::from_payload(&payload), Some(err));
    }

    #[test]
    fn non_err_payload_is_rejected() {
        assert_eq!(SqlError::from_payload(&[0x00, 0, 0, 2, 0, 0, 0]), None);
        assert_eq!(SqlError::from_payload(&[0xff]), None);
    }
}
