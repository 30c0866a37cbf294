//! [`Driver`] for Rafter, through `rafter_client::Client` with its default
//! options: the same failover loop, write ids and retries any Rafter user
//! gets.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use rafter_client::{Client, ClientOptions};

/// The admin token of the benchmark's Rafter cluster.
pub const TOKEN: &str = "bench-admin-token";

/// Client settings: the defaults plus the token.
fn options() -> ClientOptions {
    ClientOptions {
        token: Some(TOKEN.into()),
        ..Default::default()
    }
}
use rafter_client::proto::RangeRequest;
use rafter_client::proto::WatchRequest;
use tokio::sync::mpsc;

use crate::driver::Driver;
use crate::driver::MemberStatus;
use crate::driver::Seen;
use crate::error::BenchError;

/// Rafter clients, one per connection.
#[derive(Clone)]
pub struct RafterDriver {
    endpoints: Arc<Vec<String>>,
    clients: Arc<Vec<Client>>,
}

impl RafterDriver {
    /// `conns` clients; client `c` lists member `c % n` first.
    pub async fn connect(endpoints: &[String], conns: usize) -> Result<RafterDriver, BenchError> {
        let n = endpoints.len();
        let mut clients = Vec::with_capacity(conns);
        for c in 0..conns {
            let mut list = endpoints.to_vec();
            list.rotate_left(c % n);
            clients.push(Client::connect_with_options(list, options()).await?);
        }
        Ok(RafterDriver {
            endpoints: Arc::new(endpoints.to_vec()),
            clients: Arc::new(clients),
        })
    }
}

impl Driver for RafterDriver {
    fn conns(&self) -> usize {
        self.clients.len()
    }

    async fn put(&self, conn: usize, key: Vec<u8>, value: Vec<u8>) -> Result<u64, BenchError> {
        let client = &self.clients[conn % self.clients.len()];
        let resp = client.put(key, value, 0, false).await?;
        Ok(resp.header.map(|h| h.raft_term).unwrap_or(0))
    }

    async fn get(&self, conn: usize, key: Vec<u8>, serializable: bool) -> Result<(), BenchError> {
        let client = &self.clients[conn % self.clients.len()];
        client
            .range(RangeRequest {
                key,
                serializable,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn status(&self, member: usize) -> Result<MemberStatus, BenchError> {
        let s = self.clients[0].status_of(&self.endpoints[member]).await?;
        Ok(MemberStatus {
            id: s.member_id,
            leader: s.leader_id,
            term: s.raft_term,
        })
    }

    async fn watch(
        &self,
        member: usize,
        prefix: Vec<u8>,
    ) -> Result<mpsc::UnboundedReceiver<Seen>, BenchError> {
        let client =
            Client::connect_with_options([self.endpoints[member].as_str()], options()).await?;
        let mut stream = client.watch(WatchRequest {
            key: prefix,
            prefix: true,
            start_revision: 0,
            prev_kv: false,
            ..Default::default()
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(resp)) = stream.next().await {
                let now = Instant::now();
                for ev in resp.events {
                    if let Some(kv) = ev.kv
                        && tx.send((kv.key, now)).is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}
