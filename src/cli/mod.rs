//! The client verbs of the `rafter` binary.
//!
//! - `config`: finds the masters (`--endpoints`, `$RAFTER_ENDPOINTS`, the
//!   config file).
//! - `kv`: `rafter kv put|get|del|watch|txn|lease`, etcdctl-like.
//! - `txn`: the text format `rafter kv txn` reads.
//! - `cluster`: `rafter cluster status|members|add|remove`.
//! - `local`: `rafter local up|down|status`, a cluster of masters on this
//!   machine for trying Rafter out.
//! - `nodes`: `rafter cordon|uncordon|drain NODE`.
//! - `bench`: `rafter bench kv`, Rafter against etcd (the `rafter-bench` crate).
//! - `rollout`: `rafter rollout status|history|undo|pause|resume` and
//!   `rafter set image`.
//! - `image`: `rafter image build-demo`, the demo and sandbox images.
//! - `pods`: `rafter logs` and `rafter exec`, through the masters to the node agent.
//! - `terminal`: raw mode and the window size for `rafter exec -t`.
//! - `token`: `rafter token create|list|delete`, bootstrap tokens for joining nodes.
//! - `output`: tables, JSON views and number formats shared by the above.
//!
//! Every verb is a function from parsed arguments to printed output; all
//! talking to masters goes through [`rafter_client::Client`].

/// `print!` that returns an `io::Result` instead of panicking when stdout
/// is closed (`rafter ... | head`); `main` exits quietly on that error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)
    }};
}

/// `println!` that returns an `io::Result`; see `out!`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

pub mod bench;
pub mod cluster;
pub mod config;
pub mod duration;
pub mod expose;
pub mod image;
pub mod kv;
pub mod local;
pub mod nodes;
pub mod objects;
pub mod output;
pub mod pods;
pub mod rollout;
pub mod sim;
pub mod tables;
pub mod terminal;
pub mod token;
pub mod txn;

use clap::Args;
use rafter_client::Client;

/// Options every client verb accepts, before or after the verb.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Masters to talk to, comma-separated host:port. Default: $RAFTER_ENDPOINTS,
    /// else the `endpoints` line of $RAFTER_CONFIG or ~/.rafter/config.
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    pub endpoints: Option<String>,
    /// Bearer token for the masters. Default: $RAFTER_TOKEN, else the
    /// `token` line of the config file (written by `rafter local up`).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
}

impl GlobalArgs {
    /// A client for the configured masters.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let endpoints = config::resolve_endpoints(self.endpoints.as_deref())?;
        let options = rafter_client::ClientOptions {
            token: config::resolve_token(self.token.as_deref())?,
            ..Default::default()
        };
        Ok(Client::connect_with_options(endpoints, options).await?)
    }
}

/// Resolves when the user presses Ctrl-C (or the process gets SIGINT).
/// If the handler cannot be installed, never resolves: the default
/// disposition still ends the process.
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
