//! `POST /api/v1/videos/scan`: count the video files of a directory in the background.
//!
//! The handler checks the path (403 outside the scan roots, 400 when it is not a directory),
//! publishes `scan_started` and answers 202 `{"job_id"}`. A task then walks the directory on a
//! blocking thread and publishes, all with the request's correlation id:
//!
//! ```text
//! scan_started {"path"}                                   (before the 202)
//! job_progress {"job_id","progress":0.0,"status":"running"}
//! job_progress {"job_id","progress":p,"status":"running"}  (0 < p < 1, every 10 % or more)
//! scan_completed {"path","video_count"}
//! job_progress {"job_id","progress":1.0,"status":"completed"}   last
//! ```
//!
//! or, when the directory cannot be read, `job_progress` `{..,"status":"failed","error"}` last.
//! Progress is the share of the directory's own entries walked so far. Symlinked directories
//! are not followed (no loops, no escape from a scan root); a subdirectory that cannot be read
//! is skipped.

use std::future::Future;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ferret_ws_core::{types, Event, EventId, EventType};

use crate::hub::PublishError;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Semaphore};

use crate::app::AppState;
use crate::body::JsonObject;
use crate::correlation::CorrelationId;
use crate::errors::ApiError;
use crate::hub::HubHandle;

/// Video files are recognised by these extensions, compared without case (PROTOCOL.md §5).
pub const VIDEO_EXTENSIONS: [&str; 13] = [
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "wmv", "flv", "mpg", "mpeg", "ts", "mts", "m2ts",
];

/// How many scans walk at once; more wait their turn.
pub(crate) const MAX_CONCURRENT_SCANS: usize = 4;

/// Which directories may be scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanPolicy {
    /// None: the server is reachable from other hosts and has no `--scan-root`.
    Off,
    /// Any directory (a loopback bind without `--scan-root`).
    Anywhere,
    /// These directories (canonical) and everything below them.
    Roots(Vec<PathBuf>),
}

impl ScanPolicy {
    fn check(&self, resolved: &Path) -> Result<(), ApiError> {
        match self {
            ScanPolicy::Anywhere => Ok(()),
            ScanPolicy::Off => Err(ApiError::forbidden(
                "scan_roots_required",
                "scanning needs --scan-root when the server listens beyond loopback",
            )),
            ScanPolicy::Roots(roots) if roots.iter().any(|root| resolved.starts_with(root)) => {
                Ok(())
            }
            ScanPolicy::Roots(_) => Err(ApiError::forbidden(
                "path_not_allowed",
                format!("{} is not under a scan root", resolved.display()),
            )),
        }
    }
}

#[derive(Deserialize)]
struct ScanRequest {
    path: String,
    recursive: Option<bool>,
}

/// `{"path": str, "recursive": bool}` → 202 `{"job_id"}`.
pub(crate) async fn start(
    State(state): State<AppState>,
    cid: CorrelationId,
    body: JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: ScanRequest = body.parse()?;
    if request.path.is_empty() || request.path.contains('\0') {
        return Err(ApiError::bad_request(
            "invalid_path",
            "path must be a directory",
        ));
    }
    let resolved = resolve(Path::new(&request.path));
    state.scan_policy().check(&resolved)?;
    if !resolved.is_dir() {
        return Err(ApiError::bad_request(
            "not_a_directory",
            format!("{} is not a directory", resolved.display()),
        ));
    }
    let job = Job {
        id: uuid::Uuid::new_v4().to_string(),
        path: resolved,
        recursive: request.recursive.unwrap_or(true),
        correlation_id: cid,
    };
    let started = job.event(types::SCAN_STARTED, json!({"path": job.path_text()}));
    state
        .hub()
        .publish(started)
        .await
        .map_err(super::publish_failed)?;
    tracing::debug!(job_id = %job.id, path = %job.path.display(), correlation_id = %job.correlation_id, "scan started");
    let job_id = job.id.clone();
    tokio::spawn(job.run(state.hub().clone(), state.scan_permits().clone()));
    Ok((StatusCode::ACCEPTED, Json(json!({"job_id": job_id}))))
}

