//! Configuration: a TOML file, overridden by command-line flags, validated as a whole so that
//! `rwsplit check` can list every problem at once. Secrets come from the file, an environment
//! variable or a file of their own (a mounted Kubernetes Secret).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::FrontendPlugin;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:3306";
pub const DEFAULT_PRIMARY: &str = "mysql-0.mysql:3306";
/// Each session holds about 32 KiB of buffers per socket (client, primary, replicas) and
/// its own connection to the primary, whose `max_connections` is 151 by default: a
/// thousand sessions fit the Deployment's 256 MiB with room for result streaming.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// MySQL 8's default `max_allowed_packet`.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 64 << 20;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// MySQL's `connect_timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// MySQL's `wait_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// MySQL's `net_read_timeout` and `net_write_timeout`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// MySQL's connection_control plugin: delays begin after 3 failures in a row, 1 s more
/// per failure.
pub const DEFAULT_LOGIN_DELAY_AFTER: u32 = 3;
pub const DEFAULT_LOGIN_DELAY: Duration = Duration::from_secs(1);
pub const DEFAULT_LOGIN_MAX_DELAY: Duration = Duration::from_secs(30);
const MAX_PACKET_SIZE_LIMIT: usize = 1 << 30;
pub const DEFAULT_MAX_SESSION_HISTORY: usize = 256;
pub const DEFAULT_HEADLESS_SERVICE: &str = "mysql";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_REPLICATION_LAG: Duration = Duration::from_secs(10);
pub const DEFAULT_RISE: u32 = 3;
pub const MYSQL_PORT: u16 = 3306;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub proxy: ProxySection,
    #[serde(default)]
    pub routing: RoutingSection,
    pub primary: Option<EndpointSection>,
    #[serde(default)]
    pub replicas: Vec<EndpointSection>,
    #[serde(default)]
    pub users: Vec<UserSection>,
    #[serde(default)]
    pub discovery: DiscoverySection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub tls: crate::tls::ClientTlsSection,
    #[serde(default)]
    pub backend_tls: crate::tls::BackendTlsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySection {
    pub headless_service: Option<String>,
    pub namespace: Option<String>,
    pub cluster_domain: Option<String>,
    pub port_name: Option<String>,
    pub primary_pod: Option<String>,
    pub port: Option<u16>,
    pub dns_server: Option<String>,
    pub interval: Option<String>,
    pub kubernetes: Option<String>,
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub monitor_user: Option<String>,
    pub monitor_password_env: Option<String>,
    pub monitor_password_file: Option<PathBuf>,
    pub check_interval: Option<String>,
    pub check_timeout: Option<String>,
    pub max_replication_lag: Option<String>,
    pub rise: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    pub listen: Option<String>,
    pub max_connections: Option<usize>,
    pub max_packet_size: Option<usize>,
    pub connect_timeout: Option<String>,
    pub auth_plugin: Option<String>,
    pub drain_timeout: Option<String>,
    pub max_user_connections: Option<usize>,
    pub handshake_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub login_delay_after: Option<u32>,
    pub login_delay: Option<String>,
    pub login_max_delay: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    pub fallback_to_primary: Option<bool>,
    pub max_session_history: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    pub name: Option<String>,
    pub address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    pub name: String,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// No password is stored: the client sends it (over TLS) and the server checks it.
    pub passthrough: Option<bool>,
    pub auth_plugin: Option<String>,
    pub max_connections: Option<usize>,
}

/// Settings given on the command line; each replaces the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub primary: Option<String>,
    pub replicas: Vec<String>,
    pub headless_service: Option<String>,
    pub namespace: Option<String>,
    pub cluster_domain: Option<String>,
    pub dns_server: Option<String>,
    pub monitor_user: Option<String>,
    pub monitor_password_env: Option<String>,
    pub check_interval: Option<String>,
    pub max_replication_lag: Option<String>,
    pub admin_listen: Option<String>,
    pub log_format: Option<String>,
}

/// A backend server: a stable name (the pod's DNS name) and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub address: String,
}

