//! Term fencing (DESIGN decision 7): a proposal carrying the term its
//! writer was started under is applied only in an entry of that same term;
//! in an entry of any other term it is rejected at apply and changes nothing.

use std::time::Duration;

use rafter_proto::kv as pb;
use rafter_raft_store::data_dir::DataDir;
use rafter_raft_store::node::{Bootstrap, Node, NodeOptions};
use rafter_raft_store::types::Member;

fn put(key: &str, fence_term: u64) -> pb::Proposal {
    pb::Proposal {
        write_id: None,
        op: Some(pb::proposal::Op::Put(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
        fence_term,
    }
}

async fn wait_leader(node: &Node) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if node.is_leader() {
            return node.raft.metrics().borrow().current_term;
        }
        assert!(std::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read(node: &Node, key: &str) -> Option<pb::KeyValue> {
    rafter_raft_store::range::read_range(
        &node.shared.db,
        &pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        },
    )
    .expect("read")
    .kvs
    .into_iter()
    .next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_fenced_with_an_old_term_is_rejected_at_apply() {
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
    let old_term = wait_leader(&node).await;

    // In its own term the fenced write applies.
    let r = node.propose(&put("in-term", old_term)).await.unwrap();
    assert!(
        matches!(r.result, Some(pb::proposal_result::Result::Put(_))),
        "a write fenced with the current term must apply: {r:?}"
    );
    assert!(read(&node, "in-term").is_some());

    // A proposal fenced with any other term — here one this master has
    // not reached; tests/control_plane.rs shows a real deposed leader's
    // older term — is refused by the entry of `term`.
    let new_term = old_term;
    let old_term = old_term + 1;

    let revision = node
        .shared
        .revision
        .load(std::sync::atomic::Ordering::Acquire);
    let r = node.propose(&put("stale", old_term)).await.unwrap();
    match r.result {
        Some(pb::proposal_result::Result::Error(e)) => {
            assert_eq!(tonic::Code::from(e.code), tonic::Code::FailedPrecondition);
            assert!(e.message.starts_with("fenced"), "{}", e.message);
            assert!(
                e.message.contains(&format!("term {old_term}")),
                "{}",
                e.message
            );
        }
        other => panic!(
            "a write fenced with term {old_term} applied in an entry of term {new_term}: {other:?}"
        ),
    }
    assert!(
        read(&node, "stale").is_none(),
        "the rejected write changed the store"
    );
    assert_eq!(
        node.shared
            .revision
            .load(std::sync::atomic::Ordering::Acquire),
        revision,
        "a rejected write must not take a revision"
    );
    // Unfenced writes and writes of the new term still apply.
    let r = node.propose(&put("fresh", new_term)).await.unwrap();
    assert!(matches!(
        r.result,
        Some(pb::proposal_result::Result::Put(_))
    ));
    let r = node.propose(&put("unfenced", 0)).await.unwrap();
    assert!(matches!(
        r.result,
        Some(pb::proposal_result::Result::Put(_))
    ));
    node.shutdown().await;
}
