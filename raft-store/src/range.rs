//! Reading the key-value state: point and prefix ranges at the current
//! revision or at any retained past revision, each from one consistent
//! RocksDB snapshot.

use std::collections::BTreeMap;
use std::collections::HashSet;

use prost::Message;
use rafter_proto::kv as pb;
use rocksdb::DB;
use rocksdb::Direction;
use rocksdb::IteratorMode;
use rocksdb::SnapshotWithThreadMode;

use crate::db::CF_HISTORY;
use crate::db::CF_KV;
use crate::db::CF_SM;
use crate::db::key_u64;
use crate::db::u64_key;
use crate::error::Error;
use crate::state_machine::KEY_COMPACT;
use crate::state_machine::KEY_REVISION;

/// Shapes matched key-values into a response: limit, keys-only, count-only.
pub fn range_response(mut kvs: Vec<pb::KeyValue>, req: &pb::RangeRequest) -> pb::RangeResponse {
    let count = kvs.len() as i64;
    if req.count_only {
        return pb::RangeResponse {
            header: None,
            kvs: Vec::new(),
            more: false,
            count,
        };
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    pb::RangeResponse {
        header: None,
        kvs,
        more,
        count,
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column family exists")
}

fn meta_u64(snap: &SnapshotWithThreadMode<DB>, db: &DB, key: &[u8]) -> Result<u64, Error> {
    Ok(snap
        .get_cf(cf(db, CF_SM), key)?
        .map(|b| key_u64(&b))
        .unwrap_or(0))
}

/// The store's current revision and compaction point, read from `db`.
pub fn revisions(db: &DB) -> Result<(u64, u64), Error> {
    let snap = db.snapshot();
    Ok((
        meta_u64(&snap, db, KEY_REVISION)?,
        meta_u64(&snap, db, KEY_COMPACT)?,
    ))
}

fn current_kvs(
    snap: &SnapshotWithThreadMode<DB>,
    db: &DB,
    key: &[u8],
    prefix: bool,
) -> Result<Vec<pb::KeyValue>, Error> {
    let decode = |b: &[u8]| pb::KeyValue::decode(b).map_err(Error::Corrupt);
    if !prefix {
        return match snap.get_cf(cf(db, CF_KV), key)? {
            Some(b) => Ok(vec![decode(&b)?]),
            None => Ok(Vec::new()),
        };
    }
    let mut out = Vec::new();
    for item in snap.iterator_cf(cf(db, CF_KV), IteratorMode::From(key, Direction::Forward)) {
        let (k, v) = item?;
        if !k.starts_with(key) {
            break;
        }
        out.push(decode(&v)?);
    }
    Ok(out)
}

/// Serves a Range request from local state (the caller has already made
/// the read linearizable when it had to be).
pub fn read_range(db: &DB, req: &pb::RangeRequest) -> Result<pb::RangeResponse, Error> {
    let snap = db.snapshot();
    let revision = meta_u64(&snap, db, KEY_REVISION)?;
    let compact = meta_u64(&snap, db, KEY_COMPACT)?;
    let mut kvs = current_kvs(&snap, db, &req.key, req.prefix)?;
    if req.revision != 0 && req.revision < revision {
        if req.revision < compact {
            return Err(Error::Compacted {
                requested: req.revision,
                compact_revision: compact,
            });
        }
        kvs = rewind(&snap, db, kvs, req, revision)?;
    } else if req.revision > revision {
        return Err(Error::FutureRevision {
            requested: req.revision,
            current: revision,
        });
    }
    let mut resp = range_response(kvs, req);
    resp.header = Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    });
    Ok(resp)
}

/// Turns the current key-values into those at `req.revision`: the first
/// event on a key after that revision carries the key's state at it.
fn rewind(
    snap: &SnapshotWithThreadMode<DB>,
    db: &DB,
    current: Vec<pb::KeyValue>,
    req: &pb::RangeRequest,
    revision: u64,
) -> Result<Vec<pb::KeyValue>, Error> {
    let at = req.revision;
    let mut result: BTreeMap<Vec<u8>, pb::KeyValue> =
        current.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    let mut seen = HashSet::new();
    let start = u64_key(at + 1);
    for item in snap.iterator_cf(
        cf(db, CF_HISTORY),
        IteratorMode::From(&start, Direction::Forward),
    ) {
        let (k, v) = item?;
        if key_u64(&k) > revision {
            break;
        }
        let record = pb::RevisionEvents::decode(&*v).map_err(Error::Corrupt)?;
        for ev in record.events {
            let Some(kv) = ev.kv else { continue };
            let matches = if req.prefix {
                kv.key.starts_with(&req.key)
            } else {
                kv.key == req.key
            };
            if !matches || !seen.insert(kv.key.clone()) {
                continue;
            }
            match ev.prev_kv {
                Some(prev) => result.insert(kv.key, prev),
                None => result.remove(&kv.key),
            };
        }
    }
    Ok(result.into_values().collect())
}

/// History records with `from <= revision <= to`, in order.
pub fn read_history(db: &DB, from: u64, to: u64) -> Result<Vec<pb::RevisionEvents>, Error> {
    let mut out = Vec::new();
    let start = u64_key(from);
    for item in db.iterator_cf(
        cf(db, CF_HISTORY),
        IteratorMode::From(&start, Direction::Forward),
    ) {
        let (k, v) = item?;
        if key_u64(&k) > to {
            break;
        }
        out.push(pb::RevisionEvents::decode(&*v).map_err(Error::Corrupt)?);
    }
    Ok(out)
}