#[derive(Clone)]
pub struct User {
    /// `None` for a passthrough user: the proxy asks the client for the password in clear
    /// (caching_sha2_password's full authentication, over TLS only) and logs in with it; the
    /// primary decides whether it is right.
    pub password: Option<String>,
    /// The method this user must authenticate with; `None` accepts either.
    pub auth_plugin: Option<FrontendPlugin>,
    /// Sessions this user may hold at once; `None`: `max_user_connections` applies.
    pub max_connections: Option<usize>,
}

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    /// Where the admin endpoints (metrics, health, status) listen; `None`: nowhere.
    pub admin_listen: Option<String>,
    /// How long a shutdown waits for sessions to finish their statements and transactions.
    pub drain_timeout: Duration,
    pub log: LogSettings,
    pub max_connections: usize,
    pub max_packet_size: usize,
    pub connect_timeout: Duration,
    pub limits: ClientLimits,
    /// Offered in the greeting; clients answering with the other supported method are
    /// accepted too, unless the user names one.
    pub auth_plugin: FrontendPlugin,
    pub primary: Endpoint,
    pub replicas: Vec<Endpoint>,
    pub users: HashMap<String, User>,
    pub routing: Routing,
    pub discovery: Discovery,
    pub health: HealthChecks,
    /// TLS for clients; `None`: not offered.
    pub tls: Option<crate::tls::ClientTls>,
    pub backend_tls: crate::tls::BackendTls,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("passthrough", &self.password.is_none())
            .field("auth_plugin", &self.auth_plugin)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// What one client may hold, and how long it may keep the proxy waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Sessions one user may hold at once, for users without a limit of their own; 0: no
    /// limit.
    pub max_user_connections: usize,
    /// From accepting a client to the end of its login.
    pub handshake_timeout: Duration,
    /// Between commands; a session quiet for longer is closed.
    pub idle_timeout: Duration,
    /// A packet the client has begun must go on arriving: no byte for this long ends it.
    pub read_timeout: Duration,
    /// An answer must go on leaving: a client that takes none of it for this long is
    /// disconnected.
    pub write_timeout: Duration,
    pub login_delay: LoginDelay,
}

/// A growing wait for clients whose address failed to log in several times in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginDelay {
    /// Failures in a row after which new connections from the address wait; 0: never.
    pub after: u32,
    /// The first wait, and how much each further failure adds.
    pub step: Duration,
    pub max: Duration,
}

impl LoginDelay {
    /// How long a client from an address that failed `failures` times in a row waits.
    pub fn for_failures(&self, failures: u32) -> Duration {
        if self.after == 0 || failures < self.after {
            return Duration::ZERO;
        }
        self.step
            .saturating_mul(failures - self.after + 1)
            .min(self.max)
    }
}

/// Where the servers come from besides the static list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The StatefulSet's headless Service, when its pods are discovered through DNS (and the
    /// Kubernetes API).
    pub headless: Option<Headless>,
    /// No primary is configured: the headless Service's primary pod is the primary.
    pub primary_from_headless: bool,
    /// The nameserver to ask; `None` uses the system's resolver configuration.
    pub dns_server: Option<std::net::SocketAddr>,
    /// How often names are resolved again.
    pub interval: Duration,
    pub kubernetes: KubernetesMode,
    /// A kubeconfig file to reach the API with, instead of the service account (or
    /// KUBECONFIG, ~/.kube/config) found by themselves.
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headless {
    pub service: String,
    pub namespace: String,
    pub cluster_domain: String,
    /// The SRV port name: `_<port_name>._tcp.<service>...`.
    pub port_name: String,
    /// The hostname of the pod that is the primary (ordinal 0).
    pub primary_pod: String,
    /// The port used when the Service publishes no SRV records.
    pub port: u16,
}

impl Headless {
    /// The primary pod's DNS name, as the StatefulSet publishes it.
    pub fn primary_name(&self) -> String {
        format!(
            "{}.{}.{}.svc.{}",
            self.primary_pod, self.service, self.namespace, self.cluster_domain
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `rwsplit=debug,warn`); `RUST_LOG` takes precedence.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Whether readiness comes from the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubernetesMode {
    /// When running in a cluster or a kubeconfig is at hand.
    Auto,
    On,
    Off,
}

/// The monitor's checks and the thresholds that decide eligibility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChecks {
    /// Without a monitor user no checks run: replicas are used while they accept
    /// connections, and replication lag is not known.
    pub monitor: Option<MonitorUser>,
    pub check_interval: Duration,
    /// For each connection attempt and each check query.
    pub check_timeout: Duration,
    pub max_replication_lag: Duration,
    /// Consecutive passed checks a replica that failed one needs before it gets reads again.
    pub rise: u32,
    /// TLS for the checks, as for the sessions' connections (`backend_tls`).
    pub tls: crate::tls::MonitorTls,
}

#[derive(Clone, PartialEq, Eq)]
pub struct MonitorUser {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for MonitorUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorUser")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// How statements are spread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// Reads go to the primary when no replica is eligible; otherwise they fail.
    pub fallback_to_primary: bool,
    /// Session-changing statements remembered for replay on replica connections; a session
    /// that sets up more than this stays on the primary from then on.
    pub max_session_history: usize,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            fallback_to_primary: true,
            max_session_history: DEFAULT_MAX_SESSION_HISTORY,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads `path` (if given), applies `overrides`, validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        Self::from_file(file, overrides, &|name| std::env::var(name).ok())
    }

