//! The two proxies as their own processes, each on its own loopback address of the cluster's
//! network: HAProxy on `.101` (the `mysql-read` listener) and `.102` (primary only), rwsplit
//! on `.100` (admin port 9090).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::cluster::{self, Cluster, MONITOR_PASSWORD, MONITOR_USER};
use super::{APP_PASSWORD, APP_USER, Args, Settings, Target, progress, writes};

/// Runs `"$@"` with its output appended to the file `$1`, prints its pid, and stops it (TERM,
/// KILL 10 s later) when its standard input reaches its end: when `Supervised` is dropped,
/// and when the driver exits in any other way (an error, Ctrl-C, kill -9), since nothing
/// else holds the pipe. The cluster's servers are kept the same way.
const WATCHDOG: &str = r#"
log=$1
shift
exec 3<&0
"$@" 3<&- </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid"
(
  cat <&3 >/dev/null
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
) >/dev/null 2>&1 &
wait "$pid"
"#;

/// A process under the watchdog.
pub struct Supervised {
    /// The process itself (not the watchdog's shell): what `/proc` is read for.
    pub pid: u32,
    pub log: PathBuf,
    watchdog: Option<(Child, ChildStdin)>,
}

impl Supervised {
    pub fn spawn(
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(&log)
            .arg(program)
            .args(args)
            // Each program's own configuration decides what it logs.
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("run bash")?;
        let stdin = child.stdin.take().expect("piped");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let pid = line
            .trim()
            .parse()
            .with_context(|| format!("no pid from the watchdog of {}", program.display()))?;
        Ok(Self {
            pid,
            log,
            watchdog: Some((child, stdin)),
        })
    }

