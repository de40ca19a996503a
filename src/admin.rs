//! The admin port: HTTP/1 for Prometheus and the kubelet, on its own listener so that
//! neither competes with clients. `/metrics` (text exposition), `/healthz` (the process
//! answers), `/readyz` (it takes clients and can reach a server: 503 while draining or
//! when neither the primary nor any replica can be reached), `/status` (the topology as
//! JSON: every backend with its state and why it does or does not take reads).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::debug;

use crate::server::Shared;
use crate::topology::{Backend, ErrorKind, Role};

/// A request's headers must arrive within this; an idle or trickling connection is
/// dropped rather than held.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = crate::server::accept(&listener).await;
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&shared, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn respond(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            TEXT_FORMAT,
            shared.metrics.render(&shared.backends),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match not_ready(shared) {
            None => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            Some(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/status" => {
            let body = serde_json::to_string_pretty(&status(shared)).expect("JSON values encode");
            reply(StatusCode::OK, "application/json", body + "\n")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz or /status\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// Why the proxy should get no new clients now, if it should not.
fn not_ready(shared: &Shared) -> Option<String> {
    if shared.draining.load(Ordering::Relaxed) {
        return Some("shutting down".to_owned());
    }
    let topology = shared.backends.load();
    let replica_ready = topology.replicas.iter().any(|r| r.eligible() && r.up());
    if topology.primary.up() || replica_ready {
        return None;
    }
    Some(format!(
        "neither the primary {} nor any replica can be reached",
        topology.primary.name()
    ))
}

fn status(shared: &Shared) -> Value {
    let topology = shared.backends.load();
    let now = Instant::now();
    let sources: Vec<Value> = shared
        .backends
        .sources()
        .into_iter()
        .map(|(source, state)| {
            json!({
                "source": source,
                "ok": state.error.is_none(),
                "error": state.error,
                "seconds_ago": seconds(now.duration_since(state.at)),
            })
        })
        .collect();
    let not_ready = not_ready(shared);
    json!({
        "ready": not_ready.is_none(),
        "not_ready_because": not_ready,
        "draining": shared.draining.load(Ordering::Relaxed),
        "client_connections": shared.metrics.client_connections.get(),
        "primary": backend_status(&topology.primary, now),
        "replicas": topology.replicas.iter().map(|r| backend_status(r, now)).collect::<Vec<_>>(),
        "eligible_replicas": topology.replicas.iter().filter(|r| r.eligible()).count(),
        "discovery": sources,
    })
}

fn backend_status(backend: &Backend, now: Instant) -> Value {
    let observed = backend.observed();
    let up = backend.up();
    let state = match backend.role {
        Role::Primary if !up => "down",
        Role::Primary if observed.read_only == Some(true) => "read_only",
        Role::Primary => "up",
        Role::Replica if backend.eligible() => "eligible",
        Role::Replica if !up => "down",
        Role::Replica => "excluded",
    };
    let errors: serde_json::Map<String, Value> = ErrorKind::ALL
        .iter()
        .map(|kind| (kind.label().to_owned(), backend.errors(*kind).into()))
        .collect();
    let mut status = json!({
        "name": backend.name(),
        "role": backend.role.label(),
        "address": backend.endpoint.address,
        "state": state,
        "up": up,
        "read_only": observed.read_only,
        "check_error": observed.check_error,
        "last_check_seconds_ago": observed.checked_at.map(|at| seconds(now.duration_since(at))),
        "connect_backoff_seconds": seconds(backend.blocked_for()),
        "in_flight": backend.in_flight(),
        "connections": backend.connections(),
        "statements": backend.statements(),
        "errors": errors,
    });
    if backend.role == Role::Replica {
        let replica = json!({
            "eligible": backend.eligible(),
            "why_not": observed.why_not,
            "replication_lag_seconds": observed.lag.map(|lag| lag.as_secs()),
            "io_running": observed.io_running,
            "sql_running": observed.sql_running,
            "replication_error": observed.replication_error,
        });
        if let (Value::Object(status), Value::Object(replica)) = (&mut status, replica) {
            status.extend(replica);
        }
    }
    status
}

/// A duration as seconds with millisecond precision.
fn seconds(duration: Duration) -> f64 {
    (duration.as_millis() as f64) / 1000.0
}
