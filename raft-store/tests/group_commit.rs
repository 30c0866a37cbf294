//! Concurrent writes share log appends and WAL fsyncs (group commit): a
//! single-master store driven in-process by many concurrent proposals must
//! sync far fewer times than it acknowledges writes.

use std::time::Duration;

use rafter_proto::kv as pb;
use rafter_raft_store::data_dir::DataDir;
use rafter_raft_store::node::Bootstrap;
use rafter_raft_store::node::Node;
use rafter_raft_store::node::NodeOptions;
use rafter_raft_store::types::Member;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = DataDir::open(dir.path()).unwrap();
    let me = Member {
        name: "solo".into(),
        addr: "127.0.0.1:1".into(),
    };
    let node = Node::start(
        &data_dir,
        "solo",
        &me.addr,
        1,
        Bootstrap::Initial(vec![me.clone()]),
        NodeOptions::default(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !node.is_leader() {
        assert!(
            std::time::Instant::now() < deadline,
            "single master did not become leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = node.shared.metrics.clone();
    let syncs_before = metrics.fsync_seconds.get_sample_count();

    const WRITES: usize = 2000;
    let mut tasks = Vec::new();
    for i in 0..WRITES {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let put = pb::PutRequest {
                key: format!("k{i}").into_bytes(),
                value: vec![7; 256],
                ..Default::default()
            };
            let proposal = pb::Proposal {
                write_id: None,
                op: Some(pb::proposal::Op::Put(put)),
                fence_term: 0,
            };
            let result = node.propose(&proposal).await.expect("proposal");
            assert!(matches!(
                result.result,
                Some(pb::proposal_result::Result::Put(_))
            ));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let syncs = metrics.fsync_seconds.get_sample_count() - syncs_before;
    assert_eq!(
        node.shared
            .revision
            .load(std::sync::atomic::Ordering::Acquire),
        WRITES as u64
    );
    assert!(
        syncs * 4 < WRITES as u64,
        "{WRITES} concurrent writes took {syncs} WAL fsyncs: writes are not sharing fsyncs"
    );
    // Every write is readable with its own revision.
    let resp = rafter_raft_store::range::read_range(
        &node.shared.db,
        &pb::RangeRequest {
            key: b"k".to_vec(),
            prefix: true,
            count_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(resp.count, WRITES as i64);
    node.shutdown().await;
}
