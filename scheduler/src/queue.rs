//! The scheduling queue: which pending pod to try next.
//!
//! - **active**: pods to try now, first come first served.
//! - **backoff**: pods to try again at a given time (after a failed
//!   attempt: 1 s, doubling up to 10 s, as kube-scheduler does).
//! - **unschedulable**: pods that fit nowhere at their last attempt; they
//!   wait for their backoff, or for a change in the cluster that could make
//!   room (a node added or changed, a pod deleted), whichever comes first.
//!
//! A pod is in `active` at most once; a stale entry (a pod bound or
//! deleted meanwhile) is skipped by the caller, which knows what is still
//! pending. Time is passed in, so the queue is a pure data structure.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::node_info::PodKey;

/// First retry delay after a failed attempt.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The delay before attempt `failures + 1`: 1 s, 2 s, 4 s, 8 s, 10 s, ...
pub fn backoff(failures: u32) -> Duration {
    let d = INITIAL_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    d.min(MAX_BACKOFF)
}

#[derive(Debug, Default)]
pub struct SchedulingQueue {
    active: VecDeque<PodKey>,
    in_active: HashSet<PodKey>,
    backoff: BTreeMap<(Instant, u64), PodKey>,
    seq: u64,
    unschedulable: HashSet<PodKey>,
}

impl SchedulingQueue {
    pub fn new() -> SchedulingQueue {
        SchedulingQueue::default()
    }

    /// Queues `key` to be tried now.
    pub fn add(&mut self, key: PodKey) {
        self.unschedulable.remove(&key);
        if self.in_active.insert(key.clone()) {
            self.active.push_back(key);
        }
    }

    /// Queues `key` to be tried at `at`.
    pub fn add_at(&mut self, key: PodKey, at: Instant) {
        self.seq += 1;
        self.backoff.insert((at, self.seq), key);
    }

    /// `key` fit nowhere: try it again at `retry_at`, or as soon as
    /// [`SchedulingQueue::move_unschedulable`] says the cluster changed.
    pub fn add_unschedulable(&mut self, key: PodKey, retry_at: Instant) {
        self.unschedulable.insert(key.clone());
        self.add_at(key, retry_at);
    }

    /// The cluster changed in a way that may make room: every
    /// unschedulable pod is tried again now.
    pub fn move_unschedulable(&mut self) {
        for key in std::mem::take(&mut self.unschedulable) {
            if self.in_active.insert(key.clone()) {
                self.active.push_back(key);
            }
        }
    }

    /// The next pod to try, moving the pods whose time has come to
    /// `active` first.
    pub fn pop(&mut self, now: Instant) -> Option<PodKey> {
        while let Some(entry) = self.backoff.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.unschedulable.remove(&key);
            if self.in_active.insert(key.clone()) {
                self.active.push_back(key);
            }
        }
        let key = self.active.pop_front()?;
        self.in_active.remove(&key);
        Some(key)
    }

    /// When the next backed-off pod is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.backoff.keys().next().map(|(at, _)| *at)
    }

    /// Pods waiting to be tried now.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> PodKey {
        ("default".to_string(), name.to_string())
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_ten() {
        let secs: Vec<u64> = (1..=6).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn active_pods_come_out_once_in_order() {
        let mut q = SchedulingQueue::new();
        let now = Instant::now();
        q.add(key("a"));
        q.add(key("b"));
        q.add(key("a"));
        assert_eq!(q.active_len(), 2);
        assert_eq!(q.pop(now), Some(key("a")));
        assert_eq!(q.pop(now), Some(key("b")));
        assert_eq!(q.pop(now), None);
    }

    #[test]
    fn backed_off_pods_wait_for_their_time() {
        let mut q = SchedulingQueue::new();
        let now = Instant::now();
        q.add_at(key("late"), now + Duration::from_secs(2));
        q.add_at(key("soon"), now + Duration::from_secs(1));
        assert_eq!(q.pop(now), None);
        assert_eq!(q.next_due(), Some(now + Duration::from_secs(1)));
        assert_eq!(q.pop(now + Duration::from_secs(1)), Some(key("soon")));
        assert_eq!(q.pop(now + Duration::from_secs(1)), None);
        assert_eq!(q.pop(now + Duration::from_secs(3)), Some(key("late")));
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn a_cluster_change_retries_unschedulable_pods_at_once() {
        let mut q = SchedulingQueue::new();
        let now = Instant::now();
        q.add_unschedulable(key("a"), now + Duration::from_secs(10));
        q.add_unschedulable(key("b"), now + Duration::from_secs(10));
        assert_eq!(q.pop(now), None);
        q.move_unschedulable();
        let mut got = vec![q.pop(now).unwrap(), q.pop(now).unwrap()];
        got.sort();
        assert_eq!(got, vec![key("a"), key("b")]);
        // A second change finds nothing left to move.
        q.move_unschedulable();
        assert_eq!(q.pop(now), None);
    }
}
