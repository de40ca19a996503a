//! The MySQL client/server wire format, and nothing else: framing, command and error codes,
//! the connection-phase packets, and where a server's response to a command ends.
//! Built on `mysql_common` for the structured packets; the relay itself never decodes rows.

pub mod codes;
pub mod handshake;
pub mod packet;
pub mod response;
