//! rwsplit: a MySQL protocol proxy that authenticates clients itself and relays their
//! traffic to backend servers unchanged.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod classify;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod router;
pub mod server;
pub mod session;
pub mod signal;
pub mod tls;
pub mod topology;