    /// Waits until `address` accepts connections; fails with the end of the log if the
    /// process exits first.
    pub fn wait_listening(&mut self, address: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            let exited = self
                .watchdog
                .as_mut()
                .is_some_and(|(child, _)| matches!(child.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                bail!(
                    "nothing listens on {address} ({}); its log, {}:\n{}",
                    if exited { "it exited" } else { "timed out" },
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// The proxies being measured, and where each target is reached.
pub struct Proxies {
    primary: SocketAddr,
    pub haproxy: Option<HaProxy>,
    pub rwsplit: Option<Rwsplit>,
}

impl Proxies {
    /// Starts the proxies among `settings.targets`.
    pub fn start(args: &Args, cluster: &Cluster, settings: &Settings) -> anyhow::Result<Self> {
        let wanted = |target| settings.targets.contains(&target);
        let haproxy = if wanted(Target::Haproxy) {
            Some(HaProxy::start(&args.haproxy, cluster, settings)?)
        } else {
            None
        };
        let rwsplit = if wanted(Target::Rwsplit) {
            Some(Rwsplit::start(&args.rwsplit, cluster, settings)?)
        } else {
            None
        };
        Ok(Self {
            primary: cluster.primary().address().parse()?,
            haproxy,
            rwsplit,
        })
    }

    /// Where `target` takes `test`'s connections.
    pub fn address(&self, target: Target, test: &str) -> SocketAddr {
        match target {
            Target::Direct => self.primary,
            Target::Haproxy => self
                .haproxy
                .as_ref()
                .expect("started")
                .address(writes(test)),
            Target::Rwsplit => self.rwsplit.as_ref().expect("started").address(),
        }
    }

    /// The process that serves `target`, if it is a proxy.
    pub fn pid(&self, target: Target) -> Option<u32> {
        match target {
            Target::Direct => None,
            Target::Haproxy => self.haproxy.as_ref().map(HaProxy::pid),
            Target::Rwsplit => self.rwsplit.as_ref().map(Rwsplit::pid),
        }
    }
}

/// HAProxy in TCP mode, as a Kubernetes Service balances: no health checks of its own (the
/// kubelet's probes decide membership there), one backend connection per client connection.
pub struct HaProxy {
    process: Supervised,
    read: SocketAddr,
    primary: SocketAddr,
}

impl HaProxy {
    pub fn start(binary: &str, cluster: &Cluster, settings: &Settings) -> anyhow::Result<Self> {
        let read: SocketAddr = format!("{}.101:3306", settings.net).parse()?;
        let primary: SocketAddr = format!("{}.102:3306", settings.net).parse()?;
        let limit = settings.max_connections;
        let servers: String = cluster
            .servers
            .iter()
            .map(|s| format!("    server {} {}\n", s.name, s.address()))
            .collect();
        // Defaults otherwise: nbthread is the number of CPUs, as rwsplit's worker threads.
        // -db keeps it in the foreground as one process (no master), whose CPU time is all of
        // HAProxy's.
        let config = format!(
            "global\n    maxconn {limit}\n\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    \
             timeout server 1h\n    maxconn {limit}\n\n\
             # What the mysql-read Service does: every pod, the primary included.\n\
             listen mysql-read\n    bind {read}\n    balance roundrobin\n{servers}\n\
             # oltp_read_write writes: the primary only.\n\
             listen mysql-primary\n    bind {primary}\n    server {} {}\n",
            cluster.primary().name,
            cluster.primary().address(),
        );
        let path = cluster.dir.join("haproxy.cfg");
        std::fs::write(&path, config)?;
        progress(&format!(
            "HAProxy on {read} (all pods) and {primary} (primary), configuration {}",
            path.display()
        ));
        let mut process = Supervised::spawn(
            Path::new(binary),
            &["-db".into(), "-f".into(), path.display().to_string()],
            &[],
            cluster.dir.join("haproxy.log"),
        )?;
        process.wait_listening(read, Duration::from_secs(20))?;
        process.wait_listening(primary, Duration::from_secs(20))?;
        Ok(Self {
            process,
            read,
            primary,
        })
    }

    /// The listener for a test: the primary's when it writes.
    pub fn address(&self, writes: bool) -> SocketAddr {
        if writes { self.primary } else { self.read }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid
    }
}

/// rwsplit configured as the demo runs it: pods from the headless Service's DNS records,
/// health checks by the monitor user, default log level.
pub struct Rwsplit {
    process: Supervised,
    address: SocketAddr,
    admin: SocketAddr,
    replicas: usize,
}

impl Rwsplit {
    pub fn start(binary: &Path, cluster: &Cluster, settings: &Settings) -> anyhow::Result<Self> {
        let address: SocketAddr = format!("{}.100:3306", settings.net).parse()?;
        let admin: SocketAddr = format!("{}.100:9090", settings.net).parse()?;
        let config = format!(
            "[proxy]\nlisten = '{address}'\nmax_connections = {}\n\n\
             [admin]\nlisten = '{admin}'\n\n\
             [discovery]\nheadless_service = '{}'\nnamespace = '{}'\ncluster_domain = '{}'\n\
             dns_server = '{}'\ninterval = '2s'\nkubernetes = 'off'\n\n\
             [health]\nmonitor_user = '{MONITOR_USER}'\n\
             monitor_password_env = 'RWSPLIT_MONITOR_PASSWORD'\n\n\
             [[users]]\nname = '{APP_USER}'\npassword_env = 'RWSPLIT_APP_PASSWORD'\n",
            settings.max_connections,
            cluster::SERVICE,
            cluster::NAMESPACE,
            cluster::CLUSTER_DOMAIN,
            cluster.dns_address(),
        );
        let path = cluster.dir.join("rwsplit.toml");
        std::fs::write(&path, config)?;
        progress(&format!(
            "rwsplit {} on {address}, configuration {}",
            binary.display(),
            path.display()
        ));
        let mut process = Supervised::spawn(
            binary,
            &["--config".into(), path.display().to_string()],
            &[
                ("RWSPLIT_APP_PASSWORD", APP_PASSWORD),
                ("RWSPLIT_MONITOR_PASSWORD", MONITOR_PASSWORD),
            ],
            cluster.dir.join("rwsplit.log"),
        )?;
        process.wait_listening(address, Duration::from_secs(20))?;
        let rwsplit = Self {
            process,
            address,
            admin,
            replicas: cluster.replicas().len(),
        };
        if !rwsplit.wait_replicas_eligible(Duration::from_secs(30)) {
            bail!(
                "rwsplit did not take the replicas into its read pool; /status: {}\nlog:\n{}",
                rwsplit.status().map(|s| s.to_string()).unwrap_or_default(),
                rwsplit.process.log_tail(20)
            );
        }
        Ok(rwsplit)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// Waits until every replica takes reads (a replica behind the primary drops out of the
    /// read pool, and the run would measure the primary instead); says so when one does not.
    pub fn wait_replicas_eligible(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let eligible = self
                .status()
                .and_then(|s| s["eligible_replicas"].as_u64())
                .unwrap_or(0);
            if eligible as usize >= self.replicas {
                return true;
            }
            if Instant::now() > deadline {
                progress(&format!(
                    "rwsplit: {eligible} of {} replicas take reads",
                    self.replicas
                ));
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Statements each backend ran, from `/status`.
    pub fn statements_by_backend(&self) -> Vec<(String, u64)> {
        let Some(status) = self.status() else {
            return Vec::new();
        };
        std::iter::once(&status["primary"])
            .chain(status["replicas"].as_array().into_iter().flatten())
            .filter_map(|b| Some((b["name"].as_str()?.to_owned(), b["statements"].as_u64()?)))
            .collect()
    }

    /// Lines of its log at WARN or ERROR, without the terminal colours.
    pub fn warnings(&self) -> Vec<String> {
        std::fs::read_to_string(&self.process.log)
            .unwrap_or_default()
            .lines()
            .map(without_colours)
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .collect()
    }

    /// The admin port's `/status`.
    fn status(&self) -> Option<serde_json::Value> {
        let mut stream = TcpStream::connect_timeout(&self.admin, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let request = format!(
            "GET /status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()
    }
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
