//! Applying client proposals to the key-value state: the deterministic heart
//! of the state machine.
//!
//! An [`ApplyTx`] covers one `apply()` call of openraft (one or more log
//! entries). Every change goes into one RocksDB `WriteBatch` and into an
//! in-memory overlay, so later proposals in the same batch see earlier ones
//! before anything is written. The caller writes the batch together with the
//! last-applied log id, so a crash leaves either all of it or none.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::VecDeque;

use prost::Message;
use rafter_proto::kv as pb;
use rafter_proto::kv::compare::CompareResult;
use rafter_proto::kv::compare::CompareTarget;
use rafter_proto::kv::compare::TargetUnion;
use rafter_proto::kv::proposal::Op;
use rafter_proto::kv::proposal_result::Result as PResult;
use rafter_proto::kv::request_op::Request as ReqOp;
use rafter_proto::kv::response_op::Response as RespOp;
use rocksdb::DB;
use rocksdb::Direction;
use rocksdb::IteratorMode;
use rocksdb::WriteBatch;
use tonic::Code;

use crate::db::CF_DEDUP;
use crate::db::CF_DEDUP_ORDER;
use crate::db::CF_HISTORY;
use crate::db::CF_KV;
use crate::db::CF_LEASE;
use crate::db::CF_LEASE_KEYS;
use crate::db::key_u64;
use crate::db::u64_key;
use crate::range::range_response;

/// A lease that appeared or went away while applying, so the leader's lease
/// clock can follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    Granted { id: i64, ttl: i64 },
    Removed { id: i64 },
}

/// Counters of the state machine that proposals advance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Current store revision.
    pub revision: u64,
    /// Oldest live ordinal of the exactly-once table.
    pub dedup_first: u64,
    /// Next ordinal of the exactly-once table.
    pub dedup_next: u64,
}

/// One apply call's batch of changes with read-your-writes.
pub struct ApplyTx<'a> {
    db: &'a DB,
    pub batch: WriteBatch,
    pub counters: Counters,
    dedup_capacity: u64,
    kv: BTreeMap<Vec<u8>, Option<pb::KeyValue>>,
    leases: BTreeMap<i64, Option<i64>>,
    lease_keys: BTreeMap<(i64, Vec<u8>), bool>,
    dedup: HashMap<Vec<u8>, Option<Vec<u8>>>,
    dedup_order: HashMap<u64, Option<Vec<u8>>>,
    /// The oldest entries of the exactly-once table's order as stored,
    /// read ahead in one range read for the evictions to come.
    stored_order: VecDeque<(u64, Vec<u8>)>,
    /// How many entries the next read-ahead fetches: it doubles with each
    /// read, so a small batch reads little and a large one few times.
    read_ahead: usize,
    /// Events per new revision, in order, for the watch hub.
    pub produced: Vec<pb::RevisionEvents>,
    pub lease_changes: Vec<LeaseChange>,
}

/// Changes of one revision under construction.
struct Rev {
    rev: u64,
    events: Vec<pb::Event>,
}

/// How many of the exactly-once table's oldest entries one range read
/// fetches for eviction.
const ORDER_READ_AHEAD: usize = 256;

/// How a write rejected by term fencing starts its message.
pub const FENCED: &str = "fenced";

fn error(code: Code, message: impl Into<String>) -> PResult {
    PResult::Error(pb::ProposalError {
        code: code as i32,
        message: message.into(),
    })
}

