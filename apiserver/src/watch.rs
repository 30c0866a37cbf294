//! Object watches: the store's revision-ordered watch on a kind's prefix,
//! turned into ADDED / MODIFIED / DELETED events of decoded objects, with
//! selectors applied to both sides of each change (an object that stops
//! matching is DELETED for this watcher, one that starts matching is
//! ADDED), and BOOKMARKs from the store's progress notices.

use std::sync::Arc;

use rafter_proto::api::{WatchEvent, WatchRequest};
use rafter_proto::kv;
use rafter_proto::object::Object;
use rafter_proto::selector::{FieldSelector, LabelSelector};
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::{ApiError, Result};
use crate::store::{Store, decode, parse_revision, parse_selectors, selected};

type Out = mpsc::Sender<std::result::Result<WatchEvent, Status>>;

/// Serves one object watch until the client goes away.
pub async fn serve<K: Object>(store: Store, req: WatchRequest, bookmark_ms: u64, out: Out) {
    if let Err(e) = run::<K>(&store, req, bookmark_ms, &out).await {
        let _ = out.send(Err(e.with_leader(&store).into())).await;
    }
}

fn event<K: Object>(kind: &str, obj: &K) -> WatchEvent {
    WatchEvent {
        r#type: kind.to_string(),
        object: obj.encode_to_vec(),
        resource_version: obj.metadata().resource_version.clone(),
    }
}

async fn run<K: Object>(
    store: &Store,
    req: WatchRequest,
    bookmark_ms: u64,
    out: &Out,
) -> Result<()> {
    let (labels, fields) = parse_selectors(&req.label_selector, &req.field_selector)?;
    let mut from = parse_revision(&req.resource_version)?;
    if from == 0 {
        // "From now": the current objects as ADDED, then their changes.
        let (items, revision) = store
            .list::<K>(&req.namespace, &labels, &fields, false)
            .await?;
        for obj in &items {
            if out.send(Ok(event("ADDED", obj))).await.is_err() {
                return Ok(());
            }
        }
        from = revision;
    }
    let (tx, mut rx) = mpsc::channel(256);
    let kv_req = kv::WatchRequest {
        key: K::INFO.prefix(&req.namespace).into_bytes(),
        prefix: true,
        start_revision: from + 1,
        prev_kv: true,
        progress_notify_ms: if req.allow_bookmarks { bookmark_ms } else { 0 },
    };
    tokio::spawn(rafter_raft_store::watch::serve(
        Arc::clone(&store.node),
        kv_req,
        tx,
    ));
    loop {
        let resp = tokio::select! {
            r = rx.recv() => r,
            _ = out.closed() => return Ok(()),
        };
        let resp = match resp {
            None => return Err(rafter_raft_store::Error::ShuttingDown.into()),
            Some(Err(e)) => return Err(ApiError::from(e)),
            Some(Ok(r)) => r,
        };
        if resp.events.is_empty() {
            let revision = resp.header.map(|h| h.revision).unwrap_or_default();
            let bookmark = WatchEvent {
                r#type: "BOOKMARK".into(),
                object: Vec::new(),
                resource_version: revision.to_string(),
            };
            if req.allow_bookmarks && out.send(Ok(bookmark)).await.is_err() {
                return Ok(());
            }
            continue;
        }
        for e in &resp.events {
            if let Some(ev) = translate::<K>(e, &labels, &fields)?
                && out.send(Ok(ev)).await.is_err()
            {
                return Ok(());
            }
        }
    }
}

fn translate<K: Object>(
    e: &kv::Event,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Result<Option<WatchEvent>> {
    let Some(kv) = &e.kv else { return Ok(None) };
    let prev: Option<K> = e.prev_kv.as_ref().map(decode).transpose()?;
    let prev_selected = prev.as_ref().is_some_and(|p| selected(p, labels, fields));
    if e.r#type == kv::event::EventType::Delete as i32 {
        let Some(mut last) = prev else {
            return Ok(None);
        };
        if !prev_selected {
            return Ok(None);
        }
        last.metadata_mut().resource_version = kv.mod_revision.to_string();
        return Ok(Some(event("DELETED", &last)));
    }
    let obj: K = decode(kv)?;
    let now_selected = selected(&obj, labels, fields);
    Ok(match (prev_selected, now_selected) {
        (_, true) if prev.is_none() => Some(event("ADDED", &obj)),
        (true, true) => Some(event("MODIFIED", &obj)),
        (false, true) => Some(event("ADDED", &obj)),
        (true, false) => Some(event("DELETED", &obj)),
        (false, false) => None,
    })
}
