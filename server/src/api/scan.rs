//! `POST /api/v1/videos/scan`: count the video files of a directory in the background.
//!
//! The handler takes one of the `--max-scan-jobs` job slots (429 with `Retry-After` when none
//! is free), then, on a blocking thread, resolves the path and judges only where it really
//! leads: 400 when it does not resolve to an existing directory, 403 when the resolved path is
//! outside the scan roots. No message names the resolved path or a link's target. The same
//! blocking step opens the directory relative to its scan root, so that nothing swapped in
//! afterwards can lead the walk out of it (see `walk`). The handler then publishes
//! `scan_started` and answers 202 `{"job_id"}`. A task waits for one of
//! [`MAX_CONCURRENT_SCANS`] walkers, walks the directory on a blocking thread and publishes,
//! all with the request's correlation id:
//!
//! ```text
//! scan_started {"path"}                                   (before the 202)
//! job_progress {"job_id","progress":0.0,"status":"running"}
//! job_progress {"job_id","progress":p,"status":"running"}  (0 < p < 1, every 10 % or more)
//! scan_completed {"path","video_count"}
//! job_progress {"job_id","progress":1.0,"status":"completed"}   last
//! ```
//!
//! or, when the directory cannot be read or the walk passes `--scan-max-entries` directory
//! entries or `--scan-timeout`, `job_progress` `{..,"status":"failed","error"}` last, the
//! error naming the limit. Progress is the share of the directory's own entries walked so
//! far. Symlinks are neither followed nor counted; a subdirectory that cannot be read is
//! skipped. The job slot is held from the request until the last event is published.

mod walk;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use ferret_ws_core::{types, Event, EventId, EventType};

use crate::publish::PublishFailure;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::app::AppState;
use crate::body::JsonObject;
use crate::correlation::CorrelationId;
use crate::errors::ApiError;

pub use walk::VIDEO_EXTENSIONS;
use walk::{count_videos, Budget};

/// How many scans walk at once; more wait their turn (and count toward `--max-scan-jobs`).
pub(crate) const MAX_CONCURRENT_SCANS: usize = 4;

/// The `Retry-After` of a 429 when every job slot is taken.
pub(crate) const SCAN_RETRY_AFTER: Duration = Duration::from_secs(5);

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
    /// The scan root that `resolved` (a canonical path) is under: `None` when any directory
    /// may be scanned. 403 when it is under none.
    fn root_of(&self, resolved: &Path) -> Result<Option<&Path>, ApiError> {
        match self {
            ScanPolicy::Anywhere => Ok(None),
            ScanPolicy::Off => Err(scan_roots_required()),
            ScanPolicy::Roots(roots) => roots
                .iter()
                .find(|root| resolved.starts_with(root))
                .map(|root| Some(root.as_path()))
                .ok_or_else(|| {
                    ApiError::forbidden("path_not_allowed", "the path is not under a scan root")
                }),
        }
    }
}

fn scan_roots_required() -> ApiError {
    ApiError::forbidden(
        "scan_roots_required",
        "scanning needs --scan-root when the server listens beyond loopback",
    )
}

/// The limits of the scan endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanLimits {
    /// Jobs waiting or running at once (`--max-scan-jobs`); more are answered 429.
    pub(crate) max_jobs: usize,
    /// Directory entries one walk may read (`--scan-max-entries`).
    pub(crate) max_entries: u64,
    /// How long one walk may take (`--scan-timeout`).
    pub(crate) timeout: Duration,
}

/// The scan endpoint's state: what may be scanned, the limits, and the job slots.
#[derive(Debug)]
pub(crate) struct Scans {
    policy: Arc<ScanPolicy>,
    limits: ScanLimits,
    /// One permit per job waiting or running, from the request to the job's last event.
    jobs: Arc<Semaphore>,
    /// One permit per walk in progress, so a burst of jobs cannot take every blocking thread.
    walkers: Arc<Semaphore>,
}

