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

/// Most bytes of stored entries one AppendEntries message carries (at
/// least one entry is always sent, however large).
///
/// openraft 0.9 gives each AppendEntries RPC the heartbeat interval as its
/// timeout and, after a timeout, sends the same range again. Bounded only by
/// `max_payload_entries`, a follower that fell behind on large entries (the
/// Jepsen set workload rewrites one key of tens of kilobytes) would be sent
/// megabyte messages that cannot be received, stored and synced within
/// that time, again and again, and never catch up. A byte bound keeps every
/// message small enough to finish, so a lagging follower advances on each.
pub const MAX_APPEND_BYTES: usize = 256 << 10;

impl LogStore {
    /// Reads the entries of `range` in order, stopping before the entry that
    /// would take the stored bytes past `byte_budget` (never before the
    /// first).
    fn read_entries(
        &self,
        range: impl RangeBounds<u64>,
        byte_budget: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let iter = self.db.iterator_cf(
            self.cf(CF_LOG),
            IteratorMode::From(&u64_key(start), Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            if !range.contains(&key_u64(&k)) {
                break;
            }
            bytes = bytes.saturating_add(v.len());
            if bytes > byte_budget && !out.is_empty() {
                break;
            }
            out.push(bincode::deserialize(&v).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(range, usize::MAX)
    }

    /// Replication reads through here: at most [`MAX_APPEND_BYTES`] per call.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(start..end, MAX_APPEND_BYTES)
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

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use openraft::EntryPayload;

    use super::*;
    use crate::types::LogCommand;

    /// A store whose log holds `count` entries (indexes 1..=count), each
    /// carrying one proposal of `size` bytes.
    fn store_with_entries(dir: &std::path::Path, count: u64, size: usize) -> LogStore {
        let db = crate::db::open(&dir.join("db")).expect("open rocksdb");
        let metrics = Arc::new(Metrics::new());
        let store = LogStore::new(db.clone(), metrics, Arc::new(AtomicU64::new(0)));
        for index in 1..=count {
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(LogCommand {
                    proposals: vec![vec![index as u8; size]],
                }),
            };
            let bytes = bincode::serialize(&entry).expect("encode entry");
            db.put_cf(store.cf(CF_LOG), u64_key(index), bytes)
                .expect("write entry");
        }
        store
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn replication_reads_stop_at_the_byte_bound_and_never_return_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        // 64 entries of 40 KiB: 2.5 MiB, the message that could never be
        // delivered within a heartbeat interval.
        let mut store = store_with_entries(dir.path(), 64, 40 << 10);

        let limited = store.limited_get_log_entries(1, 65).await.expect("read");
        let per_message = MAX_APPEND_BYTES / (40 << 10);
        assert_eq!(
            indexes(&limited),
            (1..=per_message as u64).collect::<Vec<_>>()
        );

        // The next message continues where the last stopped.
        let next = store
            .limited_get_log_entries(1 + per_message as u64, 65)
            .await
            .expect("read");
        assert_eq!(
            next.first().map(|e| e.log_id.index),
            Some(1 + per_message as u64)
        );
        assert_eq!(next.len(), per_message);

        // Reads for other purposes still get the whole range.
        let all = store.try_get_log_entries(1..65).await.expect("read");
        assert_eq!(indexes(&all), (1..=64).collect::<Vec<_>>());

        // A small range is not cut.
        let few = store.limited_get_log_entries(10, 13).await.expect("read");
        assert_eq!(indexes(&few), vec![10, 11, 12]);
    }

    #[tokio::test]
    async fn an_entry_larger_than_the_bound_is_sent_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = store_with_entries(dir.path(), 3, MAX_APPEND_BYTES + 1);
        let limited = store.limited_get_log_entries(1, 4).await.expect("read");
        assert_eq!(indexes(&limited), vec![1]);
        let limited = store.limited_get_log_entries(2, 4).await.expect("read");
        assert_eq!(indexes(&limited), vec![2]);
    }
}
