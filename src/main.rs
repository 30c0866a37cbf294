//! `rafter`: the one binary of Rafter — a master (`rafter server`) and the
//! command-line client (`rafter kv`, `rafter cluster`, `rafter local`).
//!
//! This file only parses the command line, sets up logging and hands over
//! to `server` or `cli`. Errors end the process with `Error: <message>` on
//! stderr and exit code 1.

mod cli;
mod server;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Rafter: a Raft-replicated key-value store and container orchestrator.
#[derive(Debug, Parser)]
#[command(name = "rafter", version, propagate_version = true)]
#[command(after_help = "\
Masters to talk to come from --endpoints, else $RAFTER_ENDPOINTS, else the
config file ($RAFTER_CONFIG or ~/.rafter/config), a text file with a line
`endpoints = host:port,host:port,...`. `rafter local up` writes it.")]
struct Cli {
    #[command(flatten)]
    global: cli::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a master.
    Server(server::ServerArgs),
    /// Read and write keys, watch them, run transactions, manage leases.
    #[command(subcommand)]
    Kv(cli::kv::KvCommand),
    /// Show and change the set of masters.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Run a cluster of masters on this machine.
    #[command(subcommand)]
    Local(cli::local::LocalCommand),
    /// Benchmark Rafter against etcd on this machine.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // A master logs its progress; a client command only what went wrong.
    let default_level = match cli.command {
        Command::Server(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let result = match cli.command {
        Command::Server(args) => server::run(args).await,
        Command::Kv(c) => cli::kv::run(&cli.global, c).await,
        Command::Cluster(c) => cli::cluster::run(&cli.global, c).await,
        Command::Local(c) => cli::local::run(c).await,
        Command::Bench(c) => cli::bench::run(c).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`rafter kv watch ... | head`): not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
