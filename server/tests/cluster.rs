//! Cluster mode against a real `redis-server` (PROTOCOL.md §7): several `ferret-ws` processes
//! on one stream, one order, the same bytes everywhere, resume on any node, and what happens
//! when a node dies, Redis stalls or Redis loses the stream.
//!
//! Each test starts a private `redis-server` on a free loopback port (no persistence) and
//! stops it by its PID. Without a `redis-server` on the PATH, the first test installs
//! Debian's (`apt-get`, as `tests/browser/run.sh` does for Chromium); only if that fails do
//! the tests say `SKIPPED` and pass without running.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use async_tungstenite::tungstenite::Message;
use common::{http, Response, Ws, WAIT};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_ferret-ws");

/// A private `redis-server`, stopped (by PID) when dropped.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    /// Starts one on a free port; `None` (after saying why) if there is no `redis-server`.
    async fn start() -> Option<Redis> {
        if !redis_server_installed() {
            return None;
        }
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                eprintln!("SKIPPED: cannot run redis-server ({e}); install it (apt-get install redis-server) to run the cluster tests");
                return None;
            }
        };
        let redis = Redis { child, port };
        common::eventually("redis-server to answer", || async {
            redis
                .client()
                .get_multiplexed_async_connection()
                .await
                .is_ok()
        })
        .await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a valid URL")
    }

    async fn command(&self, name: &str) -> redis::Value {
        let mut conn = self
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd(name).query_async(&mut conn).await.unwrap()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -s {signal} {pid}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal("CONT"); // a paused server cannot act on SIGKILL's cleanup otherwise
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `redis-server` can be run, installing Debian's package once if it is missing.
fn redis_server_installed() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let found = || {
            std::process::Command::new("redis-server")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if found() {
            return true;
        }
        eprintln!("cluster tests: installing redis-server with apt-get");
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let apt = |args: &[&str]| {
            let mut command = if root {
                std::process::Command::new("apt-get")
            } else {
                let mut sudo = std::process::Command::new("sudo");
                sudo.args(["-n", "apt-get"]);
                sudo
            };
            command
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let installed = apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "redis-server"]);
        installed && found()
    })
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address").port()
}

/// One `ferret-ws` node of the cluster.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    /// Starts a node on `redis` and waits until it serves `/ws` (it has reached Redis).
    async fn start(redis: &Redis, args: &[&str]) -> Node {
        let node = Node::spawn(redis, args).await;
        let addr = node.addr;
        common::eventually("the node to reach Redis", || async move {
            http(addr, "GET", "/health/ready", &[], None).await.status == 200
        })
        .await;
        node
    }

    async fn spawn(redis: &Redis, args: &[&str]) -> Node {
        let url = redis.url();
        let mut command = Command::new(BIN);
        command
            .args(["--bind", "127.0.0.1:0", "--redis", &url])
            .args(["--heartbeat-interval", "200ms", "--liveness-timeout", "10s"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the binary starts");
        let stdout = child.stdout.take().expect("piped");
        let line = tokio::time::timeout(WAIT, BufReader::new(stdout).lines().next_line())
            .await
            .expect("a line in time")
            .expect("readable")
            .expect("a listening line");
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Node { child, addr }
    }

    async fn publish(&self, name: &str, n: u64) -> Response {
        self.publish_with(name, n, &[]).await
    }

    async fn publish_with(&self, name: &str, n: u64, headers: &[(&str, &str)]) -> Response {
        let body = serde_json::to_vec(&json!({"type": name, "payload": {"n": n}})).unwrap();
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        http(self.addr, "POST", "/api/v1/events", &all, Some(&body)).await
    }

    async fn ws(&self, query: &str) -> Ws {
        let mut ws = Ws::connect(self.addr, query, &[]).await.expect("connects");
        ws.prove_live().await;
        ws
    }

    fn kill(&mut self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", "KILL", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

/// The next stream frame that is not a heartbeat: its raw text and its JSON.
async fn next_event(ws: &mut Ws) -> (String, Value) {
    loop {
        match ws.next_message().await {
            Some(Message::Text(text)) => {
                let json: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if json["type"] != "heartbeat" && json["type"] != "pong" {
                    return (text.as_str().to_owned(), json);
                }
            }
            Some(Message::Close(frame)) => panic!("closed: {frame:?}"),
            Some(_) => continue,
            None => panic!("the connection ended"),
        }
    }
}

/// Frames until (and with) the event `id`.
async fn events_until(ws: &mut Ws, id: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let (_, json) = next_event(ws).await;
        let done = json["event_id"] == id;
        seen.push(json);
        if done {
            return seen;
        }
    }
}

fn id_of(answer: &Response) -> String {
    assert_eq!(answer.status, 202, "{}", answer.text);
    answer.json()["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned()
}

fn seq(id: &str) -> u64 {
    id.rsplit_once('-')
        .expect("an event id")
        .1
        .parse()
        .expect("a seq")
}

#[tokio::test]
async fn three_nodes_one_order_the_same_bytes() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let nodes = [
        Node::start(&redis, &[]).await,
        Node::start(&redis, &[]).await,
        Node::start(&redis, &[]).await,
    ];
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.ws("").await);
        clients.push(node.ws("").await);
    }
    // Round-robin, and concurrently: the stream orders them.
    let mut ids = Vec::new();
    for round in 0..10u64 {
        let answers = futures::future::join_all(
            nodes
                .iter()
                .enumerate()
                .map(|(i, node)| node.publish("cluster.rr", round * 3 + i as u64)),
        )
        .await;
        ids.extend(answers.iter().map(id_of));
    }
    let mut seqs: Vec<u64> = ids.iter().map(|id| seq(id)).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (seqs[0]..seqs[0] + 30).collect::<Vec<_>>(),
        "consecutive, no holes"
    );
    let mut transcripts = Vec::new();
    for client in &mut clients {
        let mut seen = Vec::new();
        for _ in 0..30 {
            seen.push(next_event(client).await.0);
        }
        transcripts.push(seen);
    }
    for transcript in &transcripts[1..] {
        assert_eq!(
            transcript, &transcripts[0],
            "every client, every node: same order, same bytes"
        );
    }
    let got: Vec<u64> = transcripts[0]
        .iter()
        .map(|raw| {
            seq(serde_json::from_str::<Value>(raw).unwrap()["event_id"]
                .as_str()
                .unwrap())
        })
        .collect();
    assert_eq!(got, (seqs[0]..seqs[0] + 30).collect::<Vec<_>>());
}

