//! What a proxy's memory grows by per idle client: connections logged in through it and held
//! open with no statement, the way an application's pool holds them.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;

use super::measure::rss_kib;
use super::{APP_PASSWORD, APP_USER, IdleResult, Target};

/// Logins in flight at once: enough to be quick, few enough not to overflow a listen backlog.
const CONCURRENT_LOGINS: usize = 16;
/// Time for the proxy to finish what the logins started before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Opens `n` connections to `addr`, reads the RSS of `pid` before, with them and after they
/// closed.
pub async fn measure(target: Target, addr: SocketAddr, pid: u32, n: usize) -> IdleResult {
    tokio::time::sleep(SETTLE).await;
    let rss_before_kib = rss_kib(pid).unwrap_or(0);
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some("app"))
        .prefer_socket(false)
        // Given, mysql_async asks the server nothing after the login: the connection is
        // logged in and has sent no statement.
        .max_allowed_packet(Some(64 << 20))
        .wait_timeout(Some(28_800))
        .into();
    let results: Vec<Result<mysql_async::Conn, mysql_async::Error>> =
        futures_util::stream::iter((0..n).map(|_| mysql_async::Conn::new(opts.clone())))
            .buffer_unordered(CONCURRENT_LOGINS)
            .collect()
            .await;
    let error = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .map(|e| e.to_string());
    let mut conns: Vec<mysql_async::Conn> = results.into_iter().filter_map(Result::ok).collect();
    let opened = conns.len();
    tokio::time::sleep(SETTLE).await;
    let rss_with_kib = rss_kib(pid).unwrap_or(0);

    // Every connection must still be there, else the memory counted fewer than claimed.
    let pings = futures_util::stream::iter(conns.iter_mut().map(|c| c.ping()))
        .buffer_unordered(CONCURRENT_LOGINS)
        .collect::<Vec<_>>()
        .await;
    let alive = pings.iter().filter(|r| r.is_ok()).count();
    futures_util::stream::iter(conns.into_iter().map(|c| c.disconnect()))
        .buffer_unordered(CONCURRENT_LOGINS)
        .collect::<Vec<_>>()
        .await;
    tokio::time::sleep(SETTLE).await;
    let rss_after_kib = rss_kib(pid).unwrap_or(0);
    IdleResult {
        target,
        wanted: n,
        opened,
        alive,
        rss_before_kib,
        rss_with_kib,
        rss_after_kib,
        error,
    }
}
