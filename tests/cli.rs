//! The `rwsplit` binary as an operator runs it, and the `mariadb` command-line client as a
//! user does.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const NET: &str = "127.0.24";

fn rwsplit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rwsplit"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The proxy process; stopped with SIGTERM when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn start_binary(config: &std::path::Path, port: u16) -> Running {
    let child = rwsplit()
        .args(["--config", config.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("APP_PASSWORD", APP_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    support::cluster::wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(20))
        .expect("rwsplit starts listening");
    running
}

fn mariadb(port: u16, password: &str, args: &[&str]) -> std::process::Output {
    Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", &format!("-P{port}")])
        .args([&format!("-u{APP_USER}"), &format!("-p{password}")])
        .args(["--batch", "--skip-column-names"])
        .args(args)
        .output()
        .unwrap()
}

/// Runs `rwsplit check` on `config` with the password variable `password_env` set; the
/// configuration must be valid. Returns the summary it printed.
fn check_valid(config: &str, password_envs: &[&str]) -> String {
    let mut check = rwsplit();
    check.args(["check", "--config", config]);
    for name in password_envs {
        check.env(name, "from-a-secret");
    }
    let out = check.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn help_names_every_flag() {
    let out = rwsplit().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--primary", "--replica", "check"] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}

#[test]
fn check_accepts_a_good_config_and_explains_a_bad_one() {
    let dir = temp_dir("cli-check");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[primary]\naddress = '127.0.10.1:3306'\n[[replicas]]\naddress = '127.0.10.2:3306'\n\
         [[users]]\nname = 'app'\npassword_env = 'APP_PASSWORD'\n",
    )
    .unwrap();
    let stdout = check_valid(good.to_str().unwrap(), &["APP_PASSWORD"]);
    assert!(stdout.contains("configuration is valid"));
    assert!(stdout.contains("127.0.10.2:3306"));

    let out = rwsplit()
        .args(["check", "--config", good.to_str().unwrap()])
        .env_remove("APP_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("APP_PASSWORD, which is not set"));

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[proxy]\nlisten = 'localhost'\n[[users]]\nname = 'app'\n",
    )
    .unwrap();
    let out = rwsplit()
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("proxy.listen is 'localhost'"), "{stderr}");
    assert!(stderr.contains("users[0] ('app'): no password"), "{stderr}");

    let syntax = dir.join("syntax.toml");
    std::fs::write(&syntax, "[proxy\nlisten = 1").unwrap();
    let out = rwsplit()
        .args(["check", "--config", syntax.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not valid TOML"));
}

#[test]
fn the_shipped_deploy_config_is_valid() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rwsplit.toml");
    let stdout = check_valid(
        config,
        &["RWSPLIT_APP_PASSWORD", "RWSPLIT_MONITOR_PASSWORD"],
    );
    for expected in [
        "mysql-0.mysql.default.svc.cluster.local",
        "headless Service mysql.default",
        "monitor:  user rwsplit_monitor",
        "readiness: EndpointSlices when",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in {stdout}");
    }
}

#[test]
fn the_mariadb_client_works_through_the_binary() {
    let cluster = Cluster::start(NET, 0).unwrap();
    let dir = temp_dir("cli-client");
    let config = dir.join("rwsplit.toml");
    std::fs::write(
        &config,
        format!(
            "[primary]\nname = 'mysql-0'\naddress = '{}'\n\
             [[users]]\nname = '{APP_USER}'\npassword_env = 'APP_PASSWORD'\n",
            cluster.primary().address()
        ),
    )
    .unwrap();
    let port = free_port();
    let _proxy = start_binary(&config, port);

    let out = mariadb(
        port,
        APP_PASSWORD,
        &["-e", "SELECT @@server_id, CURRENT_USER()"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\tapp@%\n");

    let out = mariadb(port, "wrong", &["-e", "SELECT 1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR 1045 (28000)"), "{stderr}");

    let data = dir.join("rows.tsv");
    let rows: String = (1..=1000).map(|i| format!("{i}\tline {i}\n")).collect();
    std::fs::write(&data, rows).unwrap();
    let script = format!(
        "CREATE TABLE cli_load (id INT PRIMARY KEY, txt VARCHAR(20));
         LOAD DATA LOCAL INFILE '{}' INTO TABLE cli_load;
         SELECT COUNT(*), SUM(id), MAX(txt) FROM cli_load;",
        data.display()
    );
    let out = mariadb(
        port,
        APP_PASSWORD,
        &["--local-infile=1", "-Dapp", "-e", &script],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\t500500\tline 999\n"
    );
}
