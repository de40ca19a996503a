//! A stand-in for the Kubernetes API server, for the one resource the proxy watches:
//! `discovery.k8s.io/v1` EndpointSlices in a namespace. It answers over plain HTTP/1.1 what
//! the real server answers: an `EndpointSliceList` with `metadata.resourceVersion` for a
//! list, a chunked stream of newline-separated `WatchEvent`s for a watch (replaying what
//! happened after the version asked for), and `Status` objects for errors.
//!
//! Tests change the slices (each change gets the next resource version and is delivered to
//! open watches, like the real server), make resource versions expire, and take the server
//! away (connections refused, or a 503/403 for every request).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

pub const SERVICE: &str = "mysql";
pub const NAMESPACE: &str = "default";

/// How the API server answers a watch from a resource version it no longer keeps.
#[derive(Debug, Clone, Copy)]
pub enum Expiry {
    /// `200 OK` and one `ERROR` event carrying a 410 `Status`, then the end of the stream.
    WatchEvent,
    /// `410 Gone` with a `Status` body.
    HttpStatus,
}

/// How the API server is unavailable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outage {
    /// Nothing listens: connections are refused, open ones are cut.
    Refused,
    /// Every request gets `503 Service Unavailable`.
    ServiceUnavailable,
    /// Every request gets `403 Forbidden`, as when the Role is missing.
    Forbidden,
}

/// What an open watch is sent next.
enum Frame {
    Event(String),
    End,
}

struct State {
    slices: BTreeMap<String, Value>,
    /// The last resource version given out.
    version: u64,
    /// Events after each resource version, for watches that resume from one.
    history: Vec<(u64, String)>,
    /// Watches from a version older than this are answered 410 (etcd's compaction).
    compacted: u64,
    expiry: Expiry,
    watches: Vec<mpsc::UnboundedSender<Frame>>,
    outage: Option<Outage>,
    lists: usize,
    watch_requests: usize,
}

impl State {
    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Records an event and sends it to every open watch.
    fn publish(&mut self, version: u64, kind: &str, object: &Value) {
        let line = json!({"type": kind, "object": object}).to_string();
        self.history.push((version, line.clone()));
        self.watches
            .retain(|watch| watch.send(Frame::Event(line.clone())).is_ok());
    }

    fn end_watches(&mut self) {
        for watch in self.watches.drain(..) {
            let _ = watch.send(Frame::End);
        }
    }

    fn store(&mut self, mut slice: Value) -> (u64, bool, Value) {
        let version = self.next_version();
        let name = slice["metadata"]["name"]
            .as_str()
            .expect("slice name")
            .to_owned();
        slice["metadata"]["resourceVersion"] = json!(version.to_string());
        let new = self.slices.insert(name, slice.clone()).is_none();
        (version, new, slice)
    }
}

pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Accepts connections and owns their tasks; aborting it refuses and cuts them all.
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl FakeApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            slices: BTreeMap::new(),
            // A real cluster's versions are large and far from 0.
            version: 41_000,
            history: Vec::new(),
            compacted: 0,
            expiry: Expiry::WatchEvent,
            watches: Vec::new(),
            outage: None,
            lists: 0,
            watch_requests: 0,
        }));
        let acceptor = tokio::spawn(accept(listener, state.clone()));
        Self {
            addr,
            state,
            acceptor: Mutex::new(Some(acceptor)),
        }
    }

    /// A kubeconfig that points a client at this server, as `kubectl config view`
    /// writes one for a cluster reached without credentials.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: local\n  cluster:\n    server: {}\n\
             contexts:\n- name: local\n  context:\n    cluster: local\n    user: local\n    namespace: {NAMESPACE}\n\
             current-context: local\n\
             users:\n- name: local\n  user: {{}}\n",
            self.url()
        )
    }

    /// The URL a client is configured with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Creates or replaces a slice; open watches see ADDED or MODIFIED.
    pub fn apply(&self, slice: Value) {
        let mut state = self.state();
        let (version, new, slice) = state.store(slice);
        state.publish(version, if new { "ADDED" } else { "MODIFIED" }, &slice);
    }

    /// Deletes a slice; open watches see DELETED with its last state.
    pub fn delete(&self, name: &str) {
        let mut state = self.state();
        let mut slice = state.slices.remove(name).expect("slice to delete exists");
        let version = state.next_version();
        slice["metadata"]["resourceVersion"] = json!(version.to_string());
        state.publish(version, "DELETED", &slice);
    }

    /// Changes a slice while no watch is there to see it and its event is compacted
    /// away: only a list shows the change. Use with [`FakeApi::expire`].
    pub fn apply_unseen(&self, slice: Value) {
        self.state().store(slice);
    }

    /// Deletes a slice without any watch seeing it (see [`FakeApi::apply_unseen`]).
    pub fn delete_unseen(&self, name: &str) {
        let mut state = self.state();
        state.slices.remove(name).expect("slice to delete exists");
        state.next_version();
    }

    /// Sends a BOOKMARK with the current resource version to open watches.
    pub fn bookmark(&self) {
        let mut state = self.state();
        let version = state.version.to_string();
        let line = json!({
            "type": "BOOKMARK",
            "object": {
                "kind": "EndpointSlice",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": version, "creationTimestamp": null},
                "addressType": "",
                "endpoints": null,
                "ports": null
            }
        })
        .to_string();
        state
            .watches
            .retain(|watch| watch.send(Frame::Event(line.clone())).is_ok());
    }

    /// Writes elsewhere in the cluster move the resource version on and history is
    /// compacted up to it, then open watches end (their timeout, or an API server
    /// restart). A client resuming from the version it had is told it expired, as `how`.
    pub fn expire(&self, how: Expiry) {
        let mut state = self.state();
        state.compacted = state.next_version();
        state.history.clear();
        state.expiry = how;
        state.end_watches();
    }

    pub fn go_down(&self, outage: Outage) {
        let mut state = self.state();
        state.outage = Some(outage);
        state.end_watches();
        if outage == Outage::Refused
            && let Some(acceptor) = self.acceptor.lock().unwrap().take()
        {
            acceptor.abort();
        }
    }

    pub async fn come_back(&self) {
        let refused = self.state().outage.take() == Some(Outage::Refused);
        if refused {
            let listener = TcpListener::bind(self.addr).await.expect("rebind the port");
            let acceptor = tokio::spawn(accept(listener, self.state.clone()));
            *self.acceptor.lock().unwrap() = Some(acceptor);
        }
    }

    /// List requests answered so far (the 200s, not the refusals).
    pub fn lists(&self) -> usize {
        self.state().lists
    }

    /// Watch requests received so far, answered or not.
    pub fn watch_requests(&self) -> usize {
        self.state().watch_requests
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(acceptor) = self.acceptor.lock().unwrap().take() {
            acceptor.abort();
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<Mutex<State>>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        connections.spawn(serve(stream, state.clone()));
        while connections.try_join_next().is_some() {}
    }
}

/// One HTTP/1.1 connection: requests one after another (keep-alive), as hyper sends them.
async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut buffer = Vec::new();
    while let Some(target) = read_request(&mut stream, &mut buffer).await {
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let query: BTreeMap<String, String> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key), decode(value))
            })
            .collect();
        let expected = format!("/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices");
        let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let outage = {
            let mut state = state.lock().unwrap();
            if watch {
                state.watch_requests += 1;
            }
            state.outage
        };
        let written = match outage {
            Some(Outage::ServiceUnavailable) => {
                let status = status(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                );
                respond(&mut stream, 503, "Service Unavailable", &status).await
            }
            Some(Outage::Forbidden) => {
                let message = format!(
                    "endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:{NAMESPACE}:rwsplit\" cannot list resource \"endpointslices\" in API group \"discovery.k8s.io\" in the namespace \"{NAMESPACE}\""
                );
                respond(
                    &mut stream,
                    403,
                    "Forbidden",
                    &status(403, "Forbidden", &message),
                )
                .await
            }
            _ if path != expected => {
                let status = status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
                respond(&mut stream, 404, "Not Found", &status).await
            }
            _ if watch => watch_slices(&mut stream, &state, &query).await,
            _ => {
                let list = list_slices(&state, &query);
                respond(&mut stream, 200, "OK", &list).await
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// Reads one request head (and skips any body); returns its target.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer.drain(..end).collect()).expect("request head is text");
    let mut lines = head.lines();
    let mut request_line = lines.next()?.split(' ');
    assert_eq!(request_line.next(), Some("GET"), "the watcher only reads");
    let target = request_line.next()?.to_owned();
    let length: usize = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, value)| {
            value.trim().parse().expect("content length")
        });
    while buffer.len() < length {
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    buffer.drain(..length);
    Some(target)
}

