//! The one RocksDB instance of a master and its column families.
//!
//! The Raft log and the state machine share one database so they share one
//! write-ahead log: the log's synced appends also make every earlier
//! (unsynced) state-machine write durable, so applying costs no fsync of its
//! own. See docs/ARCHITECTURE.md for the key encodings.

use std::path::Path;
use std::sync::Arc;

use rocksdb::BlockBasedOptions;
use rocksdb::Cache;
use rocksdb::ColumnFamilyDescriptor;
use rocksdb::DB;
use rocksdb::Options;

/// Raft log entries: `index (u64 BE)` → bincode `Entry`.
pub const CF_LOG: &str = "log";
/// Raft metadata: `vote`, `committed`, `last_purged` → bincode.
pub const CF_RAFT: &str = "raft";
/// Current key-value pairs: `key` → prost `KeyValue`.
pub const CF_KV: &str = "kv";
/// Watch history: `revision (u64 BE)` → prost `RevisionEvents`.
pub const CF_HISTORY: &str = "history";
/// Leases: `id (i64 BE)` → ttl seconds (i64 BE).
pub const CF_LEASE: &str = "lease";
/// Keys attached to leases: `id (i64 BE) ++ key` → empty.
pub const CF_LEASE_KEYS: &str = "lease_keys";
/// Exactly-once table: `client_id (u64 BE) ++ seq (u64 BE)` → prost `ProposalResult`.
pub const CF_DEDUP: &str = "dedup";
/// Insertion order of the exactly-once table, for bounded eviction:
/// `ordinal (u64 BE)` → `client_id ++ seq`.
pub const CF_DEDUP_ORDER: &str = "dedup_order";
/// State-machine metadata: last applied log id, membership, revision,
/// compaction point, counters.
pub const CF_SM: &str = "sm";

/// Column families that make up the state machine, in snapshot order.
pub const STATE_CFS: [&str; 7] = [
    CF_KV,
    CF_HISTORY,
    CF_LEASE,
    CF_LEASE_KEYS,
    CF_DEDUP,
    CF_DEDUP_ORDER,
    CF_SM,
];

/// Memtable bytes of all column families together before RocksDB flushes.
const MEMTABLE_BUDGET: usize = 32 << 20;
/// The block cache shared by every column family.
const BLOCK_CACHE: usize = 16 << 20;

/// Column families read by point lookups on every write (the key's current
/// value; the exactly-once table): they get Bloom filters, on disk and in
/// the memtable. The others are read by range scans, which filters do not
/// help.
const POINT_LOOKUPS: [&str; 2] = [CF_KV, CF_DEDUP];
/// Share of a memtable's size given to its Bloom filter (RocksDB allocates
/// it with the memtable: 2 % of 8 MiB is 160 KiB).
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;

/// Opens (creating when missing) the database under `path`.
pub fn open(path: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_bytes_per_sync(1 << 20);
    // Keep the WAL small enough that restarts replay quickly.
    opts.set_max_total_wal_size(64 << 20);
    // Memory: by default each of the nine column families may grow a 64 MiB
    // memtable and has its own block cache, so a master's resident memory
    // grew with every write burst. One budget for all memtables and one
    // shared block cache bound it (docs/BENCHMARKS.md, RSS).
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
    let cache = Cache::new_lru_cache(BLOCK_CACHE);
    let cf_options = |name: &str| {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let mut o = Options::default();
        o.set_write_buffer_size(MEMTABLE_BUDGET / 4);
        if POINT_LOOKUPS.contains(&name) {
            // Every applied write looks up its key and its write id, which
            // for a new write id is never there: without filters each
            // lookup searched the memtable's skip list and then every L0
            // file and level. Whole-key Bloom filters let most lookups of
            // an absent key skip a memtable or a table file.
            table.set_bloom_filter(10.0, false);
            o.set_memtable_whole_key_filtering(true);
            o.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
        }
        o.set_block_based_table_factory(&table);
        o
    };
    let cfs = [CF_LOG, CF_RAFT]
        .into_iter()
        .chain(STATE_CFS)
        .map(|name| ColumnFamilyDescriptor::new(name, cf_options(name)));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

/// Big-endian u64 key, so RocksDB's byte order is numeric order.
pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Decodes a key written by [`u64_key`].
pub fn key_u64(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[..8]);
    u64::from_be_bytes(b)
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// when no such key exists (the prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
