//! Password checks, both ways. The proxy knows every user's password (from its config), so it
//! verifies a client's scramble by computing the expected one, and logs in to backends with
//! the same password. Formulas come from `mysql_common::scramble`; comparisons are constant
//! time so a client cannot learn a scramble byte by byte from response timing.

use base64::Engine;
use mysql_common::crypto::rsa::{GetRandom, Pkcs1OaepPadding, PublicKey};
use mysql_common::num_bigint::BigUint;
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
/// XORed with the nonce and encrypted with the server's RSA public key (OAEP). `None` when
/// the nonce is empty or the key unusable: the server's bytes are checked here because
/// `mysql_common::crypto` panics on a malformed key or one too short for the password.
pub fn sha2_rsa_encrypt(password: &str, nonce: &[u8], public_key_pem: &[u8]) -> Option<Vec<u8>> {
    if nonce.is_empty() {
        return None;
    }
    let mut pass = password.as_bytes().to_vec();
    pass.push(0);
    for (i, byte) in pass.iter_mut().enumerate() {
        *byte ^= nonce[i % nonce.len()];
    }
    let key = rsa_public_key(public_key_pem)?;
    // OAEP with SHA-1 takes 2 * 20 + 2 bytes of the block (RFC 8017, 7.1.1).
    if pass.len() + 42 > key.num_octets() {
        return None;
    }
    Some(key.encrypt_block(&pass, Pkcs1OaepPadding::new(GetRandom)))
}

/// The RSA public key of a PEM block as servers send it: PKCS#1 (`RSA PUBLIC KEY`) or
/// SubjectPublicKeyInfo (`PUBLIC KEY`, RFC 5280 4.1), DER inside (RFC 8017, A.1.1). The
/// modulus is bounded so that a server cannot make the proxy compute for minutes; MySQL's
/// keys are 2048 bits with exponent 65537.
fn rsa_public_key(pem: &[u8]) -> Option<PublicKey> {
    let (body, pkcs1) = match pem_body(pem, b"RSA PUBLIC KEY") {
        Some(body) => (body, true),
        None => (pem_body(pem, b"PUBLIC KEY")?, false),
    };
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let (mut key, _) = der_item(&der, DER_SEQUENCE)?;
    if !pkcs1 {
        // The algorithm, then the PKCS#1 key in a BIT STRING with no unused bits.
        let (_, rest) = der_item(key, DER_SEQUENCE)?;
        let (bits, _) = der_item(rest, DER_BIT_STRING)?;
        let (0, inner) = bits.split_first()? else {
            return None;
        };
        key = der_item(inner, DER_SEQUENCE)?.0;
    }
    let (modulus, rest) = der_item(key, DER_INTEGER)?;
    let (exponent, _) = der_item(rest, DER_INTEGER)?;
    let modulus = BigUint::from_bytes_be(modulus);
    let exponent = BigUint::from_bytes_be(exponent);
    (modulus.bits() <= 16384 && exponent.bits() <= 64).then(|| PublicKey::new(modulus, exponent))
}

const DER_INTEGER: u8 = 0x02;
const DER_BIT_STRING: u8 = 0x03;
const DER_SEQUENCE: u8 = 0x30;

/// The text between `-----BEGIN <label>-----` and `-----END <label>-----`.
fn pem_body<'a>(pem: &'a [u8], label: &[u8]) -> Option<&'a [u8]> {
    let find = |haystack: &[u8], needle: &[u8]| {
        haystack
            .windows(needle.len())
            .position(|window| window == needle)
    };
    let begin = [b"-----BEGIN ", label, b"-----"].concat();
    let end = [b"-----END ", label, b"-----"].concat();
    let start = find(pem, &begin)? + begin.len();
    let len = find(&pem[start..], &end)?;
    Some(&pem[start..start + len])
}

