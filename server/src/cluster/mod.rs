//! Cluster mode (`--redis URL`, PROTOCOL.md §7): several nodes on one Redis Stream, one order,
//! resume on any node.
//!
//! This module is the Redis adapter of the hub, and only moves data: the stream gives every
//! event its seq ([`log::APPEND`], one atomic script per publish), a tail task reads the stream
//! and hands the hub every entry in order ([`HubHandle::deliver`]), and a fetch task answers
//! the hub's requests for events older than its replay buffer (`XRANGE`). What a skip, a
//! repeat, a new epoch or a fetched range means for the clients is the core's decision.
//!
//! | part | connection | does |
//! | --- | --- | --- |
//! | [`Cluster::publish`] | shared, multiplexed (pipelined under load) | the append script, bounded by [`PUBLISH_TIMEOUT`] |
//! | tail task | its own (it blocks in `XREAD`) | the epoch check, then `XREAD BLOCK` from the last entry delivered, reconnecting with backoff and jitter |
//! | fetch task | the shared one | `XRANGE` for resuming clients |

mod log;
mod tail;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferret_ws_core::{Epoch, Event, EventId, HubConfig, IdempotencyKey, Timestamp};
use ferret_ws_tokio::HubHandle;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use time::OffsetDateTime;

use log::Keys;

/// How long a publish waits for Redis before it answers 504 `outcome_unknown`.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection attempt to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The defaults of `--redis-stream` and `--redis-maxlen`.
pub const DEFAULT_STREAM: &str = "ferret-ws:events";
/// See [`DEFAULT_STREAM`].
pub const DEFAULT_MAXLEN: u64 = 100_000;

/// Where the stream is.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// The stream's key.
    pub stream: String,
    /// The stream is trimmed to about this many entries.
    pub maxlen: u64,
}

impl ClusterConfig {
    /// Checks the URL and the key; the error names the flag.
    pub fn check(&self) -> Result<(), ClusterError> {
        redis::Client::open(self.url.as_str())
            .map_err(|e| ClusterError(format!("--redis {:?}: {e}", self.url)))?;
        if self.stream.is_empty() {
            return Err(ClusterError("--redis-stream: must not be empty".into()));
        }
        if self.maxlen == 0 {
            return Err(ClusterError(
                "--redis-maxlen must be greater than zero".into(),
            ));
        }
        Ok(())
    }
}

/// Why [`ClusterConfig`] cannot be used.
#[derive(Debug)]
pub struct ClusterError(String);

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

/// Why a publish in cluster mode failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// Redis could not be reached, or refused the command: the event is certainly not in
    /// the stream. Answer 503 with `Retry-After`.
    Unavailable(String),
    /// Redis did not answer in time, or the connection broke after the command was sent: the
    /// event may or may not be in the stream. Answer 504 `outcome_unknown`; a retry with the
    /// same `Idempotency-Key` is safe.
    OutcomeUnknown(String),
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Unavailable(why) => write!(f, "Redis is unavailable: {why}"),
            LogError::OutcomeUnknown(why) => write!(f, "Redis did not confirm the append: {why}"),
        }
    }
}

/// A running cluster node's link to the stream. Cloning is cheap.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    keys: Keys,
    maxlen: u64,
    /// How long an idempotency key is remembered: the replay TTL.
    key_ttl: Duration,
    /// The shared connection, made on first use and after a failure.
    conn: Mutex<Option<MultiplexedConnection>>,
    append: redis::Script,
    /// [`log::EPOCH`], run by the tail at every check.
    epoch: redis::Script,
    status: Status,
}

/// What the node knows of the stream, for health and metrics.
#[derive(Debug, Default)]
pub(crate) struct Status {
    /// Whether the last exchange with Redis worked.
    up: AtomicBool,
    /// Whether Redis was ever reached (until then `/ws` answers 503).
    reached: AtomicBool,
    /// The seq of the newest entry delivered to the hub.
    delivered: AtomicU64,
    /// The stream's newest seq, as of the last epoch check.
    head: AtomicU64,
}

/// A snapshot of [`Cluster::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Whether Redis answered the last exchange.
    pub redis_up: bool,
    /// The seq of the newest entry this node delivered.
    pub delivered_seq: u64,
    /// How many entries the stream holds beyond that, as of the last check.
    pub lag: u64,
}

