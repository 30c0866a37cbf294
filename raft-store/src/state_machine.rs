//! The RocksDB state machine: openraft's `RaftStateMachine` over the shared
//! database, and snapshots built from a RocksDB snapshot.
//!
//! Each `apply()` call is one `WriteBatch` holding the data changes, the
//! last-applied log id, the membership and the counters, so a restart
//! resumes exactly where the batch left off and never replays the whole
//! log. The batch is not fsynced on its own: it sits in the same WAL as the
//! log, before the next synced append; snapshot building syncs the WAL
//! before the log may be purged.

use std::io::Cursor;
use std::io::Read;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Instant;

use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::StorageIOError;
use openraft::StoredMembership;
use openraft::storage::RaftStateMachine;
use rafter_proto::kv as pb;
use rocksdb::DB;
use rocksdb::IteratorMode;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;
use tokio::sync::broadcast;

use crate::apply::ApplyTx;
use crate::apply::Counters;
use crate::db::CF_LEASE;
use crate::db::CF_SM;
use crate::db::STATE_CFS;
use crate::db::key_u64;
use crate::db::u64_key;
use crate::lease::LeaseClock;
use crate::metrics::Metrics;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::LogResponse;
use crate::types::Member;
use crate::types::NodeId;
use crate::types::StorageError;
use crate::types::TypeConfig;

pub const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub const KEY_MEMBERSHIP: &[u8] = b"membership";
pub const KEY_REVISION: &[u8] = b"revision";
pub const KEY_COMPACT: &[u8] = b"compact_revision";
pub const KEY_DEDUP_FIRST: &[u8] = b"dedup_first";
pub const KEY_DEDUP_NEXT: &[u8] = b"dedup_next";

const SNAPSHOT_FILE: &str = "snapshot.bin";

type Membership = StoredMembership<NodeId, Member>;

/// State shared between the state machine (one writer) and the readers:
/// KV service, watch streams, the lease expirer, the compactor.
pub struct Shared {
    pub db: Arc<DB>,
    pub metrics: Arc<Metrics>,
    /// Current store revision (after the last applied batch).
    pub revision: AtomicU64,
    /// History below this revision is gone.
    pub compact_revision: AtomicU64,
    /// Committed index, as last saved by the log store.
    pub committed: Arc<AtomicU64>,
    /// Applied revisions for watchers; an empty event list is a wake-up
    /// after a snapshot install moved the revision.
    pub events: broadcast::Sender<Arc<pb::RevisionEvents>>,
    pub leases: LeaseClock,
    /// Serializes writers of the snapshot file.
    pub snapshot_lock: Arc<Mutex<()>>,
}

impl Shared {
    pub fn new(db: Arc<DB>, metrics: Arc<Metrics>) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(Self {
            db,
            metrics,
            revision: AtomicU64::new(0),
            compact_revision: AtomicU64::new(0),
            committed: Arc::new(AtomicU64::new(0)),
            events,
            leases: LeaseClock::default(),
            snapshot_lock: Arc::new(Mutex::new(())),
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family exists")
    }

    fn meta_u64(&self, key: &[u8]) -> Result<u64, StorageError> {
        let v = self
            .db
            .get_cf(self.cf(CF_SM), key)
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(v.map(|b| key_u64(&b)).unwrap_or(0))
    }

    /// Every lease in the database with its TTL.
    fn stored_leases(&self) -> Result<Vec<(i64, i64)>, StorageError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_LEASE), IteratorMode::Start) {
            let (k, v) = item.map_err(|e| StorageIOError::read(&e))?;
            let ttl = i64::from_be_bytes(v[..8].try_into().expect("8-byte ttl"));
            out.push((key_u64(&k) as i64, ttl));
        }
        Ok(out)
    }
}

/// The state machine that openraft drives.
pub struct StateMachine {
    shared: Arc<Shared>,
    snapshot_dir: PathBuf,
    dedup_capacity: u64,
    last_applied: Option<LogId>,
    membership: Membership,
    counters: Counters,
}

