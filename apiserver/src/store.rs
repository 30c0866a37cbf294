//! The generic verbs over raft-store, for every kind `K`.
//!
//! An object is its kind's protobuf bytes under `K::INFO.key(ns, name)`;
//! its resourceVersion is the key's mod_revision (not stored in the bytes).
//! Every write is one Txn guarded by a compare on the key's revision, so an
//! update computed from a stale read can never overwrite a newer object.
//!
//! Exactly-once: a request's write id is used for its first Txn; when the
//! server itself retries after losing a race (patch, delete, update without
//! a resourceVersion), attempt `n` uses the id with `n` in its top byte. A
//! client resending the request replays the same attempts, and the store
//! answers each from its de-duplication table, so the request is applied
//! at most once and the client sees the first outcome.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use rafter_proto::age::{format_rfc3339_utc, parse_rfc3339_utc};
use rafter_proto::api::{self, WriteId};
use rafter_proto::json;
use rafter_proto::kv::{self, compare, request_op};
use rafter_proto::object::Object;
use rafter_proto::selector::{FieldSelector, LabelSelector};
use rafter_raft_store::node::Node;
use rafter_raft_store::range::read_range;
use serde_json::Value;

use crate::cluster_ip;
use crate::error::{ApiError, Reason, Result};
use crate::validate::{self, MAX_OBJECT_BYTES};

/// Fields every kind can be selected on; kinds without one see "".
pub const SELECTABLE_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
];

/// How many times the server retries a write that lost a race it can
/// safely redo (patch, delete, update without resourceVersion).
const MAX_ATTEMPTS: u64 = 8;

/// The generic object store of one master.
#[derive(Clone)]
pub struct Store {
    pub node: Arc<Node>,
    /// The Raft term every write of this store is fenced with (0: none);
    /// set per request from the `rafter-fence-term` header.
    pub fence_term: u64,
    /// Where Service cluster IPs are allocated from.
    pub service_cidr: IpNet,
}

fn attempt_id(id: &Option<WriteId>, attempt: u64) -> Option<kv::WriteId> {
    id.as_ref().map(|w| kv::WriteId {
        client_id: w.client_id,
        seq: w.seq | (attempt << 56),
    })
}

pub fn revision_string(r: u64) -> String {
    r.to_string()
}

/// Parses a resourceVersion given by a client ("" → 0).
pub fn parse_revision(rv: &str) -> Result<u64> {
    if rv.is_empty() {
        return Ok(0);
    }
    rv.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid resourceVersion {rv:?}: resource versions are decimal numbers returned by the server"
        ))
    })
}

/// Decodes a stored object and stamps its resourceVersion.
pub fn decode<K: Object>(kv: &kv::KeyValue) -> Result<K> {
    let mut obj = K::decode(kv.value.as_slice())
        .map_err(|e| ApiError::internal(format!("stored {} is undecodable: {e}", K::INFO.kind)))?;
    obj.metadata_mut().resource_version = revision_string(kv.mod_revision);
    obj.set_type_meta();
    Ok(obj)
}

/// An object of kind `K` holding only type meta and the resourceVersion of
/// `mod_revision`: appended to a stored encoding, it turns it into what
/// [`decode`] returns (see [`Store::list_encoded`]).
fn revision_only<K: Object>(mod_revision: u64) -> K {
    let mut obj = K::default();
    obj.metadata_mut().resource_version = revision_string(mod_revision);
    obj.set_type_meta();
    obj
}

fn encode<K: Object>(obj: &K) -> Result<Vec<u8>> {
    let mut stored = obj.clone();
    stored.metadata_mut().resource_version.clear();
    stored.set_type_meta();
    let bytes = stored.encode_to_vec();
    if bytes.len() > MAX_OBJECT_BYTES {
        let m = obj.metadata();
        return Err(ApiError::new(
            Reason::Invalid,
            format!(
                "{} \"{}\" is too large: {} bytes, the limit is {MAX_OBJECT_BYTES} (1.5 MiB)",
                K::INFO.kind,
                m.name,
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Whether `obj` passes the selectors.
pub fn selected<K: Object>(obj: &K, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    if !labels.matches(&obj.metadata().labels) {
        return false;
    }
    if fields.is_empty() {
        return true;
    }
    let value = json::to_value(obj);
    fields.matches(|path| {
        let mut v = &value;
        for part in path.split('.') {
            v = v.get(part)?;
        }
        Some(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    })
}

pub fn parse_selectors(label: &str, field: &str) -> Result<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(label).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(field, SELECTABLE_FIELDS)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((labels, fields))
}

fn now() -> String {
    format_rfc3339_utc(SystemTime::now())
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6] & 0x0f,
        b[7],
        8 | (b[8] & 0x3),
        b[8] >> 4,
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

fn cmp_mod(key: &str, rev: u64) -> kv::Compare {
    kv::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
    }
}

/// Holds when `key` does not exist.
fn absent(key: &str) -> kv::Compare {
    kv::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
    }
}

/// Deletes `obj`'s key and whatever is allocated along with it (a
/// Service's cluster IP key).
fn delete_ops<K: Object>(obj: &K) -> Vec<kv::RequestOp> {
    let m = obj.metadata();
    let mut ops = vec![delete_op(&K::INFO.key(&m.namespace, &m.name))];
    if let Some(ip) = cluster_ip::held(obj) {
        ops.push(delete_op(&cluster_ip::ip_key(ip)));
    }
    ops
}

fn put_op(key: &str, value: Vec<u8>) -> kv::RequestOp {
    kv::RequestOp {
        request: Some(request_op::Request::RequestPut(kv::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        })),
    }
}

fn delete_op(key: &str) -> kv::RequestOp {
    kv::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            kv::DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            },
        )),
    }
}

