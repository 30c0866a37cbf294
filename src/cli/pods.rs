//! `rafter logs POD` and `rafter exec POD -- CMD`, as kubectl has them,
//! through any master to the pod's node agent.

use std::io::Write;

use anyhow::bail;
use rafter_proto::api::{ExecRequest, LogsRequest};

use super::GlobalArgs;
use super::objects::{NamespaceArgs, namespace, server_error};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod.
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// The log of the previous, exited container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Prefix each line with its time.
    #[arg(long)]
    pub timestamps: bool,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Accepted for kubectl compatibility; stdin and a terminal are not
    /// passed through yet (the command runs without input).
    #[arg(short = 'i', long)]
    pub stdin: bool,
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: i32,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub async fn logs(global: &GlobalArgs, a: LogsArgs) -> anyhow::Result<()> {
    let client = global.client().await?;
    let mut stream = client
        .pod_logs(LogsRequest {
            namespace: namespace(&a.ns)?,
            pod: a.pod,
            container: a.container.unwrap_or_default(),
            follow: a.follow,
            tail_lines: a.tail,
            previous: a.previous,
            timestamps: a.timestamps,
        })
        .await
        .map_err(server_error)?;
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.message().await? {
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}

/// Runs the command; returns its exit code for the process to exit with.
pub async fn exec(global: &GlobalArgs, a: ExecArgs) -> anyhow::Result<i32> {
    if a.command.is_empty() {
        bail!("give the command after --: rafter exec POD -- COMMAND [ARGS...]");
    }
    if a.tty {
        eprintln!("rafter exec: -t is not supported yet; running without a terminal");
    }
    let client = global.client().await?;
    let resp = client
        .pod_exec(ExecRequest {
            namespace: namespace(&a.ns)?,
            pod: a.pod,
            container: a.container.unwrap_or_default(),
            command: a.command,
            timeout_seconds: a.timeout,
        })
        .await
        .map_err(server_error)?;
    std::io::stdout().write_all(&resp.stdout)?;
    std::io::stderr().write_all(&resp.stderr)?;
    Ok(resp.exit_code)
}
