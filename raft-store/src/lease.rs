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
        }
    }

    /// Refreshes a lease; returns its TTL, or `None` when it does not exist.
    pub fn keep_alive(&self, id: i64) -> Option<i64> {
        let mut leases = self.leases.lock().expect("lease clock poisoned");
        let d = leases.get_mut(&id)?;
        d.at = Instant::now() + Self::ttl_duration(d.ttl);
        Some(d.ttl)
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
}
