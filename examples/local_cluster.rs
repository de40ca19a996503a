//! The local cluster, and rwsplit in front of it, for trying the proxy out: a MariaDB primary
//! `mysql-0` on 127.0.10.1:3306 and replicas `mysql-1`, `mysql-2` on 127.0.10.2 and .3, as in
//! the StatefulSet, replicating with GTID, and a DNS server on 127.0.10.53 publishing them as
//! the headless Service `mysql` does. Runs until Ctrl-C, then stops everything.
//!
//! `scripts/demo.sh` builds and runs this; `scripts/cluster.sh` runs it without the proxy.

#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::process::{Child, Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use cluster::{APP_PASSWORD, APP_USER, Cluster, MONITOR_PASSWORD, MONITOR_USER};

#[derive(Parser)]
#[command(about = "Run a local replicated MariaDB cluster, with rwsplit in front of it")]
struct Args {
    /// First three octets of the servers' loopback addresses.
    #[arg(long, default_value = "127.0.10")]
    net: String,
    /// Number of replicas.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// The rwsplit binary to run in front of the cluster; without it, only the cluster runs.
    #[arg(long)]
    proxy: Option<String>,
    /// Where rwsplit listens.
    #[arg(long, default_value = "127.0.0.1:3306")]
    listen: String,
    /// Where rwsplit serves /metrics, /healthz, /readyz and /status.
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: String,
    /// Exit after the demonstration instead of running until Ctrl-C.
    #[arg(long)]
    exit: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    println!(
        "starting mysql-0 (primary) and {} replica(s) on {}.1..",
        args.replicas, args.net
    );
    let cluster = match Cluster::start(&args.net, args.replicas) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("local cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    for server in &cluster.servers {
        let role = if server.server_id == 1 {
            "primary"
        } else {
            "replica"
        };
        println!("  {} ({role}) on {}", server.name, server.address());
    }
    println!(
        "  users: {APP_USER}/{APP_PASSWORD} (application), {MONITOR_USER}/{MONITOR_PASSWORD} (monitor)"
    );
    println!(
        "  DNS on {}: dig @{} -p {} SRV {}",
        cluster.dns_address(),
        cluster.dns_address().ip(),
        cluster.dns_address().port(),
        cluster::srv_name()
    );

    let mut proxy = None;
    if let Some(binary) = &args.proxy {
        match start_proxy(binary, &cluster, &args.listen, &args.admin_listen) {
            Ok(child) => proxy = Some(child),
            Err(e) => {
                eprintln!("rwsplit: {e}");
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = demonstrate(&cluster, &args.listen) {
            eprintln!("demonstration failed: {e}");
            stop(proxy, cluster);
            return ExitCode::FAILURE;
        }
    }
    if !args.exit {
        println!("\nrunning; press Ctrl-C to stop");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = runtime.block_on(tokio::signal::ctrl_c());
    }
    println!("stopping");
    stop(proxy, cluster);
    ExitCode::SUCCESS
}

fn start_proxy(
    binary: &str,
    cluster: &Cluster,
    listen: &str,
    admin_listen: &str,
) -> Result<Child, String> {
    let config = cluster.dir.join("rwsplit.toml");
    // As in Kubernetes: no server named; the headless Service's DNS records (served by the
    // local cluster) give the pods, and the monitor user checks them.
    let text = format!(
        "[proxy]\nlisten = '{listen}'\n\n[admin]\nlisten = '{admin_listen}'\n\n\
         [discovery]\nheadless_service = '{}'\nnamespace = '{}'\ncluster_domain = '{}'\n\
         dns_server = '{}'\ninterval = '2s'\nkubernetes = 'off'\n\n\
         [health]\nmonitor_user = '{MONITOR_USER}'\nmonitor_password_env = 'RWSPLIT_MONITOR_PASSWORD'\n\n\
         [[users]]\nname = '{APP_USER}'\npassword_env = 'RWSPLIT_APP_PASSWORD'\n",
        cluster::SERVICE,
        cluster::NAMESPACE,
        cluster::CLUSTER_DOMAIN,
        cluster.dns_address(),
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    println!(
        "\nrwsplit on {listen}, configuration {}; its status: curl http://{admin_listen}/status",
        config.display()
    );
    let child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .env("RWSPLIT_APP_PASSWORD", APP_PASSWORD)
        .env("RWSPLIT_MONITOR_PASSWORD", MONITOR_PASSWORD)
        .spawn()
        .map_err(|e| format!("cannot run {binary}: {e}"))?;
    if let Err(e) = cluster::wait_listening(listen, Duration::from_secs(20)) {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    // Replicas take reads after their first health check.
    std::thread::sleep(Duration::from_secs(1));
    Ok(child)
}

/// Shows the `mariadb` client talking through the proxy: the write goes to the primary and
/// replicates, reads are spread over the replicas, a transaction stays on the primary.
fn demonstrate(cluster: &Cluster, listen: &str) -> Result<(), String> {
    let (host, port) = listen.rsplit_once(':').ok_or("listen needs host:port")?;
    let client = |statements: &str| -> Result<(), String> {
        println!("\n$ mariadb -h {host} -P {port} -u {APP_USER} -p{APP_PASSWORD} -e \"...\"");
        let output = Command::new("mariadb")
            .args(["--no-defaults", "-h", host, "-P", port, "-u", APP_USER])
            .arg(format!("-p{APP_PASSWORD}"))
            .args(["--table", "-e", statements])
            .output()
            .map_err(|e| format!("cannot run the mariadb client: {e}"))?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    };
    client(
        "CREATE TABLE IF NOT EXISTS app.demo (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(40));
         INSERT INTO app.demo (note) VALUES ('written through rwsplit');
         SELECT LAST_INSERT_ID() AS inserted_id, @@hostname AS host, @@server_id AS server_id,
                @@version AS version;",
    )?;
    cluster.wait_replicas_caught_up(Duration::from_secs(30))?;
    for (k, replica) in cluster.servers.iter().enumerate().skip(1) {
        let rows = cluster.sql(k, "SELECT COUNT(*) FROM app.demo")?;
        println!("{} (replica) has {rows} row(s) in app.demo", replica.name);
    }
    println!(
        "\nreads are spread over the replicas (server_id 2, 3, ...), a transaction is the primary's (1):"
    );
    client(
        "SELECT @@server_id AS read_on, COUNT(*) AS demo_rows FROM app.demo;
         SELECT @@server_id AS read_on, COUNT(*) AS demo_rows FROM app.demo;
         SELECT @@server_id AS read_on, COUNT(*) AS demo_rows FROM app.demo;
         BEGIN; SELECT @@server_id AS in_transaction_on; COMMIT;",
    )?;
    println!("\nconnect yourself: mariadb -h {host} -P {port} -u {APP_USER} -p{APP_PASSWORD} app");
    Ok(())
}

fn stop(proxy: Option<Child>, cluster: Cluster) {
    if let Some(mut child) = proxy {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    cluster.stop();
}
