//! The tail task (the stream into the hub, in order) and the fetch task (older events for
//! resuming clients).
//!
//! Theory of operation. The tail keeps the epoch and the seq of the last entry it delivered.
//! Each session (one connection to Redis) starts with the epoch check, which it repeats at
//! least every half heartbeat interval, between `XREAD BLOCK`s of at most that long:
//!
//! | the stream's epoch | the tail |
//! | --- | --- |
//! | the one it delivers | reads on from its last entry (after an outage too: nothing lost or repeated) |
//! | none (the stream is new, or Redis lost it) | creates one (the epoch script), and goes on as below |
//! | another | tells the hub ([`HubHandle::start_epoch`]: in-band `unknown_epoch` to every client) and reads the new epoch from its start |
//!
//! The first check of the node's life also fills the hub's replay buffer with the stream's
//! newest entries, so that a node that has just started serves recent anchors at once (and
//! older ones through the fetch task), and then opens `/ws`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ferret_ws_core::Epoch;
use ferret_ws_tokio::{FetchRequest, HubHandle};
use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::Value;

use super::log::{decode_entries, decode_xread, parse_epoch, Entry};
use super::Cluster;

/// Entries read per `XREAD`.
const READ_BATCH: usize = 512;
/// Entries one fetch asks for at most; the hub asks again for the rest.
const FETCH_BATCH: usize = 1000;
/// The first and the longest pause between reconnection attempts (full jitter between).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Where the tail is in the stream.
struct Position {
    /// The epoch being delivered; `None` until Redis was first reached.
    epoch: Option<Epoch>,
    /// The seq of the last entry delivered.
    last: u64,
}

/// Runs the tail for the node's life.
pub(super) async fn run(cluster: Cluster, hub: HubHandle) {
    let mut position = Position {
        epoch: None,
        last: 0,
    };
    let mut failures: u32 = 0;
    loop {
        let error = session(&cluster, &hub, &mut position, &mut failures).await;
        cluster.inner.status.up.store(false, Ordering::Relaxed);
        if failures == 0 {
            tracing::warn!(error = %error, "redis: the stream is out of reach; retrying");
        } else {
            tracing::debug!(error = %error, failures, "redis: still out of reach");
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// One connection's worth of tailing; returns why it ended.
async fn session(
    cluster: &Cluster,
    hub: &HubHandle,
    position: &mut Position,
    failures: &mut u32,
) -> redis::RedisError {
    let mut conn = match cluster.connect().await {
        Ok(conn) => conn,
        Err(e) => return e,
    };
    let check_every = (hub.config().heartbeat_interval() / 2).max(Duration::from_millis(50));
    let block = check_every.min(Duration::from_secs(1));
    let mut next_check = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_check {
            if let Err(e) = check_epoch(cluster, hub, &mut conn, position).await {
                return e;
            }
            next_check = tokio::time::Instant::now() + check_every;
            if *failures > 0 {
                tracing::info!(
                    failures = *failures,
                    "redis: back; reading on after the last entry delivered"
                );
                *failures = 0;
            }
        }
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(1000))
            .arg("STREAMS")
            .arg(&cluster.inner.keys.stream)
            .arg(format!("{}-0", position.last));
        let read = xread.query_async::<Value>(&mut conn);
        let reply = match tokio::time::timeout(block + Duration::from_secs(2), read).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return e,
            Err(_) => return io_error("XREAD did not answer in time"),
        };
        cluster.inner.status.up.store(true, Ordering::Relaxed);
        let (entries, skipped) = decode_xread(&reply);
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "redis: stream entries that are not ferret-ws events were skipped"
            );
        }
        // Up to the first entry of another epoch (the stream was lost and recreated under
        // us): re-check before reading on.
        let ours = entries
            .iter()
            .take_while(|e| Some(e.id.epoch) == position.epoch)
            .count();
        if ours < entries.len() {
            next_check = tokio::time::Instant::now();
        }
        deliver(cluster, hub, position, &entries[..ours]).await;
    }
}

