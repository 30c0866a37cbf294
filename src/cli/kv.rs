//! `rafter kv`: etcdctl-like access to the key-value store.
//!
//! Plain output matches etcdctl's `simple` format (a get prints the key on
//! one line and the value on the next; a watch prints `PUT`/`DELETE`, key,
//! value), so scripts written for etcdctl mostly carry over. `-o json` prints
//! the JSON views of `output`. Lease IDs are hexadecimal everywhere, printed
//! without and accepted with or without `0x`.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use rafter_client::Client;
use rafter_proto::kv::event::EventType;
use rafter_proto::kv::response_op::Response;
use rafter_proto::kv::{Event, RangeRequest, TxnResponse, WatchRequest};
use serde_json::{Map, Value, json};

use super::output::{
    self, KvFormat, header_json, lease_hex, parse_lease_id, print_json, put_bytes, range_json,
};
use super::{GlobalArgs, ctrl_c, txn};

/// `rafter kv ...`
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Set a key to a value (read from stdin when VALUE is omitted).
    Put(PutArgs),
    /// Read a key, or every key under a prefix.
    Get(GetArgs),
    /// Delete a key, or every key under a prefix; prints how many were deleted.
    #[command(alias = "delete")]
    Del(DelArgs),
    /// Print changes to a key or prefix as they happen, until Ctrl-C.
    Watch(WatchArgs),
    /// Run a transaction: compare, then put/get/del atomically.
    #[command(after_long_help = txn::FORMAT_HELP)]
    Txn(TxnArgs),
    /// Grant, refresh and revoke leases (keys that expire).
    #[command(subcommand)]
    Lease(LeaseCommand),
}

/// `rafter kv put`
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key.
    key: String,
    /// The value; read from stdin when omitted.
    value: Option<String>,
    /// Attach the key to this lease (hex ID from `rafter kv lease grant`).
    #[arg(long, value_name = "ID")]
    lease: Option<String>,
}

/// `rafter kv get`
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key, or the prefix with --prefix.
    key: String,
    /// Read every key starting with KEY.
    #[arg(long)]
    prefix: bool,
    /// Read at this past revision instead of the current one.
    #[arg(long, value_name = "N")]
    rev: Option<u64>,
    /// Let the answering master reply from its own state, which may be
    /// slightly stale, instead of a linearizable read.
    #[arg(long)]
    serializable: bool,
    /// Return at most N keys.
    #[arg(long, value_name = "N")]
    limit: Option<i64>,
    /// Print keys only.
    #[arg(long)]
    keys_only: bool,
    /// Print only the number of matching keys.
    #[arg(long)]
    count_only: bool,
    /// Output format. In JSON, keys and values are strings when they are
    /// UTF-8, else base64 under `key_base64` / `value_base64`.
    #[arg(short, long, value_enum, default_value_t = KvFormat::Simple)]
    output: KvFormat,
}

/// `rafter kv del`
#[derive(Debug, Args)]
pub struct DelArgs {
    /// The key, or the prefix with --prefix.
    key: String,
    /// Delete every key starting with KEY.
    #[arg(long)]
    prefix: bool,
}

/// `rafter kv watch`
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key, or the prefix with --prefix.
    key: String,
    /// Watch every key starting with KEY.
    #[arg(long)]
    prefix: bool,
    /// Start at this revision (replaying history from there) instead of now.
    #[arg(long, value_name = "N")]
    rev: Option<u64>,
    /// Output format: json prints one object per event and line, with
    /// revision, type, key and value (`key_base64` / `value_base64` when
    /// not UTF-8).
    #[arg(short, long, value_enum, default_value_t = KvFormat::Simple)]
    output: KvFormat,
}

/// `rafter kv txn`
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Read the transaction from this file instead of stdin.
    #[arg(long, short, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = KvFormat::Simple)]
    output: KvFormat,
}

/// `rafter kv lease ...`
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Create a lease that expires TTL seconds after its last keep-alive.
    Grant {
        /// Time to live in seconds.
        ttl: i64,
    },
    /// Refresh a lease every TTL/3 seconds until Ctrl-C.
    #[command(name = "keep-alive", alias = "keepalive")]
    KeepAlive {
        /// Lease ID (hex).
        id: String,
        /// Refresh once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Revoke a lease, deleting every key attached to it.
    Revoke {
        /// Lease ID (hex).
        id: String,
    },
}

