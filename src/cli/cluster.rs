//! `rafter cluster`: the masters, their Raft state, and membership changes.
//!
//! `status` asks every master for its own view (not the leader's view of
//! everyone), so a master that is partitioned or behind shows as such, and one
//! that does not answer still gets a row, with the reason in an ERROR column.

use anyhow::Context;
use clap::{Args, Subcommand};
use rafter_client::MemberStatus;
use rafter_proto::kv::{Member, StatusResponse};
use serde_json::{Value, json};

use super::GlobalArgs;
use super::output::{Table, TableFormat, human_bytes, id_hex, print_json};

/// `rafter cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show every master's Raft state: leader, term, commit and applied index, DB size.
    Status(FormatArgs),
    /// List the members of the cluster.
    #[command(alias = "list")]
    Members(FormatArgs),
    /// Add a master (it joins as a learner and is promoted once caught up).
    Add {
        /// The new master's name (its --name).
        name: String,
        /// Its gRPC address, host:port (its --listen).
        address: String,
    },
    /// Remove a master from the cluster.
    Remove {
        /// The master's name.
        name: String,
    },
}

/// `-o` for the table commands.
#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Output format: wide adds LEARNER, REVISION and COMPACTED columns.
    #[arg(short, long, value_enum, default_value_t = TableFormat::Table)]
    output: TableFormat,
}

/// Runs one `rafter cluster` command.
pub async fn run(global: &GlobalArgs, command: ClusterCommand) -> anyhow::Result<()> {
    let client = global.client().await?;
    match command {
        ClusterCommand::Status(f) => {
            let statuses = client.cluster_status().await?;
            print_status(&statuses, f.output)?;
            if f.output != TableFormat::Json {
                print_control_plane(&client).await?;
            }
        }
        ClusterCommand::Members(f) => {
            let resp = client.member_list().await?;
            print_members(&resp.members, f.output)?;
        }
        ClusterCommand::Add { name, address } => {
            let resp = client
                .member_add(&name, &address)
                .await
                .with_context(|| format!("adding member {name:?} at {address}"))?;
            let id = resp.member.map_or(0, |m| m.id);
            outln!("member {name:?} added with ID {}", id_hex(id))?;
        }
        ClusterCommand::Remove { name } => {
            client
                .member_remove(&name)
                .await
                .with_context(|| format!("removing member {name:?}"))?;
            outln!("member {name:?} removed")?;
        }
    }
    Ok(())
}

/// Prints which master runs the scheduler and controllers, and since when.
async fn print_control_plane(client: &rafter_client::Client) -> anyhow::Result<()> {
    let record = client
        .get(crate::supervisor::CONTROL_PLANE_KEY)
        .await
        .ok()
        .flatten()
        .and_then(|kv| crate::supervisor::decode_record(&kv.value));
    match record {
        Some(r) => {
            let age = rafter_proto::age::parse_rfc3339_utc(&r.since)
                .map(|t| rafter_proto::age::human_age(t, std::time::SystemTime::now()))
                .unwrap_or_else(|| "?".into());
            outln!(
                "\ncontrol loops (scheduler, controllers): {} since {} ({age}), term {}",
                r.master,
                r.since,
                r.term
            )?;
        }
        None => outln!("\ncontrol loops (scheduler, controllers): not started yet")?,
    }
    Ok(())
}

/// Whether `s` is the leader: it says so, and no reachable master is in a
/// later term. A master that was leader and restarts may claim its old
/// term's leadership until it hears from the new leader; that claim is
/// stale, not leadership.
pub fn is_leader(s: &StatusResponse, statuses: &[MemberStatus]) -> bool {
    let latest_term = statuses
        .iter()
        .filter_map(|m| m.status.as_ref().ok())
        .map(|s| s.raft_term)
        .max()
        .unwrap_or(0);
    s.leader_id != 0 && s.leader_id == s.member_id && s.raft_term == latest_term
}

/// Prints the answers of [`rafter_client::Client::cluster_status`].
pub fn print_status(statuses: &[MemberStatus], format: TableFormat) -> anyhow::Result<()> {
    if format == TableFormat::Json {
        let rows: Vec<Value> = statuses.iter().map(|m| status_json(m, statuses)).collect();
        print_json(&Value::Array(rows))?;
        return Ok(());
    }
    out!(
        "{}",
        status_table(statuses, format == TableFormat::Wide).render()
    )?;
    Ok(())
}

