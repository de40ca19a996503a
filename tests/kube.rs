//! Readiness from the headless Service's EndpointSlices, as the proxy's topology receives
//! it: the watcher runs against an in-process API server that speaks the real wire format,
//! and each test looks only at the updates that come out of the channel.

#[path = "support/kube_api.rs"]
mod kube_api;

use std::time::Duration;

use kube_api::{
    Expiry, FakeApi, NAMESPACE, NOT_READY, Outage, READY, SERVICE, TERMINATING, pod, slice,
};
use rwsplit::topology::discovery::{EndpointReadiness, Update};
use rwsplit::topology::kube::{KubeSettings, client_from_config, watch_endpoint_slices};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest wait for an update that should come; a watcher that is stuck fails the test.
const PATIENCE: Duration = Duration::from_secs(5);

struct Watch {
    updates: mpsc::Receiver<Update>,
    task: JoinHandle<()>,
}

impl Watch {
    fn start(api: &FakeApi) -> Self {
        let mut config = kube::Config::new(api.url().parse().unwrap());
        config.default_namespace = NAMESPACE.to_owned();
        let client = client_from_config(config).unwrap();
        let settings = KubeSettings {
            namespace: NAMESPACE.to_owned(),
            service: SERVICE.to_owned(),
        };
        let (tx, updates) = mpsc::channel(16);
        let task = tokio::spawn(watch_endpoint_slices(client, settings, tx));
        Self { updates, task }
    }

    async fn next(&mut self) -> Update {
        tokio::time::timeout(PATIENCE, self.updates.recv())
            .await
            .expect("an update within 5 s")
            .expect("the watch keeps running")
    }

    /// The next update, which must be the full set of endpoints.
    async fn endpoints(&mut self) -> Vec<EndpointReadiness> {
        match self.next().await {
            Update::Kubernetes(endpoints) => endpoints,
            other => panic!("expected the endpoints, got {other:?}"),
        }
    }

    /// Fails if an update comes within `wait`.
    async fn nothing_for(&mut self, wait: Duration) {
        if let Ok(update) = tokio::time::timeout(wait, self.updates.recv()).await {
            panic!("expected no update, got {update:?}");
        }
    }
}

/// Hostname and (ready, serving, terminating) of each endpoint.
fn summary(endpoints: &[EndpointReadiness]) -> Vec<(&str, (bool, bool, bool))> {
    endpoints
        .iter()
        .map(|e| (e.hostname.as_str(), (e.ready, e.serving, e.terminating)))
        .collect()
}

const R: (bool, bool, bool) = (true, true, false);
const NR: (bool, bool, bool) = (false, false, false);

fn three_ready() -> serde_json::Value {
    slice(
        "mysql-7xq2d",
        vec![pod(0, READY), pod(1, READY), pod(2, READY)],
    )
}