    /// Validates a parsed file; `env` looks up environment variables.
    pub fn from_file(
        file: FileConfig,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let proxy = file.proxy;

        let listen = overrides
            .listen
            .clone()
            .or(proxy.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        check_address("proxy.listen", &listen, &mut problems);

        let max_connections = proxy.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            problems.push("proxy.max_connections must be at least 1".into());
        }
        let max_packet_size = proxy.max_packet_size.unwrap_or(DEFAULT_MAX_PACKET_SIZE);
        if !(1024..=MAX_PACKET_SIZE_LIMIT).contains(&max_packet_size) {
            problems.push(format!(
                "proxy.max_packet_size is {max_packet_size}; it must be between 1024 and {MAX_PACKET_SIZE_LIMIT} bytes"
            ));
        }
        let connect_timeout = duration_setting(
            "proxy.connect_timeout",
            proxy.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
            &mut problems,
        );
        let auth_plugin = match proxy.auth_plugin.as_deref() {
            None => FrontendPlugin::NativePassword,
            Some(name) => plugin_or_problem("proxy.auth_plugin", name, &mut problems),
        };
        let mut timeout = |at: &str, text: &Option<String>, default: Duration| {
            duration_setting(at, text.as_deref(), default, &mut problems)
        };
        let limits = ClientLimits {
            max_user_connections: proxy.max_user_connections.unwrap_or(0),
            handshake_timeout: timeout(
                "proxy.handshake_timeout",
                &proxy.handshake_timeout,
                DEFAULT_HANDSHAKE_TIMEOUT,
            ),
            idle_timeout: timeout(
                "proxy.idle_timeout",
                &proxy.idle_timeout,
                DEFAULT_IDLE_TIMEOUT,
            ),
            read_timeout: timeout(
                "proxy.read_timeout",
                &proxy.read_timeout,
                DEFAULT_READ_TIMEOUT,
            ),
            write_timeout: timeout(
                "proxy.write_timeout",
                &proxy.write_timeout,
                DEFAULT_WRITE_TIMEOUT,
            ),
            login_delay: LoginDelay {
                after: proxy.login_delay_after.unwrap_or(DEFAULT_LOGIN_DELAY_AFTER),
                step: timeout("proxy.login_delay", &proxy.login_delay, DEFAULT_LOGIN_DELAY),
                max: timeout(
                    "proxy.login_max_delay",
                    &proxy.login_max_delay,
                    DEFAULT_LOGIN_MAX_DELAY,
                ),
            },
        };
        if limits.login_delay.max < limits.login_delay.step {
            problems.push(format!(
                "proxy.login_max_delay ({:?}) is shorter than proxy.login_delay ({:?})",
                limits.login_delay.max, limits.login_delay.step
            ));
        }

        let discovery_section = file.discovery;
        let explicit_primary = match (&overrides.primary, file.primary) {
            (Some(address), _) => Some(endpoint(None, address)),
            (None, Some(section)) => Some(endpoint(section.name, &section.address)),
            (None, None) => None,
        };
        let replicas: Vec<Endpoint> = if overrides.replicas.is_empty() {
            file.replicas
                .into_iter()
                .map(|r| endpoint(r.name, &r.address))
                .collect()
        } else {
            overrides
                .replicas
                .iter()
                .map(|a| endpoint(None, a))
                .collect()
        };
        // Without any server named, the proxy finds the StatefulSet the usual way.
        let service = overrides
            .headless_service
            .clone()
            .or(discovery_section.headless_service)
            .or_else(|| {
                (explicit_primary.is_none() && replicas.is_empty())
                    .then(|| DEFAULT_HEADLESS_SERVICE.to_owned())
            });
        let headless = service.map(|service| Headless {
            service,
            namespace: overrides
                .namespace
                .clone()
                .or(discovery_section.namespace)
                .or_else(pod_namespace)
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            cluster_domain: overrides
                .cluster_domain
                .clone()
                .or(discovery_section.cluster_domain)
                .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.to_owned()),
            port_name: discovery_section
                .port_name
                .unwrap_or_else(|| "mysql".to_owned()),
            primary_pod: discovery_section
                .primary_pod
                .unwrap_or_else(|| "mysql-0".to_owned()),
            port: discovery_section.port.unwrap_or(MYSQL_PORT),
        });
        if let Some(headless) = &headless {
            for (at, value) in [
                ("discovery.headless_service", &headless.service),
                ("discovery.namespace", &headless.namespace),
                ("discovery.cluster_domain", &headless.cluster_domain),
                ("discovery.port_name", &headless.port_name),
                ("discovery.primary_pod", &headless.primary_pod),
            ] {
                if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == ':') {
                    problems.push(format!("{at} is '{value}'; expected a DNS label or name"));
                }
            }
        }
        let primary_from_headless = explicit_primary.is_none() && headless.is_some();
        let primary = match (explicit_primary, &headless) {
            (Some(primary), _) => primary,
            (None, Some(headless)) => Endpoint {
                name: headless.primary_name(),
                address: format!("{}:{}", headless.primary_name(), headless.port),
            },
            (None, None) => endpoint(None, DEFAULT_PRIMARY),
        };
        check_address("primary.address", &primary.address, &mut problems);
        let mut names = vec![primary.name.as_str()];
        for (i, replica) in replicas.iter().enumerate() {
            check_address(
                &format!("replicas[{i}].address"),
                &replica.address,
                &mut problems,
            );
            if names.contains(&replica.name.as_str()) {
                problems.push(format!(
                    "replicas[{i}]: the name '{}' is used twice; give each backend its own name",
                    replica.name
                ));
            }
            names.push(&replica.name);
        }
        let dns_server = overrides
            .dns_server
            .clone()
            .or(discovery_section.dns_server)
            .and_then(|text| match text.parse::<std::net::SocketAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    problems.push(format!(
                        "discovery.dns_server is '{text}'; expected ip:port, for example 10.96.0.10:53"
                    ));
                    None
                }
            });
        let interval = duration_setting(
            "discovery.interval",
            discovery_section.interval.as_deref(),
            DEFAULT_DISCOVERY_INTERVAL,
            &mut problems,
        );
        let kubernetes = match discovery_section.kubernetes.as_deref() {
            None | Some("auto") => KubernetesMode::Auto,
            Some("on") => KubernetesMode::On,
            Some("off") => KubernetesMode::Off,
            Some(other) => {
                problems.push(format!(
                    "discovery.kubernetes is '{other}'; expected auto, on or off"
                ));
                KubernetesMode::Auto
            }
        };
        if let Some(path) = &discovery_section.kubeconfig {
            if kubernetes == KubernetesMode::Off {
                problems
                    .push("discovery.kubeconfig is set but discovery.kubernetes is off".to_owned());
            } else if let Err(e) = std::fs::metadata(path) {
                problems.push(format!("discovery.kubeconfig {}: {e}", path.display()));
            }
        }
        let discovery = Discovery {
            headless,
            primary_from_headless,
            dns_server,
            interval,
            kubernetes,
            kubeconfig: discovery_section.kubeconfig,
        };

        let routing = Routing {
            fallback_to_primary: file.routing.fallback_to_primary.unwrap_or(true),
            max_session_history: file
                .routing
                .max_session_history
                .unwrap_or(DEFAULT_MAX_SESSION_HISTORY),
        };

        let mut users = HashMap::new();
        let mut passthrough_users = Vec::new();
        if file.users.is_empty() {
            problems.push(
                "no [[users]] configured: add one table per application user with name and password, password_env or password_file".into(),
            );
        }
        for (i, section) in file.users.into_iter().enumerate() {
            let at = format!("users[{i}] ('{}')", section.name);
            if section.name.is_empty() {
                problems.push(format!("users[{i}]: name is empty"));
                continue;
            }
            if users.contains_key(&section.name) {
                problems.push(format!("{at}: this user is configured twice"));
                continue;
            }
            let auth_plugin = section
                .auth_plugin
                .as_deref()
                .map(|name| plugin_or_problem(&format!("{at}.auth_plugin"), name, &mut problems));
            if section.max_connections == Some(0) {
                problems.push(format!(
                    "{at}.max_connections must be at least 1; leave it out for proxy.max_user_connections to apply"
                ));
            }
            if section.passthrough == Some(true) {
                if section.password.is_some()
                    || section.password_env.is_some()
                    || section.password_file.is_some()
                {
                    problems.push(format!(
                        "{at}: a passthrough user has no password in the configuration"
                    ));
                }
                if auth_plugin == Some(FrontendPlugin::NativePassword) {
                    problems.push(format!(
                        "{at}: a passthrough user authenticates with caching_sha2_password, not mysql_native_password"
                    ));
                }
                passthrough_users.push(section.name.clone());
                users.insert(
                    section.name,
                    User {
                        password: None,
                        auth_plugin: Some(FrontendPlugin::CachingSha2Password),
                        max_connections: section.max_connections,
                    },
                );
            } else if let Some(password) = user_password(&section, &at, env, &mut problems) {
                users.insert(
                    section.name,
                    User {
                        password: Some(password),
                        auth_plugin,
                        max_connections: section.max_connections,
                    },
                );
            }
        }
        let tls = crate::tls::client_tls(file.tls, &mut problems);
        if tls.is_none() && !passthrough_users.is_empty() {
            problems.push(format!(
                "passthrough users ({}) send their password in clear and need TLS: set tls.cert and tls.key",
                passthrough_users.join(", ")
            ));
        }
        let backend_tls = crate::tls::backend_tls(file.backend_tls, &mut problems);

        let mut health = health_checks(file.health, overrides, &users, env, &mut problems);
        health.tls = crate::tls::MonitorTls {
            mode: backend_tls.mode,
            ca: backend_tls.ca.clone(),
        };

        let admin_listen = overrides.admin_listen.clone().or(file.admin.listen);
        if let Some(address) = &admin_listen {
            check_address("admin.listen", address, &mut problems);
        }
        let drain_timeout = duration_setting(
            "proxy.drain_timeout",
            proxy.drain_timeout.as_deref(),
            DEFAULT_DRAIN_TIMEOUT,
            &mut problems,
        );
        let format = match overrides
            .log_format
            .as_deref()
            .or(file.log.format.as_deref())
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                problems.push(format!("log.format is '{other}'; expected text or json"));
                LogFormat::Text
            }
        };
        let level = file.log.level.unwrap_or_else(|| "info".to_owned());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
            problems.push(format!("log.level is '{level}': {e}"));
        }
        let log = LogSettings { format, level };

        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Config {
            listen,
            admin_listen,
            drain_timeout,
            log,
            max_connections,
            max_packet_size,
            connect_timeout,
            limits,
            auth_plugin,
            primary,
            replicas,
            users,
            routing,
            discovery,
            health,
            tls,
            backend_tls,
        })
    }
}