/// Percent-decoding of a query component (`application/x-www-form-urlencoded`).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("escape");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("decoded text")
}

/// Whether a slice matches an equality-based label selector (`a=b,c=d`).
fn selected(slice: &Value, query: &BTreeMap<String, String>) -> bool {
    let Some(selector) = query.get("labelSelector") else {
        return true;
    };
    selector.split(',').all(|term| {
        let (key, value) = term.split_once('=').expect("equality selector");
        slice["metadata"]["labels"][key].as_str() == Some(value.trim_start_matches('='))
    })
}

/// Objects in a list carry no `kind`/`apiVersion` of their own; the list has them.
fn list_slices(state: &Mutex<State>, query: &BTreeMap<String, String>) -> Value {
    let mut state = state.lock().unwrap();
    state.lists += 1;
    let items: Vec<Value> = state
        .slices
        .values()
        .filter(|slice| selected(slice, query))
        .map(|slice| {
            let mut item = slice.clone();
            let object = item.as_object_mut().unwrap();
            object.remove("kind");
            object.remove("apiVersion");
            item
        })
        .collect();
    json!({
        "kind": "EndpointSliceList",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": state.version.to_string()},
        "items": items
    })
}

async fn watch_slices(
    stream: &mut TcpStream,
    state: &Mutex<State>,
    query: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    let from: Option<u64> = query
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(|v| v.parse().expect("numeric resource version"));
    let timeout = query
        .get("timeoutSeconds")
        .map_or(1800, |t| t.parse().expect("timeout"));
    let (replay, mut frames) = match open_watch(state, from, query) {
        Ok(watch) => watch,
        Err((how, gone)) => return expired(stream, how, &gone).await,
    };
    stream.write_all(chunked_head(200, "OK").as_bytes()).await?;
    for line in replay {
        write_chunk(stream, &line).await?;
    }
    let deadline = tokio::time::sleep(Duration::from_secs(timeout));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(Frame::Event(line)) => write_chunk(stream, &line).await?,
                Some(Frame::End) | None => break,
            },
            () = &mut deadline => break,
        }
    }
    stream.write_all(b"0\r\n\r\n").await
}