fn status_table(statuses: &[MemberStatus], wide: bool) -> Table {
    let mut headers = vec![
        "NAME", "ID", "ADDRESS", "LEADER", "TERM", "COMMIT", "APPLIED", "DB-SIZE",
    ];
    if wide {
        headers.extend(["LEARNER", "REVISION", "COMPACTED"]);
    }
    let any_error = statuses.iter().any(|s| s.status.is_err());
    if any_error {
        headers.push("ERROR");
    }
    let mut table = Table::new(&headers);
    for m in statuses {
        let mut row = match &m.status {
            Ok(s) => {
                let mut row = vec![
                    if s.name.is_empty() {
                        m.name.clone()
                    } else {
                        s.name.clone()
                    },
                    id_hex(s.member_id),
                    m.address.clone(),
                    is_leader(s, statuses).to_string(),
                    s.raft_term.to_string(),
                    s.commit_index.to_string(),
                    s.applied_index.to_string(),
                    human_bytes(s.db_size),
                ];
                if wide {
                    row.extend([
                        s.is_learner.to_string(),
                        s.revision.to_string(),
                        s.compact_revision.to_string(),
                    ]);
                }
                if any_error {
                    row.push("-".into());
                }
                row
            }
            Err(e) => {
                let unknown = || "-".to_string();
                let mut row = vec![
                    if m.name.is_empty() {
                        unknown()
                    } else {
                        m.name.clone()
                    },
                    if m.id == 0 { unknown() } else { id_hex(m.id) },
                    m.address.clone(),
                ];
                let blanks = if wide { 8 } else { 5 };
                row.extend(std::iter::repeat_with(unknown).take(blanks));
                row.push(short_error(e));
                row
            }
        };
        row.truncate(headers.len());
        table.row(row);
    }
    table
}

/// The error of one member's row: for an unreachable master just the
/// reason, since the row already names it.
fn short_error(e: &rafter_client::Error) -> String {
    match e {
        rafter_client::Error::Unavailable { tried } if tried.len() == 1 => tried[0].1.clone(),
        other => other.to_string(),
    }
}

fn status_json(m: &MemberStatus, statuses: &[MemberStatus]) -> Value {
    match &m.status {
        Ok(s) => json!({
            "name": if s.name.is_empty() { &m.name } else { &s.name },
            "id": id_hex(s.member_id),
            "address": m.address,
            "leader": is_leader(s, statuses),
            "leader_id": id_hex(s.leader_id),
            "raft_term": s.raft_term,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
            "db_size": s.db_size,
            "is_learner": s.is_learner,
            "revision": s.revision,
            "compact_revision": s.compact_revision,
        }),
        Err(e) => json!({
            "name": m.name,
            "id": id_hex(m.id),
            "address": m.address,
            "error": short_error(e),
        }),
    }
}

fn print_members(members: &[Member], format: TableFormat) -> anyhow::Result<()> {
    if format == TableFormat::Json {
        let rows: Vec<Value> = members
            .iter()
            .map(|m| {
                json!({
                    "name": m.name,
                    "id": id_hex(m.id),
                    "address": m.address,
                    "is_learner": m.is_learner,
                })
            })
            .collect();
        print_json(&Value::Array(rows))?;
        return Ok(());
    }
    let mut table = Table::new(&["NAME", "ID", "ADDRESS", "LEARNER"]);
    for m in members {
        table.row(vec![
            m.name.clone(),
            id_hex(m.id),
            m.address.clone(),
            m.is_learner.to_string(),
        ]);
    }
    table.print()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rafter_client::Error;

    use super::*;

    #[test]
    fn unreachable_member_gets_a_row_with_its_error() {
        let statuses = vec![
            MemberStatus {
                name: "m1".into(),
                id: 1,
                address: "127.0.0.1:7001".into(),
                is_learner: false,
                status: Ok(StatusResponse {
                    name: "m1".into(),
                    member_id: 1,
                    leader_id: 1,
                    raft_term: 2,
                    commit_index: 10,
                    applied_index: 10,
                    db_size: 1_234_567,
                    ..Default::default()
                }),
            },
            MemberStatus {
                name: "m2".into(),
                id: 2,
                address: "127.0.0.1:7002".into(),
                is_learner: false,
                status: Err(Error::Unavailable {
                    tried: vec![("127.0.0.1:7002".into(), "connection refused".into())],
                }),
            },
        ];
        let text = status_table(&statuses, false).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME   ID   ADDRESS"), "{text}");
        assert!(lines[0].ends_with("DB-SIZE   ERROR"), "{text}");
        assert!(
            lines[1].contains("true") && lines[1].contains("1.2 MB"),
            "{text}"
        );
        assert!(lines[2].starts_with("m2 "), "{text}");
        assert!(lines[2].ends_with("connection refused"), "{text}");
    }

    #[test]
    fn a_stale_claim_from_an_older_term_is_not_leadership() {
        let member = |id: u64, leader_id: u64, raft_term: u64| MemberStatus {
            name: format!("m{id}"),
            id,
            address: String::new(),
            is_learner: false,
            status: Ok(StatusResponse {
                member_id: id,
                leader_id,
                raft_term,
                ..Default::default()
            }),
        };
        // m3 was leader in term 1 and restarted; m2 leads term 2.
        let statuses = vec![member(2, 2, 2), member(3, 3, 1)];
        let leaders: Vec<bool> = statuses
            .iter()
            .map(|m| is_leader(m.status.as_ref().unwrap(), &statuses))
            .collect();
        assert_eq!(leaders, [true, false]);
    }
}
