//! Readiness of the headless Service's pods as the Kubernetes API reports it. DNS only
//! learns that a pod stopped being ready when its record disappears and caches expire; the
//! EndpointSlices of the Service change the moment the kubelet sees a readiness probe fail.
//! This module watches those slices and reports every endpoint's conditions as
//! `Update::Kubernetes`, or `Update::KubernetesUnavailable` when the API cannot be followed.
//!
//! The conditions are reported as the API gives them. A headless Service with
//! `publishNotReadyAddresses: true` (common for StatefulSets, so that peers find each other
//! before they are ready) makes the controller mark every endpoint ready; `serving` still
//! follows the pod's Ready condition there.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::Path;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config, ResourceExt};
use tokio::sync::mpsc::Sender;
use tracing::{debug, error, info, warn};

use super::discovery::{EndpointReadiness, Update};

/// The label the EndpointSlice controller puts on every slice of a Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How long the API server keeps one watch open. The watcher also gives up on a watch that
/// has been silent this long (plus a margin), so this bounds how long a connection the
/// network silently dropped can hide readiness changes. Resuming a watch costs one request.
const WATCH_TIMEOUT_SECS: u32 = 60;

/// First pause before trying the API again after a failure.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest pause between attempts while the API stays unavailable.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A watch that has followed the API this long counts as healthy: the next failure is
/// retried quickly again instead of continuing the previous outage's back-off.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Where the headless Service lives.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// The namespace of the Service (and of the proxy's Role).
    pub namespace: String,
    /// The headless Service's name (`mysql`).
    pub service: String,
}

/// A client for the API: from `kubeconfig` when one is configured; otherwise when running
/// in a cluster (service account env/files) or when a kubeconfig is available (KUBECONFIG
/// or ~/.kube/config); None otherwise (logged at debug, or as an error for a configured
/// file that cannot be used).
pub async fn client_if_available(kubeconfig: Option<&Path>) -> Option<Client> {
    let config = match kubeconfig {
        Some(path) => match configured(path).await {
            Ok(config) => config,
            Err(error) => {
                error!(path = %path.display(), %error, "cannot use the configured kubeconfig; readiness from the API is off");
                return None;
            }
        },
        // In a pod the service account is what the RBAC grants rights to, so it comes
        // first; a kubeconfig is what a developer running the proxy outside a cluster has.
        None => match Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => match Config::from_kubeconfig(&KubeConfigOptions::default()).await {
                Ok(config) => config,
                Err(kubeconfig) => {
                    debug!(%in_cluster, %kubeconfig, "no Kubernetes API configured; readiness from the API is off");
                    return None;
                }
            },
        },
    };
    match client_from_config(config) {
        Ok(client) => Some(client),
        Err(error) => {
            // A configuration was found, so the operator expects the watch: say why not.
            warn!(%error, "Kubernetes API configured but no client could be built; readiness from the API is off");
            None
        }
    }
}

async fn configured(path: &Path) -> Result<Config, kube::config::KubeconfigError> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await
}

/// The client the watch expects, from a configuration found or made. kube retries
/// requests answered 429, 503 or 504 by itself, up to 15 times with pauses growing to
/// minutes; while it does, the watch is blind to readiness and cannot say so. The watch
/// retries with its own back-off instead, and reports the outage at the first failure.
pub fn client_from_config(mut config: Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Client::try_from(config)
}

/// Watches forever: keeps the full set of endpoints across all slices of the Service and
/// sends `Update::Kubernetes` (sorted by hostname) after each change, and once again after
/// an outage. Every failure restarts from a fresh list that replaces the state, so nothing
/// survives from before it; `Update::KubernetesUnavailable` is sent once per outage and an
/// error never produces an empty list. Exits when the receiver is dropped.
pub async fn watch_endpoint_slices(client: Client, settings: KubeSettings, tx: Sender<Update>) {
    // The receiver may go away while the watch waits for an event or a retry, when there
    // is nothing to send that would notice.
    tokio::select! {
        () = tx.closed() => {}
        _ = follow_service(client, &settings, &tx) => {}
    }
    debug!("endpoint readiness no longer wanted; watch stopped");
}

/// The receiver of updates is gone.
struct Closed;

/// Why one run of the watcher ended.
enum Interruption {
    /// The resource version the watch resumed from is no longer kept (410): a routine
    /// event, not an outage.
    Expired,
    /// The API could not be reached or refused the request.
    Failed(String),
}

