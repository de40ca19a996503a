//! The MySQL client/server wire format, and nothing else: framing, command and error codes,
//! the connection-phase packets (COM_CHANGE_USER's included), the layout of the COM_STMT_*
//! commands, and where a server's response to a command ends. Built on `mysql_common` for
//! the structured packets; the relay itself never decodes rows.

pub mod change_user;
pub mod codes;
pub mod handshake;
pub mod packet;
pub mod response;
pub mod statement;
