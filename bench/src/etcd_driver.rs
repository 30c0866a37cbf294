//! [`Driver`] for etcd over its v3 gRPC API (code generated from
//! `proto/etcd/`). Failover mirrors `rafter_client::Client` so neither side
//! gets a smarter client: on any error but a definite rejection, try the
//! next member; after each full round pause 50–100 ms; give up after 30 s.
//! A request may take 5 s per attempt.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::mpsc;
use tonic::Code;
use tonic::Status;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::driver::Driver;
use crate::driver::MemberStatus;
use crate::driver::Seen;
use crate::error::BenchError;
use crate::etcd_pb::etcdserverpb as pb;
use crate::etcd_pb::etcdserverpb::kv_client::KvClient;
use crate::etcd_pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::etcd_pb::etcdserverpb::watch_client::WatchClient;

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const OVERALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection: a channel to every member, and the member it uses now.
struct Conn {
    channels: Vec<Channel>,
    current: AtomicUsize,
}

/// etcd connections.
#[derive(Clone)]
pub struct EtcdDriver {
    conns: Arc<Vec<Conn>>,
    /// One channel per member for status and watch.
    direct: Arc<Vec<Channel>>,
}

fn channel(addr: &str) -> Result<Channel, BenchError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| BenchError::Endpoint(addr.to_string()))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy())
}

impl EtcdDriver {
    /// `conns` connections; connection `c` starts at member `c % n`.
    pub fn connect(endpoints: &[String], conns: usize) -> Result<EtcdDriver, BenchError> {
        let n = endpoints.len();
        let mut list = Vec::with_capacity(conns);
        for c in 0..conns {
            let channels = endpoints
                .iter()
                .map(|e| channel(e))
                .collect::<Result<Vec<_>, _>>()?;
            list.push(Conn {
                channels,
                current: AtomicUsize::new(c % n),
            });
        }
        let direct = endpoints
            .iter()
            .map(|e| channel(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcdDriver {
            conns: Arc::new(list),
            direct: Arc::new(direct),
        })
    }

    async fn with_failover<T, F, Fut>(&self, conn: usize, mut attempt: F) -> Result<T, BenchError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let conn = &self.conns[conn % self.conns.len()];
        let n = conn.channels.len();
        let deadline = Instant::now() + OVERALL_TIMEOUT;
        let mut i = conn.current.load(Ordering::Relaxed) % n;
        let mut attempts = 0usize;
        loop {
            let call = attempt(conn.channels[i].clone());
            let last = match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
                Ok(Ok(resp)) => {
                    conn.current.store(i, Ordering::Relaxed);
                    return Ok(resp.into_inner());
                }
                Ok(Err(s)) if is_definite(&s) => return Err(s.into()),
                Ok(Err(s)) => s,
                Err(_) => Status::deadline_exceeded("no answer within 5s"),
            };
            i = (i + 1) % n;
            conn.current.store(i, Ordering::Relaxed);
            attempts += 1;
            if attempts.is_multiple_of(n) {
                let pause = Duration::from_millis(rand::random_range(50..=100));
                tokio::time::sleep(pause).await;
            }
            if Instant::now() >= deadline {
                return Err(last.into());
            }
        }
    }
}

/// Errors another member would answer the same way.
fn is_definite(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::OutOfRange
    )
}

impl Driver for EtcdDriver {
    fn conns(&self) -> usize {
        self.conns.len()
    }

    async fn put(&self, conn: usize, key: Vec<u8>, value: Vec<u8>) -> Result<u64, BenchError> {
        let req = pb::PutRequest {
            key,
            value,
            ..Default::default()
        };
        let resp = self
            .with_failover(conn, |ch| {
                let r = req.clone();
                async move { KvClient::new(ch).put(r).await }
            })
            .await?;
        Ok(resp.header.map(|h| h.raft_term).unwrap_or(0))
    }

    async fn get(&self, conn: usize, key: Vec<u8>, serializable: bool) -> Result<(), BenchError> {
        let req = pb::RangeRequest {
            key,
            serializable,
            ..Default::default()
        };
        self.with_failover(conn, |ch| {
            let r = req.clone();
            async move { KvClient::new(ch).range(r).await }
        })
        .await?;
        Ok(())
    }

    async fn status(&self, member: usize) -> Result<MemberStatus, BenchError> {
        let mut c = MaintenanceClient::new(self.direct[member].clone());
        let call = c.status(pb::StatusRequest {});
        let s = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| Status::deadline_exceeded("status: no answer within 2s"))??
            .into_inner();
        Ok(MemberStatus {
            id: s.header.map(|h| h.member_id).unwrap_or(0),
            leader: s.leader,
            term: s.raft_term,
        })
    }

    async fn watch(
        &self,
        member: usize,
        prefix: Vec<u8>,
    ) -> Result<mpsc::UnboundedReceiver<Seen>, BenchError> {
        let mut range_end = prefix.clone();
        if let Some(last) = range_end.last_mut() {
            *last += 1;
        }
        let (req_tx, req_rx) = mpsc::channel(1);
        req_tx
            .send(pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                    pb::WatchCreateRequest {
                        key: prefix,
                        range_end,
                        ..Default::default()
                    },
                )),
            })
            .await
            .map_err(|_| Status::internal("watch request channel closed"))?;
        let mut client = WatchClient::new(self.direct[member].clone());
        let mut stream = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(req_rx))
            .await?
            .into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Holding the request side open keeps the watch alive.
            let _req_tx = req_tx;
            while let Ok(Some(resp)) = stream.message().await {
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