impl Scans {
    pub(crate) fn new(policy: ScanPolicy, limits: ScanLimits) -> Scans {
        let limits = ScanLimits {
            max_jobs: limits.max_jobs.max(1),
            max_entries: limits.max_entries.max(1),
            ..limits
        };
        Scans {
            policy: Arc::new(policy),
            limits,
            jobs: Arc::new(Semaphore::new(limits.max_jobs)),
            walkers: Arc::new(Semaphore::new(MAX_CONCURRENT_SCANS)),
        }
    }

    /// Jobs waiting or running now.
    pub(crate) fn jobs_in_flight(&self) -> usize {
        self.limits
            .max_jobs
            .saturating_sub(self.jobs.available_permits())
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
            "path must name a directory",
        ));
    }
    let scans = state.scans();
    if *scans.policy == ScanPolicy::Off {
        return Err(scan_roots_required());
    }
    let slot = scans.jobs.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_scan_jobs",
            format!(
                "{} scans are already waiting or running (--max-scan-jobs); retry later",
                scans.limits.max_jobs
            ),
        )
        .with_retry_after(SCAN_RETRY_AFTER)
    })?;
    let policy = scans.policy.clone();
    let path = PathBuf::from(request.path);
    let target = tokio::task::spawn_blocking(move || open_target(&policy, &path))
        .await
        .map_err(|e| ApiError::internal(format!("the path check failed: {e}")))??;
    let job = Job {
        id: uuid::Uuid::new_v4().to_string(),
        path: target.path,
        recursive: request.recursive.unwrap_or(true),
        correlation_id: cid,
        max_entries: scans.limits.max_entries,
        timeout: scans.limits.timeout,
    };
    let started = job.event(types::SCAN_STARTED, json!({"path": job.path_text()}));
    state
        .publisher()
        .publish(started, None)
        .await
        .map_err(super::publish_failed)?;
    tracing::debug!(job_id = %job.id, path = %job.path.display(), correlation_id = %job.correlation_id, "scan started");
    let job_id = job.id.clone();
    tokio::spawn(job.run(
        target.dir,
        state.publisher().clone(),
        scans.walkers.clone(),
        slot,
    ));
    Ok((StatusCode::ACCEPTED, Json(json!({"job_id": job_id}))))
}

/// A directory that passed the checks, opened.
#[derive(Debug)]
struct Target {
    /// Where the request's path leads (canonical), for the events.
    path: PathBuf,
    /// The directory, opened beneath its scan root; an error (e.g. no permission to read it)
    /// fails the job, as a walk that cannot read it would.
    dir: io::Result<Dir>,
}

/// Resolves `path` and judges where it leads (blocking: call it off the async threads).
///
/// Only the fully resolved path is judged: 400 `invalid_path` when it does not resolve (it is
/// missing, or a link in it dangles or loops), 403 `path_not_allowed` when it is outside every
/// scan root, 400 `not_a_directory` when it leads to something else. The directory is then
/// opened relative to its scan root, which no path swapped in meanwhile can leave.
fn open_target(policy: &ScanPolicy, path: &Path) -> Result<Target, ApiError> {
    let resolved = std::fs::canonicalize(path).map_err(|_| {
        ApiError::bad_request(
            "invalid_path",
            "the path does not lead to an existing directory",
        )
    })?;
    let root = policy.root_of(&resolved)?;
    if !resolved.is_dir() {
        return Err(ApiError::bad_request(
            "not_a_directory",
            "the path leads to something other than a directory",
        ));
    }
    let dir = match root {
        None => Dir::open_ambient_dir(&resolved, ambient_authority()),
        Some(root) => open_beneath(root, &resolved),
    };
    Ok(Target {
        path: resolved,
        dir,
    })
}