#[tokio::test]
async fn resume_on_another_node_by_header_or_query_and_a_late_node_serves_old_anchors() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let a = Node::start(&redis, &["--replay-buffer-size", "5"]).await;
    let first = id_of(&a.publish("cluster.resume", 0).await);
    let mut last = first.clone();
    for n in 1..20 {
        last = id_of(&a.publish("cluster.resume", n).await);
    }
    // A node that starts now has never seen these events; its buffer holds the newest 5.
    let b = Node::start(&redis, &["--replay-buffer-size", "5"]).await;
    let by_query = Ws::connect(b.addr, &format!("last_event_id={first}"), &[])
        .await
        .unwrap();
    let by_header = Ws::connect(b.addr, "", &[("last-event-id", first.as_str())])
        .await
        .unwrap();
    for mut ws in [by_query, by_header] {
        let seen = events_until(&mut ws, &last).await;
        let seqs: Vec<u64> = seen
            .iter()
            .map(|f| seq(f["event_id"].as_str().unwrap()))
            .collect();
        assert_eq!(
            seqs,
            (seq(&first) + 1..=seq(&last)).collect::<Vec<_>>(),
            "no gap, no repeat: {seen:?}"
        );
        assert!(
            seen.iter().all(|f| f["type"] == "cluster.resume"),
            "no resync: {seen:?}"
        );
    }
    let metrics = http(b.addr, "GET", "/metrics", &[], None).await.text;
    assert!(metrics.contains("ferret_ws_redis_up 1"), "{metrics}");
}

#[tokio::test]
async fn an_anchor_older_than_the_stream_keeps_is_a_resync() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let node = Node::start(
        &redis,
        &["--redis-maxlen", "10", "--replay-buffer-size", "3"],
    )
    .await;
    let first = id_of(&node.publish("cluster.trim", 0).await);
    let mut last = first.clone();
    for n in 1..300 {
        last = id_of(&node.publish("cluster.trim", n).await);
    }
    let mut ws = Ws::connect(node.addr, &format!("last_event_id={first}"), &[])
        .await
        .unwrap();
    let resync = ws.event_of_type("resync_required").await;
    assert_eq!(resync["payload"]["reason"], "evicted");
    assert_eq!(resync["payload"]["last_event_id"], first.as_str());
    let seen = events_until(&mut ws, &last).await;
    let seqs: Vec<u64> = seen
        .iter()
        .map(|f| seq(f["event_id"].as_str().unwrap()))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "what is left, in order: {seqs:?}"
    );
    assert!(seqs.len() < 300);
}