async fn follow_service(
    client: Client,
    settings: &KubeSettings,
    tx: &Sender<Update>,
) -> Result<Infallible, Closed> {
    let api: Api<EndpointSlice> = Api::namespaced(client, &settings.namespace);
    let selector = format!("{SERVICE_NAME_LABEL}={}", settings.service);
    let config = watcher::Config::default()
        .labels(&selector)
        .timeout(WATCH_TIMEOUT_SECS);
    let mut reporter = Reporter::new(tx, settings);
    let mut retry = Retry::default();
    loop {
        // A new watcher starts with a list. kube's watcher resumes a broken watch from its
        // last resource version and re-lists only on a 410 that arrives as a watch event;
        // a 410 answer to the watch request itself would make it retry the stale version
        // forever. Starting over on every failure covers both and guarantees that the state
        // after an outage comes from a complete, current list.
        let stream = watcher::watcher(api.clone(), config.clone());
        let pause = match follow(stream, &mut reporter, &mut retry).await? {
            Interruption::Expired => {
                debug!("watched resource version expired; listing the slices again");
                retry.pause(true)
            }
            Interruption::Failed(reason) => {
                reporter.unavailable(reason).await?;
                retry.pause(false)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Follows one watcher until it reports an error.
async fn follow(
    stream: impl futures_util::Stream<Item = watcher::Result<Event<EndpointSlice>>>,
    reporter: &mut Reporter<'_>,
    retry: &mut Retry,
) -> Result<Interruption, Closed> {
    let mut stream = pin!(stream);
    let mut slices: BTreeMap<String, Vec<EndpointReadiness>> = BTreeMap::new();
    // Slices of a list in progress; they replace `slices` only once the list is complete,
    // so that a slice deleted meanwhile does not survive it.
    let mut listing: Option<BTreeMap<String, Vec<EndpointReadiness>>> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Init) => listing = Some(BTreeMap::new()),
            Ok(Event::InitApply(slice)) => {
                listing
                    .get_or_insert_default()
                    .insert(slice.name_any(), endpoints_of(&slice));
            }
            Ok(Event::InitDone) => {
                slices = listing.take().unwrap_or_default();
                retry.listed();
                reporter.state(&slices).await?;
            }
            Ok(Event::Apply(slice)) => {
                slices.insert(slice.name_any(), endpoints_of(&slice));
                reporter.state(&slices).await?;
            }
            Ok(Event::Delete(slice)) => {
                slices.remove(&slice.name_any());
                reporter.state(&slices).await?;
            }
            Err(error) if is_expired(&error) => return Ok(Interruption::Expired),
            Err(error) => return Ok(Interruption::Failed(error.to_string())),
        }
    }
    // The watcher's stream does not end; should it, the state can no longer be trusted.
    Ok(Interruption::Failed("the watch ended".to_owned()))
}

/// Whether the API answered 410 Gone: the resource version asked for is older than what
/// it keeps (a watch event of type ERROR, or the status of the request itself).
fn is_expired(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// The endpoints of one slice. Slices of the FQDN address type (deprecated) carry names,
/// not addresses, and say nothing about pods.
fn endpoints_of(slice: &EndpointSlice) -> Vec<EndpointReadiness> {
    if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
        debug!(slice = %slice.name_any(), address_type = %slice.address_type, "slice ignored");
        return Vec::new();
    }
    slice.endpoints.iter().filter_map(readiness).collect()
}

fn readiness(endpoint: &Endpoint) -> Option<EndpointReadiness> {
    let addresses: Vec<IpAddr> = endpoint
        .addresses
        .iter()
        .filter_map(|address| address.parse().ok())
        .collect();
    // `hostname` is set for pods of a StatefulSet behind its headless Service; the pod's
    // name is the same string and is there for every pod.
    let hostname = endpoint
        .hostname
        .clone()
        .or_else(|| endpoint.target_ref.as_ref()?.name.clone())
        .or_else(|| Some(addresses.first()?.to_string()))?;
    // EndpointConditions (discovery.k8s.io/v1): a null `ready` or `serving` is to be read
    // as true, a null `terminating` as false.
    let conditions = endpoint.conditions.as_ref();
    Some(EndpointReadiness {
        hostname,
        addresses,
        ready: conditions.and_then(|c| c.ready).unwrap_or(true),
        serving: conditions.and_then(|c| c.serving).unwrap_or(true),
        terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
    })
}

/// Every endpoint across the slices, one per hostname, sorted by hostname. A pod appears
/// in two slices when the Service is dual-stack (one slice per address family) and,
/// briefly, when the controller moves it between slices: its addresses are joined, and
/// the most ready of its entries wins, as kube-proxy does for an endpoint in two slices.
fn merge(slices: &BTreeMap<String, Vec<EndpointReadiness>>) -> Vec<EndpointReadiness> {
    let mut merged: BTreeMap<&str, EndpointReadiness> = BTreeMap::new();
    for endpoint in slices.values().flatten() {
        match merged.get_mut(endpoint.hostname.as_str()) {
            None => {
                merged.insert(&endpoint.hostname, endpoint.clone());
            }
            Some(known) => {
                let rank = |e: &EndpointReadiness| (e.ready, e.serving, !e.terminating);
                if rank(endpoint) > rank(known) {
                    known.ready = endpoint.ready;
                    known.serving = endpoint.serving;
                    known.terminating = endpoint.terminating;
                }
                known.addresses.extend_from_slice(&endpoint.addresses);
            }
        }
    }
    merged
        .into_values()
        .map(|mut endpoint| {
            endpoint.addresses.sort_unstable();
            endpoint.addresses.dedup();
            endpoint
        })
        .collect()
}

/// Tells the receiver what changed, once per change.
struct Reporter<'a> {
    tx: &'a Sender<Update>,
    service: &'a str,
    /// What the receiver was last told; None before the first complete list.
    sent: Option<Vec<EndpointReadiness>>,
    /// The receiver was told the API is unavailable and has not had a state since.
    outage: bool,
}

