//! A local replicated cluster for tests and the demo: a MariaDB primary `mysql-0` and replicas
//! `mysql-1..N`, each a real `mariadbd` on its own loopback address and port 3306, like pods of
//! the StatefulSet (`<net>.1` = mysql-0, `<net>.2` = mysql-1, ...), replicating with GTID.
//!
//! The cluster also runs its own DNS server on `<net>.53`, publishing the pods as a headless
//! Service `mysql` in namespace `default` of `cluster.local` does: each pod's A record, the
//! Service's A records and its SRV records, for the pods that are published (ready).
//!
//! Every server runs under a small shell watchdog whose standard input is a pipe from this
//! process: when this process exits, however it exits, the pipe closes and the watchdog stops
//! the server. Nothing outlives the tests.

#![allow(dead_code)]

#[path = "dns.rs"]
pub mod dns;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dns::DnsServer;

pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-password";
pub const MONITOR_USER: &str = "monitor";
pub const MONITOR_PASSWORD: &str = "monitor-password";
const REPL_USER: &str = "repl";
const REPL_PASSWORD: &str = "repl-password";
pub const PORT: u16 = 3306;
/// Where the pods are published: the headless Service, its namespace and the cluster domain.
pub const SERVICE: &str = "mysql";
pub const NAMESPACE: &str = "default";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The name of the Service's port, which names its SRV records (`_mysql._tcp`).
pub const PORT_NAME: &str = "mysql";

/// Runs the server and stops it when standard input reaches its end. The server itself gets
/// no handle on the pipe, so only this process's exit (or `stop_server`) closes it.
const WATCHDOG: &str = r#"
exec 3<&0
"$@" 3<&- </dev/null &
pid=$!
(
  cat <&3 >/dev/null
  kill -TERM "$pid" 2>/dev/null
  # A paused server (pause_server) acts on the TERM only once it runs again.
  kill -CONT "$pid" 2>/dev/null
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
) &
wait "$pid"
"#;

pub struct Server {
    pub name: String,
    pub ip: String,
    pub server_id: u32,
    pub datadir: PathBuf,
    watchdog: Option<(Child, ChildStdin)>,
}

impl Server {
    pub fn address(&self) -> String {
        format!("{}:{PORT}", self.ip)
    }

    fn socket(&self) -> PathBuf {
        self.datadir.join("mysqld.sock")
    }

    /// The `mariadbd` process id, from its pid file.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.datadir.join("mysqld.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub servers: Vec<Server>,
    /// First three octets of the servers' addresses.
    net: String,
    dns: DnsServer,
    /// Which servers are in DNS, by index in `servers`.
    published: Mutex<Vec<bool>>,
    /// More command-line options for server `k`, at every start.
    extra_args: Vec<Vec<String>>,
}

impl Cluster {
    /// Starts a primary and `replicas` replicas on `<net>.1`, `<net>.2`, ... (e.g. "127.0.10").
    pub fn start(net: &str, replicas: usize) -> Result<Self, String> {
        Self::start_with(net, replicas, vec![])
    }

