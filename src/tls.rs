//! TLS on both sides, with rustls (ring). Clients: the proxy's certificate and key from PEM
//! files (a Kubernetes Secret), offered through the SSL request of the connection phase, and
//! optionally required. Backends: the proxy as a TLS client, checking the server's
//! certificate as MySQL clients do with `--ssl-mode` (REQUIRED, VERIFY_CA, VERIFY_IDENTITY).
//! Files are read when the configuration loads, so a reload (SIGHUP) picks up renewed
//! certificates for the connections that follow.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ServerConfig;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// `[tls]`: TLS for the proxy's clients.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsSection {
    /// The certificate chain, PEM, the proxy's own certificate first.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Refuse logins that do not use TLS.
    pub require: Option<bool>,
}

/// `[backend_tls]`: TLS from the proxy to the servers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsSection {
    /// off, required, verify-ca or verify-identity.
    pub mode: Option<String>,
    /// The CA certificates (PEM) that sign the servers' certificates.
    pub ca: Option<PathBuf>,
}

/// TLS for clients, ready to accept handshakes.
#[derive(Clone)]
pub struct ClientTls {
    pub acceptor: TlsAcceptor,
    /// Plaintext logins are refused.
    pub required: bool,
    /// Where the certificate came from, for logs.
    pub cert_path: PathBuf,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("cert", &self.cert_path)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

/// How much of a server's certificate is checked; the names of MySQL's `--ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTlsMode {
    /// Plaintext.
    Off,
    /// Encrypted; any certificate is accepted (no protection against an active attacker).
    Required,
    /// The certificate must be signed by the configured CA; its names are not checked.
    VerifyCa,
    /// Signed by the CA and issued for the host name (or IP address) the proxy connects to.
    VerifyIdentity,
}

impl BackendTlsMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Required => "required",
            Self::VerifyCa => "verify-ca",
            Self::VerifyIdentity => "verify-identity",
        }
    }
}

/// TLS to the servers.
#[derive(Clone)]
pub struct BackendTls {
    pub mode: BackendTlsMode,
    /// `None` when the mode is off.
    pub connector: Option<TlsConnector>,
    pub ca: Option<PathBuf>,
}

impl Default for BackendTls {
    fn default() -> Self {
        Self {
            mode: BackendTlsMode::Off,
            connector: None,
            ca: None,
        }
    }
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("mode", &self.mode)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// What the health checks (mysql_async) need to speak TLS as the sessions do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorTls {
    pub mode: BackendTlsMode,
    pub ca: Option<PathBuf>,
}

impl Default for MonitorTls {
    fn default() -> Self {
        Self {
            mode: BackendTlsMode::Off,
            ca: None,
        }
    }
}

impl MonitorTls {
    pub fn ssl_opts(&self) -> Option<mysql_async::SslOpts> {
        let only_our_ca = || {
            mysql_async::SslOpts::default()
                .with_root_certs(self.ca.iter().map(|ca| ca.clone().into()).collect())
                .with_disable_built_in_roots(true)
        };
        match self.mode {
            BackendTlsMode::Off => None,
            // mysql_async's "skip domain validation" looks for the text "NotValidForName" in
            // rustls' error, which rustls 0.23 no longer writes, so a name mismatch still
            // fails. The checks therefore encrypt without checking the certificate in
            // verify-ca mode; the sessions' connections, which carry the data, check it.
            BackendTlsMode::Required | BackendTlsMode::VerifyCa => {
                Some(mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true))
            }
            BackendTlsMode::VerifyIdentity => Some(only_our_ca()),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Validates `[tls]`; problems are appended to `problems`.
pub fn client_tls(section: ClientTlsSection, problems: &mut Vec<String>) -> Option<ClientTls> {
    let required = section.require.unwrap_or(false);
    let (cert_path, key_path) = match (section.cert, section.key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            if required {
                problems.push("tls.require is on, but tls.cert and tls.key are not set".into());
            }
            return None;
        }
        _ => {
            problems.push("tls: set both cert and key, or neither".into());
            return None;
        }
    };
    let chain = match read_certs(&cert_path) {
        Ok(chain) => chain,
        Err(e) => {
            problems.push(format!("tls.cert: {e}"));
            return None;
        }
    };
    let key = match PrivateKeyDer::from_pem_file(&key_path) {
        Ok(key) => key,
        Err(e) => {
            problems.push(format!(
                "tls.key: cannot read a private key from {}: {e}",
                key_path.display()
            ));
            return None;
        }
    };
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key));
    match config {
        Ok(config) => Some(ClientTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            required,
            cert_path,
        }),
        Err(e) => {
            problems.push(format!(
                "tls: the certificate in {} and the key in {} do not make a usable pair: {e}",
                cert_path.display(),
                key_path.display()
            ));
            None
        }
    }
}