/// The absolute path with symlinks resolved when it exists, else with `.` and `..` removed,
/// so that the scan-root check sees where the path really leads.
fn resolve(path: &Path) -> PathBuf {
    if let Ok(canonical) = path.canonicalize() {
        return canonical;
    }
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut clean = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

/// Publishes events; the hub in the server, a recorder in tests.
pub(crate) trait Publisher: Send + Sync + 'static {
    /// Publishes and resolves once the event is sequenced.
    fn publish(&self, event: Event) -> impl Future<Output = Result<EventId, PublishError>> + Send;
}

impl Publisher for HubHandle {
    fn publish(&self, event: Event) -> impl Future<Output = Result<EventId, PublishError>> + Send {
        HubHandle::publish(self, event)
    }
}

/// One scan, from the 202 on.
pub(crate) struct Job {
    id: String,
    path: PathBuf,
    recursive: bool,
    correlation_id: CorrelationId,
}

impl Job {
    /// Walks the directory and publishes the job's events in order; stops early if the hub
    /// refuses events (it is shutting down).
    pub(crate) async fn run(self, hub: impl Publisher, permits: Arc<Semaphore>) {
        // The semaphore is never closed, so a permit always comes.
        let _permit = permits.acquire_owned().await;
        if let Err(e) = self.execute(&hub).await {
            tracing::debug!(job_id = %self.id, error = %e, "scan events stopped");
        }
    }

    async fn execute(&self, hub: &impl Publisher) -> Result<(), PublishError> {
        hub.publish(self.progress(0.0, "running")).await?;
        let (tx, mut rx) = mpsc::channel(16);
        let (path, recursive) = (self.path.clone(), self.recursive);
        let walk = tokio::task::spawn_blocking(move || {
            count_videos(&path, recursive, |progress| {
                // The receiver lives until the walk ends; a closed channel only loses progress.
                let _ = tx.blocking_send(progress);
            })
        });
        let mut last = 0.0;
        while let Some(progress) = rx.recv().await {
            last = progress;
            hub.publish(self.progress(progress, "running")).await?;
        }
        let outcome = walk
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("scan task failed: {e}"))));
        match outcome {
            Ok(count) => {
                tracing::debug!(job_id = %self.id, video_count = count, "scan completed");
                let done = json!({"path": self.path_text(), "video_count": count});
                hub.publish(self.event(types::SCAN_COMPLETED, done)).await?;
                hub.publish(self.progress(1.0, "completed")).await?;
            }
            Err(e) => {
                tracing::debug!(job_id = %self.id, error = %e, "scan failed");
                let failed = json!({"job_id": self.id, "progress": last, "status": "failed", "error": e.to_string()});
                hub.publish(self.event(types::JOB_PROGRESS, failed)).await?;
            }
        }
        Ok(())
    }

    fn path_text(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    fn progress(&self, progress: f64, status: &str) -> Event {
        self.event(
            types::JOB_PROGRESS,
            json!({"job_id": self.id, "progress": progress, "status": status}),
        )
    }

    fn event(&self, name: &str, payload: Value) -> Event {
        // Only called with the well-known names and object literals.
        let event_type = EventType::new(name).expect("a well-known event type");
        let payload = match payload {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Event::new(event_type)
            .with_payload(payload)
            .with_correlation_id(self.correlation_id.as_str())
    }
}

/// Counts the video files in `root` (and below, if `recursive`). Calls `progress` with the
/// share of `root`'s entries done, at most once per 10 %, never with 1.0. Fails only when
/// `root` itself cannot be read.
pub(crate) fn count_videos(
    root: &Path,
    recursive: bool,
    mut progress: impl FnMut(f64),
) -> io::Result<u64> {
    let entries = std::fs::read_dir(root)?.collect::<io::Result<Vec<_>>>()?;
    let total = entries.len();
    let mut count = 0;
    let mut reported = 0.0;
    for (done, entry) in entries.iter().enumerate() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() && recursive => count += count_tree(&path),
            // A directory never passes: `is_video_file` wants a file.
            Ok(_) if is_video_file(&path) => count += 1,
            _ => {}
        }
        let share = (done + 1) as f64 / total as f64;
        if share < 1.0 && share - reported >= 0.1 {
            reported = share;
            progress(share);
        }
    }
    Ok(count)
}

/// Counts the video files below `dir`, skipping what cannot be read.
fn count_tree(dir: &Path) -> u64 {
    let mut count = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            tracing::debug!(dir = %dir.display(), "scan skipped an unreadable directory");
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(_) if is_video_file(&path) => count += 1,
                _ => {}
            }
        }
    }
    count
}

