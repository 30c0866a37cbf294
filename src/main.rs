//! `rafter`: the one binary of Rafter — a master (`rafter server`), a node
//! agent (`rafter agent`) and the
//! command-line client (`rafter kv`, `rafter cluster`, `rafter local`).
//!
//! This file only parses the command line, sets up logging and hands over
//! to `server` or `cli`. Errors end the process with `Error: <message>` on
//! stderr and exit code 1.

mod agent;
mod cli;
mod server;
mod sim;
mod supervisor;

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
    /// Run a node agent: join the cluster and run its pods in Docker.
    Agent(agent::AgentArgs),
    /// Read and write keys, watch them, run transactions, manage leases.
    #[command(subcommand)]
    Kv(cli::kv::KvCommand),
    /// Show and change the set of masters.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Run a cluster of masters on this machine.
    #[command(subcommand)]
    Local(cli::local::LocalCommand),
    /// Show objects: rafter get TYPE [NAME] [-n NS | -A] [-l SEL] [-o wide|yaml|json|name] [-w].
    Get(cli::objects::GetArgs),
    /// Show one object's fields, conditions and recent events.
    Describe(cli::objects::NameArgs),
    /// Create or update the objects of manifests (-f FILE|DIR|-).
    Apply(cli::objects::FileArgs),
    /// Create an object (namespace, deployment, configmap, secret generic) or -f FILE.
    Create(CreateArgs),
    /// Delete objects: TYPE NAME..., TYPE/NAME or -f FILE.
    Delete(cli::objects::DeleteArgs),
    /// Set the replicas of a deployment or replicaset.
    Scale(cli::objects::ScaleArgs),
    /// Make a ClusterIP Service for a deployment's, replicaset's or pod's pods.
    Expose(cli::expose::ExposeArgs),
    /// Set (key=value) or remove (key-) labels.
    Label(cli::objects::LabelArgs),
    /// Set (key=value) or remove (key-) annotations.
    Annotate(cli::objects::LabelArgs),
    /// Edit an object in $EDITOR, then save it (refused if it changed meanwhile).
    Edit(cli::objects::NameArgs),
    /// Watch and steer a deployment's rollout: status, history, undo, pause, resume.
    #[command(subcommand)]
    Rollout(cli::rollout::RolloutCommand),
    /// Change a deployment's template (set image deployment/NAME CONTAINER=IMAGE).
    #[command(subcommand)]
    Set(cli::rollout::SetCommand),
    /// List the object types, their short names and API versions.
    ApiResources,
    /// Mark a node unschedulable.
    Cordon(cli::nodes::NodeArgs),
    /// Mark a node schedulable again.
    Uncordon(cli::nodes::NodeArgs),
    /// Cordon a node and evict its pods (their controllers recreate them elsewhere).
    Drain(cli::nodes::DrainArgs),
    /// Benchmark Rafter against etcd on this machine.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Simulated nodes, for tests and benchmarks only.
    #[command(subcommand)]
    Sim(cli::sim::SimCommand),
    /// Print a pod container's log: logs POD [-c C] [-f] [--tail N] [--previous].
    Logs(cli::pods::LogsArgs),
    /// Run a command in a pod's container: exec POD [-c C] [-i] [-t] -- CMD [ARGS...].
    Exec(cli::pods::ExecArgs),
    /// Build the demo and pod sandbox images on this machine's Docker engine.
    #[command(subcommand)]
    Image(cli::image::ImageCommand),
    /// Bootstrap tokens with which node agents join: create, list, delete.
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct CreateArgs {
    #[command(subcommand)]
    what: Option<cli::objects::CreateCommand>,
    #[command(flatten)]
    files: Option<CreateFiles>,
}

#[derive(Debug, clap::Args)]
struct CreateFiles {
    /// Manifest file, directory or - for stdin.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    #[command(flatten)]
    ns: cli::objects::NamespaceArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // A master logs its progress; a client command only what went wrong.
    let default_level = match cli.command {
        Command::Server(_) | Command::Agent(_) => "info",
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
        Command::Agent(args) => agent::main(args).await,
        Command::Kv(c) => cli::kv::run(&cli.global, c).await,
        Command::Cluster(c) => cli::cluster::run(&cli.global, c).await,
        Command::Local(c) => cli::local::run(c).await,
        Command::Get(a) => cli::objects::get(&cli.global, a).await,
        Command::Describe(a) => cli::objects::describe(&cli.global, a).await,
        Command::Apply(a) => cli::objects::apply(&cli.global, a).await,
        Command::Create(CreateArgs { what: Some(c), .. }) => {
            cli::objects::create(&cli.global, c).await
        }
        Command::Create(CreateArgs { files, .. }) => match files {
            Some(f) if !f.files.is_empty() => {
                let a = cli::objects::FileArgs {
                    files: f.files,
                    ns: f.ns,
                };
                cli::objects::create_from_files(&cli.global, a).await
            }
            _ => Err(anyhow::anyhow!(
                "give what to create (namespace, deployment, configmap, secret generic) or -f FILE"
            )),
        },
        Command::Delete(a) => cli::objects::delete(&cli.global, a).await,
        Command::Scale(a) => cli::objects::scale(&cli.global, a).await,
        Command::Expose(a) => cli::expose::expose(&cli.global, a).await,
        Command::Label(a) => cli::objects::label(&cli.global, a, "labels").await,
        Command::Annotate(a) => cli::objects::label(&cli.global, a, "annotations").await,
        Command::Edit(a) => cli::objects::edit(&cli.global, a).await,
        Command::Rollout(c) => cli::rollout::run(&cli.global, c).await,
        Command::Set(c) => cli::rollout::set(&cli.global, c).await,
        Command::ApiResources => cli::objects::api_resources(),
        Command::Cordon(a) => cli::nodes::cordon(&cli.global, a).await,
        Command::Uncordon(a) => cli::nodes::uncordon(&cli.global, a).await,
        Command::Drain(a) => cli::nodes::drain(&cli.global, a).await,
        Command::Bench(c) => cli::bench::run(c).await,
        Command::Sim(c) => cli::sim::run(&cli.global, c).await,
        Command::Token(c) => cli::token::run(&cli.global, c).await,
        Command::Image(c) => cli::image::run(c).await,
        Command::Logs(a) => cli::pods::logs(&cli.global, a).await,
        Command::Exec(a) => match cli::pods::exec(&cli.global, a).await {
            // The command's own exit code, as kubectl exec does.
            Ok(0) => Ok(()),
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`rafter kv watch ... | head`): not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<cli::objects::ServerError>() {
                // kubectl's form: `Error from server (NotFound): ...`
                Some(s) => eprintln!("Error {s}"),
                None => eprintln!("Error: {e:#}"),
            }
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
