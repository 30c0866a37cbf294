//! What a master learns from vote requests and answers, for its leader
//! watchdog (`Node::run_leader_watchdog`): when to stand and in which term.
//!
//! After the leader dies, both followers stand a lease after their last
//! contact. Under steady writes their logs differ by the last AppendEntries,
//! and Raft only lets the one with the longer log win. When the follower
//! with the *shorter* log stands first, the other refuses it (by log) but,
//! in openraft, keeps its old term; when it then stands itself it asks for a
//! term the first candidate has already voted in, and is refused too. Left
//! alone the two refuse each other round after round until openraft's own
//! timers part them: failovers of about a second instead of a third.
//!
//! Two facts break the tie: a voter that refused a candidate with a shorter
//! log knows it should lead instead, and in a term above that candidate's
//! (see [`Elections::stand_now`], [`Elections::terms_to_climb`]); a candidate
//! refused by a longer log knows it cannot win and stops standing again
//! ([`Elections::outlogged_in`]).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use tokio::sync::Notify;

use crate::types::NodeId;

/// Shared by a master's Raft service (vote requests it answered), its
/// network (answers to its own vote requests) and its leader watchdog.
#[derive(Default)]
pub struct Elections {
    /// The highest term of a candidate this master refused its vote.
    refused_term: AtomicU64,
    /// The highest term of a refused candidate whose log was shorter than
    /// this master's.
    shorter_log_term: AtomicU64,
    /// Woken when `shorter_log_term` rises.
    shorter_log_seen: Notify,
    /// The highest term in which this master stood and a voter with a longer
    /// log refused it.
    outlogged_term: AtomicU64,
}

impl Elections {
    /// Records this master's answer to a vote request.
    pub fn answered(&self, req: &VoteRequest<NodeId>, resp: &VoteResponse<NodeId>) {
        let term = req.vote.leader_id().term;
        if resp.vote_granted || term <= resp.vote.leader_id().term {
            return;
        }
        self.refused_term.fetch_max(term, Ordering::AcqRel);
        if req.last_log_id < resp.last_log_id
            && self.shorter_log_term.fetch_max(term, Ordering::AcqRel) < term
        {
            self.shorter_log_seen.notify_waiters();
        }
    }

    /// Records a voter's answer to this master's vote request.
    pub fn got_answer(&self, req: &VoteRequest<NodeId>, resp: &VoteResponse<NodeId>) {
        if !resp.vote_granted && resp.last_log_id > req.last_log_id {
            self.outlogged_term
                .fetch_max(req.vote.leader_id().term, Ordering::AcqRel);
        }
    }

    /// Whether a candidate with a shorter log than ours stood in a term
    /// above `current_term`: it cannot win, we can, so there is nothing to
    /// wait for.
    pub fn stand_now(&self, current_term: u64) -> bool {
        self.shorter_log_term.load(Ordering::Acquire) > current_term
    }

    /// Resolves when a candidate with a shorter log is refused. Create it
    /// before checking [`Elections::stand_now`]: it sees every refusal from
    /// its creation on, polled or not, so none falls between.
    pub fn shorter_log_seen(&self) -> tokio::sync::futures::Notified<'_> {
        self.shorter_log_seen.notified()
    }

    /// How many elections in a row lift a master in `current_term` above
    /// every candidate it refused: each election is one term up, and a
    /// refused candidate has spent its vote in its own term. One at least,
    /// at most three.
    pub fn terms_to_climb(&self, current_term: u64) -> u64 {
        let refused = self.refused_term.load(Ordering::Acquire);
        (refused.saturating_sub(current_term) + 1).clamp(1, 3)
    }

    /// Whether a voter with a longer log refused us in `term` (or later):
    /// standing again cannot win; the longer log will.
    pub fn outlogged_in(&self, term: u64) -> bool {
        self.outlogged_term.load(Ordering::Acquire) >= term
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use openraft::LogId;
    use openraft::Vote;

    use super::*;

    fn log(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    fn request(term: u64, candidate: NodeId, last: u64) -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(term, candidate), log(5, last))
    }

    /// A follower still in term 5 (its leader, member 1, is gone).
    fn refusal(last: u64) -> VoteResponse<NodeId> {
        VoteResponse::new(Vote::new_committed(5, 1), log(5, last), false)
    }

    #[test]
    fn refusing_a_shorter_log_says_stand_now_above_its_term() {
        let e = Elections::default();
        assert!(!e.stand_now(5));
        assert_eq!(e.terms_to_climb(5), 1);
        // Candidate 2 stood in term 6 with a log ending at 100; ours ends at 101.
        e.answered(&request(6, 2, 100), &refusal(101));
        assert!(e.stand_now(5));
        // Term 6 is spent on candidate 2's own vote: climb to 7.
        assert_eq!(e.terms_to_climb(5), 2);
        // Once we are past that term there is nothing left to climb over.
        assert!(!e.stand_now(6));
        assert_eq!(e.terms_to_climb(7), 1);
    }

    #[test]
    fn refusing_an_equal_log_climbs_but_does_not_hurry() {
        let e = Elections::default();
        e.answered(&request(6, 2, 101), &refusal(101));
        assert!(!e.stand_now(5));
        assert_eq!(e.terms_to_climb(5), 2);
    }

    #[test]
    fn granted_votes_and_stale_candidates_teach_nothing() {
        let e = Elections::default();
        e.answered(
            &request(6, 2, 100),
            &VoteResponse::new(Vote::new(6, 2), log(5, 100), true),
        );
        // A candidate in our own term (or older) is a late message.
        e.answered(&request(5, 2, 90), &refusal(101));
        assert!(!e.stand_now(5));
        assert_eq!(e.terms_to_climb(5), 1);
    }

    #[test]
    fn climbing_is_bounded() {
        let e = Elections::default();
        e.answered(&request(40, 2, 100), &refusal(101));
        assert_eq!(e.terms_to_climb(5), 3);
    }

    #[test]
    fn a_candidate_refused_by_a_longer_log_stops_standing() {
        let e = Elections::default();
        let ours = request(6, 3, 100);
        e.got_answer(
            &ours,
            &VoteResponse::new(Vote::new(6, 2), log(5, 100), false),
        );
        assert!(!e.outlogged_in(6), "refused by an equal log: may win later");
        e.got_answer(&ours, &refusal(101));
        assert!(e.outlogged_in(6));
        assert!(!e.outlogged_in(7), "a later term is a new election");
    }

    #[tokio::test]
    async fn a_waiting_watchdog_is_woken_by_a_shorter_log() {
        let e = std::sync::Arc::new(Elections::default());
        let seen = e.shorter_log_seen();
        e.answered(&request(6, 2, 100), &refusal(101));
        tokio::time::timeout(std::time::Duration::from_secs(5), seen)
            .await
            .expect("the refusal woke the waiter");
    }
}