/// Validates `[backend_tls]`; problems are appended to `problems`.
pub fn backend_tls(section: BackendTlsSection, problems: &mut Vec<String>) -> BackendTls {
    let mode = match section.mode.as_deref() {
        None | Some("off") => BackendTlsMode::Off,
        Some("required") => BackendTlsMode::Required,
        Some("verify-ca") => BackendTlsMode::VerifyCa,
        Some("verify-identity") => BackendTlsMode::VerifyIdentity,
        Some(other) => {
            problems.push(format!(
                "backend_tls.mode is '{other}'; expected off, required, verify-ca or verify-identity"
            ));
            return BackendTls::default();
        }
    };
    let verifies = matches!(
        mode,
        BackendTlsMode::VerifyCa | BackendTlsMode::VerifyIdentity
    );
    let roots = match (&section.ca, verifies) {
        (None, true) => {
            problems.push(format!(
                "backend_tls.mode {} needs backend_tls.ca, the CA that signs the servers' certificates",
                mode.name()
            ));
            return BackendTls::default();
        }
        (Some(_), false) if mode == BackendTlsMode::Off => {
            problems.push("backend_tls.ca is set, but backend_tls.mode is off".into());
            return BackendTls::default();
        }
        (Some(path), _) => match read_roots(path) {
            Ok(roots) => Some(roots),
            Err(e) => {
                problems.push(format!("backend_tls.ca: {e}"));
                return BackendTls::default();
            }
        },
        (None, false) => None,
    };
    if mode == BackendTlsMode::Off {
        return BackendTls::default();
    }
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (BackendTlsMode::VerifyCa | BackendTlsMode::VerifyIdentity, Some(roots)) => {
            let webpki = match WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            {
                Ok(verifier) => verifier,
                Err(e) => {
                    problems.push(format!("backend_tls.ca: {e}"));
                    return BackendTls::default();
                }
            };
            if mode == BackendTlsMode::VerifyIdentity {
                webpki
            } else {
                Arc::new(IgnoreName(webpki))
            }
        }
        _ => Arc::new(AnyCertificate(provider.signature_verification_algorithms)),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        });
    match config {
        Ok(config) => BackendTls {
            mode,
            connector: Some(TlsConnector::from(Arc::new(config))),
            ca: section.ca,
        },
        Err(e) => {
            problems.push(format!("backend_tls: {e}"));
            BackendTls::default()
        }
    }
}

/// The name a backend's certificate must carry: the host of its address, a DNS name or an
/// IP address.
pub fn server_name(address: &str) -> Option<ServerName<'static>> {
    let host = crate::config::split_host_port(address).map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).ok()
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// verify-ca: the chain must lead to the CA, but the certificate may name any host — the
/// setting for servers whose certificates do not carry the names the proxy dials.
#[derive(Debug)]
struct IgnoreName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// required: encryption without authentication of the server, as MySQL clients' REQUIRED.
/// The handshake's signatures are still checked, so the session keys belong to whoever holds
/// the certificate's key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_addresses() {
        assert_eq!(
            server_name("mysql-0.mysql.default.svc.cluster.local:3306"),
            Some(ServerName::try_from("mysql-0.mysql.default.svc.cluster.local").unwrap())
        );
        assert_eq!(
            server_name("127.0.0.1:3306"),
            Some(ServerName::try_from("127.0.0.1").unwrap())
        );
        assert_eq!(
            server_name("[::1]:3306"),
            Some(ServerName::try_from("::1").unwrap())
        );
    }

    #[test]
    fn modes_and_their_problems() {
        let mut problems = Vec::new();
        let off = backend_tls(BackendTlsSection::default(), &mut problems);
        assert_eq!(off.mode, BackendTlsMode::Off);
        assert!(off.connector.is_none());
        let required = backend_tls(
            BackendTlsSection {
                mode: Some("required".into()),
                ca: None,
            },
            &mut problems,
        );
        assert_eq!(required.mode, BackendTlsMode::Required);
        assert!(required.connector.is_some());
        assert!(problems.is_empty(), "{problems:?}");

        backend_tls(
            BackendTlsSection {
                mode: Some("verify-identity".into()),
                ca: None,
            },
            &mut problems,
        );
        backend_tls(
            BackendTlsSection {
                mode: Some("VERIFY_CA".into()),
                ca: None,
            },
            &mut problems,
        );
        client_tls(
            ClientTlsSection {
                require: Some(true),
                ..Default::default()
            },
            &mut problems,
        );
        client_tls(
            ClientTlsSection {
                cert: Some("/nonexistent/cert.pem".into()),
                key: Some("/nonexistent/key.pem".into()),
                require: None,
            },
            &mut problems,
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("needs backend_tls.ca"));
        assert!(problems[1].contains("'VERIFY_CA'"));
        assert!(problems[2].contains("tls.require"));
        assert!(problems[3].contains("/nonexistent/cert.pem"));
    }
}