impl<'a> Reporter<'a> {
    fn new(tx: &'a Sender<Update>, settings: &'a KubeSettings) -> Self {
        Self {
            tx,
            service: &settings.service,
            sent: None,
            outage: false,
        }
    }

    /// Sends the merged state if it differs from what the receiver knows, or if the
    /// receiver was told of an outage since.
    async fn state(
        &mut self,
        slices: &BTreeMap<String, Vec<EndpointReadiness>>,
    ) -> Result<(), Closed> {
        let endpoints = merge(slices);
        if !self.outage && self.sent.as_ref() == Some(&endpoints) {
            return Ok(());
        }
        if self.outage {
            info!(service = %self.service, "Kubernetes API reachable again");
        }
        if endpoints.is_empty() && self.sent.as_ref().is_none_or(|sent| !sent.is_empty()) {
            warn!(service = %self.service, "the Kubernetes API lists no endpoints for the service");
        }
        log_changes(self.sent.as_deref().unwrap_or_default(), &endpoints);
        self.outage = false;
        self.sent = Some(endpoints.clone());
        self.tx
            .send(Update::Kubernetes(endpoints))
            .await
            .map_err(|_| Closed)
    }

    async fn unavailable(&mut self, reason: String) -> Result<(), Closed> {
        if self.outage {
            debug!(%reason, "Kubernetes API still unavailable");
            return Ok(());
        }
        warn!(service = %self.service, %reason, "Kubernetes API unavailable; the last known readiness stays");
        self.outage = true;
        self.tx
            .send(Update::KubernetesUnavailable(reason))
            .await
            .map_err(|_| Closed)
    }
}

fn log_changes(before: &[EndpointReadiness], after: &[EndpointReadiness]) {
    let known: HashMap<&str, &EndpointReadiness> =
        before.iter().map(|e| (e.hostname.as_str(), e)).collect();
    for e in after {
        let previous = known.get(e.hostname.as_str());
        if previous == Some(&e) {
            continue;
        }
        let what = if previous.is_some() {
            "endpoint changed"
        } else {
            "endpoint listed"
        };
        info!(
            endpoint = %e.hostname,
            ready = e.ready,
            serving = e.serving,
            terminating = e.terminating,
            addresses = ?e.addresses,
            "{what}"
        );
    }
    let listed: Vec<&str> = after.iter().map(|e| e.hostname.as_str()).collect();
    for e in before {
        if !listed.contains(&e.hostname.as_str()) {
            info!(endpoint = %e.hostname, "endpoint no longer listed");
        }
    }
}

/// Back-off between attempts to follow the API.
struct Retry {
    /// The pause before the next attempt after a failure.
    delay: Duration,
    /// When the last complete list arrived, if no failure has happened since.
    healthy_since: Option<Instant>,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            delay: FIRST_RETRY,
            healthy_since: None,
        }
    }
}

impl Retry {
    fn listed(&mut self) {
        self.healthy_since = Some(Instant::now());
    }

