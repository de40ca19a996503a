//! COM_CHANGE_USER as a client sends it (MySQL Internals, "COM_CHANGE_USER"). `mysql_common`
//! can build this packet but offers no accessors for a parsed one.

use std::collections::HashMap;

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;

/// The fields of a COM_CHANGE_USER, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeUser {
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub collation: Option<u8>,
    pub auth_plugin: Option<String>,
    pub connect_attributes: Option<HashMap<String, String>>,
}

impl ChangeUser {
    /// Parses the payload (command byte included); `None` if it is malformed.
    pub fn parse(payload: &[u8], capabilities: CapabilityFlags) -> Option<Self> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut buf = ParseBuf(payload.get(1..)?);
        let user = text(null_terminated(&mut buf)?);
        let auth_response = if capabilities.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
            buf.checked_eat_u8_str()?.to_vec()
        } else {
            null_terminated(&mut buf)?.to_vec()
        };
        let database = Some(text(null_terminated(&mut buf)?)).filter(|d| !d.is_empty());
        let mut change = ChangeUser {
            user,
            auth_response,
            database,
            collation: None,
            auth_plugin: None,
            connect_attributes: None,
        };
        if buf.is_empty() {
            return Some(change);
        }
        let charset = buf.checked_eat(2)?;
        // Collation ids above 255 cannot be expressed in the handshake response; they are
        // set with SET NAMES by clients that use them.
        change.collation = u8::try_from(u16::from_le_bytes([charset[0], charset[1]])).ok();
        if capabilities.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) && !buf.is_empty() {
            change.auth_plugin = Some(text(null_terminated(&mut buf)?));
        }
        if capabilities.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS) && !buf.is_empty() {
            let mut attrs_buf = ParseBuf(buf.checked_eat_lenenc_str()?);
            let mut attrs = HashMap::new();
            while !attrs_buf.is_empty() {
                let key = text(attrs_buf.checked_eat_lenenc_str()?);
                let value = text(attrs_buf.checked_eat_lenenc_str()?);
                attrs.insert(key, value);
            }
            change.connect_attributes = Some(attrs);
        }
        Some(change)
    }
}

fn null_terminated<'a>(buf: &mut ParseBuf<'a>) -> Option<&'a [u8]> {
    let at = buf.0.iter().position(|&b| b == 0)?;
    let value = buf.eat(at);
    buf.skip(1);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::packets::{AuthPlugin, ComChangeUser, ComChangeUserMoreData};
    use mysql_common::proto::MySerialize;

    fn caps() -> CapabilityFlags {
        crate::protocol::handshake::relayable_capabilities()
    }

    #[test]
    fn parses_what_mysql_common_builds() {
        let attrs = HashMap::from([("_client_name".to_owned(), "test".to_owned())]);
        let packet = ComChangeUser::new()
            .with_user(Some(&b"report"[..]))
            .with_auth_plugin_data(Some(&[9u8; 20][..]))
            .with_database(Some(&b"shop"[..]))
            .with_more_data(Some(
                ComChangeUserMoreData::new(8)
                    .with_auth_plugin(Some(AuthPlugin::MysqlNativePassword))
                    .with_connect_attributes(Some(attrs.clone())),
            ));
        let mut payload = Vec::new();
        packet.serialize(&mut payload);
        let parsed = ChangeUser::parse(&payload, caps()).unwrap();
        assert_eq!(parsed.user, "report");
        assert_eq!(parsed.auth_response, vec![9u8; 20]);
        assert_eq!(parsed.database.as_deref(), Some("shop"));
        assert_eq!(parsed.collation, Some(8));
        assert_eq!(parsed.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(parsed.connect_attributes, Some(attrs));
    }

    #[test]
    fn minimal_and_truncated_packets() {
        let minimal = b"\x11app\x00\x00\x00";
        let parsed = ChangeUser::parse(minimal, caps()).unwrap();
        assert_eq!((parsed.user.as_str(), parsed.database), ("app", None));
        assert!(parsed.auth_response.is_empty());
        for cut in 1..minimal.len() {
            assert_eq!(
                ChangeUser::parse(&minimal[..cut], caps()),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(ChangeUser::parse(b"\x11app\x00\x14short\x00", caps()), None);
        assert_eq!(ChangeUser::parse(b"", caps()), None);
    }
}