#[tokio::test]
async fn a_killed_node_loses_nothing_for_clients_that_resume_elsewhere() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let mut doomed = Node::start(&redis, &[]).await;
    let survivor = Node::start(&redis, &[]).await;
    let mut ws = doomed.ws("").await;
    let mut anchor = None;
    let mut published = Vec::new();
    for n in 0..40u64 {
        published.push(id_of(&survivor.publish("cluster.kill", n).await));
        if n == 20 {
            // Read what arrived so far, then the node dies mid-stream.
            loop {
                let (_, json) = next_event(&mut ws).await;
                let id = json["event_id"].as_str().unwrap().to_owned();
                let done = id == published[20];
                anchor = Some(id);
                if done {
                    break;
                }
            }
            doomed.kill();
        }
    }
    let anchor = anchor.expect("an anchor");
    let mut resumed = Ws::connect(survivor.addr, &format!("last_event_id={anchor}"), &[])
        .await
        .unwrap();
    let last = published.last().unwrap().clone();
    let seen = events_until(&mut resumed, &last).await;
    let ids: Vec<String> = seen
        .iter()
        .map(|f| f["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, published[21..].to_vec(), "nothing lost or repeated");
}

#[tokio::test]
async fn a_paused_redis_answers_503_or_504_and_nothing_is_lost_after() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let node = Node::start(&redis, &[]).await;
    let mut ws = node.ws("").await;
    let before = id_of(&node.publish("cluster.pause", 0).await);
    redis.signal("STOP");
    let stalled = node
        .publish_with("cluster.pause", 1, &[("idempotency-key", "pause-1")])
        .await;
    assert!(
        matches!(stalled.status, 503 | 504),
        "{} {}",
        stalled.status,
        stalled.text
    );
    if stalled.status == 504 {
        assert_eq!(stalled.error_code(), "outcome_unknown");
    }
    common::eventually("readiness to name Redis", || async {
        let ready = http(node.addr, "GET", "/health/ready", &[], None).await;
        ready.status == 503 && ready.json()["status"] == "redis_unavailable"
    })
    .await;
    redis.signal("CONT");
    // The retry with the same key is published at most once, whatever the first attempt did.
    let retried = id_of(
        &node
            .publish_with("cluster.pause", 1, &[("idempotency-key", "pause-1")])
            .await,
    );
    let after = id_of(&node.publish("cluster.pause", 2).await);
    let mut seen = vec![next_event(&mut ws).await.1];
    seen.extend(events_until(&mut ws, &after).await);
    let ids: Vec<&str> = seen
        .iter()
        .map(|f| f["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [before.as_str(), retried.as_str(), after.as_str()],
        "{seen:?}"
    );
    assert!(ws_kept_heartbeats(&mut ws).await);
}

async fn ws_kept_heartbeats(ws: &mut Ws) -> bool {
    ws.event_of_type("heartbeat").await["type"] == "heartbeat"
}

#[tokio::test]
async fn a_flushed_redis_is_a_new_epoch_told_in_band() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let node = Node::start(&redis, &[]).await;
    let other = Node::start(&redis, &[]).await;
    let mut ws = node.ws("").await;
    let old = id_of(&node.publish("cluster.flush", 0).await);
    assert_eq!(next_event(&mut ws).await.1["event_id"], old.as_str());
    redis.command("FLUSHALL").await;
    // Nothing is published: the node notices at its next check, within a heartbeat interval.
    let resync = ws.event_of_type("resync_required").await;
    assert_eq!(resync["payload"]["reason"], "unknown_epoch");
    assert_eq!(resync["payload"]["last_event_id"], old.as_str());
    let fresh = id_of(&other.publish("cluster.flush", 1).await);
    assert_ne!(
        fresh.split('-').next(),
        old.split('-').next(),
        "a new epoch"
    );
    assert_eq!(seq(&fresh), 1);
    let (_, event) = next_event(&mut ws).await;
    assert_eq!(event["event_id"], fresh.as_str());
    // The old epoch's anchors are unknown now.
    let mut late = Ws::connect(node.addr, &format!("last_event_id={old}"), &[])
        .await
        .unwrap();
    assert_eq!(
        late.event_of_type("resync_required").await["payload"]["reason"],
        "unknown_epoch"
    );
}

#[tokio::test]
async fn a_retried_publish_is_one_event_across_nodes() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let a = Node::start(&redis, &[]).await;
    let b = Node::start(&redis, &[]).await;
    let key = [("idempotency-key", "order-42")];
    let first = id_of(&a.publish_with("cluster.once", 1, &key).await);
    let again = id_of(&b.publish_with("cluster.once", 1, &key).await);
    assert_eq!(first, again);
    let next = id_of(&b.publish("cluster.once", 2).await);
    assert_eq!(seq(&next), seq(&first) + 1, "no second event");
}

#[tokio::test]
async fn a_node_that_never_reached_redis_refuses_ws_with_503() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let port = redis.port;
    drop(redis); // nothing listens there now
    let dead = Redis {
        child: std::process::Command::new("true").spawn().unwrap(),
        port,
    };
    let node = Node::spawn(&dead, &[]).await;
    let refused = http(node.addr, "GET", "/ws", &common::UPGRADE, None).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(refused.header("retry-after").is_some());
    let publish = node.publish("cluster.none", 0).await;
    assert_eq!(publish.status, 503, "{}", publish.text);
    assert_eq!(publish.error_code(), "redis_unavailable");
}

#[tokio::test]
async fn a_malformed_redis_url_stops_the_start_naming_the_flag() {
    let output = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--redis", "not a url"])
        .output()
        .await
        .expect("runs");
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--redis"), "{stderr}");
}