fn health_checks(
    section: HealthSection,
    overrides: &Overrides,
    users: &HashMap<String, User>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> HealthChecks {
    let check_interval = duration_setting(
        "health.check_interval",
        overrides
            .check_interval
            .as_deref()
            .or(section.check_interval.as_deref()),
        DEFAULT_CHECK_INTERVAL,
        problems,
    );
    let check_timeout = duration_setting(
        "health.check_timeout",
        section.check_timeout.as_deref(),
        DEFAULT_CHECK_TIMEOUT,
        problems,
    );
    let max_replication_lag = duration_setting(
        "health.max_replication_lag",
        overrides
            .max_replication_lag
            .as_deref()
            .or(section.max_replication_lag.as_deref()),
        DEFAULT_MAX_REPLICATION_LAG,
        problems,
    );
    let rise = section.rise.unwrap_or(DEFAULT_RISE);
    if rise == 0 {
        problems.push("health.rise must be at least 1".into());
    }
    let user = overrides.monitor_user.clone().or(section.monitor_user);
    let password_env = overrides
        .monitor_password_env
        .clone()
        .or(section.monitor_password_env);
    let monitor = user.and_then(|user| {
        let password = match (password_env, &section.monitor_password_file) {
            (Some(var), None) => env(&var).or_else(|| {
                problems.push(format!(
                    "health.monitor_password_env names {var}, which is not set in the environment"
                ));
                None
            }),
            (None, Some(path)) => read_secret_file(path)
                .map_err(|e| {
                    problems.push(format!(
                        "health.monitor_password_file: cannot read {}: {e}",
                        path.display()
                    ))
                })
                .ok(),
            (None, None) => match users.get(&user) {
                Some(entry) => entry.password.clone().or_else(|| {
                    problems.push(format!(
                        "health.monitor_user '{user}' is a passthrough user, so the proxy has no password to check with: \
                         set monitor_password_env or monitor_password_file"
                    ));
                    None
                }),
                None => {
                    problems.push(format!(
                        "health.monitor_user '{user}' has no password: add a [[users]] entry for it, \
                         or set monitor_password_env or monitor_password_file"
                    ));
                    None
                }
            },
            (Some(_), Some(_)) => {
                problems.push(
                    "health: set only one of monitor_password_env, monitor_password_file".into(),
                );
                None
            }
        };
        password.map(|password| MonitorUser { user, password })
    });
    HealthChecks {
        monitor,
        check_interval,
        check_timeout,
        max_replication_lag,
        rise,
        tls: crate::tls::MonitorTls::default(),
    }
}

/// A duration setting that must be more than zero.
fn duration_setting(
    at: &str,
    text: Option<&str>,
    default: Duration,
    problems: &mut Vec<String>,
) -> Duration {
    match text.map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            problems.push(format!("{at} must be more than zero"));
            default
        }
        Some(Err(e)) => {
            problems.push(format!("{at}: {e}"));
            default
        }
    }
}