/// What a guarded write did.
enum Written {
    /// Applied at this revision.
    Applied(u64),
    /// The guard failed: the key changed (or exists, for a create).
    Lost,
}

impl Store {
    fn meta_name<K: Object>(obj: &K) -> String {
        obj.metadata().name.clone()
    }

    /// Makes the next local read linearizable unless `serializable`.
    async fn barrier(&self, serializable: bool) -> Result<()> {
        if !serializable && !self.node.options.unsafe_local_reads {
            self.node.read_barrier().await?;
        }
        Ok(())
    }

    fn read_key(&self, key: &str, revision: u64) -> Result<Option<kv::KeyValue>> {
        let resp = read_range(
            &self.node.shared.db,
            &kv::RangeRequest {
                key: key.as_bytes().to_vec(),
                revision,
                ..Default::default()
            },
        )?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Waits until this master has applied `revision`.
    async fn wait_applied(&self, revision: u64) -> Result<()> {
        if self.node.shared.revision.load(Ordering::Acquire) >= revision {
            return Ok(());
        }
        let mut events = self.node.shared.events.subscribe();
        let deadline = tokio::time::Instant::now() + self.node.options.request_timeout;
        while self.node.shared.revision.load(Ordering::Acquire) < revision {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => {
                    // Not applied here in time (a lagging follower): fall
                    // back to a read barrier, which waits for the leader's
                    // commit index.
                    self.node.read_barrier().await?;
                    break;
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    return Err(rafter_raft_store::Error::ShuttingDown.into());
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// One guarded write.
    async fn txn(
        &self,
        write_id: Option<kv::WriteId>,
        compare: kv::Compare,
        op: kv::RequestOp,
    ) -> Result<Written> {
        self.txn_all(write_id, vec![compare], vec![op]).await
    }

    /// One write of several ops, applied only if every compare holds.
    async fn txn_all(
        &self,
        write_id: Option<kv::WriteId>,
        compare: Vec<kv::Compare>,
        success: Vec<kv::RequestOp>,
    ) -> Result<Written> {
        let proposal = kv::Proposal {
            fence_term: self.fence_term,
            write_id,
            op: Some(kv::proposal::Op::Txn(kv::TxnRequest {
                compare,
                success,
                ..Default::default()
            })),
        };
        let result = self.node.propose(&proposal).await?;
        match result.result {
            Some(kv::proposal_result::Result::Txn(t)) => {
                if t.succeeded {
                    // The header revision is the Txn's own.
                    let rev = t.header.map(|h| h.revision).unwrap_or_default();
                    Ok(Written::Applied(rev))
                } else {
                    Ok(Written::Lost)
                }
            }
            Some(kv::proposal_result::Result::Error(e)) => {
                Err(rafter_raft_store::Error::Proposal {
                    code: e.code,
                    message: e.message,
                }
                .into())
            }
            _ => Err(ApiError::internal(
                "the store answered a Txn with another result",
            )),
        }
    }

    /// The object as stored at `revision` (after waiting for this master to
    /// have applied it): what a write at that revision produced.
    async fn read_written<K: Object>(&self, key: &str, revision: u64) -> Result<K> {
        self.wait_applied(revision).await?;
        match self.read_key(key, revision)? {
            Some(kv) => decode(&kv),
            None => Err(ApiError::internal(format!(
                "{key} is missing at revision {revision} right after it was written"
            ))),
        }
    }

    /// The current object, if any (linearizable unless `serializable`).
    async fn current<K: Object>(
        &self,
        namespace: &str,
        name: &str,
        serializable: bool,
    ) -> Result<Option<K>> {
        self.barrier(serializable).await?;
        let key = K::INFO.key(namespace, name);
        self.read_key(&key, 0)?.map(|kv| decode(&kv)).transpose()
    }

    pub async fn get<K: Object>(
        &self,
        namespace: &str,
        name: &str,
        serializable: bool,
    ) -> Result<K> {
        check_scope::<K>(namespace)?;
        self.current(namespace, name, serializable)
            .await?
            .ok_or_else(|| ApiError::not_found(K::INFO, name))
    }

    /// Every selected object and the revision they were read at.
    pub async fn list<K: Object>(
        &self,
        namespace: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
        serializable: bool,
    ) -> Result<(Vec<K>, u64)> {
        let (kvs, revision) = self.read_kind::<K>(namespace, serializable).await?;
        let mut items = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let obj: K = decode(kv)?;
            if selected(&obj, labels, fields) {
                items.push(obj);
            }
        }
        Ok((items, revision))
    }

    /// [`Store::list`] as the wire carries it: each object's stored
    /// encoding followed by a second, tiny encoding of the same kind that
    /// holds only its resourceVersion and type meta. Protobuf decoding
    /// merges the two (a repeated message field merges, a repeated scalar
    /// takes the last value), so the client decodes exactly what
    /// [`decode`] gives, while the server decodes an object only to test a
    /// selector and never encodes one again: a new leader's informers list
    /// every pod at once, and this is most of that list's server time.
    pub async fn list_encoded<K: Object>(
        &self,
        namespace: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
        serializable: bool,
    ) -> Result<(Vec<Vec<u8>>, u64)> {
        let (kvs, revision) = self.read_kind::<K>(namespace, serializable).await?;
        let everything = labels.is_empty() && fields.is_empty();
        let mut items = Vec::with_capacity(kvs.len());
        for kv in kvs {
            if !everything && !selected(&decode::<K>(&kv)?, labels, fields) {
                continue;
            }
            let mut bytes = kv.value;
            bytes.extend_from_slice(&revision_only::<K>(kv.mod_revision).encode_to_vec());
            items.push(bytes);
        }
        Ok((items, revision))
    }

    /// Every stored object of kind `K` in `namespace` ("" for all), after
    /// the read barrier unless `serializable`, with the store's revision.
    async fn read_kind<K: Object>(
        &self,
        namespace: &str,
        serializable: bool,
    ) -> Result<(Vec<kv::KeyValue>, u64)> {
        self.barrier(serializable).await?;
        let resp = read_range(
            &self.node.shared.db,
            &kv::RangeRequest {
                key: K::INFO.prefix(namespace).into_bytes(),
                prefix: true,
                ..Default::default()
            },
        )?;
        let revision = resp.header.map(|h| h.revision).unwrap_or_default();
        Ok((resp.kvs, revision))
    }

    /// Fails with NotFound when a namespaced object's namespace is missing,
    /// and with Forbidden when it is being deleted (Terminating).
    async fn check_namespace<K: Object>(&self, namespace: &str, name: &str) -> Result<()> {
        if !K::INFO.namespaced {
            return Ok(());
        }
        let key = <api::Namespace as Object>::INFO.key("", namespace);
        match self.read_key(&key, 0)? {
            Some(kv) => {
                let ns: api::Namespace = decode(&kv)?;
                if ns.metadata().deletion_timestamp.is_empty() {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        Reason::Forbidden,
                        format!(
                            "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                            K::INFO.qualified_plural(),
                            name
                        ),
                    ))
                }
            }
            None => Err(ApiError::not_found(
                <api::Namespace as Object>::INFO,
                namespace,
            )),
        }
    }

    pub async fn create<K: Object>(&self, mut obj: K, write_id: Option<WriteId>) -> Result<K> {
        {
            let m = obj.metadata_mut();
            if m.name.is_empty() && !m.generate_name.is_empty() {
                m.name = format!("{}{}", m.generate_name, random_suffix());
            }
            m.uid = new_uid();
            m.creation_timestamp = now();
            m.deletion_timestamp.clear();
            m.deletion_grace_period_seconds = None;
            m.resource_version.clear();
            m.generation = if K::INFO.has_spec { 1 } else { 0 };
        }
        let name = Self::meta_name(&obj);
        validate::prepare(&mut obj).map_err(|c| ApiError::invalid(K::INFO, &name, c))?;
        let m = obj.metadata();
        self.barrier(false).await?;
        self.check_namespace::<K>(&m.namespace, &name).await?;
        let key = K::INFO.key(&m.namespace, &m.name);
        // None: nothing to allocate (not a Service, or headless); Some(None):
        // any free cluster IP; Some(Some(ip)): that one, if free.
        let requested_ip = match cluster_ip::requested(&obj) {
            None | Some("None") => None,
            Some("") => Some(None),
            Some(ip) => Some(Some(
                cluster_ip::check_requested(&self.service_cidr, ip)
                    .map_err(|c| ApiError::invalid(K::INFO, &name, vec![c]))?,
            )),
        };
        let Some(requested_ip) = requested_ip else {
            let bytes = encode(&obj)?;
            return match self
                .txn(attempt_id(&write_id, 0), absent(&key), put_op(&key, bytes))
                .await?
            {
                Written::Applied(rev) => self.read_written(&key, rev).await,
                Written::Lost => Err(ApiError::already_exists(K::INFO, &name)),
            };
        };
        // A Service: its cluster IP's key is created in the same Txn.
        let holder = format!("{}/{}", obj.metadata().namespace, name).into_bytes();
        for attempt in 0..MAX_ATTEMPTS {
            let ip = match requested_ip {
                Some(ip) => ip,
                None => {
                    let taken = self.allocated_cluster_ips()?;
                    cluster_ip::choose_free(&self.service_cidr, &taken, cluster_ip::random_start())
                        .ok_or_else(|| {
                            ApiError::new(
                                Reason::InternalError,
                                format!(
                                    "Service \"{name}\" could not get a cluster IP: every address of the service range {} is allocated",
                                    self.service_cidr
                                ),
                            )
                        })?
                }
            };
            cluster_ip::set(&mut obj, ip);
            let ip_key = cluster_ip::ip_key(ip);
            let bytes = encode(&obj)?;
            let written = self
                .txn_all(
                    attempt_id(&write_id, attempt),
                    vec![absent(&key), absent(&ip_key)],
                    vec![put_op(&key, bytes), put_op(&ip_key, holder.clone())],
                )
                .await?;
            match written {
                Written::Applied(rev) => return self.read_written(&key, rev).await,
                Written::Lost if self.read_key(&key, 0)?.is_some() => {
                    return Err(ApiError::already_exists(K::INFO, &name));
                }
                Written::Lost if requested_ip.is_some() => {
                    return Err(ApiError::invalid(
                        K::INFO,
                        &name,
                        vec![cluster_ip::already_allocated(ip)],
                    ));
                }
                // Another Service took the chosen IP meanwhile: choose again.
                Written::Lost => continue,
            }
        }
        Err(too_busy(K::INFO, &name))
    }

    /// The cluster IPs allocated now.
    fn allocated_cluster_ips(&self) -> Result<std::collections::BTreeSet<std::net::IpAddr>> {
        let resp = read_range(
            &self.node.shared.db,
            &kv::RangeRequest {
                key: cluster_ip::PREFIX.as_bytes().to_vec(),
                prefix: true,
                keys_only: true,
                ..Default::default()
            },
        )?;
        Ok(resp
            .kvs
            .iter()
            .filter_map(|kv| cluster_ip::ip_of_key(&kv.key))
            .collect())
    }

    /// Writes `next` over `current` (which was read at its resourceVersion):
    /// `Lost` when the stored object moved on meanwhile. A deleted object
    /// whose last finalizer is gone is removed instead.
    async fn write_over<K: Object>(
        &self,
        current: &K,
        mut next: K,
        write_id: Option<kv::WriteId>,
    ) -> Result<(Written, Option<K>)> {
        let cm = current.metadata();
        let key = K::INFO.key(&cm.namespace, &cm.name);
        let rev = parse_revision(&cm.resource_version)?;
        {
            // Identity and bookkeeping fields are the server's.
            let m = next.metadata_mut();
            m.name = cm.name.clone();
            m.namespace = cm.namespace.clone();
            m.uid = cm.uid.clone();
            m.creation_timestamp = cm.creation_timestamp.clone();
            m.generate_name = cm.generate_name.clone();
            if !cm.deletion_timestamp.is_empty() {
                m.deletion_timestamp = cm.deletion_timestamp.clone();
            }
            m.deletion_grace_period_seconds = cm.deletion_grace_period_seconds;
            m.generation = cm.generation;
        }
        let name = cm.name.clone();
        cluster_ip::on_update(current, &mut next)
            .map_err(|c| ApiError::invalid(K::INFO, &name, c))?;
        validate::prepare(&mut next).map_err(|c| ApiError::invalid(K::INFO, &name, c))?;
        validate::transition(current, &next).map_err(|c| ApiError::invalid(K::INFO, &name, c))?;
        // Compared after defaulting: a manifest that only omits defaults
        // (or spells a quantity differently) is not a change.
        if K::INFO.has_spec && next.spec_bytes() != current.spec_bytes() {
            next.metadata_mut().generation = cm.generation + 1;
        }
        next.metadata_mut().resource_version = cm.resource_version.clone();
        if next == *current {
            // Nothing changed: no write, the resourceVersion stays.
            return Ok((Written::Applied(rev), Some(next)));
        }
        let nm = next.metadata();
        // The last finalizer gone: removed, unless a graceful deletion is
        // still under way (its node agent removes the pod when done).
        if !nm.deletion_timestamp.is_empty()
            && nm.finalizers.is_empty()
            && nm.deletion_grace_period_seconds.unwrap_or(0) == 0
        {
            let w = self
                .txn_all(write_id, vec![cmp_mod(&key, rev)], delete_ops(current))
                .await?;
            return Ok((w, None));
        }
        if !cm.deletion_timestamp.is_empty() {
            let added = nm.finalizers.iter().any(|f| !cm.finalizers.contains(f));
            if added {
                return Err(ApiError::new(
                    Reason::Forbidden,
                    format!(
                        "{} \"{name}\" is being deleted: no new finalizers can be added",
                        K::INFO.qualified_plural()
                    ),
                ));
            }
        }
        let bytes = encode(&next)?;
        let w = self
            .txn(write_id, cmp_mod(&key, rev), put_op(&key, bytes))
            .await?;
        Ok((w, Some(next)))
    }

    /// Finishes a write: the stored object (or, for a removal, the last
    /// state stamped with the deletion revision).
    async fn written<K: Object>(
        &self,
        written: Written,
        result: Option<K>,
        prev: &K,
    ) -> Result<Option<K>> {
        match (written, result) {
            (Written::Applied(rev), Some(obj)) => {
                if obj == *prev {
                    return Ok(Some(obj)); // no-op update: nothing was written
                }
                let m = obj.metadata();
                let key = K::INFO.key(&m.namespace, &m.name);
                self.read_written(&key, rev).await.map(Some)
            }
            (Written::Applied(rev), None) => {
                let mut last = prev.clone();
                last.metadata_mut().resource_version = rev.to_string();
                last.metadata_mut().finalizers.clear();
                Ok(Some(last))
            }
            (Written::Lost, _) => Ok(None),
        }
    }

    /// Update (spec and metadata) or UpdateStatus (`status_only`).
    ///
    /// With a resourceVersion in `obj`, a compare-and-swap on it (Conflict
    /// when it is not current). Without one, the server reads the current
    /// object and retries on races.
    pub async fn update<K: Object>(
        &self,
        obj: K,
        status_only: bool,
        write_id: Option<WriteId>,
    ) -> Result<K> {
        if status_only && !K::INFO.has_status {
            return Err(ApiError::new(
                Reason::MethodNotAllowed,
                format!("{} have no status: use Update", K::INFO.qualified_plural()),
            ));
        }
        let m = obj.metadata();
        let (namespace, name) = (m.namespace.clone(), m.name.clone());
        check_scope::<K>(&namespace)?;
        if name.is_empty() {
            return Err(ApiError::invalid(
                K::INFO,
                "",
                vec![api::FieldCause {
                    field: "metadata.name".into(),
                    message: "Required value: name is required".into(),
                }],
            ));
        }
        let expected = parse_revision(&m.resource_version)?;
        for attempt in 0..MAX_ATTEMPTS {
            let current: K = self
                .current(&namespace, &name, false)
                .await?
                .ok_or_else(|| ApiError::not_found(K::INFO, &name))?;
            let current_rev = parse_revision(&current.metadata().resource_version)?;
            if expected != 0 && expected != current_rev && attempt == 0 {
                return Err(ApiError::conflict(
                    K::INFO,
                    &name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            let next = merge_for_update(&current, &obj, status_only);
            let id = attempt_id(&write_id, attempt);
            let (w, result) = self.write_over(&current, next, id).await?;
            if let Some(done) = self.written(w, result, &current).await? {
                return Ok(done);
            }
            if expected != 0 {
                return Err(ApiError::conflict(
                    K::INFO,
                    &name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        Err(too_busy(K::INFO, &name))
    }

    /// JSON merge patch of the object (or of its status).
    pub async fn patch<K: Object>(
        &self,
        namespace: &str,
        name: &str,
        patch: &[u8],
        status_only: bool,
        write_id: Option<WriteId>,
    ) -> Result<K> {
        check_scope::<K>(namespace)?;
        let patch: Value = serde_json::from_slice(patch)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
        if !patch.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object"));
        }
        let expected = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(parse_revision)
            .transpose()?
            .unwrap_or(0);
        for attempt in 0..MAX_ATTEMPTS {
            let current: K = self
                .current(namespace, name, false)
                .await?
                .ok_or_else(|| ApiError::not_found(K::INFO, name))?;
            if expected != 0 && expected.to_string() != current.metadata().resource_version {
                return Err(ApiError::conflict(
                    K::INFO,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            let mut doc = json::to_value(&current);
            json::merge_patch(&mut doc, &patch);
            let patched: K = json::from_value(doc).map_err(|e| {
                ApiError::invalid(
                    K::INFO,
                    name,
                    vec![api::FieldCause {
                        field: e.field,
                        message: e.message,
                    }],
                )
            })?;
            let next = merge_for_update(&current, &patched, status_only);
            let id = attempt_id(&write_id, attempt);
            let (w, result) = self.write_over(&current, next, id).await?;
            if let Some(done) = self.written(w, result, &current).await? {
                return Ok(done);
            }
        }
        Err(too_busy(K::INFO, name))
    }

    /// Deletes, or marks for deletion when finalizers remain (Foreground and
    /// Orphan add theirs, as Kubernetes does) or when the object is a Pod
    /// its node agent must stop first ([`grace_period`]).
    ///
    /// A graceful deletion sets deletionTimestamp to the time the pod
    /// should be gone by and deletionGracePeriodSeconds to its grace period
    /// (Kubernetes' fields and meanings). Deleting it again may only
    /// shorten that period; shortened to 0 (`grace_period_seconds` 0, the
    /// agent's own delete once the containers stopped, or a force delete)
    /// the pod is removed, or left to its finalizers.
    pub async fn delete<K: Object>(
        &self,
        namespace: &str,
        name: &str,
        preconditions: Option<api::Preconditions>,
        propagation: &str,
        grace_period_seconds: Option<i64>,
        write_id: Option<WriteId>,
    ) -> Result<K> {
        check_scope::<K>(namespace)?;
        let propagation_finalizer = match propagation {
            "" | "Background" => None,
            "Foreground" => Some("foregroundDeletion"),
            "Orphan" => Some("orphan"),
            other => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy {other:?} is not one of Background, Foreground, Orphan"
                )));
            }
        };
        let pre = preconditions.unwrap_or_default();
        for attempt in 0..MAX_ATTEMPTS {
            let current: K = self
                .current(namespace, name, false)
                .await?
                .ok_or_else(|| ApiError::not_found(K::INFO, name))?;
            let cm = current.metadata();
            if !pre.uid.is_empty() && pre.uid != cm.uid {
                return Err(ApiError::conflict(
                    K::INFO,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        pre.uid, cm.uid
                    ),
                ));
            }
            if !pre.resource_version.is_empty() && pre.resource_version != cm.resource_version {
                return Err(ApiError::conflict(
                    K::INFO,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                        pre.resource_version, cm.resource_version
                    ),
                ));
            }
            let id = attempt_id(&write_id, attempt);
            let key = K::INFO.key(&cm.namespace, &cm.name);
            let rev = parse_revision(&cm.resource_version)?;
            // Finalizers this delete adds: the propagation policy's, and
            // for a namespace the namespace controller's, which empties it
            // before it goes.
            let mut adds: Vec<&str> = Vec::new();
            if let Some(f) = propagation_finalizer {
                adds.push(f);
            }
            if K::INFO.kind == "Namespace" && cm.deletion_timestamp.is_empty() {
                adds.push(NAMESPACE_FINALIZER);
            }
            adds.retain(|f| !cm.finalizers.iter().any(|x| x == f));
            // The grace period this delete leaves the object with: a
            // graceful deletion under way can only be shortened; an object
            // already marked for its finalizers has none.
            let pending = cm
                .deletion_grace_period_seconds
                .filter(|g| *g > 0 && !cm.deletion_timestamp.is_empty());
            let wanted = grace_period(&current, grace_period_seconds);
            let grace = match pending {
                Some(old) => wanted.min(old),
                None if cm.deletion_timestamp.is_empty() => wanted,
                None => 0,
            };
            if cm.finalizers.is_empty() && adds.is_empty() && grace == 0 {
                match self
                    .txn_all(id, vec![cmp_mod(&key, rev)], delete_ops(&current))
                    .await?
                {
                    Written::Applied(rev) => {
                        let mut last = current.clone();
                        last.metadata_mut().resource_version = rev.to_string();
                        return Ok(last);
                    }
                    Written::Lost => continue,
                }
            }
            if !cm.deletion_timestamp.is_empty() && adds.is_empty() && grace == pending.unwrap_or(0)
            {
                return Ok(current); // Already being deleted.
            }
            let mut next = current.clone();
            let m = next.metadata_mut();
            let seconds = |g: i64| Duration::from_secs(g.max(0) as u64);
            if m.deletion_timestamp.is_empty() {
                m.deletion_timestamp = format_rfc3339_utc(SystemTime::now() + seconds(grace));
                m.deletion_grace_period_seconds = Some(grace);
            } else if let Some(old) = pending.filter(|old| grace < *old) {
                // Shortened: due `grace` seconds after the first delete.
                let asked = parse_rfc3339_utc(&m.deletion_timestamp)
                    .and_then(|due| due.checked_sub(seconds(old)))
                    .unwrap_or_else(SystemTime::now);
                m.deletion_timestamp = format_rfc3339_utc(asked + seconds(grace));
                m.deletion_grace_period_seconds = Some(grace);
            }
            m.finalizers.extend(adds.iter().map(|f| f.to_string()));
            if let Some(ns) = (&mut next as &mut dyn std::any::Any).downcast_mut::<api::Namespace>()
            {
                ns.status.get_or_insert_default().phase = "Terminating".into();
            }
            let bytes = encode(&next)?;
            match self
                .txn(id, cmp_mod(&key, rev), put_op(&key, bytes))
                .await?
            {
                Written::Applied(rev) => return self.read_written(&key, rev).await,
                Written::Lost => continue,
            }
        }
        Err(too_busy(K::INFO, name))
    }
}

fn too_busy(info: &rafter_proto::object::KindInfo, name: &str) -> ApiError {
    ApiError::conflict(
        info,
        name,
        "the object kept changing while the server applied the request; try again",
    )
}

/// Namespaced kinds need a namespace; cluster-scoped ones must not get one.
fn check_scope<K: Object>(namespace: &str) -> Result<()> {
    if K::INFO.namespaced && namespace.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} are namespaced: give a namespace",
            K::INFO.qualified_plural()
        )));
    }
    Ok(())
}