/// The events after `from` and the channel for the ones to come; or, when `from` is
/// compacted away, how to say so and the 410 `Status`.
#[allow(clippy::type_complexity)]
fn open_watch(
    state: &Mutex<State>,
    from: Option<u64>,
    query: &BTreeMap<String, String>,
) -> Result<(Vec<String>, mpsc::UnboundedReceiver<Frame>), (Expiry, Value)> {
    let mut state = state.lock().unwrap();
    if let Some(from) = from.filter(|&from| from < state.compacted) {
        let message = format!("too old resource version: {from} ({})", state.compacted);
        return Err((state.expiry, status(410, "Expired", &message)));
    }
    let replay: Vec<String> = match from {
        Some(from) => state
            .history
            .iter()
            .filter(|(version, _)| *version > from)
            .map(|(_, line)| line.clone())
            .collect(),
        // Without a version a watch starts with the current objects, as ADDED.
        None => state
            .slices
            .values()
            .filter(|slice| selected(slice, query))
            .map(|slice| json!({"type": "ADDED", "object": slice}).to_string())
            .collect(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    state.watches.push(tx);
    Ok((replay, rx))
}

async fn expired(stream: &mut TcpStream, how: Expiry, gone: &Value) -> std::io::Result<()> {
    match how {
        Expiry::HttpStatus => respond(stream, 410, "Gone", gone).await,
        Expiry::WatchEvent => {
            stream.write_all(chunked_head(200, "OK").as_bytes()).await?;
            let event = json!({"type": "ERROR", "object": gone}).to_string();
            write_chunk(stream, &event).await?;
            stream.write_all(b"0\r\n\r\n").await
        }
    }
}

/// A `Status` as the API server sends it for a failed request.
fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    text: &str,
    body: &Value,
) -> std::io::Result<()> {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {text}\r\nAudit-Id: {}\r\nCache-Control: no-cache, private\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        audit_id(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await
}

fn chunked_head(code: u16, text: &str) -> String {
    format!(
        "HTTP/1.1 {code} {text}\r\nAudit-Id: {}\r\nCache-Control: no-cache, private\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        audit_id()
    )
}

/// One watch event per chunk, ended by a newline, as the API server flushes them.
async fn write_chunk(stream: &mut TcpStream, line: &str) -> std::io::Result<()> {
    let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
    stream.write_all(chunk.as_bytes()).await
}

fn audit_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "5f0c2a9e-0000-4000-8000-{:012x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The conditions the EndpointSlice controller writes for a pod.
#[derive(Debug, Clone, Copy)]
pub struct Conditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

pub const READY: Conditions = Conditions {
    ready: true,
    serving: true,
    terminating: false,
};
/// The readiness probe fails.
pub const NOT_READY: Conditions = Conditions {
    ready: false,
    serving: false,
    terminating: false,
};
/// Deleted but still answering during its grace period.
pub const TERMINATING: Conditions = Conditions {
    ready: false,
    serving: true,
    terminating: true,
};

/// The endpoint of StatefulSet pod `mysql-<ordinal>` at 10.244.<ordinal>.17.
pub fn pod(ordinal: u32, conditions: Conditions) -> Value {
    pod_at(ordinal, &format!("10.244.{ordinal}.17"), conditions)
}

/// The endpoint of StatefulSet pod `mysql-<ordinal>` at `address`.
pub fn pod_at(ordinal: u32, address: &str, conditions: Conditions) -> Value {
    let name = format!("{SERVICE}-{ordinal}");
    json!({
        "addresses": [address],
        "conditions": {
            "ready": conditions.ready,
            "serving": conditions.serving,
            "terminating": conditions.terminating
        },
        "hostname": name,
        "targetRef": {
            "kind": "Pod",
            "namespace": NAMESPACE,
            "name": name,
            "uid": format!("8d1c6f3e-5b7a-4c2e-9f10-00000000000{ordinal}")
        },
        "nodeName": format!("node-{}", ordinal % 2 + 1),
        "zone": "zone-a"
    })
}

/// An EndpointSlice of the headless Service, as the EndpointSlice controller writes it.
pub fn slice(name: &str, endpoints: Vec<Value>) -> Value {
    // The API server encodes a slice without endpoints as `null` (a nil Go slice).
    let endpoints = if endpoints.is_empty() {
        Value::Null
    } else {
        Value::Array(endpoints)
    };
    json!({
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name,
            "generateName": format!("{SERVICE}-"),
            "namespace": NAMESPACE,
            "uid": format!("0b7e4f52-91d3-4a8e-b6c2-{:0>12}", name.len()),
            "generation": 1,
            "creationTimestamp": "2026-11-20T09:14:03Z",
            "labels": {
                "app.kubernetes.io/name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": SERVICE,
                "service.kubernetes.io/headless": ""
            },
            "annotations": {
                "endpoints.kubernetes.io/last-change-trigger-time": "2026-11-20T09:14:03Z"
            },
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Service",
                "name": SERVICE,
                "uid": "3f9a1c77-2d4e-4b8a-a0e5-7c6d5e4f3a21",
                "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "mysql", "protocol": "TCP", "port": 3306}]
    })
}
