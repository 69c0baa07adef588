//! The request deadline (`--request-timeout`, PROTOCOL.md §3 "HTTP limits"): a client that
//! sends its body too slowly is answered 408 and its connection closed.
//!
//! hyper bounds the head (`header_read_timeout`, see `serve`); this middleware bounds the
//! body. The deadline is one instant for the whole body, set when the head has arrived: a
//! client that trickles a byte now and then does not push it back, as a per-read idle timer
//! (tower-http's `RequestBodyTimeout`) would let it. A body that is still arriving at the deadline ends with [`RequestTimedOut`],
//! which the body reader answers with 408 `request_timeout`; the response then carries
//! `Connection: close`, since the rest of the body will never be read.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use tokio::time::Sleep;

use crate::app::AppState;

/// The error a request body ends with when its deadline passes before it has all arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestTimedOut(pub(crate) Duration);

impl fmt::Display for RequestTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} (--request-timeout)",
            humantime::format_duration(self.0)
        )
    }
}

impl std::error::Error for RequestTimedOut {}

impl RequestTimedOut {
    /// The deadline error somewhere in `error`'s chain of sources, if there is one.
    pub(crate) fn find(error: &(dyn std::error::Error + 'static)) -> Option<RequestTimedOut> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(timed_out) = error.downcast_ref::<RequestTimedOut>() {
                return Some(*timed_out);
            }
            next = error.source();
        }
        None
    }
}

/// Middleware on the whole router: gives the request body a deadline `--request-timeout`
/// from now, and closes the connection after a response to a body that missed it.
pub(crate) async fn limit_request_time(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let timeout = state.request_timeout();
    let missed = Arc::new(AtomicBool::new(false));
    let body_missed = missed.clone();
    let request = request.map(|body| Body::new(DeadlineBody::new(body, timeout, body_missed)));
    let mut response = next.run(request).await;
    if missed.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that fails with [`RequestTimedOut`] once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
    /// Set when the deadline ended the body.
    missed: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration, missed: Arc<AtomicBool>) -> DeadlineBody {
        DeadlineBody {
            inner,
            // `sleep` (not `sleep_until(now + timeout)`): it copes with a timeout too large to add.
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            missed,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        // What has arrived is handed on: only waiting for more is bounded. A client cannot
        // outrun the deadline this way: it would have to keep data ready at every read, and
        // the body limit (1 MiB) ends that quickly.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.missed.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(RequestTimedOut(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body whose client never sends another byte.
    struct Stalled;

    impl HttpBody for Stalled {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_misses_its_deadline_fails_with_request_timed_out() {
        let missed = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody::new(
            Body::new(Stalled),
            Duration::from_millis(300),
            missed.clone(),
        );
        let error = body.collect().await.unwrap_err();
        let found = RequestTimedOut::find(&error).expect("the deadline error");
        assert_eq!(found, RequestTimedOut(Duration::from_millis(300)));
        assert!(found.to_string().contains("300ms"), "{found}");
        assert!(missed.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_in_time_passes_unchanged() {
        let missed = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody::new(
            Body::from("abc"),
            Duration::from_millis(300),
            missed.clone(),
        );
        tokio::time::sleep(Duration::from_secs(1)).await; // paused time: the deadline passes
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abc", "a body that has all arrived is not cut");
        assert!(!missed.load(Ordering::Relaxed));
        let other = std::io::Error::other("no deadline here");
        assert_eq!(RequestTimedOut::find(&other), None);
    }
}