impl StateMachine {
    /// Loads the state machine's position from the database.
    pub fn open(
        shared: Arc<Shared>,
        snapshot_dir: PathBuf,
        dedup_capacity: u64,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&snapshot_dir).map_err(|e| StorageIOError::write(&e))?;
        let mut sm = Self {
            shared,
            snapshot_dir,
            dedup_capacity,
            last_applied: None,
            membership: Membership::default(),
            counters: Counters::default(),
        };
        sm.load()?;
        Ok(sm)
    }

    /// Reloads every in-memory field from the database.
    fn load(&mut self) -> Result<(), StorageError> {
        let s = &self.shared;
        let read = |key: &[u8]| {
            s.db.get_cf(s.cf(CF_SM), key)
                .map_err(|e| StorageIOError::read(&e))
        };
        self.last_applied = match read(KEY_LAST_APPLIED)? {
            Some(b) => bincode::deserialize(&b).map_err(|e| StorageIOError::read(&e))?,
            None => None,
        };
        self.membership = match read(KEY_MEMBERSHIP)? {
            Some(b) => bincode::deserialize(&b).map_err(|e| StorageIOError::read(&e))?,
            None => Membership::default(),
        };
        self.counters = Counters {
            revision: s.meta_u64(KEY_REVISION)?,
            dedup_first: s.meta_u64(KEY_DEDUP_FIRST)?,
            dedup_next: s.meta_u64(KEY_DEDUP_NEXT)?,
        };
        s.revision.store(self.counters.revision, Ordering::Release);
        s.compact_revision
            .store(s.meta_u64(KEY_COMPACT)?, Ordering::Release);
        s.leases.reset(s.stored_leases()?);
        s.metrics.revision.set(self.counters.revision as i64);
        s.metrics
            .applied_index
            .set(self.last_applied.map(|l| l.index).unwrap_or(0) as i64);
        Ok(())
    }

    fn snapshot_path(&self) -> PathBuf {
        self.snapshot_dir.join(SNAPSHOT_FILE)
    }
}

/// Builds snapshots from a RocksDB snapshot, off the apply path.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

/// Encodes every state column family of a consistent RocksDB snapshot as
/// `[cf index u8][key len u32][key][value len u32][value]` records, and
/// returns them with the last-applied log id and membership they contain.
fn dump_state(db: &DB) -> Result<(Vec<u8>, Option<LogId>, Membership), StorageError> {
    // Everything applied so far must be durable before openraft may purge
    // the log up to this snapshot.
    db.flush_wal(true).map_err(|e| StorageIOError::write(&e))?;
    let snap = db.snapshot();
    let sm = db.cf_handle(CF_SM).expect("column family exists");
    let read = |key: &[u8]| snap.get_cf(sm, key).map_err(|e| StorageIOError::read(&e));
    let last_applied: Option<LogId> = match read(KEY_LAST_APPLIED)? {
        Some(b) => bincode::deserialize(&b).map_err(|e| StorageIOError::read(&e))?,
        None => None,
    };
    let membership: Membership = match read(KEY_MEMBERSHIP)? {
        Some(b) => bincode::deserialize(&b).map_err(|e| StorageIOError::read(&e))?,
        None => Membership::default(),
    };
    let mut data = Vec::new();
    for (i, name) in STATE_CFS.iter().enumerate() {
        let cf = db.cf_handle(name).expect("column family exists");
        for item in snap.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| StorageIOError::read(&e))?;
            data.push(i as u8);
            data.extend_from_slice(&(k.len() as u32).to_be_bytes());
            data.extend_from_slice(&k);
            data.extend_from_slice(&(v.len() as u32).to_be_bytes());
            data.extend_from_slice(&v);
        }
    }
    Ok((data, last_applied, membership))
}

