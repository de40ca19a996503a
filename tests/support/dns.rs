//! A small authoritative DNS server for the tests and the demo: the records a headless Service
//! publishes (A/AAAA per name, SRV with the targets' addresses in the additional section, as
//! CoreDNS does), in the real wire format over UDP and TCP, changed while it runs.
//!
//! Unknown names get NXDOMAIN, known names without records of the asked type an empty answer;
//! both carry an SOA whose minimum is the record TTL, which is what resolvers cache negative
//! answers for. Answers too large for the client's UDP size are truncated, so the client asks
//! again over TCP. It runs on plain threads, so sync and async tests can both use it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// How often the serving threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// The UDP payload size announced to EDNS clients (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// The published records, by lower-case fully-qualified name.
struct Zone {
    addresses: HashMap<String, Vec<IpAddr>>,
    services: HashMap<String, Vec<(String, u16)>>,
    ttl: u32,
    failing: bool,
    /// Whether SRV answers carry the targets' addresses.
    additionals: bool,
    /// How long every answer waits before it is sent.
    delay: Duration,
}

pub struct DnsServer {
    address: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves on `bind` over UDP and TCP (with port 0, on the port UDP got). Records live for
    /// 5 s, as with CoreDNS's default.
    pub fn start(bind: SocketAddr) -> Result<Self, String> {
        let udp = UdpSocket::bind(bind).map_err(|e| format!("DNS on udp {bind}: {e}"))?;
        let address = udp.local_addr().map_err(|e| e.to_string())?;
        let tcp = TcpListener::bind(address).map_err(|e| format!("DNS on tcp {address}: {e}"))?;
        udp.set_read_timeout(Some(POLL))
            .map_err(|e| e.to_string())?;
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        let zone = Arc::new(Mutex::new(Zone {
            addresses: HashMap::new(),
            services: HashMap::new(),
            ttl: 5,
            failing: false,
            additionals: true,
            delay: Duration::ZERO,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (z, s) = (zone.clone(), stop.clone());
        let udp_thread = std::thread::spawn(move || serve_udp(udp, &z, &s));
        let (z, s) = (zone.clone(), stop.clone());
        let tcp_thread = std::thread::spawn(move || serve_tcp(tcp, &z, &s));
        Ok(Self {
            address,
            zone,
            stop,
            threads: vec![udp_thread, tcp_thread],
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sets the A/AAAA records of `name`; none removes them.
    pub fn set_a(&self, name: &str, ips: &[IpAddr]) {
        replace(&mut self.zone.lock().unwrap().addresses, name, ips);
    }

    /// Sets the SRV records of `name` (target name, port); none removes them.
    pub fn set_srv(&self, name: &str, targets: &[(String, u16)]) {
        replace(&mut self.zone.lock().unwrap().services, name, targets);
    }

    /// The TTL of every record and of negative answers, from now on.
    pub fn set_ttl(&self, secs: u32) {
        self.zone.lock().unwrap().ttl = secs;
    }

    /// Whether SRV answers carry the targets' A/AAAA records (CoreDNS's do; without them
    /// clients look each target up).
    pub fn set_additionals(&self, on: bool) {
        self.zone.lock().unwrap().additionals = on;
    }

    /// While failing, every query is answered SERVFAIL, as by a cluster DNS that cannot
    /// reach the API server.
    pub fn set_failing(&self, failing: bool) {
        self.zone.lock().unwrap().failing = failing;
    }

    /// Every answer from now on is sent `delay` after its query arrived, as by a busy
    /// cluster DNS (one at a time: the server answers in turn).
    pub fn set_delay(&self, delay: Duration) {
        self.zone.lock().unwrap().delay = delay;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn replace<T: Clone>(records: &mut HashMap<String, Vec<T>>, name: &str, values: &[T]) {
    if values.is_empty() {
        records.remove(&key(name));
    } else {
        records.insert(key(name), values.to_vec());
    }
}

fn key(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

fn answer_after_delay(zone: &Mutex<Zone>, request: &Message) -> Message {
    let (response, delay) = {
        let zone = zone.lock().unwrap();
        (answer(&zone, request), zone.delay)
    };
    std::thread::sleep(delay);
    response
}

fn serve_udp(socket: UdpSocket, zone: &Mutex<Zone>, stop: &AtomicBool) {
    let mut buffer = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, peer)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let Ok(request) = Message::from_vec(&buffer[..len]) else {
            continue;
        };
        let response = answer_after_delay(zone, &request);
        let Ok(mut bytes) = response.to_vec() else {
            continue;
        };
        if bytes.len() > usize::from(request.max_payload()) {
            match response.truncate().to_vec() {
                Ok(truncated) => bytes = truncated,
                Err(_) => continue,
            }
        }
        let _ = socket.send_to(&bytes, peer);
    }
}

fn serve_tcp(listener: TcpListener, zone: &Arc<Mutex<Zone>>, stop: &Arc<AtomicBool>) {
    let mut connections = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (zone, stop) = (zone.clone(), stop.clone());
                connections.push(std::thread::spawn(move || {
                    serve_connection(stream, &zone, &stop)
                }));
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

/// Answers the queries of one TCP connection, each framed by a two-byte length (RFC 1035
/// section 4.2.2), until the client closes it or the server stops.
fn serve_connection(mut stream: TcpStream, zone: &Mutex<Zone>, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
            if pending.len() < 2 + len {
                break;
            }
            let frame: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            let Ok(request) = Message::from_vec(&frame) else {
                return;
            };
            let Ok(bytes) = answer_after_delay(zone, &request).to_vec() else {
                return;
            };
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

fn answer(zone: &Zone, request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.set_edns(edns);
    }
    let Some(query) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    if zone.failing {
        response.metadata.response_code = ResponseCode::ServFail;
        return response;
    }
    let name = query.name().clone();
    let ttl = zone.ttl;
    let ips = zone.addresses.get(&key(&name.to_string()));
    let targets = zone.services.get(&key(&name.to_string()));
    if ips.is_none() && targets.is_none() {
        response.metadata.response_code = ResponseCode::NXDomain;
        response.add_authority(soa(ttl));
        return response;
    }
    match query.query_type() {
        RecordType::A | RecordType::AAAA => {
            let wanted = |ip: &&IpAddr| ip.is_ipv4() == (query.query_type() == RecordType::A);
            for ip in ips.into_iter().flatten().filter(wanted) {
                response.add_answer(Record::from_rdata(name.clone(), ttl, ip_data(*ip)));
            }
        }
        RecordType::SRV => {
            let targets = targets.map(Vec::as_slice).unwrap_or_default();
            for (target, port) in targets {
                let Ok(mut target_name) = Name::from_utf8(target) else {
                    continue;
                };
                target_name.set_fqdn(true);
                let weight = 100 / targets.len() as u16;
                let srv = SRV::new(0, weight, *port, target_name.clone());
                response.add_answer(Record::from_rdata(name.clone(), ttl, RData::SRV(srv)));
                let glue = zone
                    .addresses
                    .get(&key(target))
                    .filter(|_| zone.additionals);
                for ip in glue.into_iter().flatten() {
                    let record = Record::from_rdata(target_name.clone(), ttl, ip_data(*ip));
                    response.add_additional(record);
                }
            }
        }
        _ => {}
    }
    if response.answers.is_empty() {
        response.add_authority(soa(ttl));
    }
    response
}

fn ip_data(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// The SOA of negative answers; resolvers cache those for min(TTL, minimum) (RFC 2308).
fn soa(ttl: u32) -> Record {
    let name = |s: &str| Name::from_ascii(s).unwrap_or_else(|_| Name::root());
    let soa = SOA::new(
        name("ns.dns.cluster.local."),
        name("hostmaster.cluster.local."),
        1,
        7200,
        1800,
        86400,
        ttl,
    );
    Record::from_rdata(name("cluster.local."), ttl, RData::SOA(soa))
}