/// Opens `path`, a path under `root`, relative to `root`: resolution cannot leave `root`,
/// whatever symlinks are there by now.
fn open_beneath(root: &Path, path: &Path) -> io::Result<Dir> {
    let base = Dir::open_ambient_dir(root, ambient_authority())?;
    let relative = path
        .strip_prefix(root)
        .map_err(|_| io::Error::other("the directory is not under its scan root"))?;
    if relative.as_os_str().is_empty() {
        Ok(base)
    } else {
        base.open_dir(relative)
    }
}

/// Publishes events; the hub in the server, a recorder in tests.
pub(crate) trait Publisher: Send + Sync + 'static {
    /// Publishes and resolves once the event is sequenced.
    fn publish(&self, event: Event)
        -> impl Future<Output = Result<EventId, PublishFailure>> + Send;
}

impl Publisher for crate::publish::Publisher {
    fn publish(
        &self,
        event: Event,
    ) -> impl Future<Output = Result<EventId, PublishFailure>> + Send {
        crate::publish::Publisher::publish(self, event, None)
    }
}

/// One scan, from the 202 on.
pub(crate) struct Job {
    id: String,
    path: PathBuf,
    recursive: bool,
    correlation_id: CorrelationId,
    max_entries: u64,
    timeout: Duration,
}

impl Job {
    /// Waits for a walker, walks `dir` and publishes the job's events in order; stops early if
    /// the hub refuses events (it is shutting down). `slot` (the job's place among
    /// `--max-scan-jobs`) is given back when this returns.
    pub(crate) async fn run(
        self,
        dir: io::Result<Dir>,
        hub: impl Publisher,
        walkers: Arc<Semaphore>,
        slot: OwnedSemaphorePermit,
    ) {
        // The semaphore is never closed, so a permit always comes.
        let _walker = walkers.acquire_owned().await;
        if let Err(e) = self.execute(dir, &hub).await {
            tracing::debug!(job_id = %self.id, error = %e, "scan events stopped");
        }
        drop(slot);
    }