/// A regular file (or a symlink to one) with a video extension.
fn is_video_file(path: &Path) -> bool {
    let video = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|ext| VIDEO_EXTENSIONS.iter().any(|v| v.eq_ignore_ascii_case(ext)));
    video && path.is_file()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use ferret_ws_core::{Epoch, Seq};

    #[derive(Default, Clone)]
    struct Recorder(Arc<Mutex<Vec<Event>>>);

    impl Publisher for Recorder {
        async fn publish(&self, event: Event) -> Result<EventId, PublishError> {
            let mut events = self.0.lock().unwrap();
            events.push(event);
            Ok(EventId {
                epoch: Epoch(1),
                seq: Seq(events.len() as u64),
            })
        }
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in ["a.mp4", "B.MKV", "notes.txt", "clip.m2ts", "noext"] {
            std::fs::write(root.join(file), b"x").unwrap();
        }
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("sub/c.webm"), b"x").unwrap();
        std::fs::write(root.join("sub/deeper/d.ts"), b"x").unwrap();
        std::fs::create_dir(root.join("folder.mp4")).unwrap(); // a directory is not a video
        dir
    }

    #[test]
    fn counts_video_files_by_extension() {
        let dir = tree();
        assert_eq!(count_videos(dir.path(), false, |_| {}).unwrap(), 3);
        let mut reports = Vec::new();
        assert_eq!(
            count_videos(dir.path(), true, |p| reports.push(p)).unwrap(),
            5
        );
        assert!(reports.windows(2).all(|w| w[0] < w[1]), "{reports:?}");
        assert!(reports.iter().all(|p| *p > 0.0 && *p < 1.0), "{reports:?}");
    }

    #[test]
    fn resolve_removes_dot_segments() {
        assert_eq!(
            resolve(Path::new("/no/such/dir/../x/./y")),
            PathBuf::from("/no/such/x/y")
        );
        let policy = ScanPolicy::Roots(vec![PathBuf::from("/srv/videos")]);
        assert!(policy
            .check(&resolve(Path::new("/srv/videos/../secrets")))
            .is_err());
        assert!(policy
            .check(&resolve(Path::new("/srv/videos/a/../b")))
            .is_ok());
        assert!(ScanPolicy::Off.check(Path::new("/")).is_err());
    }

    fn job(path: PathBuf) -> Job {
        Job {
            id: "job-1".into(),
            path,
            recursive: true,
            correlation_id: CorrelationId::parse(b"cid-1").unwrap().unwrap(),
        }
    }

    fn summary(events: &[Event]) -> Vec<(String, Value)> {
        events
            .iter()
            .map(|e| {
                assert_eq!(e.correlation_id(), Some("cid-1"));
                (
                    e.event_type().to_string(),
                    Value::Object(e.payload().clone()),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_scan_publishes_progress_then_completion_last() {
        let dir = tree();
        let recorder = Recorder::default();
        let job = job(dir.path().to_path_buf());
        let path = job.path_text();
        job.run(recorder.clone(), Arc::new(Semaphore::new(1))).await;
        let events = summary(&recorder.0.lock().unwrap());
        assert_eq!(
            events[0],
            (
                "job_progress".into(),
                json!({"job_id": "job-1", "progress": 0.0, "status": "running"})
            )
        );
        let n = events.len();
        assert_eq!(
            events[n - 2],
            (
                "scan_completed".into(),
                json!({"path": path, "video_count": 5})
            )
        );
        assert_eq!(
            events[n - 1],
            (
                "job_progress".into(),
                json!({"job_id": "job-1", "progress": 1.0, "status": "completed"})
            )
        );
        for (name, payload) in &events[1..n - 2] {
            assert_eq!(name, "job_progress");
            assert_eq!(payload["status"], "running");
        }
    }

    #[tokio::test]
    async fn an_unreadable_directory_fails_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::default();
        job(dir.path().join("gone"))
            .run(recorder.clone(), Arc::new(Semaphore::new(1)))
            .await;
        let events = summary(&recorder.0.lock().unwrap());
        assert_eq!(events.len(), 2);
        let (name, payload) = &events[1];
        assert_eq!(name, "job_progress");
        assert_eq!(payload["status"], "failed");
        assert_eq!(payload["job_id"], "job-1");
        assert!(
            payload["error"].as_str().unwrap().contains("No such file"),
            "{payload}"
        );
    }
}