impl Cluster {
    /// Starts a cluster node: a hub fed by the stream (refusing `/ws` with 503 until Redis
    /// was reached), the tail and the fetch task. Fails only for a malformed URL; an
    /// unreachable Redis is retried in the background.
    pub fn start(
        config: ClusterConfig,
        hub_config: HubConfig,
    ) -> Result<(Cluster, HubHandle), ClusterError> {
        config.check()?;
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| ClusterError(format!("--redis {:?}: {e}", config.url)))?;
        let (fetches, requests) = futures::channel::mpsc::unbounded();
        let hub = ferret_ws_tokio::start_external(hub_config.clone(), random_epoch(), fetches);
        let cluster = Cluster {
            inner: Arc::new(Inner {
                client,
                keys: Keys::new(&config.stream),
                maxlen: config.maxlen,
                key_ttl: hub_config.replay_ttl(),
                conn: Mutex::new(None),
                append: redis::Script::new(log::APPEND),
                epoch: redis::Script::new(log::EPOCH),
                status: Status::default(),
            }),
        };
        tokio::spawn(tail::run(cluster.clone(), hub.clone()));
        tokio::spawn(tail::serve_fetches(cluster.clone(), hub.clone(), requests));
        Ok((cluster, hub))
    }

    /// Appends an event to the stream (at most once per `key` within the replay TTL, on any
    /// node) and returns its id once Redis confirmed it; never waits on WebSocket clients.
    /// The envelope, timestamp included, is made here once; every node sends its bytes.
    pub async fn publish(
        &self,
        event: Event,
        key: Option<IdempotencyKey>,
    ) -> Result<EventId, LogError> {
        let body = event.encode_body(Timestamp::new(OffsetDateTime::now_utc()));
        let ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let inner = &self.inner;
        let mut invocation = inner.append.prepare_invoke();
        invocation
            .key(&inner.keys.stream)
            .key(&inner.keys.meta)
            .key(
                inner
                    .keys
                    .idempotency(key.as_ref().map(IdempotencyKey::as_str)),
            )
            .arg(random_epoch().to_string())
            .arg(body.event_type().as_str())
            .arg(body.bytes().as_ref())
            .arg(inner.maxlen)
            .arg(ms.to_string())
            .arg(if key.is_some() { "1" } else { "0" })
            .arg(
                u64::try_from(inner.key_ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
        let mut conn = self.connection().await?;
        let reply: Result<(String, u8), redis::RedisError> =
            match tokio::time::timeout(PUBLISH_TIMEOUT, invocation.invoke_async(&mut conn)).await {
                Ok(reply) => reply,
                Err(_) => return Err(LogError::OutcomeUnknown("no answer in time".into())),
            };
        match reply {
            Ok((id, _repeated)) => {
                inner.status.up.store(true, Ordering::Relaxed);
                EventId::parse(&id)
                    .ok_or_else(|| LogError::OutcomeUnknown(format!("unexpected event id {id:?}")))
            }
            Err(e) => {
                // An error reply means the script did not append; a broken connection after
                // sending does not tell.
                let answered = matches!(e.kind(), redis::ErrorKind::Server(_));
                let certain = answered || e.is_connection_refusal();
                if !answered {
                    self.forget_connection(); // the connection is suspect: make a new one
                }
                if certain {
                    Err(LogError::Unavailable(e.to_string()))
                } else {
                    Err(LogError::OutcomeUnknown(e.to_string()))
                }
            }
        }
    }

    /// Whether Redis is reachable, and how far this node is behind the stream.
    pub fn status(&self) -> ClusterStatus {
        let status = &self.inner.status;
        let delivered = status.delivered.load(Ordering::Relaxed);
        ClusterStatus {
            redis_up: status.up.load(Ordering::Relaxed),
            delivered_seq: delivered,
            lag: status
                .head
                .load(Ordering::Relaxed)
                .saturating_sub(delivered),
        }
    }

    /// The shared connection, connecting if there is none; a failure here means the command
    /// was never sent.
    async fn connection(&self) -> Result<MultiplexedConnection, LogError> {
        if let Some(conn) = self.shared().clone() {
            return Ok(conn);
        }
        let conn = self.connect().await.map_err(|e| {
            self.inner.status.up.store(false, Ordering::Relaxed);
            LogError::Unavailable(e.to_string())
        })?;
        *self.shared() = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        self.inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    fn forget_connection(&self) {
        *self.shared() = None;
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("stream", &self.inner.keys.stream)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// A candidate epoch: 32 random bits (only used if the stream has none yet).
fn random_epoch() -> Epoch {
    // The OS RNG practically never fails; a clock-derived value is still unlikely to repeat.
    Epoch(getrandom::u32().unwrap_or_else(|_| {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        (nanos as u32) ^ std::process::id()
    }))
}
