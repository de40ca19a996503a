//! DNS discovery of the StatefulSet's pods through its headless Service, the way Kubernetes
//! publishes them: SRV records `_<port>._tcp.<service>.<ns>.svc.<domain>` whose targets are the
//! pods' own names (`mysql-1.mysql.<ns>.svc.<domain>`), A/AAAA records for each pod name, and A
//! records of the Service name listing every ready pod.
//!
//! A round resolves the SRV records and each target's address; the pod named `primary_pod`
//! is the primary, the others replicas. Without SRV records (a cluster DNS that publishes only
//! A records, or a Service without a named port) the Service's A records are used instead.
//! Those say nothing about pod names, so every address is then reported as a replica named by
//! its address, and the primary has to be configured by name and resolved with
//! [`DnsDiscovery::resolve_host`].
//!
//! [`run`] repeats rounds and reports each result as an [`Update`]. A failed round (SERVFAIL,
//! timeout, an unreachable nameserver) is reported as a failure and never as an empty set,
//! so whoever merges the updates keeps the servers it knew. An authoritative "no such name"
//! for the Service is a real answer, an empty set: the Service exists but no pod is ready.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, Record};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::discovery::{Member, Role, Update};

/// Where Kubernetes mounts the pod's namespace.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How long one query may take before it is sent again. Cluster DNS answers in milliseconds;
/// a nameserver that has not answered in a second is more likely gone than slow, and a round
/// must not stall for long behind it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// Retries after a timed-out query: one, for a lost UDP datagram.
const QUERY_RETRIES: usize = 1;

/// What a pod's `/etc/resolv.conf` says in Kubernetes; used with an explicit nameserver so that
/// short names (`mysql-0.mysql`) resolve as they would inside the cluster.
const KUBERNETES_NDOTS: usize = 5;

/// What to discover and how often.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Name of the headless Service (`mysql`).
    pub headless_service: String,
    /// Namespace of the Service (`default`).
    pub namespace: String,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// Name of the Service's port (`mysql`), which names the SRV records (`_mysql._tcp`).
    pub port_name: String,
    /// Hostname of the primary pod (`mysql-0`).
    pub primary_pod: String,
    /// Port of the servers when only A records are published (they carry no port).
    pub default_port: u16,
    /// `None`: the system's resolver configuration (`/etc/resolv.conf`); `Some`: only this
    /// nameserver, over UDP with TCP for answers too large for a datagram.
    pub server: Option<SocketAddr>,
    /// Time between the starts of two rounds.
    pub interval: Duration,
}

impl DnsSettings {
    /// The domain the Service's names live in: `<ns>.svc.<cluster-domain>`.
    fn service_domain(&self) -> String {
        format!(
            "{}.svc.{}",
            self.namespace,
            self.cluster_domain.trim_matches('.')
        )
    }

    /// `mysql.default.svc.cluster.local`: the Service's own name, whose A records list every
    /// ready pod.
    pub fn service_name(&self) -> String {
        format!("{}.{}", self.headless_service, self.service_domain())
    }

    /// `_mysql._tcp.mysql.default.svc.cluster.local`: the SRV records naming each ready pod.
    pub fn srv_name(&self) -> String {
        format!("_{}._tcp.{}", self.port_name, self.service_name())
    }

    /// `mysql-1.mysql.default.svc.cluster.local`: the name of pod `hostname`.
    pub fn pod_name(&self, hostname: &str) -> String {
        format!("{hostname}.{}", self.service_name())
    }

    /// The role of the pod with this hostname.
    fn role_of(&self, hostname: &str) -> Role {
        if hostname.eq_ignore_ascii_case(&self.primary_pod) {
            Role::Primary
        } else {
            Role::Replica
        }
    }

    /// The search domains of a pod in this namespace, in the order Kubernetes writes them.
    fn search_domains(&self) -> Vec<String> {
        let domain = self.cluster_domain.trim_matches('.');
        vec![
            self.service_domain(),
            format!("svc.{domain}"),
            domain.to_owned(),
        ]
    }
}

/// Why a DNS round or a name resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS resolver configuration: {0}")]
    Config(NetError),
    #[error("{name:?} is not a valid DNS name: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("DNS lookup of {name} failed: {source}")]
    Lookup { name: String, source: NetError },
    #[error("{name} has no address in DNS")]
    NoAddress { name: String },
}