    /// Like `start`, with more command-line options for server `k` in `extra_args[k]`.
    pub fn start_with(
        net: &str,
        replicas: usize,
        extra_args: Vec<Vec<String>>,
    ) -> Result<Self, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/rwsplit-cluster");
        let template = ensure_template(&root)?;
        let dir = root.join(net);
        // A previous run that was killed hard may have left its servers' files; its servers
        // died with it (see WATCHDOG), so the files are only clutter.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut cluster = Cluster {
            dir: dir.clone(),
            servers: Vec::new(),
            net: net.to_owned(),
            dns: start_dns(net)?,
            published: Mutex::new(vec![false; replicas + 1]),
            extra_args,
        };
        for k in 0..=replicas {
            let datadir = dir.join(format!("mysql-{k}"));
            copy_dir(&template, &datadir)?;
            cluster.servers.push(Server {
                name: format!("mysql-{k}"),
                ip: format!("{net}.{}", k + 1),
                server_id: k as u32 + 1,
                datadir,
                watchdog: None,
            });
        }
        cluster.start_server(0)?;
        cluster.sql(0, &bootstrap_sql())?;
        for k in 1..=replicas {
            cluster.start_server(k)?;
            // Each replica starts from the same empty template as the primary and applies
            // the primary's whole binary log, bootstrap included.
            cluster.start_replication(k)?;
        }
        cluster.wait_replicas_caught_up(Duration::from_secs(60))?;
        for k in 0..=replicas {
            cluster.publish(k);
        }
        Ok(cluster)
    }

    fn start_replication(&self, k: usize) -> Result<(), String> {
        let primary_ip = &self.servers[0].ip;
        self.sql(
            k,
            &format!(
                "CHANGE MASTER TO MASTER_HOST='{primary_ip}', MASTER_PORT={PORT}, \
                 MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{REPL_PASSWORD}', \
                 MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, \
                 MASTER_HEARTBEAT_PERIOD=1; START SLAVE;"
            ),
        )
        .map(drop)
    }

    /// The DNS server publishing the pods (`<net>.53`, port 53, or 5353 where 53 cannot be
    /// bound).
    pub fn dns_address(&self) -> SocketAddr {
        self.dns.address()
    }

    /// The DNS server itself, to publish more or break it.
    pub fn dns(&self) -> &DnsServer {
        &self.dns
    }

    /// `mysql-K.mysql.default.svc.cluster.local`: the DNS name of server `k`.
    pub fn pod_name(&self, k: usize) -> String {
        format!("{}.{}", self.servers[k].name, service_name())
    }

    /// Puts server `k` in DNS, as Kubernetes does when a pod becomes ready.
    pub fn publish(&self, k: usize) {
        self.set_published(k, true);
    }

    /// Takes server `k` out of DNS, as Kubernetes does when a pod is not ready or deleted:
    /// its own name, and its place in the Service's A and SRV records.
    pub fn unpublish(&self, k: usize) {
        self.set_published(k, false);
    }

    fn set_published(&self, k: usize, published: bool) {
        let mut flags = self.published.lock().unwrap();
        flags[k] = published;
        let mut ips = Vec::new();
        let mut targets = Vec::new();
        for (k, server) in self.servers.iter().enumerate() {
            let ip: IpAddr = server.ip.parse().expect("server addresses are IPs");
            if flags[k] {
                self.dns.set_a(&self.pod_name(k), &[ip]);
                ips.push(ip);
                targets.push((self.pod_name(k), PORT));
            } else {
                self.dns.set_a(&self.pod_name(k), &[]);
            }
        }
        self.dns.set_a(&service_name(), &ips);
        self.dns.set_srv(&srv_name(), &targets);
    }

    /// Scales out: a new replica `mysql-N` on `<net>.(N+1)`, cloned from the primary with
    /// `mariadb-backup` (as the StatefulSet's clone step does), replicating with GTID from
    /// the position of the copy, caught up, then published in DNS. Returns its index.
    pub fn add_replica(&mut self) -> Result<usize, String> {
        let k = self.servers.len();
        let datadir = self.dir.join(format!("mysql-{k}"));
        let _ = std::fs::remove_dir_all(&datadir);
        let gtid = self.clone_primary(&datadir)?;
        self.servers.push(Server {
            name: format!("mysql-{k}"),
            ip: format!("{}.{}", self.net, k + 1),
            server_id: k as u32 + 1,
            datadir,
            watchdog: None,
        });
        self.published.lock().unwrap().push(false);
        self.start_server(k)?;
        self.sql(k, &format!("SET GLOBAL gtid_slave_pos = '{gtid}'"))?;
        self.start_replication(k)?;
        self.wait_caught_up(k, Duration::from_secs(60))?;
        self.publish(k);
        Ok(k)
    }

    /// Copies the primary's data into `datadir` (a consistent online backup, prepared) and
    /// returns the GTID position the copy stands at.
    fn clone_primary(&self, datadir: &Path) -> Result<String, String> {
        let primary = &self.servers[0];
        run(Command::new("mariadb-backup")
            .arg("--no-defaults")
            .arg("--backup")
            .arg(format!("--target-dir={}", datadir.display()))
            .arg(format!("--datadir={}", primary.datadir.display()))
            .arg(format!("--socket={}", primary.socket().display()))
            .arg("--user=root"))?;
        run(Command::new("mariadb-backup")
            .arg("--no-defaults")
            .arg("--prepare")
            .arg(format!("--target-dir={}", datadir.display())))?;
        // "<binlog file>\t<position>\t<gtid position>", written by the backup (MariaDB 11
        // renamed the file).
        let (text, info) = ["xtrabackup_binlog_info", "mariadb_backup_binlog_info"]
            .into_iter()
            .map(|file| datadir.join(file))
            .find_map(|path| Some((std::fs::read_to_string(&path).ok()?, path)))
            .ok_or_else(|| format!("no binlog position in {}", datadir.display()))?;
        text.trim_end()
            .split('\t')
            .nth(2)
            .map(str::to_owned)
            .ok_or_else(|| format!("no GTID position in {}: {text:?}", info.display()))
    }

    /// Scales in: takes the last replica out of DNS, then stops it.
    pub fn remove_replica(&mut self) {
        let k = self.servers.len() - 1;
        assert!(k > 0, "no replica to remove");
        self.unpublish(k);
        self.stop_server(k);
        self.servers.pop();
        self.published.lock().unwrap().pop();
    }

    /// Freezes server `k` (SIGSTOP): it keeps its connections and answers nothing, as a hung
    /// server does.
    pub fn pause_server(&self, k: usize) {
        self.signal(k, "-STOP");
    }

    /// Lets a paused server `k` run again (SIGCONT).
    pub fn resume_server(&self, k: usize) {
        self.signal(k, "-CONT");
    }

    fn signal(&self, k: usize, signal: &str) {
        let pid = self.servers[k]
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.servers[k].name));
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill {signal} {pid} failed"
        );
    }

    /// Makes replica `k` apply each event `secs` seconds after the primary wrote it.
    pub fn set_replication_delay(&self, k: usize, secs: u32) -> Result<(), String> {
        // MariaDB 10.11 refuses CHANGE MASTER while the IO thread runs, even for the delay
        // alone; with GTID positions both threads resume where they were.
        self.sql(
            k,
            &format!("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY={secs}; START SLAVE;"),
        )
        .map(drop)
    }

    pub fn primary(&self) -> &Server {
        &self.servers[0]
    }

    pub fn replicas(&self) -> &[Server] {
        &self.servers[1..]
    }

    /// Starts (or restarts) server `k` and waits until it accepts connections.
    pub fn start_server(&mut self, k: usize) -> Result<(), String> {
        let server = &mut self.servers[k];
        let datadir = server.datadir.display().to_string();
        let mut args = vec![
            "--no-defaults".to_owned(),
            format!("--datadir={datadir}"),
            format!("--socket={datadir}/mysqld.sock"),
            format!("--pid-file={datadir}/mysqld.pid"),
            format!("--log-error={datadir}/error.log"),
            format!("--bind-address={}", server.ip),
            format!("--port={PORT}"),
            format!("--server-id={}", server.server_id),
            format!("--report-host={}", server.name),
            "--log-bin=mysql-bin".into(),
            "--binlog-format=ROW".into(),
            "--log-slave-updates".into(),
            "--skip-name-resolve".into(),
            "--character-set-server=utf8mb4".into(),
            "--collation-server=utf8mb4_general_ci".into(),
            "--max-allowed-packet=64M".into(),
            "--max-connections=2000".into(),
            "--local-infile=1".into(),
            "--performance-schema=OFF".into(),
            // Per-user statement counts (information_schema.USER_STATISTICS) tell the
            // application's statements apart from what replication applies.
            "--userstat=ON".into(),
            "--innodb-buffer-pool-size=64M".into(),
            "--innodb-log-file-size=32M".into(),
            "--innodb-flush-log-at-trx-commit=2".into(),
            "--sync-binlog=0".into(),
            "--innodb-use-native-aio=OFF".into(),
        ];
        if k > 0 {
            args.push("--read-only=ON".into());
        }
        args.extend(self.extra_args.get(k).into_iter().flatten().cloned());
        if is_root() {
            args.push("--user=root".into());
        }
        let _ = std::fs::remove_file(server.datadir.join("mysqld.pid"));
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(mariadbd()?)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn mariadbd: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        server.watchdog = Some((child, stdin));
        self.wait_ready(k, Duration::from_secs(60))
    }

    /// Stops server `k` (SIGTERM, then waits for it to exit).
    pub fn stop_server(&mut self, k: usize) {
        let server = &mut self.servers[k];
        if let Some((mut child, stdin)) = server.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Kills server `k` without letting it shut down, as a crashed pod.
    pub fn kill_server(&mut self, k: usize) {
        if let Some(pid) = self.servers[k].pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        self.stop_server(k);
    }

    fn wait_ready(&mut self, k: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let address = self.servers[k].address();
        loop {
            if TcpStream::connect(&address).is_ok() && self.sql(k, "SELECT 1").is_ok() {
                return Ok(());
            }
            let server = &mut self.servers[k];
            let exited = server
                .watchdog
                .as_mut()
                .is_some_and(|(child, _)| matches!(child.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(server.datadir.join("error.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(format!(
                    "{} did not start on {address}; error log:\n{}",
                    server.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs SQL on server `k` as root over its socket with the `mariadb` client; returns the
    /// output in batch form (tab-separated, no headers).
    pub fn sql(&self, k: usize, sql: &str) -> Result<String, String> {
        let output = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.servers[k].socket().display()))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .map_err(|e| format!("run mariadb client: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{} on {}: {}",
                sql,
                self.servers[k].name,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned())
    }

    /// Waits until every running replica has applied everything the primary has written.
    pub fn wait_replicas_caught_up(&self, timeout: Duration) -> Result<(), String> {
        for k in 1..self.servers.len() {
            if self.servers[k].watchdog.is_some() {
                self.wait_caught_up(k, timeout)?;
            }
        }
        Ok(())
    }

    /// Waits until replica `k` has applied everything the primary has written.
    pub fn wait_caught_up(&self, k: usize, timeout: Duration) -> Result<(), String> {
        let position = self.sql(0, "SELECT @@global.gtid_binlog_pos")?;
        let waited = self.sql(
            k,
            &format!(
                "SELECT MASTER_GTID_WAIT('{position}', {})",
                timeout.as_secs()
            ),
        )?;
        if waited.trim() != "0" {
            let status = self.sql(k, "SHOW SLAVE STATUS\\G").unwrap_or_default();
            return Err(format!(
                "{} did not reach {position}:\n{status}",
                self.servers[k].name
            ));
        }
        Ok(())
    }

    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        for k in 0..self.servers.len() {
            self.stop_server(k);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `mysql.default.svc.cluster.local`
pub fn service_name() -> String {
    format!("{SERVICE}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}")
}

/// `_mysql._tcp.mysql.default.svc.cluster.local`
pub fn srv_name() -> String {
    format!("_{PORT_NAME}._tcp.{}", service_name())
}

/// The cluster's DNS server on `<net>.53`: on the DNS port where this process may bind it
/// (as root), else on 5353.
fn start_dns(net: &str) -> Result<DnsServer, String> {
    let ip: IpAddr = format!("{net}.53")
        .parse()
        .map_err(|e| format!("{net}.53: {e}"))?;
    let dns = DnsServer::start(SocketAddr::new(ip, 53))
        .or_else(|_| DnsServer::start(SocketAddr::new(ip, 5353)))?;
    // Resolvers cache answers for their TTL; one second (CoreDNS's default is five) lets
    // tests see pods come and go quickly.
    dns.set_ttl(1);
    Ok(dns)
}

/// Runs a tool to completion; its output becomes the error when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| {
        format!(
            "run {:?} (scripts/install-deps.sh installs it): {e}",
            command.get_program()
        )
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
    Err(format!(
        "{:?} failed:\n{}",
        command.get_program(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

fn bootstrap_sql() -> String {
    // The application user gets what applications need and nothing that bypasses read_only
    // on replicas (no SUPER, no READ_ONLY ADMIN): a write that reaches a replica must fail.
    format!(
        "CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}';
         GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%';
         CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}';
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER,
               CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW,
               CREATE ROUTINE, ALTER ROUTINE, TRIGGER, PROCESS ON *.* TO '{APP_USER}'@'%';
         CREATE USER '{MONITOR_USER}'@'%' IDENTIFIED BY '{MONITOR_PASSWORD}';
         GRANT REPLICATION CLIENT, SLAVE MONITOR ON *.* TO '{MONITOR_USER}'@'%';
         CREATE DATABASE app;"
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn mariadbd() -> Result<String, String> {
    for candidate in [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadbd",
        "/usr/sbin/mysqld",
    ] {
        if Path::new(candidate).exists() {
            return Ok(candidate.to_owned());
        }
    }
    Err("mariadbd not found: run scripts/install-deps.sh".into())
}

/// A freshly initialised data directory, made once and copied for every server.
fn ensure_template(root: &Path) -> Result<PathBuf, String> {
    let template = root.join("template");
    if template.join("mysql").is_dir() {
        return Ok(template);
    }
    std::fs::create_dir_all(root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let staging = root.join(format!("template.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", staging.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if is_root() {
        install.arg("--user=root");
    }
    let output = install.output().map_err(|e| {
        format!("run mariadb-install-db (scripts/install-deps.sh installs it): {e}")
    })?;
    if !output.status.success() {
        return Err(format!(
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // Another process may have won the race; either template is as good.
    if std::fs::rename(&staging, &template).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(template)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if !status.success() {
        return Err(format!("cp -a {} {} failed", from.display(), to.display()));
    }
    Ok(())
}

/// Waits until something accepts TCP connections on `address` (a process just started).
pub fn wait_listening(address: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(address).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listening on {address} after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Writes a line to stderr at once (tests capture stdout).
pub fn note(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}