fn header(revision: u64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl<'a> ApplyTx<'a> {
    pub fn new(db: &'a DB, counters: Counters, dedup_capacity: u64) -> Self {
        Self {
            db,
            batch: WriteBatch::default(),
            counters,
            dedup_capacity,
            kv: BTreeMap::new(),
            leases: BTreeMap::new(),
            lease_keys: BTreeMap::new(),
            dedup: HashMap::new(),
            dedup_order: HashMap::new(),
            stored_order: VecDeque::new(),
            read_ahead: 8,
            produced: Vec::new(),
            lease_changes: Vec::new(),
        }
    }

    fn cf(&self, name: &str) -> &'a rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family exists")
    }

    // ---- reads through the overlay -------------------------------------

    fn get(&self, key: &[u8]) -> Option<pb::KeyValue> {
        if let Some(v) = self.kv.get(key) {
            return v.clone();
        }
        let bytes = self.db.get_cf(self.cf(CF_KV), key).expect("rocksdb read");
        bytes.map(|b| pb::KeyValue::decode(b.as_slice()).expect("stored KeyValue decodes"))
    }

    fn scan(&self, prefix: &[u8]) -> Vec<pb::KeyValue> {
        let mut out: BTreeMap<Vec<u8>, pb::KeyValue> = BTreeMap::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_KV),
            IteratorMode::From(prefix, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.expect("rocksdb read");
            if !k.starts_with(prefix) {
                break;
            }
            out.insert(
                k.to_vec(),
                pb::KeyValue::decode(&*v).expect("stored KeyValue decodes"),
            );
        }
        for (k, v) in self.kv.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(kv) => out.insert(k.clone(), kv.clone()),
                None => out.remove(k),
            };
        }
        out.into_values().collect()
    }

    fn lease_ttl(&self, id: i64) -> Option<i64> {
        if let Some(v) = self.leases.get(&id) {
            return *v;
        }
        let bytes = self
            .db
            .get_cf(self.cf(CF_LEASE), u64_key(id as u64))
            .expect("rocksdb read");
        bytes.map(|b| i64::from_be_bytes(b[..8].try_into().expect("8-byte ttl")))
    }

    fn lease_key_list(&self, id: i64) -> Vec<Vec<u8>> {
        let prefix = u64_key(id as u64);
        let mut keys: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_LEASE_KEYS),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, _) = item.expect("rocksdb read");
            if !k.starts_with(&prefix) {
                break;
            }
            keys.insert(k[8..].to_vec(), true);
        }
        for ((lid, key), present) in self.lease_keys.range((id, Vec::new())..) {
            if *lid != id {
                break;
            }
            keys.insert(key.clone(), *present);
        }
        keys.into_iter()
            .filter(|(_, present)| *present)
            .map(|(k, _)| k)
            .collect()
    }

    fn dedup_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.dedup.get(key) {
            return v.clone();
        }
        self.db
            .get_cf(self.cf(CF_DEDUP), key)
            .expect("rocksdb read")
    }

    // ---- writes: overlay + batch ---------------------------------------

    fn set_kv(&mut self, kv: pb::KeyValue) {
        self.batch
            .put_cf(self.cf(CF_KV), &kv.key, kv.encode_to_vec());
        self.kv.insert(kv.key.clone(), Some(kv));
    }

    fn remove_kv(&mut self, key: &[u8]) {
        self.batch.delete_cf(self.cf(CF_KV), key);
        self.kv.insert(key.to_vec(), None);
    }

    fn attach(&mut self, lease: i64, key: &[u8], present: bool) {
        let mut k = u64_key(lease as u64).to_vec();
        k.extend_from_slice(key);
        if present {
            self.batch.put_cf(self.cf(CF_LEASE_KEYS), k, []);
        } else {
            self.batch.delete_cf(self.cf(CF_LEASE_KEYS), k);
        }
        self.lease_keys.insert((lease, key.to_vec()), present);
    }

    fn dedup_put(&mut self, key: Vec<u8>, result: Vec<u8>) {
        let ordinal = self.counters.dedup_next;
        self.counters.dedup_next += 1;
        self.batch.put_cf(self.cf(CF_DEDUP), &key, &result);
        self.batch
            .put_cf(self.cf(CF_DEDUP_ORDER), u64_key(ordinal), &key);
        self.dedup.insert(key.clone(), Some(result));
        self.dedup_order.insert(ordinal, Some(key));
        // Evict the oldest entries beyond capacity; every member evicts the
        // same ones because eviction follows the applied order.
        while self.counters.dedup_next - self.counters.dedup_first > self.dedup_capacity {
            let first = self.counters.dedup_first;
            let old_key = match self.dedup_order.get(&first) {
                Some(k) => k.clone(),
                None => self.stored_order_key(first),
            };
            if let Some(old_key) = old_key {
                self.batch.delete_cf(self.cf(CF_DEDUP), &old_key);
                self.dedup.insert(old_key, None);
            }
            self.batch
                .delete_cf(self.cf(CF_DEDUP_ORDER), u64_key(first));
            self.dedup_order.insert(first, None);
            self.counters.dedup_first += 1;
        }
    }

    /// The stored key of the exactly-once table's entry `ordinal`, the
    /// oldest one. Once the table is full every write evicts one, so they
    /// are read ahead with one iterator (8, 16, … up to
    /// [`ORDER_READ_AHEAD`] at a time) instead of one point lookup per write.
    fn stored_order_key(&mut self, ordinal: u64) -> Option<Vec<u8>> {
        while self.stored_order.front().is_some_and(|(o, _)| *o < ordinal) {
            self.stored_order.pop_front();
        }
        if self.stored_order.is_empty() {
            let iter = self.db.iterator_cf(
                self.cf(CF_DEDUP_ORDER),
                IteratorMode::From(&u64_key(ordinal), Direction::Forward),
            );
            for item in iter.take(self.read_ahead) {
                let (k, v) = item.expect("rocksdb read");
                self.stored_order.push_back((key_u64(&k), v.to_vec()));
            }
            self.read_ahead = (self.read_ahead * 2).min(ORDER_READ_AHEAD);
        }
        match self.stored_order.front() {
            Some((o, _)) if *o == ordinal => self.stored_order.pop_front().map(|(_, k)| k),
            _ => None,
        }
    }

    fn begin(&self) -> Rev {
        Rev {
            rev: self.counters.revision + 1,
            events: Vec::new(),
        }
    }

    /// Closes a revision: when it changed anything, the store revision moves
    /// to it and its events go into the history.
    fn end(&mut self, rev: Rev) -> u64 {
        if rev.events.is_empty() {
            return self.counters.revision;
        }
        self.counters.revision = rev.rev;
        let record = pb::RevisionEvents {
            revision: rev.rev,
            events: rev.events,
        };
        self.batch.put_cf(
            self.cf(CF_HISTORY),
            u64_key(rev.rev),
            record.encode_to_vec(),
        );
        self.produced.push(record);
        rev.rev
    }

    // ---- proposals ------------------------------------------------------

    /// Applies one prost-encoded `Proposal` and returns the prost-encoded
    /// `ProposalResult`. `seed` is unique per proposal in the log and is used
    /// to choose lease ids deterministically; `term` is the term of the log
    /// entry carrying it, checked against the proposal's fence term.
    pub fn apply_proposal(&mut self, bytes: &[u8], seed: u64, term: u64) -> Vec<u8> {
        let proposal = match pb::Proposal::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                let r = error(Code::InvalidArgument, format!("undecodable proposal: {e}"));
                return pb::ProposalResult { result: Some(r) }.encode_to_vec();
            }
        };
        let dedup_key = proposal.write_id.as_ref().map(|w| {
            let mut k = u64_key(w.client_id).to_vec();
            k.extend_from_slice(&u64_key(w.seq));
            k
        });
        if let Some(k) = &dedup_key
            && let Some(previous) = self.dedup_get(k)
        {
            return previous;
        }
        let result = match proposal.op {
            _ if proposal.fence_term != 0 && proposal.fence_term != term => error(
                Code::FailedPrecondition,
                format!(
                    "{FENCED}: written by a component started in term {} but committed in term {term}; \
                     its master is no longer the leader",
                    proposal.fence_term
                ),
            ),
            None => error(Code::InvalidArgument, "proposal has no operation"),
            Some(Op::Put(req)) => {
                let mut rev = self.begin();
                match self.put(&mut rev, req) {
                    Ok(mut resp) => {
                        resp.header = header(self.end(rev));
                        PResult::Put(resp)
                    }
                    Err(e) => e,
                }
            }
            Some(Op::DeleteRange(req)) => {
                let mut rev = self.begin();
                let mut resp = self.delete(&mut rev, req);
                resp.header = header(self.end(rev));
                PResult::DeleteRange(resp)
            }
            Some(Op::Txn(req)) => match self.txn(req) {
                Ok(resp) => PResult::Txn(resp),
                Err(e) => e,
            },
            Some(Op::LeaseGrant(req)) => self.lease_grant(req, seed),
            Some(Op::LeaseRevoke(req)) => {
                if self.lease_ttl(req.id).is_none() {
                    error(Code::NotFound, format!("lease {:x} not found", req.id))
                } else {
                    let mut rev = self.begin();
                    self.remove_lease(&mut rev, req.id);
                    PResult::LeaseRevoke(pb::LeaseRevokeResponse {
                        header: header(self.end(rev)),
                    })
                }
            }
            Some(Op::LeaseExpire(req)) => {
                let mut rev = self.begin();
                for id in req.ids {
                    if self.lease_ttl(id).is_some() {
                        self.remove_lease(&mut rev, id);
                    }
                }
                PResult::Done(header(self.end(rev)).unwrap_or_default())
            }
        };
        let encoded = pb::ProposalResult {
            result: Some(result),
        }
        .encode_to_vec();
        if let Some(k) = dedup_key {
            self.dedup_put(k, encoded.clone());
        }
        encoded
    }

    fn put(&mut self, rev: &mut Rev, req: pb::PutRequest) -> Result<pb::PutResponse, PResult> {
        if req.key.is_empty() {
            return Err(error(Code::InvalidArgument, "key is empty"));
        }
        if req.lease != 0 && self.lease_ttl(req.lease).is_none() {
            return Err(error(
                Code::NotFound,
                format!("lease {:x} not found", req.lease),
            ));
        }
        let prev = self.get(&req.key);
        let kv = pb::KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map(|p| p.create_revision).unwrap_or(rev.rev),
            mod_revision: rev.rev,
            version: prev.as_ref().map(|p| p.version).unwrap_or(0) + 1,
            value: req.value,
            lease: req.lease,
        };
        if let Some(p) = &prev
            && p.lease != 0
            && p.lease != req.lease
        {
            self.attach(p.lease, &req.key, false);
        }
        if req.lease != 0 {
            self.attach(req.lease, &req.key, true);
        }
        self.set_kv(kv.clone());
        rev.events.push(pb::Event {
            r#type: pb::event::EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        Ok(pb::PutResponse {
            header: None,
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete(&mut self, rev: &mut Rev, req: pb::DeleteRangeRequest) -> pb::DeleteRangeResponse {
        let victims = if req.prefix {
            self.scan(&req.key)
        } else {
            self.get(&req.key).into_iter().collect()
        };
        for prev in &victims {
            self.remove_kv(&prev.key);
            if prev.lease != 0 {
                self.attach(prev.lease, &prev.key, false);
            }
            rev.events.push(pb::Event {
                r#type: pb::event::EventType::Delete as i32,
                kv: Some(pb::KeyValue {
                    key: prev.key.clone(),
                    mod_revision: rev.rev,
                    ..Default::default()
                }),
                prev_kv: Some(prev.clone()),
            });
        }
        pb::DeleteRangeResponse {
            header: None,
            deleted: victims.len() as i64,
            prev_kvs: if req.prev_kv { victims } else { Vec::new() },
        }
    }

    fn compare(&self, c: &pb::Compare) -> bool {
        let kv = self.get(&c.key);
        let ord = match (CompareTarget::try_from(c.target), &c.target_union) {
            (Ok(CompareTarget::Value), Some(TargetUnion::Value(v))) => match &kv {
                // A missing key has no value to compare: the compare fails.
                None => return false,
                Some(kv) => kv.value.as_slice().cmp(v.as_slice()),
            },
            (Ok(CompareTarget::Version), Some(TargetUnion::Version(v))) => {
                kv.as_ref().map(|k| k.version).unwrap_or(0).cmp(v)
            }
            (Ok(CompareTarget::Create), Some(TargetUnion::CreateRevision(v))) => {
                kv.as_ref().map(|k| k.create_revision).unwrap_or(0).cmp(v)
            }
            (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(v))) => {
                kv.as_ref().map(|k| k.mod_revision).unwrap_or(0).cmp(v)
            }
            (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(v))) => {
                kv.as_ref().map(|k| k.lease).unwrap_or(0).cmp(v)
            }
            _ => return false,
        };
        match CompareResult::try_from(c.result) {
            Ok(CompareResult::Equal) => ord.is_eq(),
            Ok(CompareResult::Greater) => ord.is_gt(),
            Ok(CompareResult::Less) => ord.is_lt(),
            Ok(CompareResult::NotEqual) => ord.is_ne(),
            Err(_) => false,
        }
    }

    fn txn(&mut self, req: pb::TxnRequest) -> Result<pb::TxnResponse, PResult> {
        for c in &req.compare {
            let target_ok = matches!(
                (CompareTarget::try_from(c.target), &c.target_union),
                (Ok(CompareTarget::Value), Some(TargetUnion::Value(_)))
                    | (Ok(CompareTarget::Version), Some(TargetUnion::Version(_)))
                    | (
                        Ok(CompareTarget::Create),
                        Some(TargetUnion::CreateRevision(_))
                    )
                    | (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(_)))
                    | (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(_)))
            );
            if !target_ok {
                return Err(error(
                    Code::InvalidArgument,
                    "compare target and compared value disagree (e.g. target VALUE needs `value`)",
                ));
            }
        }
        let succeeded = req.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { req.success } else { req.failure };
        // Check puts before changing anything, so a txn is all or nothing.
        for op in &ops {
            if let Some(ReqOp::RequestPut(p)) = &op.request {
                if p.key.is_empty() {
                    return Err(error(Code::InvalidArgument, "txn put: key is empty"));
                }
                if p.lease != 0 && self.lease_ttl(p.lease).is_none() {
                    return Err(error(
                        Code::NotFound,
                        format!("lease {:x} not found", p.lease),
                    ));
                }
            }
        }
        let mut rev = self.begin();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op.request {
                None => return Err(error(Code::InvalidArgument, "txn op has no request")),
                Some(ReqOp::RequestRange(r)) => {
                    let kvs = if r.prefix {
                        self.scan(&r.key)
                    } else {
                        self.get(&r.key).into_iter().collect()
                    };
                    let mut resp = range_response(kvs, &r);
                    resp.header = header(self.counters.revision);
                    RespOp::ResponseRange(resp)
                }
                Some(ReqOp::RequestPut(p)) => {
                    RespOp::ResponsePut(self.put(&mut rev, p).expect("checked above"))
                }
                Some(ReqOp::RequestDeleteRange(d)) => {
                    RespOp::ResponseDeleteRange(self.delete(&mut rev, d))
                }
            };
            responses.push(pb::ResponseOp {
                response: Some(response),
            });
        }
        let revision = self.end(rev);
        Ok(pb::TxnResponse {
            header: header(revision),
            succeeded,
            responses,
        })
    }

    fn lease_grant(&mut self, req: pb::LeaseGrantRequest, seed: u64) -> PResult {
        if req.ttl <= 0 {
            return error(
                Code::InvalidArgument,
                format!("lease TTL must be positive, got {}", req.ttl),
            );
        }
        if req.id < 0 {
            return error(
                Code::InvalidArgument,
                format!("lease id must not be negative: {}", req.id),
            );
        }
        let id = if req.id != 0 {
            if self.lease_ttl(req.id).is_some() {
                return error(
                    Code::AlreadyExists,
                    format!("lease {:x} already exists", req.id),
                );
            }
            req.id
        } else {
            let mut x = seed;
            loop {
                let id = (splitmix64(&mut x) & (i64::MAX as u64)) as i64;
                if id != 0 && self.lease_ttl(id).is_none() {
                    break id;
                }
            }
        };
        self.batch
            .put_cf(self.cf(CF_LEASE), u64_key(id as u64), req.ttl.to_be_bytes());
        self.leases.insert(id, Some(req.ttl));
        self.lease_changes
            .push(LeaseChange::Granted { id, ttl: req.ttl });
        PResult::LeaseGrant(pb::LeaseGrantResponse {
            header: header(self.counters.revision),
            id,
            ttl: req.ttl,
        })
    }

    fn remove_lease(&mut self, rev: &mut Rev, id: i64) {
        for key in self.lease_key_list(id) {
            if let Some(prev) = self.get(&key)
                && prev.lease == id
            {
                self.remove_kv(&key);
                rev.events.push(pb::Event {
                    r#type: pb::event::EventType::Delete as i32,
                    kv: Some(pb::KeyValue {
                        key: key.clone(),
                        mod_revision: rev.rev,
                        ..Default::default()
                    }),
                    prev_kv: Some(prev),
                });
            }
            self.attach(id, &key, false);
        }
        self.batch.delete_cf(self.cf(CF_LEASE), u64_key(id as u64));
        self.leases.insert(id, None);
        self.lease_changes.push(LeaseChange::Removed { id });
    }
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a put of key `k` carrying write id (7, `seq`) and returns the
    /// revision its result reports.
    fn put(tx: &mut ApplyTx, seq: u64) -> u64 {
        let proposal = pb::Proposal {
            write_id: Some(pb::WriteId { client_id: 7, seq }),
            op: Some(Op::Put(pb::PutRequest {
                key: b"k".to_vec(),
                value: seq.to_be_bytes().to_vec(),
                ..Default::default()
            })),
            fence_term: 0,
        };
        let out = tx.apply_proposal(&proposal.encode_to_vec(), seq, 1);
        match pb::ProposalResult::decode(out.as_slice()).unwrap().result {
            Some(PResult::Put(p)) => p.header.unwrap().revision,
            other => panic!("put {seq} gave {other:?}"),
        }
    }

    /// Applies `seqs` in batches of `batch`, writing each batch as the state
    /// machine does, and returns the counters and each put's revision.
    fn apply_all(db: &DB, capacity: u64, seqs: &[u64], batch: usize) -> (Counters, Vec<u64>) {
        let mut counters = Counters::default();
        let mut revisions = Vec::new();
        for chunk in seqs.chunks(batch) {
            let mut tx = ApplyTx::new(db, counters, capacity);
            for seq in chunk {
                revisions.push(put(&mut tx, *seq));
            }
            counters = tx.counters;
            db.write(std::mem::take(&mut tx.batch)).unwrap();
        }
        (counters, revisions)
    }

    fn stored_ordinals(db: &DB) -> Vec<u64> {
        db.iterator_cf(db.cf_handle(CF_DEDUP_ORDER).unwrap(), IteratorMode::Start)
            .map(|item| key_u64(&item.unwrap().0))
            .collect()
    }

    #[test]
    fn the_exactly_once_table_keeps_the_newest_writes_up_to_its_capacity() {
        // Evictions both within one batch and across batches, reading the
        // stored order ahead more than once (capacity > ORDER_READ_AHEAD).
        for batch in [1, 100, 1000] {
            let dir = tempfile::tempdir().unwrap();
            let db = crate::db::open(dir.path()).unwrap();
            let capacity = 300;
            let seqs: Vec<u64> = (1..=1000).collect();
            let (counters, revisions) = apply_all(&db, capacity, &seqs, batch);
            assert_eq!(revisions, (1..=1000).collect::<Vec<u64>>(), "batch {batch}");
            assert_eq!((counters.dedup_first, counters.dedup_next), (700, 1000));
            assert_eq!(
                stored_ordinals(&db),
                (700..1000).collect::<Vec<u64>>(),
                "batch {batch}: the order table holds the live ordinals only"
            );
            let dedup = db.cf_handle(CF_DEDUP).unwrap();
            assert_eq!(db.iterator_cf(dedup, IteratorMode::Start).count(), 300);

            // A retry of a kept write answers as the first time and changes
            // nothing; a retry of an evicted one is applied again.
            let mut tx = ApplyTx::new(&db, counters, capacity);
            assert_eq!(put(&mut tx, 999), 999);
            assert_eq!(put(&mut tx, 701), 701);
            assert_eq!(put(&mut tx, 700), 1001);
            assert_eq!(put(&mut tx, 5), 1002);
        }
    }
}