/// The resolver and what it looks for.
pub struct DnsDiscovery {
    settings: DnsSettings,
    resolver: TokioResolver,
}

impl DnsDiscovery {
    /// Builds the resolver. With the system configuration this reads `/etc/resolv.conf`,
    /// which fails when it names no nameserver.
    pub fn new(settings: DnsSettings) -> Result<Self, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match settings.server {
            None => TokioResolver::builder(provider).map_err(DnsError::Config)?,
            Some(server) => {
                let search = settings
                    .search_domains()
                    .iter()
                    .map(|domain| fqdn(domain))
                    .collect::<Result<_, _>>()?;
                let config = ResolverConfig::from_parts(None, search, vec![name_server(server)]);
                let mut builder = TokioResolver::builder_with_config(config, provider);
                let options = builder.options_mut();
                options.ndots = KUBERNETES_NDOTS;
                // Only the given nameserver answers, so that tests see what it publishes.
                options.use_hosts_file = ResolveHosts::Never;
                builder
            }
        };
        tune(builder.options_mut(), settings.interval);
        let resolver = builder.build().map_err(DnsError::Config)?;
        Ok(Self { settings, resolver })
    }

    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// One round for the headless Service: the SRV records, then each target's address (from
    /// the answer's additional section, where cluster DNS puts them, else by a lookup). A
    /// target that has no address any more (its pod went away between the two queries) is
    /// left out. A pod with several addresses (dual stack) is one member, at its first
    /// address, IPv4 first.
    ///
    /// Without SRV records, the A/AAAA records of the Service name: every member is then a
    /// replica named `ip:port`, and the primary must come from a configured name.
    ///
    /// Members are sorted by name and address, so equal sets compare equal.
    pub async fn resolve_headless(&self) -> Result<Vec<Member>, DnsError> {
        let srv_name = self.settings.srv_name();
        let mut members = match self.resolver.srv_lookup(fqdn(&srv_name)?).await {
            Ok(lookup) => {
                let targets = srv_targets(lookup.answers());
                let mut members = Vec::with_capacity(targets.len());
                for (target, port) in targets {
                    if let Some(member) =
                        self.pod_member(&target, port, lookup.additionals()).await?
                    {
                        members.push(member);
                    }
                }
                members
            }
            Err(e) if e.is_no_records_found() => self.service_members().await?,
            Err(source) => {
                return Err(DnsError::Lookup {
                    name: srv_name,
                    source,
                });
            }
        };
        members.sort_by(|a, b| a.name.cmp(&b.name).then(a.address.cmp(&b.address)));
        Ok(members)
    }

    /// Resolves a configured host name (a `--primary` or `--replica` given by name) through the
    /// same resolver, sorted. An IP literal is returned as it is, without a query.
    pub async fn resolve_host(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DnsError> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        // Not fully qualified unless it ends in a dot: short names (`mysql-0.mysql`) go
        // through the search domains, as they would for any program in the pod.
        let name = Name::from_utf8(host).map_err(|e| DnsError::InvalidName {
            name: host.to_owned(),
            reason: e.to_string(),
        })?;
        let mut addresses: Vec<SocketAddr> = self
            .addresses(name)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        if addresses.is_empty() {
            return Err(DnsError::NoAddress {
                name: host.to_owned(),
            });
        }
        addresses.sort();
        addresses.dedup();
        Ok(addresses)
    }

    /// The A/AAAA addresses of `name`. None is an answer (the name or its addresses do not
    /// exist), not a failure.
    async fn addresses(&self, name: Name) -> Result<Vec<IpAddr>, DnsError> {
        match self.resolver.lookup_ip(name.clone()).await {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(source) => Err(DnsError::Lookup {
                name: name.to_string(),
                source,
            }),
        }
    }

    /// The member for SRV target `target`, or `None` when the name has no address (any more).
    async fn pod_member(
        &self,
        target: &Name,
        port: u16,
        additionals: &[Record],
    ) -> Result<Option<Member>, DnsError> {
        let mut ips = addresses_of(target, additionals);
        if ips.is_empty() {
            ips = self.addresses(target.clone()).await?;
        }
        let Some(ip) = ips.into_iter().min() else {
            debug!(target = %target, "SRV target has no address; left out");
            return Ok(None);
        };
        let name = target.to_string().trim_end_matches('.').to_owned();
        let hostname = name.split('.').next().unwrap_or_default().to_owned();
        Ok(Some(Member {
            role: self.settings.role_of(&hostname),
            name,
            hostname,
            address: SocketAddr::new(ip, port),
        }))
    }

    /// Every address of the Service name, as replicas named by their address.
    async fn service_members(&self) -> Result<Vec<Member>, DnsError> {
        let ips = self.addresses(fqdn(&self.settings.service_name())?).await?;
        let port = self.settings.default_port;
        Ok(ips
            .into_iter()
            .map(|ip| {
                let address = SocketAddr::new(ip, port);
                Member {
                    name: address.to_string(),
                    hostname: ip.to_string(),
                    address,
                    role: Role::Replica,
                }
            })
            .collect())
    }
}

