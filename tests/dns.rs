//! DNS discovery against a real DNS server speaking the wire format (the test support's
//! `DnsServer`), and the local cluster's own DNS when it scales out and in. What is checked is
//! what the proxy would use: which servers, at which addresses, in which role, and when.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use rwsplit::topology::discovery::{Member, Role, Update};
use rwsplit::topology::dns::{self, DnsDiscovery, DnsError, DnsSettings};
use support::cluster::dns::DnsServer;
use support::cluster::{self, Cluster};
use tokio::sync::mpsc;

const NET: &str = "127.0.28";

/// A DNS server of its own for one test, on an ephemeral port.
fn dns_server() -> DnsServer {
    DnsServer::start(format!("{NET}.100:0").parse().unwrap()).expect("DNS server starts")
}

fn settings(server: SocketAddr, interval: Duration) -> DnsSettings {
    DnsSettings {
        headless_service: "mysql".into(),
        namespace: "shop".into(),
        cluster_domain: "cluster.local".into(),
        port_name: "mysql".into(),
        primary_pod: "mysql-0".into(),
        default_port: 3306,
        server: Some(server),
        interval,
    }
}

fn discovery(dns: &DnsServer) -> DnsDiscovery {
    DnsDiscovery::new(settings(dns.address(), Duration::from_millis(200))).unwrap()
}

fn pod_ip(k: usize) -> IpAddr {
    format!("10.28.0.{}", k + 1).parse().unwrap()
}

/// Publishes pods `mysql-K` (for each K in `pods`) as the headless Service does.
fn publish(dns: &DnsServer, s: &DnsSettings, pods: &[usize]) {
    let mut targets = Vec::new();
    for &k in pods {
        let name = s.pod_name(&format!("mysql-{k}"));
        dns.set_a(&name, &[pod_ip(k)]);
        targets.push((name, 3306));
    }
    let ips: Vec<IpAddr> = pods.iter().map(|&k| pod_ip(k)).collect();
    dns.set_a(&s.service_name(), &ips);
    dns.set_srv(&s.srv_name(), &targets);
}

fn pod(k: usize, role: Role) -> Member {
    Member {
        name: format!("mysql-{k}.mysql.shop.svc.cluster.local"),
        hostname: format!("mysql-{k}"),
        address: SocketAddr::new(pod_ip(k), 3306),
        role,
    }
}

fn names(members: &[Member]) -> Vec<&str> {
    members.iter().map(|m| m.hostname.as_str()).collect()
}

#[tokio::test]
async fn srv_records_name_the_primary_and_the_replicas() {
    let dns = dns_server();
    let discovery = discovery(&dns);
    publish(&dns, discovery.settings(), &[2, 0, 1]);
    let members = discovery.resolve_headless().await.unwrap();
    assert_eq!(
        members,
        [
            pod(0, Role::Primary),
            pod(1, Role::Replica),
            pod(2, Role::Replica)
        ]
    );
}