/// Writes `[meta len u64][meta bincode][data]` to `path` atomically, unless
/// the file there already holds a snapshot at least as new. `lock`
/// serializes writers: openraft builds snapshots in a task of their own while
/// installs run on the state-machine worker.
fn save_snapshot_file(
    path: &PathBuf,
    meta: &SnapshotMeta<NodeId, Member>,
    data: &[u8],
    lock: &Mutex<()>,
) -> std::io::Result<()> {
    let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(existing) = read_snapshot_meta(path)?
        && existing.last_log_id >= meta.last_log_id
    {
        return Ok(());
    }
    let meta_bytes = bincode::serialize(meta).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&(meta_bytes.len() as u64).to_be_bytes())?;
    f.write_all(&meta_bytes)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Opens the snapshot file at `path` and reads its metadata, leaving the
/// file positioned at the data. `None` when there is no snapshot yet.
fn open_snapshot_file(
    path: &PathBuf,
) -> std::io::Result<Option<(SnapshotMeta<NodeId, Member>, std::fs::File)>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let mut meta_bytes = vec![0u8; u64::from_be_bytes(len) as usize];
    f.read_exact(&mut meta_bytes)?;
    let meta = bincode::deserialize(&meta_bytes).map_err(std::io::Error::other)?;
    Ok(Some((meta, f)))
}

/// The metadata of the snapshot file at `path`, without its data.
fn read_snapshot_meta(path: &PathBuf) -> std::io::Result<Option<SnapshotMeta<NodeId, Member>>> {
    Ok(open_snapshot_file(path)?.map(|(meta, _)| meta))
}