/// The pod's namespace, when running in Kubernetes (the service account's mounted file).
pub fn pod_namespace() -> Option<String> {
    read_namespace(Path::new(NAMESPACE_FILE))
}

fn read_namespace(path: &Path) -> Option<String> {
    let namespace = std::fs::read_to_string(path).ok()?;
    let namespace = namespace.trim();
    (!namespace.is_empty()).then(|| namespace.to_owned())
}

/// Resolves the headless Service every `interval` and sends each outcome: `Update::Dns` after
/// every successful round (changed or not), `Update::DnsFailed` after a failed one. Changes of
/// the member set, and the start and end of failures, are logged once each. Returns when the
/// receiver is dropped.
pub async fn run(discovery: DnsDiscovery, tx: mpsc::Sender<Update>) {
    let mut ticker = tokio::time::interval(discovery.settings.interval);
    // A round that overran is followed by the next one an interval later, not by a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut known: Option<Vec<Member>> = None;
    let mut failing = false;
    loop {
        let round = async {
            ticker.tick().await;
            discovery.resolve_headless().await
        };
        let result = tokio::select! {
            result = round => result,
            () = tx.closed() => return,
        };
        let update = match result {
            Ok(members) => {
                if failing {
                    info!("DNS discovery works again");
                    failing = false;
                }
                if known.as_ref() != Some(&members) {
                    info!(
                        service = %discovery.settings.service_name(),
                        members = %describe(&members),
                        "DNS members changed"
                    );
                    known = Some(members.clone());
                }
                Update::Dns(members)
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "DNS discovery failed; keeping the servers known so far");
                    failing = true;
                } else {
                    debug!(error = %e, "DNS discovery still failing");
                }
                Update::DnsFailed(e.to_string())
            }
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}

/// `mysql-0 10.0.0.5:3306 (primary), mysql-1 10.0.0.6:3306`, or `none`, for the log.
fn describe(members: &[Member]) -> String {
    if members.is_empty() {
        return "none".into();
    }
    let described: Vec<String> = members
        .iter()
        .map(|m| {
            let mut text = m.address.to_string();
            if m.name != text {
                text = format!("{} {text}", m.hostname);
            }
            if m.role == Role::Primary {
                text += " (primary)";
            }
            text
        })
        .collect();
    described.join(", ")
}

