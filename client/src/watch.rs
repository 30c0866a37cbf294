//! [`WatchStream`]: a watch that outlives the master serving it.
//!
//! A gRPC watch stream ends when its master dies, restarts or is cut off.
//! `WatchStream` hides that: it remembers the next revision it owes the
//! caller, and when the stream breaks it opens a new one at another master
//! starting exactly there. Responses at revisions already delivered (a
//! master may resend the revision it was in the middle of) are dropped, so
//! the caller sees every revision exactly once, in increasing order.
//!
//! The stream is a small state machine driven by [`futures::stream::unfold`]:
//! *not connected* → open a stream (with the client's failover loop) →
//! *streaming* → on a break, back to *not connected*. It ends only on a
//! definite error: [`Error::Compacted`] when the revision it needs has been
//! compacted away, a definite server error, or [`Error::Unavailable`] when no
//! master accepted a watch for the client's overall timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use rafter_proto::kv::{RangeRequest, WatchRequest, WatchResponse};
use tonic::Streaming;

use crate::client::backoff;
use crate::error::{Outcome, classify};
use crate::{Client, Error};

/// The responses of a watch, one per revision that touched the watched key
/// or prefix, in revision order, each revision exactly once — across master
/// failures. Only responses carrying events are yielded.
///
/// A `start_revision` of 0 ("from now on") is pinned when the stream first
/// connects: the client reads the current revision `R` and watches from
/// `R + 1`, so that a reconnect before the first event loses nothing.
///
/// After an `Err` item the stream is finished and yields `None`.
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<WatchResponse, Error>> + Send>>,
    last: Arc<AtomicU64>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("last_revision", &self.last_revision())
            .finish_non_exhaustive()
    }
}

impl WatchStream {
    pub(crate) fn new(client: Client, request: WatchRequest) -> Self {
        let last = Arc::new(AtomicU64::new(0));
        let state = State {
            client,
            next_revision: request.start_revision,
            request,
            last: last.clone(),
            stream: None,
            breaks_without_progress: 0,
            finished: false,
        };
        WatchStream {
            inner: Box::pin(futures::stream::unfold(state, State::step)),
            last,
        }
    }

    /// The revision of the last response yielded, 0 before the first. To
    /// continue after the stream ended with `Unavailable`, watch again from
    /// `last_revision() + 1`.
    pub fn last_revision(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchResponse, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct State {
    client: Client,
    request: WatchRequest,
    /// The first revision not yet delivered; 0 until "from now on" is pinned.
    next_revision: u64,
    /// Shared with [`WatchStream::last_revision`].
    last: Arc<AtomicU64>,
    /// The open stream and the index of the endpoint serving it.
    stream: Option<(Streaming<WatchResponse>, usize)>,
    /// Streams that broke since the last delivered response; after a full
    /// round of them, reconnecting pauses briefly.
    breaks_without_progress: u32,
    finished: bool,
}

impl State {
    async fn step(mut self) -> Option<(Result<WatchResponse, Error>, State)> {
        loop {
            if self.finished {
                return None;
            }
            let Some((stream, endpoint)) = self.stream.as_mut() else {
                if let Err(e) = self.connect().await {
                    self.finished = true;
                    return Some((Err(e), self));
                }
                continue;
            };
            let endpoint = *endpoint;
            let reason = match stream.message().await {
                Ok(Some(resp)) => {
                    let Some(revision) = revision_of(&resp) else {
                        // No events: a "created" or progress notice. Not a
                        // revision the caller is owed; skip it.
                        continue;
                    };
                    if revision < self.next_revision {
                        continue; // Already delivered before a reconnect.
                    }
                    self.next_revision = revision + 1;
                    self.last.store(revision, Ordering::Relaxed);
                    self.breaks_without_progress = 0;
                    return Some((Ok(resp), self));
                }
                Ok(None) => "the master ended the stream".to_string(),
                Err(status) => match classify(status, self.next_revision) {
                    Outcome::Fail(e) => {
                        self.finished = true;
                        let e = e.answered_by(&self.client.endpoint_name(endpoint));
                        return Some((Err(e), self));
                    }
                    Outcome::Retry(reason) => reason,
                },
            };
            tracing::debug!(
                endpoint = self.client.endpoint_name(endpoint),
                %reason,
                next_revision = self.next_revision,
                "watch stream broke; resuming at another master"
            );
            self.stream = None;
            self.client.endpoint_failed(endpoint);
            self.breaks_without_progress += 1;
            let n = self.client.endpoint_count() as u32;
            if self.breaks_without_progress.is_multiple_of(n) {
                tokio::time::sleep(backoff(self.breaks_without_progress / n)).await;
            }
        }
    }

    /// Opens a stream at `next_revision`, pinning "from now on" first.
    async fn connect(&mut self) -> Result<(), Error> {
        if self.next_revision == 0 {
            // A cheap linearizable read for the current revision. Point read
            // of the watched key (or of "\0" for a watch on everything,
            // since an empty key may be refused), counting only.
            let key = if self.request.key.is_empty() {
                vec![0]
            } else {
                self.request.key.clone()
            };
            let resp = self
                .client
                .range(RangeRequest {
                    key,
                    count_only: true,
                    limit: 1,
                    ..Default::default()
                })
                .await?;
            self.next_revision = resp.header.map_or(0, |h| h.revision) + 1;
        }
        let request = WatchRequest {
            start_revision: self.next_revision,
            ..self.request.clone()
        };
        self.stream = Some(self.client.open_watch(request).await?);
        Ok(())
    }
}

/// The revision a response reports events for: its header's revision, or
/// when that is missing the events' own modification revision. `None` for a
/// response without events.
fn revision_of(resp: &WatchResponse) -> Option<u64> {
    if resp.events.is_empty() {
        return None;
    }
    match resp.header.as_ref().map(|h| h.revision) {
        Some(r) if r > 0 => Some(r),
        _ => resp
            .events
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
            .max(),
    }
}

#[cfg(test)]
mod tests {
    use rafter_proto::kv::{Event, KeyValue, ResponseHeader};

    use super::*;

    fn event(mod_revision: u64) -> Event {
        Event {
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                mod_revision,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn revision_comes_from_the_header() {
        let resp = WatchResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            events: vec![event(7)],
            ..Default::default()
        };
        assert_eq!(revision_of(&resp), Some(7));
    }

    #[test]
    fn revision_falls_back_to_the_events() {
        let resp = WatchResponse {
            events: vec![event(4), event(4)],
            ..Default::default()
        };
        assert_eq!(revision_of(&resp), Some(4));
    }

    #[test]
    fn responses_without_events_have_no_revision() {
        let resp = WatchResponse {
            header: Some(ResponseHeader {
                revision: 9,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(revision_of(&resp), None);
    }
}
