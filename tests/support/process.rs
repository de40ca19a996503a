//! The `rwsplit` binary as its own process, as an operator runs it: free client and admin
//! ports, JSON logs on standard error collected line by line.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cluster::note;
use super::free_port;

pub struct ProxyBinary {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Every line it logged, as written.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl ProxyBinary {
    /// Starts the binary with `config` and the environment variables `env`, and waits
    /// until it listens.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rwsplit"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--log-format", "json"])
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                collected.lock().unwrap().push(line.unwrap_or_default());
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let process = Self {
            child,
            addr,
            admin,
            lines,
        };
        super::cluster::wait_listening(&addr.to_string(), Duration::from_secs(20))
            .expect("rwsplit starts listening");
        process
    }

    /// Log events whose message contains `text`. Every line logged so far must be a JSON
    /// object.
    pub fn logged(&self, text: &str) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"))
            })
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
            .collect()
    }
}

impl Drop for ProxyBinary {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for line in self.lines.lock().unwrap().iter().rev().take(200) {
                note(&format!("proxy log: {line}"));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