/// Runs one `rafter kv` command.
pub async fn run(global: &GlobalArgs, command: KvCommand) -> anyhow::Result<()> {
    let client = global.client().await?;
    match command {
        KvCommand::Put(a) => put(&client, a).await,
        KvCommand::Get(a) => get(&client, a).await,
        KvCommand::Del(a) => {
            let resp = client.delete(a.key, a.prefix, false).await?;
            outln!("{}", resp.deleted)?;
            Ok(())
        }
        KvCommand::Watch(a) => watch(&client, a).await,
        KvCommand::Txn(a) => run_txn(&client, a).await,
        KvCommand::Lease(c) => lease(&client, c).await,
    }
}

async fn put(client: &Client, a: PutArgs) -> anyhow::Result<()> {
    let lease = a
        .lease
        .as_deref()
        .map(parse_lease_id)
        .transpose()?
        .unwrap_or(0);
    let value = match a.value {
        Some(v) => v.into_bytes(),
        None => {
            let mut buf = Vec::new();
            io::stdin()
                .read_to_end(&mut buf)
                .context("reading the value from stdin")?;
            buf
        }
    };
    client.put(a.key, value, lease, false).await?;
    outln!("OK")?;
    Ok(())
}

async fn get(client: &Client, a: GetArgs) -> anyhow::Result<()> {
    let req = RangeRequest {
        key: a.key.into_bytes(),
        prefix: a.prefix,
        limit: a.limit.unwrap_or(0),
        revision: a.rev.unwrap_or(0),
        serializable: a.serializable,
        keys_only: a.keys_only,
        count_only: a.count_only,
    };
    let resp = client.range(req).await?;
    match a.output {
        KvFormat::Json => print_json(&range_json(&resp))?,
        KvFormat::Simple => {
            let mut out = io::stdout().lock();
            output::write_range(&mut out, &resp, a.keys_only, a.count_only)?;
            out.flush()?;
        }
    }
    Ok(())
}

async fn watch(client: &Client, a: WatchArgs) -> anyhow::Result<()> {
    let mut stream = client.watch(WatchRequest {
        key: a.key.into_bytes(),
        prefix: a.prefix,
        start_revision: a.rev.unwrap_or(0),
        prev_kv: false,
        ..Default::default()
    });
    loop {
        let resp = tokio::select! {
            _ = ctrl_c() => return Ok(()),
            item = stream.next() => match item {
                Some(resp) => resp?,
                None => return Ok(()),
            },
        };
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        let mut out = io::stdout().lock();
        for event in &resp.events {
            match a.output {
                KvFormat::Simple => write_event(&mut out, event)?,
                KvFormat::Json => {
                    serde_json::to_writer(&mut out, &event_json(revision, event))?;
                    out.write_all(b"\n")?;
                }
            }
        }
        out.flush()?;
    }
}

/// `PUT` or `DELETE`, then the key and value lines, as etcdctl prints them.
fn write_event(out: &mut impl Write, event: &Event) -> io::Result<()> {
    writeln!(out, "{}", event_type(event))?;
    let kv = event.kv.clone().unwrap_or_default();
    output::write_kv(out, &kv, false)
}

fn event_type(event: &Event) -> &'static str {
    match EventType::try_from(event.r#type) {
        Ok(EventType::Put) => "PUT",
        Ok(EventType::Delete) => "DELETE",
        Err(_) => "UNKNOWN",
    }
}

fn event_json(revision: u64, event: &Event) -> Value {
    let kv = event.kv.clone().unwrap_or_default();
    let mut m = Map::new();
    m.insert("revision".into(), revision.into());
    m.insert("type".into(), event_type(event).into());
    put_bytes(&mut m, "key", &kv.key);
    put_bytes(&mut m, "value", &kv.value);
    m.insert("create_revision".into(), kv.create_revision.into());
    m.insert("mod_revision".into(), kv.mod_revision.into());
    m.insert("version".into(), kv.version.into());
    m.insert("lease".into(), kv.lease.into());
    Value::Object(m)
}