#[tokio::test]
async fn the_port_comes_from_the_srv_record_and_targets_without_glue_are_looked_up() {
    let dns = dns_server();
    dns.set_ttl(1);
    dns.set_additionals(false);
    let discovery = discovery(&dns);
    let s = discovery.settings();
    publish(&dns, s, &[0, 1]);
    dns.set_srv(
        &s.srv_name(),
        &[(s.pod_name("mysql-0"), 3306), (s.pod_name("mysql-1"), 3307)],
    );
    let members = discovery.resolve_headless().await.unwrap();
    let mut replica = pod(1, Role::Replica);
    replica.address.set_port(3307);
    assert_eq!(members, [pod(0, Role::Primary), replica]);

    // A target whose own record is gone (its pod left between the two queries) is left out,
    // once the answers cached for their TTL have expired.
    dns.set_a(&s.pod_name("mysql-1"), &[]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let members = discovery.resolve_headless().await.unwrap();
    assert_eq!(members, [pod(0, Role::Primary)]);
}

#[tokio::test]
async fn without_srv_records_the_service_addresses_are_replicas() {
    let dns = dns_server();
    let mut s = settings(dns.address(), Duration::from_secs(1));
    s.default_port = 3307;
    let discovery = DnsDiscovery::new(s).unwrap();
    let service = discovery.settings().service_name();
    dns.set_a(&service, &[pod_ip(1), pod_ip(0)]);
    let members = discovery.resolve_headless().await.unwrap();
    let by_ip = |k: usize| Member {
        name: format!("{}:3307", pod_ip(k)),
        hostname: pod_ip(k).to_string(),
        address: SocketAddr::new(pod_ip(k), 3307),
        role: Role::Replica,
    };
    assert_eq!(members, [by_ip(0), by_ip(1)]);
}

#[tokio::test]
async fn a_service_without_pods_is_an_empty_set() {
    let dns = dns_server();
    let discovery = discovery(&dns);
    assert_eq!(discovery.resolve_headless().await.unwrap(), []);
}

/// The next `Update::Dns` from `rx` that satisfies `wanted`, and how long it took; every
/// update on the way must be a `Dns` one.
async fn wait_for(
    rx: &mut mpsc::Receiver<Update>,
    within: Duration,
    wanted: impl Fn(&[Member]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let update = tokio::time::timeout_at((start + within).into(), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no wanted DNS update within {within:?}"))
            .expect("discovery runs");
        match update {
            Update::Dns(members) if wanted(&members) => return start.elapsed(),
            Update::Dns(_) => {}
            other => panic!("unexpected update {other:?}"),
        }
    }
}

#[tokio::test]
async fn pods_coming_and_going_are_seen_within_an_interval_and_a_ttl() {
    let dns = dns_server();
    dns.set_ttl(1);
    let interval = Duration::from_millis(300);
    let discovery = DnsDiscovery::new(settings(dns.address(), interval)).unwrap();
    let s = discovery.settings().clone();
    publish(&dns, &s, &[0, 1, 2]);
    support::init_logs();
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(dns::run(discovery, tx));
    let bound = interval + Duration::from_secs(1) + Duration::from_millis(500);

    wait_for(&mut rx, bound, |m| {
        names(m) == ["mysql-0", "mysql-1", "mysql-2"]
    })
    .await;
    publish(&dns, &s, &[0, 1, 2, 3]);
    let took = wait_for(&mut rx, bound, |m| m.len() == 4).await;
    assert!(took <= bound, "scale-out seen after {took:?}");
    publish(&dns, &s, &[0, 2, 3]);
    let took = wait_for(&mut rx, bound, |m| {
        names(m) == ["mysql-0", "mysql-2", "mysql-3"]
    })
    .await;
    assert!(took <= bound, "pod removal seen after {took:?}");

    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("discovery stops when nobody listens")
        .unwrap();
}

#[tokio::test]
async fn a_negative_answer_does_not_hide_pods_that_appear_later() {
    let dns = dns_server();
    // The SOA asks resolvers to remember "no such name" for a minute.
    dns.set_ttl(60);
    let interval = Duration::from_millis(300);
    let discovery = DnsDiscovery::new(settings(dns.address(), interval)).unwrap();
    let s = discovery.settings().clone();
    support::init_logs();
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(dns::run(discovery, tx));
    wait_for(&mut rx, Duration::from_secs(2), <[Member]>::is_empty).await;
    publish(&dns, &s, &[0, 1]);
    let took = wait_for(&mut rx, Duration::from_secs(3), |m| m.len() == 2).await;
    assert!(took < 3 * interval, "pods seen only after {took:?}");
}

#[tokio::test]
async fn a_failing_dns_reports_failures_and_never_an_empty_set() {
    let dns = dns_server();
    dns.set_ttl(1);
    let discovery = discovery(&dns);
    publish(&dns, discovery.settings(), &[0, 1]);
    support::init_logs();
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(dns::run(discovery, tx));
    wait_for(&mut rx, Duration::from_secs(2), |m| m.len() == 2).await;

    // Answers stay cached for their TTL (1 s); the failures start when they expire.
    dns.set_failing(true);
    let mut failures = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        match rx.recv().await.unwrap() {
            Update::DnsFailed(reason) => {
                assert!(!reason.is_empty());
                failures += 1;
            }
            Update::Dns(members) => assert_eq!(members.len(), 2, "a failure became {members:?}"),
            other => panic!("unexpected update {other:?}"),
        }
    }
    assert!(failures >= 3, "{failures} failures reported in 3 s");

    dns.set_failing(false);
    wait_for_recovery(&mut rx).await;
}

async fn wait_for_recovery(rx: &mut mpsc::Receiver<Update>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let update = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("discovery recovers")
            .unwrap();
        if let Update::Dns(members) = update {
            assert_eq!(members.len(), 2);
            return;
        }
    }
}