/// The namespace of the pod the proxy runs in, from its service account.
fn pod_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|ns| ns.trim().to_owned())
        .filter(|ns| !ns.is_empty())
}

/// A secret from a file; secret files written with `echo` end in a newline that is not
/// part of the secret.
fn read_secret_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t))
        .to_owned())
}

fn user_password(
    section: &UserSection,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<String> {
    match (
        &section.password,
        &section.password_env,
        &section.password_file,
    ) {
        (Some(password), None, None) => Some(password.clone()),
        (None, Some(var), None) => {
            let value = env(var);
            if value.is_none() {
                problems.push(format!(
                    "{at}: password_env names {var}, which is not set in the environment"
                ));
            }
            value
        }
        (None, None, Some(path)) => match read_secret_file(path) {
            Ok(password) => Some(password),
            Err(e) => {
                problems.push(format!(
                    "{at}: cannot read password_file {}: {e}",
                    path.display()
                ));
                None
            }
        },
        (None, None, None) => {
            problems.push(format!(
                "{at}: no password; set exactly one of password, password_env, password_file"
            ));
            None
        }
        _ => {
            problems.push(format!(
                "{at}: set only one of password, password_env, password_file"
            ));
            None
        }
    }
}

fn plugin_or_problem(at: &str, name: &str, problems: &mut Vec<String>) -> FrontendPlugin {
    FrontendPlugin::from_name(name).unwrap_or_else(|| {
        problems.push(format!(
            "{at} is '{name}'; supported: mysql_native_password, caching_sha2_password"
        ));
        FrontendPlugin::NativePassword
    })
}

/// A name for an endpoint given only an address: its host (the pod's DNS name).
fn endpoint(name: Option<String>, address: &str) -> Endpoint {
    let name = name.unwrap_or_else(|| {
        address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned()
    });
    Endpoint {
        name,
        address: address.to_owned(),
    }
}

/// The host (brackets of an IPv6 address removed) and port of `host:port`.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_matches(|c| c == '[' || c == ']');
    Some((host, port.parse().ok()?)).filter(|(host, _)| !host.is_empty())
}

