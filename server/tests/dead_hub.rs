//! A hub task that panics is noticed: the panic is logged with its message, publishing
//! answers 503 naming the hub, and `/health/ready` answers 503.

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferret_ws_core::HubConfig;
use ferret_ws_server::App;
use ferret_ws_tokio::{Runtime, Tokio};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// tokio, with a clock that panics once armed: the hub task reads it at every wake-up.
#[derive(Clone, Default)]
struct Breakable {
    armed: Arc<AtomicBool>,
}

impl Runtime for Breakable {
    type Sleep = <Tokio as Runtime>::Sleep;

    fn now(&self) -> Instant {
        if self.armed.load(Ordering::Relaxed) {
            panic!("injected: the clock broke");
        }
        Tokio.now()
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        Tokio.sleep_until(deadline)
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        Tokio.spawn(future);
    }
}

/// Log lines, collected.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn call(app: &App, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.router().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn publish() -> Request<Body> {
    Request::post("/api/v1/events")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"type":"render.done"}"#))
        .unwrap()
}

// One thread: the hub task logs through this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_panicking_hub_task_is_reported_not_hidden() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let runtime = Breakable::default();
    let hub = ferret_ws_tokio::start_on(runtime.clone(), HubConfig::default());
    let app = App::builder().hub(hub.clone()).build();
    let (status, _) = call(&app, publish()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "a healthy hub publishes");

    runtime.armed.store(true, Ordering::Relaxed);
    let (status, body) = call(&app, publish()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "hub_gone", "{body}");
    assert!(!hub.is_alive());

    let ready = Request::get("/health/ready")
        .header("host", "127.0.0.1")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&app, ready).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "hub_gone");

    let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("the hub task panicked") && log.contains("injected: the clock broke"),
        "the panic and its message are logged:\n{log}"
    );
}
