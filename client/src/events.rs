//! Recording Events: what a component did or could not do to an object, so
//! `rafter describe` tells the story (`ScalingReplicaSet`,
//! `FailedScheduling`, `NodeNotReady`, ...).
//!
//! Events are best effort, as in Kubernetes: a failure to record one is
//! logged and never fails the work it describes. A repeat of the same
//! reason and message for the same object within a short window bumps the
//! first event's count instead of writing a new object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rafter_proto::age::format_rfc3339_utc;
use rafter_proto::api;
use rafter_proto::object::Object;

use crate::Client;

/// Normal or Warning, as Kubernetes spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// How long a repeated event is folded into the first one's count.
const FOLD_WINDOW: Duration = Duration::from_secs(600);

/// Writes Events on behalf of one component. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Recorder {
    client: Client,
    component: String,
    /// (involved object uid, reason, message) -> (event namespace/name, when first recorded)
    recent: Arc<Mutex<HashMap<(String, String, String), (String, String, Instant)>>>,
}

impl Recorder {
    pub fn new(client: Client, component: &str) -> Self {
        Recorder {
            client,
            component: component.to_string(),
            recent: Arc::default(),
        }
    }

    /// Records an event about `obj`; never fails (errors are logged).
    pub async fn record<K: Object>(&self, obj: &K, kind: EventType, reason: &str, message: &str) {
        if let Err(e) = self.try_record(obj, kind, reason, message).await {
            tracing::debug!(reason, error = %e, "could not record an event");
        }
    }

    async fn try_record<K: Object>(
        &self,
        obj: &K,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), crate::Error> {
        let m = obj.metadata();
        let namespace = if m.namespace.is_empty() {
            "default".to_string()
        } else {
            m.namespace.clone()
        };
        let fold_key = (m.uid.clone(), reason.to_string(), message.to_string());
        let previous = {
            let mut recent = self.recent.lock().expect("recorder lock");
            recent.retain(|_, (_, _, at)| at.elapsed() < FOLD_WINDOW);
            recent.get(&fold_key).cloned()
        };
        let now = format_rfc3339_utc(std::time::SystemTime::now());
        if let Some((ns, name, _)) = previous
            && let Ok(mut ev) = self.client.get_object::<api::Event>(&ns, &name).await
        {
            ev.count += 1;
            ev.last_timestamp = now;
            ev.message = message.to_string();
            self.client.update(&ev).await?;
            return Ok(());
        }
        let mut ev = api::Event {
            involved_object: Some(api::ObjectReference {
                kind: K::INFO.kind.to_string(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                uid: m.uid.clone(),
                api_version: K::INFO.api_version.to_string(),
                resource_version: m.resource_version.clone(),
                field_path: String::new(),
            }),
            reason: reason.to_string(),
            message: message.to_string(),
            source: Some(api::EventSource {
                component: self.component.clone(),
                host: String::new(),
            }),
            first_timestamp: now.clone(),
            last_timestamp: now,
            count: 1,
            r#type: kind.as_str().to_string(),
            ..Default::default()
        };
        let meta = ev.metadata_mut();
        meta.namespace = namespace;
        meta.name = format!("{}.{:016x}", m.name, rand::random::<u64>());
        let created = self.client.create(&ev).await?;
        let cm = created.metadata();
        self.recent.lock().expect("recorder lock").insert(
            fold_key,
            (cm.namespace.clone(), cm.name.clone(), Instant::now()),
        );
        Ok(())
    }
}