/// Reads (or creates) the stream's epoch; on a change, moves the hub to it.
async fn check_epoch(
    cluster: &Cluster,
    hub: &HubHandle,
    conn: &mut MultiplexedConnection,
    position: &mut Position,
) -> Result<(), redis::RedisError> {
    let (epoch, head): (String, u64) = cluster
        .inner
        .epoch
        .key(&cluster.inner.keys.meta)
        .arg(super::random_epoch().to_string())
        .invoke_async(conn)
        .await?;
    let Some(epoch) = parse_epoch(&epoch) else {
        return Err(io_error("the stream's epoch is not 8 hex digits"));
    };
    let status = &cluster.inner.status;
    status.head.store(head, Ordering::Relaxed);
    status.up.store(true, Ordering::Relaxed);
    if position.epoch == Some(epoch) {
        return Ok(());
    }
    let first_time = position.epoch.is_none();
    if !first_time {
        tracing::warn!(%epoch, "redis: the stream has a new epoch (it was lost); clients resync");
    }
    hub.start_epoch(epoch).await;
    *position = Position {
        epoch: Some(epoch),
        last: 0,
    };
    if first_time {
        prefill(cluster, hub, conn, position).await?;
        status.reached.store(true, Ordering::Relaxed);
        hub.set_available(true);
        tracing::info!(%epoch, last = position.last, "redis: reached; serving /ws");
    }
    Ok(())
}

/// Hands the hub the stream's newest entries (as many as its replay buffer holds), so a node
/// that has just started replays recent anchors at once.
async fn prefill(
    cluster: &Cluster,
    hub: &HubHandle,
    conn: &mut MultiplexedConnection,
    position: &mut Position,
) -> Result<(), redis::RedisError> {
    let count = hub.config().replay_buffer_size().max(1);
    let newest: Value = redis::cmd("XREVRANGE")
        .arg(&cluster.inner.keys.stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    let (mut entries, _) = decode_entries(&newest);
    entries.reverse();
    let epoch = position.epoch;
    let ours: Vec<Entry> = entries
        .into_iter()
        .filter(|e| Some(e.id.epoch) == epoch)
        .collect();
    deliver(cluster, hub, position, &ours).await;
    Ok(())
}

/// Hands the hub a batch of entries (one message) and moves the position past them.
async fn deliver(cluster: &Cluster, hub: &HubHandle, position: &mut Position, entries: &[Entry]) {
    let Some(last) = entries.last() else {
        return;
    };
    hub.deliver(entries.iter().map(Entry::event).collect())
        .await;
    position.last = last.id.seq.0;
    let status = &cluster.inner.status;
    status.delivered.store(position.last, Ordering::Relaxed);
}

/// Answers the hub's fetches (`XRANGE` of the range asked, at most [`FETCH_BATCH`] entries),
/// one at a time. A fetch that fails three times is answered empty: the hub then tells the
/// client to resync rather than leave it waiting.
pub(super) async fn serve_fetches(
    cluster: Cluster,
    hub: HubHandle,
    mut requests: UnboundedReceiver<FetchRequest>,
) {
    while let Some(request) = requests.next().await {
        let mut answer = Vec::new();
        for attempt in 0..3u32 {
            match fetch(&cluster, &request).await {
                Ok(entries) => {
                    answer = entries;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "redis: a fetch failed");
                    tokio::time::sleep(backoff(attempt + 1)).await;
                }
            }
        }
        let events = answer
            .iter()
            .map(|entry| (entry.event(), entry.at))
            .collect();
        hub.fetched(request.conn, request.after, events).await;
    }
}

async fn fetch(cluster: &Cluster, request: &FetchRequest) -> Result<Vec<Entry>, String> {
    let (first, last) = (request.after.seq.0 + 1, request.before.0.saturating_sub(1));
    if first > last {
        return Ok(Vec::new());
    }
    let mut conn = cluster.connection().await.map_err(|e| e.to_string())?;
    let mut xrange = redis::cmd("XRANGE");
    xrange
        .arg(&cluster.inner.keys.stream)
        .arg(format!("{first}-0"))
        .arg(format!("{last}-0"))
        .arg("COUNT")
        .arg(FETCH_BATCH);
    let range = xrange.query_async::<Value>(&mut conn);
    let reply = match tokio::time::timeout(super::PUBLISH_TIMEOUT, range).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => {
            cluster.forget_connection();
            return Err(e.to_string());
        }
        Err(_) => return Err("XRANGE did not answer in time".into()),
    };
    let (entries, _) = decode_entries(&reply);
    let epoch = request.after.epoch;
    Ok(entries
        .into_iter()
        .filter(|e| e.id.epoch == epoch)
        .collect())
}

/// Full jitter: a random pause up to the exponential bound, so that many nodes coming back at
/// once do not hit Redis in step.
fn backoff(failures: u32) -> Duration {
    let (base, cap) = BACKOFF;
    let bound = base.saturating_mul(1 << failures.min(16)).min(cap);
    let random = getrandom::u32().unwrap_or(u32::MAX / 2);
    bound.mul_f64(f64::from(random) / f64::from(u32::MAX))
}

fn io_error(why: &'static str) -> redis::RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, why).into()
}