/// A name as a fully-qualified DNS name, so that no search domain is tried.
fn fqdn(name: &str) -> Result<Name, DnsError> {
    let mut parsed = Name::from_utf8(name).map_err(|e| DnsError::InvalidName {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// One nameserver at `server`, on its port, over UDP and TCP.
fn name_server(server: SocketAddr) -> NameServerConfig {
    let connection = |mut config: ConnectionConfig| {
        config.port = server.port();
        config
    };
    NameServerConfig::new(
        server.ip(),
        true,
        vec![
            connection(ConnectionConfig::udp()),
            connection(ConnectionConfig::tcp()),
        ],
    )
}

/// Resolver options for rounds every `interval`. Positive answers are cached for their TTL,
/// as published. Negative answers are cached for less than half an interval, whatever the
/// SOA says: rounds start one interval apart, so a "no such name" from one round has expired
/// when the next starts, and a pod that shows up late is seen in the next round.
fn tune(options: &mut ResolverOpts, interval: Duration) {
    options.timeout = QUERY_TIMEOUT;
    options.attempts = QUERY_RETRIES;
    options.negative_min_ttl = None;
    options.negative_max_ttl = Some(interval / 2);
}

/// SRV targets and ports, each target once, in answer order.
fn srv_targets(answers: &[Record]) -> Vec<(Name, u16)> {
    let mut targets: Vec<(Name, u16)> = Vec::new();
    for record in answers {
        if let RData::SRV(srv) = &record.data
            && !targets.iter().any(|(target, _)| target == &srv.target)
        {
            targets.push((srv.target.clone(), srv.port));
        }
    }
    targets
}

/// The A/AAAA addresses of `name` among `records`.
fn addresses_of(name: &Name, records: &[Record]) -> Vec<IpAddr> {
    records
        .iter()
        .filter(|r| &r.name == name)
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, SRV};

    fn settings() -> DnsSettings {
        DnsSettings {
            headless_service: "mysql".into(),
            namespace: "shop".into(),
            cluster_domain: "cluster.local.".into(),
            port_name: "mysql".into(),
            primary_pod: "mysql-0".into(),
            default_port: 3306,
            server: None,
            interval: Duration::from_secs(5),
        }
    }

    #[test]
    fn names_follow_the_kubernetes_dns_schema() {
        let s = settings();
        assert_eq!(s.service_name(), "mysql.shop.svc.cluster.local");
        assert_eq!(s.srv_name(), "_mysql._tcp.mysql.shop.svc.cluster.local");
        assert_eq!(
            s.pod_name("mysql-2"),
            "mysql-2.mysql.shop.svc.cluster.local"
        );
        assert_eq!(
            s.search_domains(),
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
    }

    #[test]
    fn only_the_configured_pod_is_the_primary() {
        let mut s = settings();
        assert_eq!(s.role_of("mysql-0"), Role::Primary);
        assert_eq!(s.role_of("MySQL-0"), Role::Primary);
        assert_eq!(s.role_of("mysql-1"), Role::Replica);
        assert_eq!(s.role_of("mysql-00"), Role::Replica);
        s.primary_pod = "db-3".into();
        assert_eq!(s.role_of("mysql-0"), Role::Replica);
        assert_eq!(s.role_of("db-3"), Role::Primary);
    }

    #[test]
    fn negative_answers_expire_before_the_next_round() {
        let mut options = ResolverOpts::default();
        tune(&mut options, Duration::from_secs(5));
        assert_eq!(options.negative_max_ttl, Some(Duration::from_millis(2500)));
        assert!(options.negative_max_ttl.unwrap() < Duration::from_secs(5));
        assert_eq!(options.positive_max_ttl, None, "positive TTLs are honoured");
        assert_eq!(options.timeout, QUERY_TIMEOUT);
    }

    #[test]
    fn srv_targets_and_their_additional_addresses() {
        let srv_name = fqdn("_mysql._tcp.mysql.shop.svc.cluster.local").unwrap();
        let pod = |k: u8| fqdn(&format!("mysql-{k}.mysql.shop.svc.cluster.local")).unwrap();
        let srv = |k: u8| {
            Record::from_rdata(
                srv_name.clone(),
                5,
                RData::SRV(SRV::new(0, 50, 3306, pod(k))),
            )
        };
        let answers = [srv(1), srv(0), srv(1)];
        assert_eq!(srv_targets(&answers), [(pod(1), 3306), (pod(0), 3306)]);

        let a = |k: u8, last: u8| Record::from_rdata(pod(k), 5, RData::A(A::new(10, 0, 0, last)));
        let additionals = [a(0, 1), a(1, 2), a(1, 9)];
        assert_eq!(
            addresses_of(&pod(0), &additionals),
            [IpAddr::from([10, 0, 0, 1])]
        );
        assert_eq!(addresses_of(&pod(1), &additionals).len(), 2);
        assert!(addresses_of(&pod(2), &additionals).is_empty());
    }

    #[test]
    fn namespace_file_is_trimmed_and_may_be_missing() {
        let dir = std::env::temp_dir().join(format!("rwsplit-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("namespace");
        std::fs::write(&file, "shop\n").unwrap();
        assert_eq!(read_namespace(&file).as_deref(), Some("shop"));
        std::fs::write(&file, " \n").unwrap();
        assert_eq!(read_namespace(&file), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read_namespace(&file), None);
    }
}
