//! Turning an informer's change stream into work-queue keys: each
//! controller says which keys a change concerns, this runs the loop.

use rafter_client::informer::{Event, Events};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Calls `on_event` for every change from `rx` until `shutdown`.
pub fn forward<K: Send + Sync + 'static>(
    mut rx: Events<K>,
    shutdown: CancellationToken,
    mut on_event: impl FnMut(Event<K>) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                _ = shutdown.cancelled() => return,
            };
            match event {
                Some(e) => on_event(e),
                None => return,
            }
        }
    })
}

/// The object an event is about (its new state, or its last one).
pub fn object<K>(event: &Event<K>) -> &K {
    match event {
        Event::Applied(o) | Event::Deleted(o) => o,
    }
}