fn load_snapshot_file(
    path: &PathBuf,
) -> std::io::Result<Option<(SnapshotMeta<NodeId, Member>, Vec<u8>)>> {
    let Some((meta, mut f)) = open_snapshot_file(path)? else {
        return Ok(None);
    };
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(Some((meta, data)))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let db = self.db.clone();
        let path = self.path.clone();
        let lock = self.lock.clone();
        tokio::task::spawn_blocking(move || {
            let (data, last_applied, membership) = dump_state(&db)?;
            let snapshot_id = match last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand::random::<u32>()),
                None => format!("0-0-{}", rand::random::<u32>()),
            };
            let meta = SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id,
            };
            save_snapshot_file(&path, &meta, &data, &lock)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        })
        .await
        .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<LogResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let shared = self.shared.clone();
        let mut tx = ApplyTx::new(&shared.db, self.counters, self.dedup_capacity);
        let mut responses = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(LogResponse::default()),
                EntryPayload::Normal(cmd) => {
                    let base = entry.log_id.index << 20;
                    let results = cmd
                        .proposals
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            tx.apply_proposal(p, base | i as u64, entry.log_id.leader_id.term)
                        })
                        .collect();
                    responses.push(LogResponse { results });
                }
                EntryPayload::Membership(m) => {
                    self.membership = Membership::new(Some(entry.log_id), m);
                    responses.push(LogResponse::default());
                }
            }
        }
        let encode = |v: &dyn erased::Ser| v.bytes();
        let sm = shared.cf(CF_SM);
        tx.batch
            .put_cf(sm, KEY_LAST_APPLIED, encode(&self.last_applied));
        tx.batch
            .put_cf(sm, KEY_MEMBERSHIP, encode(&self.membership));
        tx.batch
            .put_cf(sm, KEY_REVISION, u64_key(tx.counters.revision));
        tx.batch
            .put_cf(sm, KEY_DEDUP_FIRST, u64_key(tx.counters.dedup_first));
        tx.batch
            .put_cf(sm, KEY_DEDUP_NEXT, u64_key(tx.counters.dedup_next));
        let batch = std::mem::take(&mut tx.batch);
        shared
            .db
            .write(batch)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;

        self.counters = tx.counters;
        shared
            .revision
            .store(self.counters.revision, Ordering::Release);
        for change in &tx.lease_changes {
            shared.leases.apply(change);
        }
        for record in tx.produced {
            // No receivers is fine: nobody watches.
            let _ = shared.events.send(Arc::new(record));
        }
        let m = &shared.metrics;
        m.revision.set(self.counters.revision as i64);
        m.applied_index
            .set(self.last_applied.map(|l| l.index).unwrap_or(0) as i64);
        m.apply_seconds.observe(started.elapsed().as_secs_f64());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.shared.db.clone(),
            path: self.snapshot_path(),
            lock: self.shared.snapshot_lock.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let db = self.shared.db.clone();
        let path = self.snapshot_path();
        let lock = self.shared.snapshot_lock.clone();
        let meta_c = meta.clone();
        let sig = meta.signature();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let err = |e: &dyn std::error::Error| {
                StorageError::from(StorageIOError::read_snapshot(
                    Some(meta_c.signature()),
                    &AnyErr(e.to_string()),
                ))
            };
            let mut batch = WriteBatch::default();
            for name in STATE_CFS {
                let cf = db.cf_handle(name).expect("column family exists");
                for item in db.iterator_cf(cf, IteratorMode::Start) {
                    let (k, _) = item.map_err(|e| err(&e))?;
                    batch.delete_cf(cf, k);
                }
            }
            let mut pos = 0usize;
            let take = |pos: &mut usize, n: usize| -> Result<&[u8], StorageError> {
                let s = data
                    .get(*pos..*pos + n)
                    .ok_or_else(|| err(&AnyErr("truncated snapshot".into())))?;
                *pos += n;
                Ok(s)
            };
            while pos < data.len() {
                let cf_index = take(&mut pos, 1)?[0] as usize;
                let name = STATE_CFS
                    .get(cf_index)
                    .ok_or_else(|| err(&AnyErr("bad column family".into())))?;
                let klen =
                    u32::from_be_bytes(take(&mut pos, 4)?.try_into().expect("4 bytes")) as usize;
                let key = take(&mut pos, klen)?.to_vec();
                let vlen =
                    u32::from_be_bytes(take(&mut pos, 4)?.try_into().expect("4 bytes")) as usize;
                let value = take(&mut pos, vlen)?;
                batch.put_cf(
                    db.cf_handle(name).expect("column family exists"),
                    key,
                    value,
                );
            }
            // The snapshot's own record of last-applied may lag its meta
            // (never lead it); openraft's meta is authoritative.
            let sm = db.cf_handle(CF_SM).expect("column family exists");
            batch.put_cf(
                sm,
                KEY_LAST_APPLIED,
                bincode::serialize(&meta_c.last_log_id).expect("encode"),
            );
            batch.put_cf(
                sm,
                KEY_MEMBERSHIP,
                bincode::serialize(&meta_c.last_membership).expect("encode"),
            );
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.write_opt(batch, &opts).map_err(|e| err(&e))?;
            save_snapshot_file(&path, &meta_c, &data, &lock).map_err(|e| err(&e))?;
            Ok(())
        })
        .await
        .map_err(|e| StorageError::from(StorageIOError::write_snapshot(Some(sig), &e)))??;
        self.load()?;
        let revision = self.counters.revision;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            revision,
            "installed a snapshot from the leader"
        );
        let _ = self.shared.events.send(Arc::new(pb::RevisionEvents {
            revision,
            events: Vec::new(),
        }));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.snapshot_path();
        let loaded = load_snapshot_file(&path)
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &e)))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// A plain error message as an `std::error::Error`.
#[derive(Debug)]
struct AnyErr(String);

impl std::fmt::Display for AnyErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnyErr {}

mod erased {
    /// Bincode-encodes any serializable value (the metadata written with
    /// each applied batch).
    pub trait Ser {
        fn bytes(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Ser for T {
        fn bytes(&self) -> Vec<u8> {
            bincode::serialize(self).expect("bincode encoding of metadata cannot fail")
        }
    }
}