    /// The pause before the next attempt. An expiry after a long healthy watch is routine
    /// and re-listed at once; failures that follow each other double the pause, so an API
    /// server that keeps failing is not hammered by every proxy at once (hence the jitter).
    fn pause(&mut self, expired: bool) -> Duration {
        let was_stable = self
            .healthy_since
            .take()
            .is_some_and(|since| since.elapsed() >= STABLE_AFTER);
        if was_stable {
            self.delay = FIRST_RETRY;
            if expired {
                return Duration::ZERO;
            }
        }
        let delay = self.delay;
        self.delay = (delay * 2).min(MAX_RETRY);
        delay + delay.mul_f64(rand::random_range(0.0..0.25))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::EndpointConditions;

    use super::*;

    fn endpoint(hostname: Option<&str>, pod: &str, address: &str) -> Endpoint {
        Endpoint {
            addresses: vec![address.to_owned()],
            hostname: hostname.map(str::to_owned),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".to_owned()),
                name: Some(pod.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(address_type: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.to_owned(),
            endpoints,
            ..Default::default()
        }
    }

    fn ready(hostname: &str, addresses: &[&str], ready: bool) -> EndpointReadiness {
        EndpointReadiness {
            hostname: hostname.to_owned(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            ready,
            serving: ready,
            terminating: false,
        }
    }

    #[test]
    fn missing_conditions_follow_the_api_defaults() {
        let mut e = endpoint(Some("mysql-0"), "mysql-0", "10.0.0.1");
        assert_eq!(
            readiness(&e),
            Some(ready("mysql-0", &["10.0.0.1"], true)),
            "no conditions at all"
        );
        e.conditions = Some(EndpointConditions {
            ready: Some(false),
            ..Default::default()
        });
        let r = readiness(&e).unwrap();
        assert!(!r.ready && r.serving && !r.terminating, "{r:?}");
    }

    #[test]
    fn the_pod_name_stands_in_for_a_missing_hostname() {
        let e = endpoint(None, "mysql-2", "10.0.0.3");
        assert_eq!(readiness(&e).unwrap().hostname, "mysql-2");
        let mut e = e;
        e.target_ref = None;
        assert_eq!(readiness(&e).unwrap().hostname, "10.0.0.3");
    }

    #[test]
    fn dual_stack_slices_give_one_endpoint_per_pod() {
        let mut slices = BTreeMap::new();
        let v4 = slice(
            "IPv4",
            vec![endpoint(Some("mysql-1"), "mysql-1", "10.0.0.2")],
        );
        let v6 = slice(
            "IPv6",
            vec![endpoint(Some("mysql-1"), "mysql-1", "fd00::2")],
        );
        slices.insert("mysql-a".to_owned(), endpoints_of(&v4));
        slices.insert("mysql-b".to_owned(), endpoints_of(&v6));
        assert_eq!(
            merge(&slices),
            [ready("mysql-1", &["10.0.0.2", "fd00::2"], true)]
        );
    }

    #[test]
    fn a_pod_moving_between_slices_counts_as_ready_if_either_says_so() {
        let mut stale = endpoint(Some("mysql-1"), "mysql-1", "10.0.0.2");
        stale.conditions = Some(EndpointConditions {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(false),
        });
        let fresh = endpoint(Some("mysql-1"), "mysql-1", "10.0.0.2");
        let mut slices = BTreeMap::new();
        slices.insert("a".to_owned(), endpoints_of(&slice("IPv4", vec![stale])));
        slices.insert("b".to_owned(), endpoints_of(&slice("IPv4", vec![fresh])));
        assert_eq!(merge(&slices), [ready("mysql-1", &["10.0.0.2"], true)]);
    }

    #[test]
    fn fqdn_slices_are_ignored() {
        let e = Endpoint {
            addresses: vec!["mysql-0.example.com".to_owned()],
            ..Default::default()
        };
        assert!(endpoints_of(&slice("FQDN", vec![e])).is_empty());
    }

    #[test]
    fn failures_in_a_row_back_off_and_a_healthy_watch_resets() {
        let mut retry = Retry::default();
        let first = retry.pause(false);
        let second = retry.pause(false);
        assert!(first >= FIRST_RETRY && first < FIRST_RETRY * 2, "{first:?}");
        assert!(second >= FIRST_RETRY * 2, "{second:?}");
        for _ in 0..20 {
            assert!(retry.pause(false) <= MAX_RETRY + MAX_RETRY / 4);
        }
        retry.healthy_since = Some(Instant::now() - STABLE_AFTER);
        assert_eq!(retry.pause(true), Duration::ZERO);
        assert!(retry.pause(false) < FIRST_RETRY * 2);
    }
}