/// The object an update writes: for Update, `new` with the stored status;
/// for UpdateStatus, the stored object with `new`'s status.
fn merge_for_update<K: Object>(current: &K, new: &K, status_only: bool) -> K {
    let mut next = current.clone();
    if status_only {
        next.copy_status_from(new);
    } else {
        next.copy_all_but_status_from(new);
    }
    next
}

/// The grace period of a Pod that gives none (Kubernetes' default).
pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 30;

/// The grace period (seconds) a delete gives `obj`, as Kubernetes' pod
/// strategy decides it: a Pod bound to a node and not finished gets the
/// requested period (negative counts as 1), else its
/// terminationGracePeriodSeconds, else 30 — its node agent stops it and
/// then removes it. Anything else gets 0: removed at once, or left to its
/// finalizers (an unbound or finished pod has nothing to stop).
pub fn grace_period<K: Object>(obj: &K, requested: Option<i64>) -> i64 {
    let Some(pod) = (obj as &dyn std::any::Any).downcast_ref::<api::Pod>() else {
        return 0;
    };
    let spec = pod.spec.as_ref();
    let bound = spec.is_some_and(|s| !s.node_name.is_empty());
    let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    if !bound || matches!(phase, "Succeeded" | "Failed") {
        return 0;
    }
    requested
        .map(|g| if g < 0 { 1 } else { g })
        .or_else(|| spec.and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS)
        .max(0)
}

