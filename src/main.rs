//! The `rwsplit` command: runs the proxy, or checks a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rwsplit::config::{Config, KubernetesMode, LogFormat, LogSettings, Overrides};
use rwsplit::server::{Proxy, Reloader};

/// A read/write-splitting MySQL proxy. Applications connect to rwsplit as if it were the
/// database; it authenticates them with the users in its configuration and relays their
/// traffic to the primary.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (TOML). Without one, defaults and flags apply, but at least one user
    /// must come from a file.
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        env = "RWSPLIT_CONFIG"
    )]
    config: Option<PathBuf>,
    /// Address clients connect to [default: 0.0.0.0:3306]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// The primary server [default: mysql-0.mysql:3306]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    primary: Option<String>,
    /// A replica server; repeat for each. Replaces the file's replica list.
    #[arg(long = "replica", global = true, value_name = "HOST:PORT")]
    replicas: Vec<String>,
    /// Discover the servers through this headless Service's DNS records (SRV, then A)
    /// [default: mysql, when no server is named]
    #[arg(long, global = true, value_name = "NAME")]
    headless_service: Option<String>,
    /// Namespace of the headless Service [default: the pod's own, else default]
    #[arg(long, global = true, value_name = "NS")]
    namespace: Option<String>,
    /// Cluster DNS domain [default: cluster.local]
    #[arg(long, global = true, value_name = "DOMAIN")]
    cluster_domain: Option<String>,
    /// Nameserver to resolve names with [default: the system's resolver configuration]
    #[arg(long, global = true, value_name = "IP:PORT")]
    dns_server: Option<String>,
    /// User the health checks log in as; its password is its [[users]] entry's
    #[arg(long, global = true, value_name = "NAME")]
    monitor_user: Option<String>,
    /// Environment variable holding the monitor user's password
    #[arg(long, global = true, value_name = "VAR")]
    monitor_password_env: Option<String>,
    /// How often each server is checked, e.g. 500ms [default: 1s]
    #[arg(long, global = true, value_name = "DURATION")]
    check_interval: Option<String>,
    /// Replicas further behind than this get no reads, e.g. 10s [default: 10s]
    #[arg(long, global = true, value_name = "DURATION")]
    max_replication_lag: Option<String>,
    /// Serve /metrics, /healthz, /readyz and /status here, e.g. 0.0.0.0:9090 [default: off]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    admin_listen: Option<String>,
    /// Log lines as text or json [default: text]
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration, print a summary or every problem found, and exit.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen,
        primary: cli.primary,
        replicas: cli.replicas,
        headless_service: cli.headless_service,
        namespace: cli.namespace,
        cluster_domain: cli.cluster_domain,
        dns_server: cli.dns_server,
        monitor_user: cli.monitor_user,
        monitor_password_env: cli.monitor_password_env,
        check_interval: cli.check_interval,
        max_replication_lag: cli.max_replication_lag,
        admin_listen: cli.admin_listen,
        log_format: cli.log_format,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("rwsplit: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Check) = cli.command {
        println!("configuration is valid");
        println!("  listen:   {}", config.listen);
        println!(
            "  primary:  {} ({})",
            config.primary.name, config.primary.address
        );
        for replica in &config.replicas {
            println!("  replica:  {} ({})", replica.name, replica.address);
        }
        if let Some(headless) = &config.discovery.headless {
            println!(
                "  discover: headless Service {}.{} (SRV _{}._tcp), primary pod {}, every {:?}",
                headless.service,
                headless.namespace,
                headless.port_name,
                headless.primary_pod,
                config.discovery.interval
            );
            let readiness = match (config.discovery.kubernetes, &config.discovery.kubeconfig) {
                (KubernetesMode::Off, _) => "off".to_owned(),
                (_, Some(path)) => format!("EndpointSlices, API from {}", path.display()),
                (KubernetesMode::On, None) => {
                    "EndpointSlices (service account or kubeconfig required)".to_owned()
                }
                (KubernetesMode::Auto, None) => {
                    "EndpointSlices when a service account or kubeconfig is found".to_owned()
                }
            };
            println!("  readiness: {readiness}");
        }
        match &config.health.monitor {
            Some(monitor) => println!(
                "  monitor:  user {}, every {:?}, max replication lag {:?}",
                monitor.user, config.health.check_interval, config.health.max_replication_lag
            ),
            None => println!("  monitor:  off (no monitor_user): replication lag is not checked"),
        }
        let limits = &config.limits;
        let per_user = match limits.max_user_connections {
            0 => "no per-user limit".to_owned(),
            n => format!("{n} per user"),
        };
        let delay = &limits.login_delay;
        let login_delay = match delay.after {
            0 => "off".to_owned(),
            n => format!("after {n} failures, {:?} up to {:?}", delay.step, delay.max),
        };
        println!(
            "  limits:   {} connections, {per_user}; timeouts: handshake {:?}, idle {:?}, \
             read {:?}, write {:?}; login delay {login_delay}",
            config.max_connections,
            limits.handshake_timeout,
            limits.idle_timeout,
            limits.read_timeout,
            limits.write_timeout,
        );
        let client_tls = match &config.tls {
            None => "off".to_owned(),
            Some(tls) if tls.required => format!("required ({})", tls.cert_path.display()),
            Some(tls) => format!("offered ({})", tls.cert_path.display()),
        };
        println!(
            "  tls:      clients {client_tls}; servers {}",
            config.backend_tls.mode.name()
        );
        let mut users: Vec<_> = config.users.keys().collect();
        users.sort();
        println!(
            "  users:    {}",
            users
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::SUCCESS;
    }
    init_logs(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let proxy = match Proxy::bind(config.clone()).await {
            Ok(proxy) => proxy,
            Err(e) => {
                eprintln!("rwsplit: cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(reload_on_hangup(
            proxy.reloader(),
            cli.config.clone(),
            overrides.clone(),
        ));
        proxy.serve(shutdown_signal()).await;
        tracing::info!("rwsplit stopped");
        ExitCode::SUCCESS
    })
}

/// `RUST_LOG`, when set, overrides the configured level.
fn init_logs(settings: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.level));
    // Standard error, as the README says: fmt's default is standard output.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.format {
        LogFormat::Text => logs.init(),
        // The session span (conn_id, user, peer) goes with every event, flattened into
        // the object so collectors can index it.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// SIGHUP reads the configuration again (file, environment, password files, with the
/// same flags); a configuration with problems is rejected as a whole.
async fn reload_on_hangup(reloader: Reloader, path: Option<PathBuf>, overrides: Overrides) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).expect("SIGHUP handler");
    while hangups.recv().await.is_some() {
        match Config::load(path.as_deref(), &overrides) {
            Ok(config) => {
                let kept = reloader.apply(config).await;
                tracing::info!("configuration reloaded");
                if !kept.is_empty() {
                    tracing::warn!(
                        settings = ?kept,
                        "these settings changed but take a restart; their running values stay"
                    );
                }
            }
            Err(error) => tracing::error!(
                %error,
                "configuration rejected on reload; the running one stays"
            ),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}
