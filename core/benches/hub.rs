//! Hot paths of the hub: publishing (sequencing, then delivery) to many connections, with
//! every recipient's writer reporting the frame written, and parsing client messages.

// The simulated clock needs one arbitrary origin; only offsets from it are ever compared.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferret_ws_core::{
    parse_client_message, ConnParams, Epoch, Event, EventType, Hub, HubConfig, Input, Output,
    Sequencer,
};
use serde_json::json;

fn hub_with(connections: usize) -> (Sequencer, Hub, Instant) {
    let config = HubConfig::builder()
        .heartbeat_interval(Duration::from_secs(3600))
        .liveness_timeout(Duration::from_secs(7200))
        .max_connections(connections.max(1))
        .build()
        .expect("valid");
    let now = Instant::now();
    let wall = time::OffsetDateTime::UNIX_EPOCH;
    let sequencer = Sequencer::new(&config, Epoch(1), now, wall);
    let mut hub = Hub::new(config, Epoch(1), now, wall);
    for _ in 0..connections {
        hub.accept(now, ConnParams::default());
    }
    (sequencer, hub, now)
}

fn publish(c: &mut Criterion) {
    let payload = json!({"job_id": "5f0c6a9e", "progress": 0.42, "status": "running"});
    let payload = payload.as_object().cloned().expect("object");
    let event_type = EventType::new("job_progress").expect("valid");
    let mut group = c.benchmark_group("publish");
    for connections in [1usize, 100, 10_000] {
        let (mut sequencer, mut hub, now) = hub_with(connections);
        group.throughput(Throughput::Elements(connections as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(connections),
            &connections,
            |b, _| {
                b.iter(|| {
                    let event = Event::new(event_type.clone())
                        .with_payload(payload.clone())
                        .with_correlation_id("req-1");
                    let _ = hub.deliver(now, sequencer.sequence(now, event));
                    let mut sent = Vec::with_capacity(connections);
                    while let Some(output) = hub.poll_output() {
                        if let Output::Send { conn, frame } = black_box(output) {
                            sent.push((conn, frame.len()));
                        }
                    }
                    // Each recipient's writer reports its frame written, as adapters do.
                    for (conn, bytes) in sent {
                        let frames = 1;
                        hub.handle_input(
                            now,
                            Input::Flushed {
                                conn,
                                frames,
                                bytes,
                            },
                        );
                    }
                })
            },
        );
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_client_message");
    let messages: [(&str, &[u8]); 3] = [
        ("ping", br#"{"type":"ping"}"#),
        (
            "subscribe",
            br#"{"type":"subscribe","payload":{"types":["scan_*","job_progress","preview.*"]}}"#,
        ),
        ("malformed", br#"{"type":"ping""#),
    ];
    for (name, bytes) in messages {
        group.bench_function(name, |b| {
            b.iter(|| black_box(parse_client_message(black_box(bytes))))
        });
    }
    group.finish();
}

criterion_group!(benches, publish, parse);
criterion_main!(benches);