/// The finalizer a namespace gets when it is deleted; the namespace
/// controller removes it once everything in the namespace is gone.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Bookmark period default.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use prost::Message;

    use rafter_raft_store::data_dir::DataDir;
    use rafter_raft_store::node::{Bootstrap, NodeOptions};
    use rafter_raft_store::types::Member;

    use super::*;

    /// A one-master store in a directory of its own, with the `default`
    /// namespace; the directory goes when it is dropped.
    struct TestStore {
        store: Store,
        dir: PathBuf,
    }

    impl Drop for TestStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn test_store() -> TestStore {
        let dir = std::env::temp_dir().join(format!(
            "rafter-apiserver-store-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("test directory");
        let data_dir = DataDir::open(&dir).expect("data directory");
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
        .expect("start the master");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !node.is_leader() {
            assert!(tokio::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let store = Store {
            node,
            fence_term: 0,
            service_cidr: cluster_ip::DEFAULT_SERVICE_CIDR.parse().expect("CIDR"),
        };
        let mut ns = api::Namespace::default();
        ns.metadata_mut().name = "default".into();
        store.create(ns, None).await.expect("namespace default");
        TestStore { store, dir }
    }

    fn pod(name: &str, node: &str, grace: Option<i64>) -> api::Pod {
        let mut p = api::Pod {
            spec: Some(api::PodSpec {
                containers: vec![api::Container {
                    name: "app".into(),
                    image: "rafter/demo:latest".into(),
                    ..Default::default()
                }],
                node_name: node.into(),
                termination_grace_period_seconds: grace,
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = p.metadata_mut();
        m.name = name.into();
        m.namespace = "default".into();
        p
    }

    impl TestStore {
        async fn delete(&self, name: &str, grace: Option<i64>) -> Result<api::Pod> {
            self.store
                .delete("default", name, None, "", grace, None)
                .await
        }

        async fn get(&self, name: &str) -> Option<api::Pod> {
            match self.store.get::<api::Pod>("default", name, false).await {
                Ok(p) => Some(p),
                Err(e) if e.reason == Reason::NotFound => None,
                Err(e) => panic!("get pod {name}: {e:?}"),
            }
        }
    }

    /// Seconds from now until the pod's deletionTimestamp.
    fn due_in(p: &api::Pod) -> i64 {
        let due = parse_rfc3339_utc(&p.metadata().deletion_timestamp).expect("deletionTimestamp");
        match due.duration_since(SystemTime::now()) {
            Ok(d) => d.as_secs_f64().round() as i64,
            Err(e) => -(e.duration().as_secs_f64().round() as i64),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bound_pod_is_marked_with_its_grace_period_and_others_go_at_once() {
        let t = test_store().await;
        let s = &t.store;
        s.create(pod("bound", "n1", Some(20)), None).await.unwrap();
        let marked = t.delete("bound", None).await.unwrap();
        let m = marked.metadata();
        assert_eq!(m.deletion_grace_period_seconds, Some(20));
        assert!(
            (19..=21).contains(&due_in(&marked)),
            "{}",
            m.deletion_timestamp
        );
        let stored = t
            .get("bound")
            .await
            .expect("still there while it terminates");
        assert_eq!(stored.metadata().resource_version, m.resource_version);

        // The request's grace period wins over the pod's; without either
        // it is 30 s.
        s.create(pod("asked", "n1", Some(20)), None).await.unwrap();
        let marked = t.delete("asked", Some(5)).await.unwrap();
        assert_eq!(marked.metadata().deletion_grace_period_seconds, Some(5));
        s.create(pod("plain", "n1", None), None).await.unwrap();
        let marked = t.delete("plain", None).await.unwrap();
        assert_eq!(marked.metadata().deletion_grace_period_seconds, Some(30));

        // Nothing to stop: unbound, or finished.
        s.create(pod("unbound", "", Some(20)), None).await.unwrap();
        t.delete("unbound", None).await.unwrap();
        assert!(
            t.get("unbound").await.is_none(),
            "an unbound pod goes at once"
        );
        let mut done = s.create(pod("done", "n1", Some(20)), None).await.unwrap();
        done.status.get_or_insert_default().phase = "Succeeded".into();
        s.update(done, true, None).await.unwrap();
        t.delete("done", None).await.unwrap();
        assert!(t.get("done").await.is_none(), "a finished pod goes at once");

        // Other kinds ignore grace periods.
        let mut cm = api::ConfigMap::default();
        cm.metadata_mut().name = "cm".into();
        cm.metadata_mut().namespace = "default".into();
        s.create(cm, None).await.unwrap();
        let gone: api::ConfigMap = s
            .delete("default", "cm", None, "", Some(30), None)
            .await
            .unwrap();
        assert!(gone.metadata().deletion_timestamp.is_empty());
        assert!(
            s.get::<api::ConfigMap>("default", "cm", false)
                .await
                .is_err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_terminating_pod_keeps_its_status_writes_and_only_shortens_until_forced() {
        let t = test_store().await;
        let s = &t.store;
        let created = s.create(pod("web", "n1", Some(30)), None).await.unwrap();
        let first = t.delete("web", None).await.unwrap();
        assert_eq!(first.metadata().deletion_grace_period_seconds, Some(30));

        // Longer or equal: nothing changes, nothing is written.
        for longer in [None, Some(30), Some(60)] {
            let again = t.delete("web", longer).await.unwrap();
            assert_eq!(
                again, first,
                "a delete with grace {longer:?} changed the pod"
            );
        }
        // Shorter: the period and the due time move.
        let shorter = t.delete("web", Some(10)).await.unwrap();
        assert_eq!(shorter.metadata().deletion_grace_period_seconds, Some(10));
        assert!(
            (9..=11).contains(&due_in(&shorter)),
            "{}",
            shorter.metadata().deletion_timestamp
        );

        // The agent reports status while it stops the pod: the pod stays.
        let mut running = shorter.clone();
        running.status.get_or_insert_default().phase = "Running".into();
        let running = s.update(running, true, None).await.unwrap();
        assert_eq!(running.status.as_ref().unwrap().phase, "Running");
        let kept = t
            .get("web")
            .await
            .expect("a status write keeps a terminating pod");
        assert_eq!(kept.metadata().deletion_grace_period_seconds, Some(10));

        // The agent's delete: grace 0 with the uid precondition.
        let wrong = s
            .delete::<api::Pod>(
                "default",
                "web",
                Some(api::Preconditions {
                    uid: "someone-else".into(),
                    ..Default::default()
                }),
                "",
                Some(0),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(wrong.reason, Reason::Conflict);
        assert!(t.get("web").await.is_some());
        let uid = Some(api::Preconditions {
            uid: created.metadata().uid.clone(),
            ..Default::default()
        });
        s.delete::<api::Pod>("default", "web", uid, "", Some(0), None)
            .await
            .unwrap();
        assert!(t.get("web").await.is_none(), "grace 0 removes it");

        // Force on a pod that was never deleted: gone at once.
        s.create(pod("forced", "n1", Some(30)), None).await.unwrap();
        t.delete("forced", Some(0)).await.unwrap();
        assert!(t.get("forced").await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finalizers_and_grace_periods_both_hold_a_pod() {
        let t = test_store().await;
        let s = &t.store;
        let mut held = pod("held", "n1", Some(30));
        held.metadata_mut().finalizers = vec!["example.com/hold".into()];
        s.create(held, None).await.unwrap();
        let marked = t.delete("held", None).await.unwrap();
        assert_eq!(marked.metadata().deletion_grace_period_seconds, Some(30));

        // The finalizer goes first: the pod waits for its agent.
        let mut released = marked.clone();
        released.metadata_mut().finalizers.clear();
        s.update(released, false, None).await.unwrap();
        let still = t
            .get("held")
            .await
            .expect("graceful deletion still under way");
        assert!(still.metadata().finalizers.is_empty());
        t.delete("held", Some(0)).await.unwrap();
        assert!(t.get("held").await.is_none());

        // Forced first: the pod waits for its finalizer.
        let mut held = pod("held2", "n1", Some(30));
        held.metadata_mut().finalizers = vec!["example.com/hold".into()];
        s.create(held, None).await.unwrap();
        t.delete("held2", None).await.unwrap();
        let forced = t.delete("held2", Some(0)).await.unwrap();
        assert_eq!(forced.metadata().deletion_grace_period_seconds, Some(0));
        let mut released = t.get("held2").await.expect("held by its finalizer");
        released.metadata_mut().finalizers.clear();
        s.update(released, false, None).await.unwrap();
        assert!(
            t.get("held2").await.is_none(),
            "the last finalizer removes it"
        );
    }

    #[tokio::test]
    async fn listed_bytes_decode_to_the_listed_objects() {
        let t = test_store().await;
        let s = &t.store;
        for (name, app) in [("a", "web"), ("b", "db"), ("c", "web")] {
            let mut p = pod(name, "n1", None);
            p.metadata_mut().labels.insert("app".into(), app.into());
            s.create(p, None).await.unwrap();
        }
        // A later revision for one of them: each keeps its own.
        let mut b = s.get::<api::Pod>("default", "b", false).await.unwrap();
        b.metadata_mut()
            .annotations
            .insert("touched".into(), "yes".into());
        s.update(b, false, None).await.unwrap();

        for (label, want) in [("", vec!["a", "b", "c"]), ("app=web", vec!["a", "c"])] {
            let (labels, fields) = parse_selectors(label, "").unwrap();
            let (objects, revision) = s
                .list::<api::Pod>("default", &labels, &fields, false)
                .await
                .unwrap();
            let (bytes, encoded_revision) = s
                .list_encoded::<api::Pod>("default", &labels, &fields, false)
                .await
                .unwrap();
            assert_eq!(encoded_revision, revision);
            let decoded: Vec<api::Pod> = bytes
                .iter()
                .map(|b| api::Pod::decode(b.as_slice()).expect("a listed pod decodes"))
                .collect();
            assert_eq!(decoded, objects, "selector {label:?}");
            let names: Vec<&str> = decoded.iter().map(|p| p.metadata().name.as_str()).collect();
            assert_eq!(names, want, "selector {label:?}");
            assert!(decoded.iter().all(
                |p| !p.metadata().resource_version.is_empty() && p.type_meta() == ("v1", "Pod")
            ));
        }
        let revisions: Vec<u64> = s
            .list::<api::Pod>(
                "default",
                &LabelSelector::everything(),
                &FieldSelector::everything(),
                false,
            )
            .await
            .unwrap()
            .0
            .iter()
            .map(|p| p.metadata().resource_version.parse().unwrap())
            .collect();
        assert!(
            revisions[1] > revisions[0] && revisions[1] > revisions[2],
            "{revisions:?}"
        );
    }
}
