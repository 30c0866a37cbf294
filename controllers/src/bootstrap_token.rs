//! The token cleaner: deletes bootstrap tokens (`rafter token create`)
//! once their expiration has passed, as Kubernetes' tokencleaner does. The
//! API server already refuses an expired token; deleting it keeps
//! `rafter token list` short and the secret out of the store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rafter_client::informer::{Cache, Informers};
use rafter_client::{Client, DeleteOptions, Error};
use rafter_proto::api;
use rafter_proto::object::Object;
use rafter_proto::wellknown::{BOOTSTRAP_TOKEN_TYPE, SYSTEM_NAMESPACE, token_expiration};
use tokio_util::sync::CancellationToken;

use crate::informer_events::{forward, object};
use crate::runtime::{self, Action, Key, Queue, Reconciler};

/// The token cleaner.
pub struct TokenCleaner {
    client: Client,
    secrets: Cache<api::Secret>,
}

/// What to do with a token Secret at `now`: nothing (not a token, or never
/// expires), look again after a while, or delete it.
pub fn due(secret: &api::Secret, now: SystemTime) -> Option<Duration> {
    if secret.r#type != BOOTSTRAP_TOKEN_TYPE {
        return None;
    }
    let at = token_expiration(secret)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl Reconciler for TokenCleaner {
    fn name(&self) -> &'static str {
        "token-cleaner"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        let Some(secret) = self.secrets.get(&key.0, &key.1) else {
            return Ok(Action::Done);
        };
        match due(&secret, SystemTime::now()) {
            None => Ok(Action::Done),
            Some(left) if !left.is_zero() => Ok(Action::RequeueAfter(left)),
            Some(_) => {
                let m = secret.metadata();
                let options = DeleteOptions::with_uid(&m.uid);
                match self
                    .client
                    .delete_object::<api::Secret>(&m.namespace, &m.name, &options)
                    .await
                {
                    Ok(_) => tracing::info!(token = %m.name, "expired bootstrap token deleted"),
                    Err(e) if e.is_reason("NotFound") || e.is_reason("Conflict") => {}
                    Err(e) => return Err(e),
                }
                Ok(Action::Done)
            }
        }
    }
}

/// Runs the token cleaner until `shutdown`.
pub async fn run(client: Client, informers: &Informers, shutdown: CancellationToken) {
    let (secrets, events) = informers.start::<api::Secret>(SYSTEM_NAMESPACE, "");
    let queue = Queue::new();
    let q = queue.clone();
    forward(events, shutdown.clone(), move |e| {
        q.add(runtime::key_of(object(&e)));
    });
    tokio::select! {
        _ = secrets.wait_synced() => {}
        _ = shutdown.cancelled() => return,
    }
    let controller = TokenCleaner { client, secrets };
    runtime::run(Arc::new(controller), queue, 1, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rafter_proto::age::format_rfc3339_utc;

    fn token(expires: Option<SystemTime>) -> api::Secret {
        let mut s = api::Secret {
            r#type: BOOTSTRAP_TOKEN_TYPE.into(),
            ..Default::default()
        };
        if let Some(at) = expires {
            s.data
                .insert("expiration".into(), format_rfc3339_utc(at).into_bytes());
        }
        s
    }

    #[test]
    fn only_expired_tokens_are_due() {
        let now = SystemTime::now();
        assert_eq!(due(&token(None), now), None);
        assert_eq!(
            due(&token(Some(now - Duration::from_secs(1))), now),
            Some(Duration::ZERO)
        );
        let left = due(&token(Some(now + Duration::from_secs(60))), now).unwrap();
        assert!(left > Duration::from_secs(58));
        let mut other = token(Some(now - Duration::from_secs(1)));
        other.r#type = "Opaque".into();
        assert_eq!(due(&other, now), None);
    }
}
