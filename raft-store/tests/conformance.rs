//! openraft's own storage conformance suite, run against Rafter's RocksDB
//! log store and state machine.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use rafter_raft_store::db;
use rafter_raft_store::log_store::LogStore;
use rafter_raft_store::metrics::Metrics;
use rafter_raft_store::state_machine::Shared;
use rafter_raft_store::state_machine::StateMachine;
use rafter_raft_store::types::TypeConfig;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db::open(&dir.path().join("db")).expect("open rocksdb");
        let metrics = Arc::new(Metrics::new());
        let shared = Shared::new(db.clone(), metrics.clone());
        let log = LogStore::new(db, metrics, shared.committed.clone());
        let sm = StateMachine::open(shared, dir.path().join("snapshots"), 1000)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn rocksdb_store_passes_openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(RocksBuilder)
}