#[tokio::test]
async fn the_initial_list_reports_every_pod() {
    let api = FakeApi::start().await;
    api.apply(three_ready());
    let mut watch = Watch::start(&api);
    let endpoints = watch.endpoints().await;
    assert_eq!(
        summary(&endpoints),
        [("mysql-0", R), ("mysql-1", R), ("mysql-2", R)]
    );
    assert_eq!(
        endpoints[1].addresses,
        ["10.244.1.17".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(api.lists(), 1);
}

#[tokio::test]
async fn a_failing_readiness_probe_shows_at_once_and_recovery_too() {
    let api = FakeApi::start().await;
    api.apply(three_ready());
    let mut watch = Watch::start(&api);
    watch.endpoints().await;

    api.apply(slice(
        "mysql-7xq2d",
        vec![pod(0, READY), pod(1, READY), pod(2, NOT_READY)],
    ));
    assert_eq!(
        summary(&watch.endpoints().await),
        [("mysql-0", R), ("mysql-1", R), ("mysql-2", NR)]
    );
    api.apply(three_ready());
    assert_eq!(
        summary(&watch.endpoints().await),
        [("mysql-0", R), ("mysql-1", R), ("mysql-2", R)]
    );
    assert_eq!(api.lists(), 1, "events, not lists, carried the changes");
}

#[tokio::test]
async fn a_terminating_pod_is_reported_as_such() {
    let api = FakeApi::start().await;
    api.apply(three_ready());
    let mut watch = Watch::start(&api);
    watch.endpoints().await;

    api.apply(slice(
        "mysql-7xq2d",
        vec![pod(0, READY), pod(1, TERMINATING), pod(2, READY)],
    ));
    assert_eq!(
        summary(&watch.endpoints().await),
        [
            ("mysql-0", R),
            ("mysql-1", (false, true, true)),
            ("mysql-2", R)
        ]
    );
}

#[tokio::test]
async fn slices_are_merged_and_deleted_independently() {
    let api = FakeApi::start().await;
    api.apply(slice("mysql-7xq2d", vec![pod(0, READY), pod(1, READY)]));
    api.apply(slice("mysql-k4m9s", vec![pod(2, READY)]));
    let mut watch = Watch::start(&api);
    assert_eq!(
        summary(&watch.endpoints().await),
        [("mysql-0", R), ("mysql-1", R), ("mysql-2", R)]
    );

    api.apply(slice("mysql-p8w3n", vec![pod(3, NOT_READY)]));
    assert_eq!(
        summary(&watch.endpoints().await),
        [
            ("mysql-0", R),
            ("mysql-1", R),
            ("mysql-2", R),
            ("mysql-3", NR)
        ]
    );
    api.delete("mysql-k4m9s");
    assert_eq!(
        summary(&watch.endpoints().await),
        [("mysql-0", R), ("mysql-1", R), ("mysql-3", NR)]
    );
}

#[tokio::test]
async fn bookmarks_change_nothing_and_the_watch_goes_on() {
    let api = FakeApi::start().await;
    api.apply(three_ready());
    let mut watch = Watch::start(&api);
    watch.endpoints().await;

    api.bookmark();
    watch.nothing_for(Duration::from_millis(300)).await;
    api.apply(slice(
        "mysql-7xq2d",
        vec![pod(0, READY), pod(1, NOT_READY), pod(2, READY)],
    ));
    assert_eq!(
        summary(&watch.endpoints().await),
        [("mysql-0", R), ("mysql-1", NR), ("mysql-2", R)]
    );
}

/// While the watch was away, one slice was deleted and a pod left the other, and the
/// history that would have told it was compacted: only a new list can show the state.
async fn an_expired_watch_lists_again(how: Expiry) {
    let api = FakeApi::start().await;
    api.apply(slice("mysql-7xq2d", vec![pod(0, READY), pod(1, READY)]));
    api.apply(slice("mysql-k4m9s", vec![pod(2, READY)]));
    let mut watch = Watch::start(&api);
    assert_eq!(watch.endpoints().await.len(), 3);

    api.delete_unseen("mysql-k4m9s");
    api.apply_unseen(slice("mysql-7xq2d", vec![pod(0, READY)]));
    api.expire(how);
    assert_eq!(
        summary(&watch.endpoints().await),
        [("mysql-0", R)],
        "nothing from before the expiry survives"
    );
    assert_eq!(api.lists(), 2, "the state came from a second list");

    // The new watch follows changes as before.
    api.apply(slice("mysql-7xq2d", vec![pod(0, READY), pod(1, READY)]));
    assert_eq!(
        summary(&watch.endpoints().await),
        [("mysql-0", R), ("mysql-1", R)]
    );
    assert_eq!(api.lists(), 2);
}

#[tokio::test]
async fn an_expiry_reported_in_the_watch_stream_lists_again() {
    an_expired_watch_lists_again(Expiry::WatchEvent).await;
}

#[tokio::test]
async fn an_expiry_answered_with_410_gone_lists_again() {
    an_expired_watch_lists_again(Expiry::HttpStatus).await;
}

#[tokio::test]
async fn an_expiry_with_nothing_changed_sends_nothing() {
    let api = FakeApi::start().await;
    api.apply(three_ready());
    let mut watch = Watch::start(&api);
    watch.endpoints().await;

    api.expire(Expiry::HttpStatus);
    watch.nothing_for(Duration::from_millis(800)).await;
    assert_eq!(
        api.lists(),
        2,
        "the expiry was noticed and answered by a list"
    );
}

/// The API goes away (its pods changing meanwhile) and comes back: one notice of the
/// outage, no empty state, then the whole current state.
async fn an_outage_is_reported_once(outage: Outage) {
    let api = FakeApi::start().await;
    api.apply(three_ready());
    let mut watch = Watch::start(&api);
    watch.endpoints().await;

    api.go_down(outage);
    let reason = match watch.next().await {
        Update::KubernetesUnavailable(reason) => reason,
        other => panic!("expected the outage, got {other:?}"),
    };
    if outage == Outage::Forbidden {
        assert!(reason.contains("forbidden"), "{reason}");
    }
    let watches_before = api.watch_requests();
    // Retries at about 0.25 s, 0.75 s and 1.75 s after the failure.
    watch.nothing_for(Duration::from_millis(1200)).await;
    if outage != Outage::Refused {
        assert_eq!(
            api.watch_requests(),
            watches_before,
            "retries start from a list, not from the stale watch"
        );
    }
    api.apply(slice(
        "mysql-7xq2d",
        vec![pod(0, READY), pod(1, NOT_READY), pod(2, READY)],
    ));
    api.come_back().await;
    assert_eq!(
        summary(&watch.endpoints().await),
        [("mysql-0", R), ("mysql-1", NR), ("mysql-2", R)]
    );
    assert_eq!(api.lists(), 2);
}

#[tokio::test]
async fn connections_refused_are_one_outage() {
    an_outage_is_reported_once(Outage::Refused).await;
}

#[tokio::test]
async fn service_unavailable_is_one_outage() {
    an_outage_is_reported_once(Outage::ServiceUnavailable).await;
}

#[tokio::test]
async fn a_missing_role_is_an_outage_that_says_forbidden() {
    an_outage_is_reported_once(Outage::Forbidden).await;
}

#[tokio::test]
async fn the_same_state_is_sent_again_after_an_outage() {
    let api = FakeApi::start().await;
    api.apply(three_ready());
    let mut watch = Watch::start(&api);
    let before = watch.endpoints().await;

    api.go_down(Outage::ServiceUnavailable);
    assert!(matches!(
        watch.next().await,
        Update::KubernetesUnavailable(_)
    ));
    api.come_back().await;
    assert_eq!(watch.endpoints().await, before);
}

#[tokio::test]
async fn an_api_unreachable_from_the_start_is_an_outage_not_an_empty_list() {
    let api = FakeApi::start().await;
    api.apply(three_ready());
    api.go_down(Outage::Refused);
    let mut watch = Watch::start(&api);
    assert!(matches!(
        watch.next().await,
        Update::KubernetesUnavailable(_)
    ));
    watch.nothing_for(Duration::from_millis(400)).await;
    api.come_back().await;
    assert_eq!(watch.endpoints().await.len(), 3);
}

#[tokio::test]
async fn a_service_without_pods_is_an_empty_list() {
    let api = FakeApi::start().await;
    api.apply(slice("mysql-7xq2d", vec![]));
    let mut watch = Watch::start(&api);
    assert!(watch.endpoints().await.is_empty());
}

#[tokio::test]
async fn the_watch_stops_when_nobody_listens() {
    let api = FakeApi::start().await;
    api.apply(three_ready());
    let mut watch = Watch::start(&api);
    watch.endpoints().await;
    drop(watch.updates);
    tokio::time::timeout(PATIENCE, watch.task)
        .await
        .expect("the watch ends")
        .unwrap();
}
