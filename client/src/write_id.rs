//! Write ids: what makes a retried write safe.
//!
//! Each [`Client`](crate::Client) picks a random 64-bit client id when it is
//! created and numbers its writes 1, 2, 3, ... The masters remember the result
//! of each `(client_id, seq)` they applied and answer a repeat with that
//! result instead of applying it again, so the failover loop can resend a
//! write whose fate it does not know. A random id (rather than one handed out
//! by the cluster) needs no round trip and no coordination; with 64 bits, two
//! clients colliding is not a practical concern.

use std::sync::atomic::{AtomicU64, Ordering};

use rafter_proto::kv::WriteId;

/// Hands out the write ids of one client.
#[derive(Debug)]
pub(crate) struct WriteIds {
    client_id: u64,
    last_seq: AtomicU64,
}

impl WriteIds {
    /// A fresh random, non-zero client id (0 could read as "no id").
    pub(crate) fn new() -> Self {
        let client_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        Self::with_client_id(client_id)
    }

    pub(crate) fn with_client_id(client_id: u64) -> Self {
        WriteIds {
            client_id,
            last_seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The id for a new logical write; never handed out twice.
    pub(crate) fn next(&self) -> WriteId {
        WriteId {
            client_id: self.client_id,
            seq: self.last_seq.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn sequence_starts_at_one_and_increases() {
        let ids = WriteIds::with_client_id(9);
        assert_eq!(
            ids.next(),
            WriteId {
                client_id: 9,
                seq: 1
            }
        );
        assert_eq!(
            ids.next(),
            WriteId {
                client_id: 9,
                seq: 2
            }
        );
    }

    #[test]
    fn ids_are_unique_across_threads() {
        let ids = Arc::new(WriteIds::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || (0..1000).map(|_| ids.next().seq).collect::<Vec<_>>())
            })
            .collect();
        let mut seen = HashSet::new();
        for h in handles {
            for seq in h.join().unwrap() {
                assert!(seen.insert(seq), "seq {seq} handed out twice");
            }
        }
        assert_eq!(seen.len(), 4000);
    }

    #[test]
    fn clients_get_different_nonzero_ids() {
        let a = WriteIds::new();
        let b = WriteIds::new();
        assert_ne!(a.client_id(), 0);
        assert_ne!(a.client_id(), b.client_id());
    }
}
