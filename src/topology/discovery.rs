//! What discovery sources report: the servers they found, and how ready the platform says
//! they are. Sources (the static list, DNS, the Kubernetes API) send `Update`s; the registry
//! merges them with the monitor's checks into the snapshot sessions read.

use std::net::{IpAddr, SocketAddr};

/// Which part a server plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// One server as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Stable, human-readable name: the pod's DNS name (`mysql-1.mysql.default.svc.cluster.local`)
    /// or the configured name of a static server.
    pub name: String,
    /// The pod's hostname (`mysql-1`), which the Kubernetes API reports for the same pod.
    pub hostname: String,
    pub address: SocketAddr,
    pub role: Role,
}

/// What the Kubernetes API says about one endpoint of the headless Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointReadiness {
    /// `hostname` of the EndpointSlice endpoint (the pod's hostname, `mysql-1`).
    pub hostname: String,
    pub addresses: Vec<IpAddr>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// A change a discovery source reports.
#[derive(Debug, Clone)]
pub enum Update {
    /// The complete set of servers DNS resolution found (headless Service or configured
    /// names). Sent after every successful round, changed or not.
    Dns(Vec<Member>),
    /// A DNS round failed; the last good set stays.
    DnsFailed(String),
    /// Every endpoint of the headless Service, across all its EndpointSlices, after a change.
    Kubernetes(Vec<EndpointReadiness>),
    /// The API cannot be reached or the watch broke; the last state stays.
    KubernetesUnavailable(String),
}