#[tokio::test]
async fn a_silent_nameserver_fails_the_round_within_seconds() {
    // Takes queries and never answers them.
    let silent = std::net::UdpSocket::bind(format!("{NET}.100:0")).unwrap();
    let discovery = DnsDiscovery::new(settings(
        silent.local_addr().unwrap(),
        Duration::from_secs(1),
    ))
    .unwrap();
    let start = Instant::now();
    let result = discovery.resolve_headless().await;
    assert!(matches!(result, Err(DnsError::Lookup { .. })), "{result:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_large_service_is_answered_over_tcp() {
    let dns = dns_server();
    let discovery = discovery(&dns);
    let pods: Vec<usize> = (0..60).collect();
    publish(&dns, discovery.settings(), &pods);
    let members = discovery.resolve_headless().await.unwrap();
    assert_eq!(members.len(), 60);
    assert_eq!(
        members.iter().filter(|m| m.role == Role::Primary).count(),
        1
    );
    assert!(members.contains(&pod(59, Role::Replica)));
}

#[tokio::test]
async fn configured_hosts_resolve_by_name_short_name_and_ip_literal() {
    let dns = dns_server();
    let discovery = discovery(&dns);
    let s = discovery.settings().clone();
    publish(&dns, &s, &[0, 1]);
    let expected = vec![SocketAddr::new(pod_ip(1), 3306)];
    assert_eq!(
        discovery
            .resolve_host(&s.pod_name("mysql-1"), 3306)
            .await
            .unwrap(),
        expected
    );
    // As inside the pod's namespace: the search domains complete the name.
    assert_eq!(
        discovery.resolve_host("mysql-1.mysql", 3306).await.unwrap(),
        expected
    );
    let missing = discovery.resolve_host("mysql-9.mysql", 3306).await;
    assert!(
        matches!(missing, Err(DnsError::NoAddress { .. })),
        "{missing:?}"
    );

    // IP literals need no DNS at all.
    dns.set_failing(true);
    assert_eq!(
        discovery.resolve_host("10.1.2.3", 3307).await.unwrap(),
        ["10.1.2.3:3307".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        discovery.resolve_host("[fd00::5]", 3306).await.unwrap(),
        ["[fd00::5]:3306".parse::<SocketAddr>().unwrap()]
    );
    // A name not cached yet needs the failing DNS.
    assert!(discovery.resolve_host("mysql-0.mysql", 3306).await.is_err());
}

/// What `SHOW SLAVE STATUS` says about `field` on server `k`, as the monitor user sees it.
async fn slave_status(cluster: &Cluster, k: usize, field: &str) -> Option<String> {
    let server = &cluster.servers[k];
    let opts = support::opts(
        &server.ip,
        cluster::PORT,
        cluster::MONITOR_USER,
        cluster::MONITOR_PASSWORD,
        None,
    );
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let row: mysql_async::Row = conn
        .query_first("SHOW SLAVE STATUS")
        .await
        .unwrap()
        .unwrap();
    let value: Option<String> = row.get(field).unwrap_or_else(|| panic!("no {field}"));
    conn.disconnect().await.unwrap();
    value
}

/// Waits until DNS lists the first `n` pods of the local cluster, primary first, at their
/// addresses; the cluster's records live for a second.
async fn wait_for_pods(discovery: &DnsDiscovery, n: usize) {
    let expected: Vec<(String, String, Role)> = (0..n)
        .map(|k| {
            let role = if k == 0 { Role::Primary } else { Role::Replica };
            (format!("mysql-{k}"), format!("{NET}.{}:3306", k + 1), role)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let members: Vec<(String, String, Role)> = discovery
            .resolve_headless()
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.hostname, m.address.to_string(), m.role))
            .collect();
        if members == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "DNS lists {members:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count_rows(cluster: &Cluster, k: usize) -> Result<u64, mysql_async::Error> {
    let mut conn = mysql_async::Conn::new(support::direct_opts(cluster, k, Some("app"))).await?;
    let count: Option<u64> = conn.query_first("SELECT COUNT(*) FROM scale").await?;
    conn.disconnect().await?;
    Ok(count.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_scales_pauses_and_lags() {
    let mut cluster =
        tokio::task::block_in_place(|| Cluster::start(NET, 2)).expect("local cluster");
    let mut s = settings(cluster.dns_address(), Duration::from_secs(1));
    s.namespace = cluster::NAMESPACE.into();
    let discovery = DnsDiscovery::new(s).unwrap();
    wait_for_pods(&discovery, 3).await;

    // Scale out: the new replica has what was written before it existed and what is
    // written after, and the application user (from the primary's bootstrap) can log in.
    cluster
        .sql(
            0,
            "CREATE TABLE app.scale (id INT PRIMARY KEY); INSERT INTO app.scale VALUES (1)",
        )
        .unwrap();
    let k = tokio::task::block_in_place(|| cluster.add_replica()).expect("scale out");
    assert_eq!(k, 3);
    assert_eq!(count_rows(&cluster, 3).await.unwrap(), 1);
    assert_eq!(
        cluster.sql(3, "SELECT @@server_id, @@read_only").unwrap(),
        "4\t1"
    );
    cluster.sql(0, "INSERT INTO app.scale VALUES (2)").unwrap();
    cluster
        .wait_replicas_caught_up(Duration::from_secs(30))
        .unwrap();
    assert_eq!(count_rows(&cluster, 3).await.unwrap(), 2);
    let io_running = slave_status(&cluster, 3, "Slave_IO_Running").await;
    assert_eq!(io_running.as_deref(), Some("Yes"));
    wait_for_pods(&discovery, 4).await;

    // Scale in: out of DNS, and stopped.
    let address = cluster.servers[3].address();
    tokio::task::block_in_place(|| cluster.remove_replica());
    wait_for_pods(&discovery, 3).await;
    assert!(std::net::TcpStream::connect(&address).is_err());

    // Unpublished: the pod is out of DNS but still running.
    cluster.unpublish(2);
    wait_for_pods(&discovery, 2).await;
    assert_eq!(count_rows(&cluster, 2).await.unwrap(), 2);
    cluster.publish(2);
    wait_for_pods(&discovery, 3).await;

    // A paused server accepts nothing and answers nothing until it is resumed.
    cluster.pause_server(2);
    let paused = tokio::time::timeout(Duration::from_secs(2), count_rows(&cluster, 2)).await;
    assert!(paused.is_err(), "a paused server answered: {paused:?}");
    cluster.resume_server(2);
    let resumed = tokio::time::timeout(Duration::from_secs(10), count_rows(&cluster, 2)).await;
    assert_eq!(resumed.expect("resumed server answers").unwrap(), 2);

    // A delayed replica: the write is on the primary, not on the replica, and the replica
    // says it is behind; without the delay it catches up.
    cluster.set_replication_delay(1, 30).unwrap();
    cluster.sql(0, "INSERT INTO app.scale VALUES (3)").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count_rows(&cluster, 0).await.unwrap(), 3);
    assert_eq!(count_rows(&cluster, 1).await.unwrap(), 2);
    let behind = slave_status(&cluster, 1, "Seconds_Behind_Master").await;
    let behind: u64 = behind.expect("replication runs").parse().unwrap();
    assert!(behind >= 2, "Seconds_Behind_Master = {behind}");
    cluster.set_replication_delay(1, 0).unwrap();
    tokio::task::block_in_place(|| cluster.wait_replicas_caught_up(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(count_rows(&cluster, 1).await.unwrap(), 3);
    let behind = slave_status(&cluster, 1, "Seconds_Behind_Master").await;
    assert_eq!(behind.as_deref(), Some("0"));
}
