//! The lease clock: when each lease expires, as measured by this master.
//!
//! Every master keeps the clock up to date as it applies grants and
//! revocations, but only the leader acts on it (DESIGN decision 9): it
//! refreshes deadlines on keep-alive and proposes the expiry of overdue
//! leases through the log. A master that becomes leader first gives every
//! lease a full TTL of grace, since it cannot know when the old leader last
//! saw a keep-alive.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use crate::apply::LeaseChange;

#[derive(Debug, Clone, Copy)]
struct Deadline {
    ttl: i64,
    at: Instant,
    /// This master, as leader, has proposed the lease's expiry: it is not
    /// kept alive any more, whether or not that proposal commits.
    expiring: bool,
}

/// Lease deadlines of one master.
#[derive(Default)]
pub struct LeaseClock {
    leases: Mutex<HashMap<i64, Deadline>>,
}

impl LeaseClock {
    fn ttl_duration(ttl: i64) -> Duration {
        Duration::from_secs(ttl.max(1) as u64)
    }

    /// Follows a grant or removal applied from the log.
    pub fn apply(&self, change: &LeaseChange) {
        let mut leases = self.leases.lock().expect("lease clock poisoned");
        match *change {
            LeaseChange::Granted { id, ttl } => {
                leases.insert(
                    id,
                    Deadline {
                        ttl,
                        at: Instant::now() + Self::ttl_duration(ttl),
                        expiring: false,
                    },
                );
            }
            LeaseChange::Removed { id } => {
                leases.remove(&id);
            }
        }
    }

    /// Replaces the whole table (after start-up or a snapshot install),
    /// giving every lease a full TTL from now.
    pub fn reset(&self, all: impl IntoIterator<Item = (i64, i64)>) {
        let now = Instant::now();
        let mut leases = self.leases.lock().expect("lease clock poisoned");
        leases.clear();
        for (id, ttl) in all {
            leases.insert(
                id,
                Deadline {
                    ttl,
                    at: now + Self::ttl_duration(ttl),
                    expiring: false,
                },
            );
        }
    }

    /// Gives every lease a full TTL from now (on becoming leader).
    pub fn grant_grace(&self) {
        let now = Instant::now();
        for d in self
            .leases
            .lock()
            .expect("lease clock poisoned")
            .values_mut()
        {
            d.at = now + Self::ttl_duration(d.ttl);
            // A new term: expiries this master proposed earlier either
            // committed (and are applied before it answers any keep-alive,
            // see `Node::keep_alive_local`) or are lost.
            d.expiring = false;
        }
    }

    /// Refreshes a lease; returns its TTL, or `None` when it does not exist
    /// or its expiry has already been proposed (a keep-alive must never be
    /// acknowledged for a lease about to vanish).
    pub fn keep_alive(&self, id: i64) -> Option<i64> {
        let mut leases = self.leases.lock().expect("lease clock poisoned");
        let d = leases.get_mut(&id)?;
        if d.expiring {
            return None;
        }
        d.at = Instant::now() + Self::ttl_duration(d.ttl);
        Some(d.ttl)
    }

    /// Whether the lease is still in the applied state (its expiry, if
    /// proposed, has not been applied yet).
    pub fn contains(&self, id: i64) -> bool {
        self.leases
            .lock()
            .expect("lease clock poisoned")
            .contains_key(&id)
    }

    /// Leases past their deadline. Each is given `retry_after` more before
    /// it is reported again, so one expiry is not proposed over and over
    /// while the first proposal is in flight.
    pub fn take_expired(&self, retry_after: Duration) -> Vec<i64> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, d) in self.leases.lock().expect("lease clock poisoned").iter_mut() {
            if d.at <= now {
                out.push(*id);
                d.at = now + retry_after;
                d.expiring = true;
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiring_lease_is_not_kept_alive_but_exists_until_its_removal_applies() {
        let clock = LeaseClock::default();
        clock.apply(&LeaseChange::Granted { id: 9, ttl: 1 });
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(clock.take_expired(Duration::from_secs(2)), [9]);
        assert_eq!(clock.keep_alive(9), None);
        assert!(clock.contains(9), "not gone before the expiry is applied");
        clock.apply(&LeaseChange::Removed { id: 9 });
        assert!(!clock.contains(9));
    }

    #[test]
    fn kept_alive_lease_does_not_expire_and_grace_resets_deadlines() {
        let clock = LeaseClock::default();
        clock.apply(&LeaseChange::Granted { id: 7, ttl: 1 });
        assert!(clock.take_expired(Duration::from_secs(1)).is_empty());
        assert_eq!(clock.keep_alive(7), Some(1));
        assert_eq!(clock.keep_alive(8), None);
        clock.apply(&LeaseChange::Removed { id: 7 });
        assert_eq!(clock.keep_alive(7), None);
        clock.reset([(1, 1)]);
        clock.grant_grace();
        assert!(clock.take_expired(Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn a_lease_whose_expiry_was_proposed_is_not_kept_alive() {
        let clock = LeaseClock::default();
        clock.reset([(5, 1)]);
        // Make it overdue, as if its TTL had run out.
        clock.leases.lock().unwrap().get_mut(&5).unwrap().at = Instant::now();
        assert_eq!(clock.take_expired(Duration::from_secs(2)), [5]);
        assert_eq!(
            clock.keep_alive(5),
            None,
            "expiry proposed: no more keep-alives"
        );
        // Not reported again before the retry delay.
        assert!(clock.take_expired(Duration::from_secs(2)).is_empty());
        // A new leader term starts its clock afresh.
        clock.grant_grace();
        assert_eq!(clock.keep_alive(5), Some(1));
    }
}