async fn run_txn(client: &Client, a: TxnArgs) -> anyhow::Result<()> {
    let text = match &a.file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading transaction file {}", path.display()))?,
        None => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .context("reading the transaction from stdin")?;
            text
        }
    };
    let req = txn::parse(&text).context("invalid transaction (see `rafter kv txn --help`)")?;
    let resp = client.txn(req).await?;
    match a.output {
        KvFormat::Json => print_json(&txn_json(&resp))?,
        KvFormat::Simple => {
            let mut out = io::stdout().lock();
            write_txn(&mut out, &resp)?;
            out.flush()?;
        }
    }
    Ok(())
}

fn write_txn(out: &mut impl Write, resp: &TxnResponse) -> io::Result<()> {
    writeln!(
        out,
        "{}",
        if resp.succeeded { "SUCCESS" } else { "FAILURE" }
    )?;
    for op in &resp.responses {
        writeln!(out)?;
        match &op.response {
            Some(Response::ResponsePut(_)) => writeln!(out, "OK")?,
            Some(Response::ResponseRange(r)) => output::write_range(out, r, false, false)?,
            Some(Response::ResponseDeleteRange(d)) => writeln!(out, "{}", d.deleted)?,
            None => {}
        }
    }
    Ok(())
}

fn txn_json(resp: &TxnResponse) -> Value {
    let responses: Vec<Value> = resp
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(Response::ResponsePut(p)) => {
                json!({"put": {"header": header_json(p.header.as_ref())}})
            }
            Some(Response::ResponseRange(r)) => json!({"range": range_json(r)}),
            Some(Response::ResponseDeleteRange(d)) => json!({"delete": {
                "header": header_json(d.header.as_ref()),
                "deleted": d.deleted,
            }}),
            None => Value::Null,
        })
        .collect();
    json!({
        "header": header_json(resp.header.as_ref()),
        "succeeded": resp.succeeded,
        "responses": responses,
    })
}

async fn lease(client: &Client, command: LeaseCommand) -> anyhow::Result<()> {
    match command {
        LeaseCommand::Grant { ttl } => {
            if ttl <= 0 {
                bail!("TTL must be a positive number of seconds, got {ttl}");
            }
            let resp = client.lease_grant(ttl).await?;
            outln!(
                "lease {} granted with TTL({}s)",
                lease_hex(resp.id),
                resp.ttl
            )?;
        }
        LeaseCommand::KeepAlive { id, once } => {
            let id = parse_lease_id(&id)?;
            loop {
                let resp = client
                    .lease_keep_alive(id)
                    .await
                    .with_context(|| format!("lease {} keep-alive", lease_hex(id)))?;
                if resp.ttl <= 0 {
                    bail!("lease {} expired or revoked", lease_hex(id));
                }
                outln!("lease {} keepalived with TTL({})", lease_hex(id), resp.ttl)?;
                if once {
                    break;
                }
                // A third of the TTL, like etcd's keep-alive loop, leaving
                // two more chances before the lease expires.
                let pause = Duration::from_secs((resp.ttl as u64 / 3).max(1));
                tokio::select! {
                    _ = ctrl_c() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        LeaseCommand::Revoke { id } => {
            let id = parse_lease_id(&id)?;
            client
                .lease_revoke(id)
                .await
                .with_context(|| format!("revoking lease {}", lease_hex(id)))?;
            outln!("lease {} revoked", lease_hex(id))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rafter_proto::kv::{DeleteRangeResponse, KeyValue, PutResponse, RangeResponse, ResponseOp};

    use super::*;

    #[test]
    fn events_print_like_etcdctl() {
        let event = Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                ..Default::default()
            }),
            prev_kv: None,
        };
        let mut out = Vec::new();
        write_event(&mut out, &event).unwrap();
        assert_eq!(out, b"DELETE\nk\n\n");
    }

    #[test]
    fn txn_results_print_like_etcdctl() {
        let resp = TxnResponse {
            succeeded: true,
            responses: vec![
                ResponseOp {
                    response: Some(Response::ResponsePut(PutResponse::default())),
                },
                ResponseOp {
                    response: Some(Response::ResponseRange(RangeResponse {
                        kvs: vec![KeyValue {
                            key: b"k".to_vec(),
                            value: b"v".to_vec(),
                            ..Default::default()
                        }],
                        count: 1,
                        ..Default::default()
                    })),
                },
                ResponseOp {
                    response: Some(Response::ResponseDeleteRange(DeleteRangeResponse {
                        deleted: 2,
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        let mut out = Vec::new();
        write_txn(&mut out, &resp).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SUCCESS\n\nOK\n\nk\nv\n\n2\n"
        );
    }
}