/// `host:port`, where host is a name, an IPv4 address or a bracketed IPv6 address.
fn check_address(at: &str, address: &str, problems: &mut Vec<String>) {
    if split_host_port(address).is_none() {
        problems.push(format!(
            "{at} is '{address}'; expected host:port, for example 127.0.0.1:3306 or mysql-0.mysql:3306"
        ));
    }
}

/// Durations as `250ms`, `5s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 500ms, 5s or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}'; use ms, s, m or h"
            ));
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    fn env(name: &str) -> Option<String> {
        (name == "APP_PASSWORD").then(|| "from-env".to_owned())
    }

    fn problems(text: &str, overrides: &Overrides) -> Vec<String> {
        match Config::from_file(parse(text), overrides, &env) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_file(
            parse("[[users]]\nname = 'app'\npassword = 'pw'\n"),
            &Overrides::default(),
            &env,
        )
        .unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN);
        // No server named: the StatefulSet's headless Service is discovered.
        let headless = config.discovery.headless.as_ref().unwrap();
        assert_eq!(headless.service, "mysql");
        assert_eq!(headless.namespace, "default");
        assert_eq!(headless.cluster_domain, "cluster.local");
        assert_eq!(
            config.primary.name,
            "mysql-0.mysql.default.svc.cluster.local"
        );
        assert_eq!(
            config.primary.address,
            "mysql-0.mysql.default.svc.cluster.local:3306"
        );
        assert_eq!(config.discovery.kubernetes, KubernetesMode::Auto);
        assert_eq!(config.health.monitor, None);
        assert_eq!(config.health.check_interval, Duration::from_secs(1));
        assert_eq!(config.health.max_replication_lag, Duration::from_secs(10));
        assert_eq!(config.max_packet_size, 64 << 20);
        assert_eq!(config.users["app"].password.as_deref(), Some("pw"));
        assert_eq!(config.auth_plugin, FrontendPlugin::NativePassword);
    }

    #[test]
    fn flags_override_the_file() {
        let text = "[proxy]\nlisten = '0.0.0.0:3306'\n[primary]\naddress = 'db:3306'\n\
                    [[replicas]]\naddress = 'r1:3306'\n[[users]]\nname = 'app'\npassword_env = 'APP_PASSWORD'\n";
        let overrides = Overrides {
            listen: Some("127.0.0.1:4000".into()),
            primary: Some("127.0.10.1:3306".into()),
            replicas: vec!["127.0.10.2:3306".into(), "127.0.10.3:3306".into()],
            ..Overrides::default()
        };
        let config = Config::from_file(parse(text), &overrides, &env).unwrap();
        assert_eq!(config.listen, "127.0.0.1:4000");
        assert_eq!(config.primary.address, "127.0.10.1:3306");
        assert_eq!(config.primary.name, "127.0.10.1");
        assert_eq!(config.replicas.len(), 2);
        assert_eq!(config.users["app"].password.as_deref(), Some("from-env"));
        // Servers named, no Service named: a static topology.
        assert_eq!(config.discovery.headless, None);
    }

    #[test]
    fn discovery_and_health_flags() {
        let text = "[discovery]\nheadless_service = 'db'\ninterval = '2s'\nkubernetes = 'off'\n\
                    [health]\nmonitor_user = 'monitor'\nrise = 2\n\
                    [[users]]\nname = 'app'\npassword = 'pw'\n[[users]]\nname = 'monitor'\npassword = 'mon'\n";
        let config = Config::from_file(parse(text), &Overrides::default(), &env).unwrap();
        assert_eq!(config.discovery.headless.as_ref().unwrap().service, "db");
        assert_eq!(config.primary.name, "mysql-0.db.default.svc.cluster.local");
        assert_eq!(config.discovery.interval, Duration::from_secs(2));
        assert_eq!(config.discovery.kubernetes, KubernetesMode::Off);
        let monitor = config.health.monitor.as_ref().unwrap();
        assert_eq!(
            (monitor.user.as_str(), monitor.password.as_str()),
            ("monitor", "mon")
        );
        assert_eq!(config.health.rise, 2);

        let overrides = Overrides {
            headless_service: Some("mysql".into()),
            namespace: Some("shop".into()),
            cluster_domain: Some("k8s.example".into()),
            dns_server: Some("127.0.10.53:53".into()),
            monitor_password_env: Some("APP_PASSWORD".into()),
            check_interval: Some("250ms".into()),
            max_replication_lag: Some("3s".into()),
            ..Overrides::default()
        };
        let config = Config::from_file(parse(text), &overrides, &env).unwrap();
        assert_eq!(config.primary.name, "mysql-0.mysql.shop.svc.k8s.example");
        assert_eq!(
            config.discovery.dns_server,
            Some("127.0.10.53:53".parse().unwrap())
        );
        assert_eq!(config.health.monitor.unwrap().password, "from-env");
        assert_eq!(config.health.check_interval, Duration::from_millis(250));
        assert_eq!(config.health.max_replication_lag, Duration::from_secs(3));
    }

    #[test]
    fn discovery_and_health_problems() {
        let text = "[discovery]\ndns_server = 'localhost'\nkubernetes = 'maybe'\ninterval = '0s'\n\
                    [health]\nmonitor_user = 'nobody'\nmax_replication_lag = 'a while'\nrise = 0\n\
                    [[users]]\nname = 'app'\npassword = 'pw'\n";
        let found = problems(text, &Overrides::default());
        let expect = [
            "discovery.dns_server",
            "discovery.kubernetes",
            "discovery.interval must be more than zero",
            "monitor_user 'nobody' has no password",
            "health.max_replication_lag",
            "health.rise",
        ];
        for needle in expect {
            assert!(
                found.iter().any(|p| p.contains(needle)),
                "no problem mentions {needle:?}: {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn a_kubeconfig_must_exist_and_needs_the_api_on() {
        let users = "[[users]]\nname = 'app'\npassword = 'pw'\n";
        let missing = format!("[discovery]\nkubeconfig = '/nonexistent/kubeconfig'\n{users}");
        let found = problems(&missing, &Overrides::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("discovery.kubeconfig /nonexistent/kubeconfig"));
        let off = format!("[discovery]\nkubernetes = 'off'\nkubeconfig = '/etc/hostname'\n{users}");
        let found = problems(&off, &Overrides::default());
        assert_eq!(
            found,
            ["discovery.kubeconfig is set but discovery.kubernetes is off"]
        );
        let fine = format!("[discovery]\nkubernetes = 'on'\nkubeconfig = '/etc/hostname'\n{users}");
        let config = Config::from_file(parse(&fine), &Overrides::default(), &env).unwrap();
        assert_eq!(
            config.discovery.kubeconfig.as_deref(),
            Some(std::path::Path::new("/etc/hostname"))
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "[proxy]\nlisten = 'nowhere'\nmax_packet_size = 10\nconnect_timeout = '5 fortnights'\n\
                    auth_plugin = 'ed25519'\n[[replicas]]\nname = 'mysql-0.mysql'\naddress = 'x:1'\n\
                    [[users]]\nname = 'a'\n[[users]]\nname = 'b'\npassword = 'x'\npassword_env = 'Y'\n\
                    [[users]]\nname = 'c'\npassword_env = 'MISSING'\n[[users]]\nname = 'd'\npassword_file = '/nonexistent/pw'\n";
        let found = problems(text, &Overrides::default());
        let expect = [
            "proxy.listen",
            "max_packet_size",
            "connect_timeout",
            "proxy.auth_plugin",
            "used twice",
            "users[0] ('a'): no password",
            "users[1] ('b'): set only one",
            "MISSING, which is not set",
            "cannot read password_file /nonexistent/pw",
        ];
        for needle in expect {
            assert!(
                found.iter().any(|p| p.contains(needle)),
                "no problem mentions {needle:?}: {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn client_limits_and_their_defaults() {
        let users = "[[users]]\nname = 'app'\npassword = 'pw'\n";
        let config = Config::from_file(parse(users), &Overrides::default(), &env).unwrap();
        let limits = &config.limits;
        assert_eq!(config.max_connections, 1024);
        assert_eq!(limits.max_user_connections, 0);
        assert_eq!(limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(28800));
        assert_eq!(limits.read_timeout, Duration::from_secs(30));
        assert_eq!(limits.write_timeout, Duration::from_secs(60));
        assert_eq!(config.users["app"].max_connections, None);
        let delay = limits.login_delay;
        let waits: Vec<u64> = (0..8).map(|n| delay.for_failures(n).as_secs()).collect();
        assert_eq!(waits, [0, 0, 0, 1, 2, 3, 4, 5]);
        assert_eq!(delay.for_failures(1000), Duration::from_secs(30));

        let text = "[proxy]\nmax_user_connections = 20\nhandshake_timeout = '2s'\n\
                    idle_timeout = '10m'\nlogin_delay_after = 0\n\
                    [[users]]\nname = 'app'\npassword = 'pw'\nmax_connections = 5\n";
        let config = Config::from_file(parse(text), &Overrides::default(), &env).unwrap();
        assert_eq!(config.limits.max_user_connections, 20);
        assert_eq!(config.limits.handshake_timeout, Duration::from_secs(2));
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(600));
        assert_eq!(config.users["app"].max_connections, Some(5));
        assert_eq!(
            config.limits.login_delay.for_failures(100),
            Duration::ZERO,
            "0 turns the delay off"
        );

        let text = "[proxy]\nidle_timeout = '0s'\nlogin_delay = '5s'\nlogin_max_delay = '1s'\n\
                    [[users]]\nname = 'app'\npassword = 'pw'\nmax_connections = 0\n";
        let found = problems(text, &Overrides::default());
        let expect = [
            "proxy.idle_timeout must be more than zero",
            "proxy.login_max_delay",
            "users[0] ('app').max_connections must be at least 1",
        ];
        for needle in expect {
            assert!(
                found.iter().any(|p| p.contains(needle)),
                "no problem mentions {needle:?}: {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn no_users_is_a_problem() {
        let found = problems("", &Overrides::default());
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("no [[users]]"));
    }

    #[test]
    fn passthrough_users_need_tls_and_no_password() {
        let found = problems(
            "[[users]]\nname = 'carol'\npassthrough = true\npassword = 'x'\n\
             [[users]]\nname = 'dave'\npassthrough = true\nauth_plugin = 'mysql_native_password'\n\
             [health]\nmonitor_user = 'dave'\n",
            &Overrides::default(),
        );
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].contains("no password in the configuration"));
        assert!(found[1].contains("caching_sha2_password"));
        assert!(found[2].contains("need TLS"), "{}", found[2]);
        assert!(found[3].contains("monitor_user 'dave' is a passthrough user"));
    }

    #[test]
    fn unknown_keys_are_rejected_by_the_parser() {
        let err = toml::from_str::<FileConfig>("[proxy]\nlisten_port = 3306\n").unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn password_file_loses_its_trailing_newline_only() {
        let dir = std::env::temp_dir().join(format!("rwsplit-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        std::fs::write(&path, " s3cret \n").unwrap();
        let text = format!(
            "[[users]]\nname = 'app'\npassword_file = '{}'\n",
            path.display()
        );
        let config = Config::from_file(parse(&text), &Overrides::default(), &env).unwrap();
        assert_eq!(config.users["app"].password.as_deref(), Some(" s3cret "));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
    }
}
