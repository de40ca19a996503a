//! The `rwsplit` command: runs the proxy, or checks a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rwsplit::config::{Config, Overrides};
use rwsplit::server::Proxy;

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
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
        proxy.serve(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
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
