//! Idle memory per connection: opens N idle WebSocket connections to a server under each
//! runtime and reports the server's RSS delta divided by N.
//!
//! ```text
//! cargo run --release -p ferret-ws-tests --example idle_memory -- [tokio|async-std|both] [N]
//! ```
//!
//! The server runs in a child process (this binary with `serve RUNTIME`), so that each
//! process holds only one end of the N sockets (a process here may hold about 20 000 file
//! descriptors). Each client does the handshake and a `ping`/`pong` round trip, which proves
//! the hub registered it, and then stays idle. The server's RSS is read from
//! `/proc/PID/status` before the first connection and after the last one has settled.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferret_ws_core::HubConfig;
use ferret_ws_tokio::async_tungstenite::tokio::{client_async_with_config, TokioAdapter};
use ferret_ws_tokio::async_tungstenite::WebSocketStream;
use ferret_ws_tokio::tungstenite::protocol::WebSocketConfig;
use ferret_ws_tokio::tungstenite::Message;
use futures::StreamExt;

/// Handshakes in flight at once: below the listen backlog.
const CONCURRENCY: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(args.get(1).map_or("tokio", String::as_str)),
        which => {
            let n = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
            let runtimes: &[&str] = match which {
                Some("tokio") => &["tokio"],
                Some("async-std") => &["async-std"],
                _ => &["tokio", "async-std"],
            };
            for runtime in runtimes {
                measure(runtime, n);
            }
        }
    }
}

fn config() -> HubConfig {
    HubConfig::builder()
        .max_connections(50_000)
        .build()
        .expect("a valid config")
}

/// The child: a standalone server that prints its address and serves until killed.
fn serve(runtime: &str) {
    match runtime {
        "tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio");
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                println!("listening {}", listener.local_addr().expect("address"));
                let hub = ferret_ws_tokio::start(config());
                ferret_ws_tokio::serve(listener, hub).await.expect("serve");
            });
        }
        "async-std" => async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            println!("listening {}", listener.local_addr().expect("address"));
            let hub = ferret_ws_async_std::start(config());
            ferret_ws_async_std::serve(listener, hub)
                .await
                .expect("serve");
        }),
        other => panic!("unknown runtime {other}"),
    }
}

fn measure(runtime: &str, n: usize) {
    let exe = std::env::current_exe().expect("this binary");
    let mut child = Command::new(exe)
        .args(["serve", runtime])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the address");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening ADDR")
        .parse()
        .expect("an address");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        // Warm up: the runtime's threads, the allocator's arenas, the first connection.
        let warm = connect_many(addr, 50).await;
        drop(warm);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss_kib(&child);
        let start = Instant::now();
        let clients = connect_many(addr, n).await;
        let connected = start.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await; // let it settle
        let after = rss_kib(&child);
        let per_conn = (after - before) as f64 * 1024.0 / n as f64;
        println!(
            "{runtime:9}: {n} idle connections (opened in {connected:.1?}): server RSS {before} KiB -> {after} KiB, \
             {:.1} KiB per connection ({per_conn:.0} bytes)",
            per_conn / 1024.0
        );
        drop(clients);
    });
    let _ = child.kill();
    let _ = child.wait();
}

type Client = WebSocketStream<TokioAdapter<tokio::net::TcpStream>>;

async fn connect_many(addr: SocketAddr, n: usize) -> Vec<Client> {
    futures::stream::iter(0..n)
        .map(|_| connect(addr))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// Connects, and waits for the pong that proves the hub registered the connection.
async fn connect(addr: SocketAddr) -> Client {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = client_async_with_config(format!("ws://{addr}/ws"), stream, Some(config))
        .await
        .expect("handshake");
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.contains(r#""type":"pong""#) => return ws,
            Some(Ok(_)) => continue,
            other => panic!("no pong: {other:?}"),
        }
    }
}

fn rss_kib(child: &Child) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("/proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("a number")
}