    async fn execute(
        &self,
        dir: io::Result<Dir>,
        hub: &impl Publisher,
    ) -> Result<(), PublishFailure> {
        hub.publish(self.progress(0.0, "running")).await?;
        let (tx, mut rx) = mpsc::channel(16);
        let (recursive, max_entries, timeout) = (self.recursive, self.max_entries, self.timeout);
        let walk = tokio::task::spawn_blocking(move || {
            // The time budget starts with the walk, not with the wait for a walker.
            let mut budget = Budget::new(max_entries, timeout, Instant::now());
            count_videos(&dir?, recursive, &mut budget, |progress| {
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
            .unwrap_or_else(|e| Err(io::Error::other(format!("scan task failed: {e}")).into()));
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use ferret_ws_core::{Epoch, Seq};

    #[derive(Default, Clone)]
    struct Recorder(Arc<Mutex<Vec<Event>>>);

    impl Publisher for Recorder {
        async fn publish(&self, event: Event) -> Result<EventId, PublishFailure> {
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
        dir
    }

    fn canonical(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().canonicalize().unwrap()
    }

    #[test]
    fn only_the_resolved_path_is_judged() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let policy = ScanPolicy::Roots(vec![canonical(&root)]);
        std::fs::create_dir(root.path().join("videos")).unwrap();
        let inside = root.path().join("videos");
        assert!(open_target(&policy, &inside).unwrap().dir.is_ok());
        assert!(open_target(&policy, root.path()).is_ok(), "the root itself");
        // `..` that leads out of the root is judged where it leads.
        let up = open_target(&policy, &inside.join("../..")).unwrap_err();
        assert_eq!(
            (up.status(), up.code()),
            (StatusCode::FORBIDDEN, "path_not_allowed")
        );
        // `..` that stays inside is fine.
        assert!(open_target(&policy, &inside.join("../videos")).is_ok());
        // A path that does not resolve is a 400, inside or outside the roots.
        for missing in [
            root.path().join("nope"),
            outside.path().join("nope"),
            root.path().join("nope/../videos"),
        ] {
            let err = open_target(&policy, &missing).unwrap_err();
            assert_eq!(
                (err.status(), err.code()),
                (StatusCode::BAD_REQUEST, "invalid_path"),
                "{missing:?}"
            );
        }
        let file = root.path().join("a.mp4");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            open_target(&policy, &file).unwrap_err().code(),
            "not_a_directory"
        );
        // A file outside the roots is refused as outside: nothing is said about what it is.
        let outside_file = outside.path().join("secret.txt");
        std::fs::write(&outside_file, b"x").unwrap();
        assert_eq!(
            open_target(&policy, &outside_file).unwrap_err().code(),
            "path_not_allowed"
        );
        assert_eq!(
            open_target(&ScanPolicy::Off, root.path())
                .unwrap_err()
                .code(),
            "scan_roots_required"
        );
        assert!(open_target(&ScanPolicy::Anywhere, outside.path()).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn links_are_judged_by_where_they_lead_and_never_named() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret-place");
        std::fs::create_dir(&secret).unwrap();
        let policy = ScanPolicy::Roots(vec![canonical(&root)]);
        let link = root.path().join("escape");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let dangling = root.path().join("dangling");
        std::os::unix::fs::symlink(outside.path().join("gone-place"), &dangling).unwrap();
        let looping = root.path().join("loop");
        std::os::unix::fs::symlink(&looping, &looping).unwrap();
        for (path, code) in [
            (&link, "path_not_allowed"),
            (&dangling, "invalid_path"),
            (&looping, "invalid_path"),
        ] {
            let err = open_target(&policy, path).unwrap_err();
            assert_eq!(err.code(), code, "{path:?}");
            for word in ["secret", "gone", "place", "/"] {
                assert!(!err.message().contains(word), "{word} in {err}");
            }
        }
        // A link from outside into a root is judged by where it leads: allowed.
        let inward = outside.path().join("inward");
        std::os::unix::fs::symlink(root.path(), &inward).unwrap();
        assert!(open_target(&policy, &inward).is_ok());
    }

    fn job(path: PathBuf) -> Job {
        Job {
            id: "job-1".into(),
            path,
            recursive: true,
            correlation_id: CorrelationId::parse(b"cid-1").unwrap().unwrap(),
            max_entries: u64::MAX,
            timeout: Duration::from_secs(3600),
        }
    }

    async fn run(job: Job, dir: io::Result<Dir>, recorder: &Recorder) {
        let slots = Arc::new(Semaphore::new(1));
        let slot = slots.clone().try_acquire_owned().unwrap();
        job.run(dir, recorder.clone(), Arc::new(Semaphore::new(1)), slot)
            .await;
        assert_eq!(slots.available_permits(), 1, "the slot is given back");
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
        let handle = Dir::open_ambient_dir(dir.path(), ambient_authority());
        run(job, handle, &recorder).await;
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
        let gone = dir.path().join("gone");
        let handle = Dir::open_ambient_dir(&gone, ambient_authority());
        run(job(gone), handle, &recorder).await;
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

    #[tokio::test]
    async fn a_walk_past_its_entry_limit_fails_the_job_naming_the_limit() {
        let dir = tree();
        let recorder = Recorder::default();
        let mut limited = job(dir.path().to_path_buf());
        limited.max_entries = 4;
        let handle = Dir::open_ambient_dir(dir.path(), ambient_authority());
        run(limited, handle, &recorder).await;
        let events = summary(&recorder.0.lock().unwrap());
        let (name, payload) = events.last().unwrap();
        assert_eq!(
            (name.as_str(), &payload["status"]),
            ("job_progress", &json!("failed"))
        );
        let error = payload["error"].as_str().unwrap();
        assert!(
            error.contains("4") && error.contains("--scan-max-entries"),
            "{error}"
        );
        assert!(events.iter().all(|(name, _)| name != "scan_completed"));
    }
}