/// One DER item with the given tag at the start of `der`: (its content, what follows).
fn der_item(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = der.split_first()?;
    let (&first_len, mut rest) = rest.split_first()?;
    if found != tag {
        return None;
    }
    let len = if first_len < 0x80 {
        first_len as usize
    } else {
        // The long form: the low bits count the length's bytes.
        let width = (first_len & 0x7f) as usize;
        if width == 0 || width > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(width)?;
        rest = after;
        bytes.iter().fold(0usize, |n, &b| n << 8 | b as usize)
    };
    rest.split_at_checked(len)
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

    /// A 2048-bit key as `openssl rsa -pubout` writes it, and the same key in PKCS#1.
    const KEY_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxgZMs9tel8JG3+uQCXap
FJAbA22n188z/sAlf14GRHGCc4tIm/EGqIOxkYGtZNoc2229YeIi/aSA3xFYjKAo
AziyrmS26erJ3rkzEU80JhWR69zDk6Hkgt5H130qX2+NnDrX7u06HfIcEQBsxq7y
jsAcMHusbrSXiw2TFNKwYK129sRe1woI+B0prkTpgfzWywInw1QdN9CrWPeK09X0
bzt1Xyf6tisr5x8fzkufZ6nXXkVXb3/4di5i/vv1UM0VDjOfcdSyytlFGyKVL059
ziXmk7B9BKyA/JCdi0Kr06EGn0XmiLvIjfzlw7OcM+W+fO5aGM/FlzO2WGwScOo2
2QIDAQAB
-----END PUBLIC KEY-----
";
    const KEY_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAxgZMs9tel8JG3+uQCXapFJAbA22n188z/sAlf14GRHGCc4tIm/EG
qIOxkYGtZNoc2229YeIi/aSA3xFYjKAoAziyrmS26erJ3rkzEU80JhWR69zDk6Hk
gt5H130qX2+NnDrX7u06HfIcEQBsxq7yjsAcMHusbrSXiw2TFNKwYK129sRe1woI
+B0prkTpgfzWywInw1QdN9CrWPeK09X0bzt1Xyf6tisr5x8fzkufZ6nXXkVXb3/4
di5i/vv1UM0VDjOfcdSyytlFGyKVL059ziXmk7B9BKyA/JCdi0Kr06EGn0XmiLvI
jfzlw7OcM+W+fO5aGM/FlzO2WGwScOo22QIDAQAB
-----END RSA PUBLIC KEY-----
";

    #[test]
    fn rsa_keys_in_both_formats() {
        let spki = rsa_public_key(KEY_SPKI.as_bytes()).expect("SubjectPublicKeyInfo");
        let pkcs1 = rsa_public_key(KEY_PKCS1.as_bytes()).expect("PKCS#1");
        assert_eq!(spki.modulus(), pkcs1.modulus());
        assert_eq!(spki.exponent(), &BigUint::from(65537u32));
        let encrypted = sha2_rsa_encrypt("secret", NONCE, KEY_SPKI.as_bytes()).unwrap();
        assert_eq!(encrypted.len(), 256);
    }

    #[test]
    fn unusable_keys_and_nonces_are_refused_not_a_panic() {
        // Each of these made mysql_common::crypto panic (found by fuzzing backend logins).
        let key = KEY_SPKI.as_bytes();
        assert_eq!(sha2_rsa_encrypt("secret", b"", key), None, "empty nonce");
        assert_eq!(sha2_rsa_encrypt("secret", NONCE, b"not a key"), None);
        let truncated = KEY_SPKI.replace("2QIDAQAB\n", "");
        assert_eq!(
            sha2_rsa_encrypt("secret", NONCE, truncated.as_bytes()),
            None
        );
        let not_base64 = KEY_SPKI.replace("MIIB", "M*IB");
        assert_eq!(
            sha2_rsa_encrypt("secret", NONCE, not_base64.as_bytes()),
            None
        );
        let empty = "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----";
        assert_eq!(sha2_rsa_encrypt("secret", NONCE, empty.as_bytes()), None);
        // A 2048-bit key holds 256 - 42 bytes of OAEP message.
        let long = "x".repeat(256 - 42);
        assert_eq!(sha2_rsa_encrypt(&long, NONCE, key), None);
        assert!(sha2_rsa_encrypt(&long[1..], NONCE, key).is_some());
    }
}
