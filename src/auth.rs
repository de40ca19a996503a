//! Password checks, both ways. The proxy knows every user's password (from its config), so it
//! verifies a client's scramble by computing the expected one, and logs in to backends with
//! the same password. Formulas come from `mysql_common::scramble`; comparisons are constant
//! time so a client cannot learn a scramble byte by byte from response timing.

use mysql_common::packets::AuthPlugin;
use mysql_common::scramble::{scramble_native, scramble_sha256};

use crate::protocol::handshake::{CACHING_SHA2_PASSWORD, NATIVE_PASSWORD};

/// The authentication methods the proxy offers its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendPlugin {
    NativePassword,
    CachingSha2Password,
}

impl FrontendPlugin {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            NATIVE_PASSWORD => Some(Self::NativePassword),
            CACHING_SHA2_PASSWORD => Some(Self::CachingSha2Password),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::NativePassword => NATIVE_PASSWORD,
            Self::CachingSha2Password => CACHING_SHA2_PASSWORD,
        }
    }

    /// Checks a client's auth response against the password. An empty password is answered
    /// with an empty response by both plugins.
    pub fn verify(self, nonce: &[u8], password: &str, response: &[u8]) -> bool {
        let expected: Option<Vec<u8>> = match self {
            Self::NativePassword => scramble_native(nonce, password.as_bytes()).map(Vec::from),
            Self::CachingSha2Password => scramble_sha256(nonce, password.as_bytes()).map(Vec::from),
        };
        match expected {
            None => response.is_empty(),
            Some(expected) => constant_time_eq(&expected, response),
        }
    }
}

/// Equal-length inputs take the same time whatever their content.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first auth response for a backend's chosen plugin, or `None` if the proxy cannot log
/// in with that plugin.
pub fn backend_auth_data(plugin: &AuthPlugin<'_>, nonce: &[u8], password: &str) -> Option<Vec<u8>> {
    match plugin {
        AuthPlugin::MysqlNativePassword => Some(
            scramble_native(nonce, password.as_bytes())
                .map(Vec::from)
                .unwrap_or_default(),
        ),
        AuthPlugin::CachingSha2Password => Some(
            scramble_sha256(nonce, password.as_bytes())
                .map(Vec::from)
                .unwrap_or_default(),
        ),
        // Only ever requested over TLS or a socket by a server, so the cleartext is expected.
        AuthPlugin::MysqlClearPassword => {
            let mut pass = password.as_bytes().to_vec();
            pass.push(0);
            Some(pass)
        }
        _ => None,
    }
}

/// caching_sha2_password's full authentication without TLS: the password, NUL-terminated,
/// XORed with the nonce and encrypted with the server's RSA public key (OAEP).
pub fn sha2_rsa_encrypt(password: &str, nonce: &[u8], public_key_pem: &[u8]) -> Vec<u8> {
    let mut pass = password.as_bytes().to_vec();
    pass.push(0);
    for (i, byte) in pass.iter_mut().enumerate() {
        *byte ^= nonce[i % nonce.len()];
    }
    mysql_common::crypto::encrypt(&pass, public_key_pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &[u8; 20] = b"abcdefghijklmnopqrst";

    #[test]
    fn native_password_verification() {
        let good = scramble_native(NONCE, b"secret").unwrap();
        let plugin = FrontendPlugin::NativePassword;
        assert!(plugin.verify(NONCE, "secret", &good));
        assert!(!plugin.verify(NONCE, "Secret", &good));
        assert!(!plugin.verify(NONCE, "secret", &good[..19]));
        assert!(!plugin.verify(NONCE, "secret", b""));
        assert!(plugin.verify(NONCE, "", b""));
        assert!(!plugin.verify(NONCE, "", &good));
    }

    #[test]
    fn caching_sha2_verification() {
        let good = scramble_sha256(NONCE, b"secret").unwrap();
        let plugin = FrontendPlugin::CachingSha2Password;
        assert!(plugin.verify(NONCE, "secret", &good));
        assert!(!plugin.verify(NONCE, "secret", &scramble_native(NONCE, b"secret").unwrap()));
        assert!(!plugin.verify(b"another nonce 20 byt", "secret", &good));
    }

    #[test]
    fn backend_plugins() {
        let native = backend_auth_data(&AuthPlugin::MysqlNativePassword, NONCE, "pw").unwrap();
        assert_eq!(native, scramble_native(NONCE, b"pw").unwrap());
        let sha2 = backend_auth_data(&AuthPlugin::CachingSha2Password, NONCE, "pw").unwrap();
        assert_eq!(sha2.len(), 32);
        assert_eq!(
            backend_auth_data(&AuthPlugin::MysqlNativePassword, NONCE, ""),
            Some(vec![])
        );
        assert_eq!(backend_auth_data(&AuthPlugin::Ed25519, NONCE, "pw"), None);
    }
}
