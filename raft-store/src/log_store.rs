//! The Raft log in RocksDB (`log` and `raft` column families).
//!
//! `append` writes the entries into RocksDB at once (so they are readable
//! when it returns) and hands the flush callback to the WAL syncer thread,
//! which acknowledges them only after `fsync` of the write-ahead log. Appends
//! that arrive while a sync is running would share the next one; openraft
//! 0.9's core waits for each append's flush, so in practice there is one at a
//! time, and group commit comes from the proposer packing many client writes
//! into one entry (`node::Node::run_proposer`).

use std::fmt::Debug;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::StorageIOError;
use openraft::Vote;
use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use rocksdb::DB;
use rocksdb::Direction;
use rocksdb::IteratorMode;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;

use crate::db::CF_LOG;
use crate::db::CF_RAFT;
use crate::db::key_u64;
use crate::db::u64_key;
use crate::metrics::Metrics;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::NodeId;
use crate::types::StorageError;
use crate::types::TypeConfig;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The RocksDB-backed Raft log.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: Arc<Syncer>,
    /// Highest committed index openraft told us about (for status/metrics).
    committed: Arc<AtomicU64>,
}

impl LogStore {
    /// Builds the log store over `db` and starts its WAL syncer thread, which
    /// stops when the last clone of the store is dropped.
    pub fn new(db: Arc<DB>, metrics: Arc<Metrics>, committed: Arc<AtomicU64>) -> Self {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let sync_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("wal-syncer".into())
            .spawn(move || wal_syncer(sync_db, rx, metrics))
            .expect("spawn wal syncer thread");
        let syncer = Arc::new(Syncer {
            tx: Some(tx),
            thread: Some(thread),
        });
        if let Ok(Some(c)) = read_bincode::<Option<LogId>>(&db, KEY_COMMITTED) {
            committed.store(c.map(|l| l.index).unwrap_or(0), Ordering::Relaxed);
        }
        Self {
            db,
            syncer,
            committed,
        }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family exists")
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let bytes = bincode::serialize(value).map_err(|e| StorageIOError::write(&e))?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db
            .put_cf_opt(self.cf(CF_RAFT), key, bytes, &opts)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        read_bincode::<LogId>(&self.db, KEY_LAST_PURGED)
    }
}

/// The WAL syncer thread and the channel feeding it. Dropping the last
/// handle closes the channel and joins the thread, so the thread's reference
/// to the database is gone when the store is: a process that drops its store
/// and exits never has RocksDB closing on a detached thread while static
/// destructors run (which aborts with "pthread lock: Invalid argument").
struct Syncer {
    tx: Option<mpsc::Sender<LogFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn send(
        &self,
        cb: LogFlushed<TypeConfig>,
    ) -> Result<(), mpsc::SendError<LogFlushed<TypeConfig>>> {
        self.tx.as_ref().expect("open until dropped").send(cb)
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Drains flush callbacks, syncs the WAL once for all of them, then
/// acknowledges them in order.
fn wal_syncer(db: Arc<DB>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>, metrics: Arc<Metrics>) {
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        pending.extend(rx.try_iter());
        let started = Instant::now();
        let res = db.flush_wal(true).map_err(std::io::Error::other);
        metrics
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        for cb in pending {
            cb.log_io_completed(
                res.as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
}

fn read_bincode<T: serde::de::DeserializeOwned>(
    db: &DB,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    let cf = db.cf_handle(CF_RAFT).expect("column family exists");
    match db.get_cf(cf, key).map_err(|e| StorageIOError::read(&e))? {
        None => Ok(None),
        Some(b) => Ok(Some(
            bincode::deserialize(&b).map_err(|e| StorageIOError::read(&e))?,
        )),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_LOG),
            IteratorMode::From(&u64_key(start), Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            if !range.contains(&key_u64(&k)) {
                break;
            }
            out.push(bincode::deserialize(&v).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = self.last_purged()?;
        let mut iter = self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::End);
        let last = match iter.next() {
            None => last_purged,
            Some(item) => {
                let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry =
                    bincode::deserialize(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        // A vote must be on disk before it is used: synced write.
        self.put_meta(KEY_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        read_bincode(&self.db, KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed
            .store(committed.map(|l| l.index).unwrap_or(0), Ordering::Relaxed);
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(read_bincode::<Option<LogId>>(&self.db, KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_LOG);
        for entry in entries {
            let bytes = bincode::serialize(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(cf, u64_key(entry.log_id.index), bytes);
        }
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // Acknowledged by the syncer only once the WAL is fsynced.
        self.syncer
            .send(callback)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOG), u64_key(log_id.index), u64_key(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let bytes = bincode::serialize(&log_id).map_err(|e| StorageIOError::write(&e))?;
        batch.put_cf(self.cf(CF_RAFT), KEY_LAST_PURGED, bytes);
        batch.delete_range_cf(self.cf(CF_LOG), u64_key(0), u64_key(log_id.index + 1));
        // Losing a purge in a crash only keeps entries longer: no sync needed.
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
