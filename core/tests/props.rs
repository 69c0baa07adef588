//! Properties of the hub over arbitrary interleavings of connects, disconnects, publishes,
//! client messages, stalls, flushes and time.

// The simulated clock needs one arbitrary origin; only offsets from it are ever compared.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferret_ws_core::sim::{Sim, SIM_EPOCH};
use ferret_ws_core::{
    ConnId, ConnParams, DisconnectCause, EventId, HubConfig, Input, Seq, TypeFilter,
};
use proptest::prelude::*;

const HEARTBEAT: Duration = Duration::from_millis(100);
const LIVENESS: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
enum Anchor {
    None,
    /// This many stream positions before the newest.
    Back(u8),
    Garbage,
    OtherEpoch,
    Ahead,
}

#[derive(Debug, Clone)]
enum Op {
    /// `stalled`: the client reads nothing from the start (so a replay stays in progress).
    Connect {
        anchor: Anchor,
        scan_only: bool,
        responsive: bool,
        stalled: bool,
    },
    Disconnect(usize),
    Publish {
        scan: bool,
    },
    Text(usize, u8),
    Binary(usize),
    Stall(usize, bool),
    Flush(usize),
    Advance(u16),
    Step,
    /// The adapter finishes every close the hub asked for.
    FinishCloses,
}

fn anchor() -> impl Strategy<Value = Anchor> {
    prop_oneof![
        4 => Just(Anchor::None),
        4 => (0u8..30).prop_map(Anchor::Back),
        1 => Just(Anchor::Garbage),
        1 => Just(Anchor::OtherEpoch),
        1 => Just(Anchor::Ahead),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (anchor(), any::<bool>(), any::<bool>(), prop::bool::weighted(0.3)).prop_map(
            |(anchor, scan_only, responsive, stalled)| Op::Connect { anchor, scan_only, responsive, stalled }
        ),
        1 => any::<usize>().prop_map(Op::Disconnect),
        6 => any::<bool>().prop_map(|scan| Op::Publish { scan }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(c, k)| Op::Text(c, k)),
        1 => any::<usize>().prop_map(Op::Binary),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(c, s)| Op::Stall(c, s)),
        2 => any::<usize>().prop_map(Op::Flush),
        3 => (1u16..400).prop_map(Op::Advance),
        1 => Just(Op::Step),
        1 => Just(Op::FinishCloses),
    ]
}

fn config(queue: usize, replay: usize) -> HubConfig {
    HubConfig::builder()
        .heartbeat_interval(HEARTBEAT)
        .liveness_timeout(LIVENESS)
        .send_queue_frames(queue)
        .replay_buffer_size(replay)
        .replay_ttl(Duration::from_millis(1500))
        .close_timeout(Duration::from_millis(250))
        .client_rate(50)
        .client_burst(5)
        .build()
        .expect("valid")
}

/// What the test remembers of each client beyond the simulation's model.
#[derive(Default, Clone)]
struct Notes {
    anchored: bool,
    scan_only: bool,
    subscribed: bool,
    ever_stalled: bool,
}

fn pick(conns: &[ConnId], index: usize) -> Option<ConnId> {
    (!conns.is_empty()).then(|| conns[index % conns.len()])
}

/// Runs the ops; returns the simulation and per-client notes.
fn run(queue: usize, replay: usize, ops: &[Op]) -> (Sim, Vec<(ConnId, Notes)>) {
    let mut sim = Sim::new(config(queue, replay), Instant::now());
    let mut conns: Vec<ConnId> = Vec::new();
    let mut notes: Vec<(ConnId, Notes)> = Vec::new();
    for op in ops {
        match op {
            Op::Connect {
                anchor,
                scan_only,
                responsive,
                stalled,
            } => {
                let last = sim.hub.last_seq().0;
                let anchor = match anchor {
                    Anchor::None => None,
                    Anchor::Back(n) => {
                        let seq = last.saturating_sub(u64::from(*n)).max(1);
                        Some(
                            EventId {
                                epoch: SIM_EPOCH,
                                seq: Seq(seq),
                            }
                            .to_string(),
                        )
                    }
                    Anchor::Garbage => Some("not-an-id".to_owned()),
                    Anchor::OtherEpoch => Some("00000000-1".to_owned()),
                    Anchor::Ahead => Some(
                        EventId {
                            epoch: SIM_EPOCH,
                            seq: Seq(last + 5),
                        }
                        .to_string(),
                    ),
                };
                let filter = if *scan_only {
                    TypeFilter::parse_list("scan_*").unwrap()
                } else {
                    TypeFilter::all()
                };
                let anchored = anchor.is_some();
                sim.auto_flush = !*stalled;
                let conn = sim.accept(ConnParams {
                    filter,
                    anchor: anchor.map(Into::into),
                    subscribe_token: None,
                });
                sim.stall(conn, *stalled);
                sim.auto_flush = true;
                sim.set_responsive(conn, *responsive);
                conns.push(conn);
                let notes_for = Notes {
                    anchored,
                    scan_only: *scan_only,
                    ever_stalled: *stalled,
                    ..Notes::default()
                };
                notes.push((conn, notes_for));
            }
            Op::Disconnect(i) => {
                if let Some(conn) = pick(&conns, *i) {
                    if !sim.clients[&conn].removed {
                        sim.disconnect(conn, DisconnectCause::Closed(None));
                    }
                }
            }
            Op::Publish { scan } => {
                sim.publish(
                    if *scan {
                        "scan_progress"
                    } else {
                        "project_created"
                    },
                    None,
                );
            }
            Op::Text(i, kind) => {
                if let Some(conn) = pick(&conns, *i) {
                    let text = match kind % 5 {
                        0 => r#"{"type":"ping"}"#,
                        1 => r#"{"type":"pong"}"#,
                        2 => "{oops",
                        3 => r#"{"type":"subscribe","payload":{"types":["project_*"]}}"#,
                        _ => r#"{"type":"nope"}"#,
                    };
                    if kind % 5 == 3 {
                        notes
                            .iter_mut()
                            .filter(|(c, _)| *c == conn)
                            .for_each(|(_, n)| n.subscribed = true);
                    }
                    sim.send_text(conn, text);
                }
            }
            Op::Binary(i) => {
                if let Some(conn) = pick(&conns, *i) {
                    sim.input(Input::Binary { conn });
                }
            }
            Op::Stall(i, stalled) => {
                if let Some(conn) = pick(&conns, *i) {
                    if *stalled {
                        notes
                            .iter_mut()
                            .filter(|(c, _)| *c == conn)
                            .for_each(|(_, n)| n.ever_stalled = true);
                    }
                    sim.stall(conn, *stalled);
                }
            }
            Op::Flush(i) => {
                if let Some(conn) = pick(&conns, *i) {
                    sim.flush(conn);
                }
            }
            Op::Advance(ms) => sim.advance(Duration::from_millis(u64::from(*ms))),
            Op::Step => {
                sim.step();
            }
            Op::FinishCloses => {
                let closing: Vec<ConnId> = sim
                    .clients
                    .iter()
                    .filter(|(_, c)| c.closed.is_some() && !c.removed)
                    .map(|(id, _)| *id)
                    .collect();
                for conn in closing {
                    sim.disconnect(conn, DisconnectCause::Lost);
                }
            }
        }
        assert!(
            sim.hub.replay_len() <= replay,
            "replay buffer over its size"
        );
        for (conn, client) in &sim.clients {
            if client.removed {
                assert_eq!(
                    sim.hub.queued(*conn),
                    None,
                    "{conn} removed but its state is kept"
                );
            }
        }
    }
    // Settle: every client reads what it was sent.
    let stalled: Vec<ConnId> = sim
        .clients
        .iter()
        .filter(|(_, c)| c.stalled)
        .map(|(id, _)| *id)
        .collect();
    for conn in stalled {
        sim.stall(conn, false);
    }
    (sim, notes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_hub_keeps_its_promises(queue in 1usize..12, replay in 0usize..24, ops in prop::collection::vec(op(), 1..120)) {
        let (sim, notes) = run(queue, replay, &ops);
        // Per-output checks: order, shapes, nothing after close, queue bounds.
        sim.assert_clean();

        for (conn, note) in &notes {
            let client = &sim.clients[conn];
            // Liveness: a 4408 comes within [timeout, timeout + interval] of the last sign of life.
            if let (Some((code, _)), Some(at)) = (&client.closed, client.closed_at) {
                let silent = at - client.last_life.unwrap();
                if code.0 == 4408 {
                    prop_assert!(silent >= LIVENESS, "{conn} closed after only {silent:?} of silence");
                    prop_assert!(silent <= LIVENESS + HEARTBEAT, "{conn} closed after {silent:?}");
                    prop_assert!(!client.responsive || note.ever_stalled, "{conn} answered every ping yet timed out");
                }
            } else if !client.removed {
                let silent = sim.now - client.last_life.unwrap();
                prop_assert!(silent < LIVENESS + HEARTBEAT, "{conn} silent for {silent:?} and still open");
            }

            // Delivery: events in the published order, without gaps, for clients whose filter never changed.
            if note.subscribed {
                continue;
            }
            let matching: Vec<u64> = sim
                .published
                .iter()
                .filter(|(_, name)| !note.scan_only || name.starts_with("scan_"))
                .map(|(seq, _)| *seq)
                .collect();
            let got = client.event_seqs();
            let resynced = client.of_type("resync_required").next().is_some();
            if let Some(first) = got.first() {
                let start = matching.iter().position(|s| s == first).expect("received a published event");
                prop_assert_eq!(&got[..], &matching[start..start + got.len()], "{} has a gap", conn);
                if !resynced && !note.anchored {
                    let expected_first = matching.iter().find(|s| **s > client.accepted_after);
                    prop_assert_eq!(Some(first), expected_first, "{} missed the start", conn);
                }
            }
            // A client still open after settling has everything.
            if !client.is_closed() && !client.removed {
                let start = if resynced || note.anchored {
                    got.first().copied()
                } else {
                    matching.iter().copied().find(|s| *s > client.accepted_after)
                };
                let expected: Vec<u64> = start.map_or(Vec::new(), |s| matching.iter().copied().filter(|m| *m >= s).collect());
                prop_assert_eq!(got, expected, "{} is missing events", conn);
            }

            // Heartbeats: never more than one per tick; every tick for a live reader.
            let beats: BTreeSet<u64> = client.of_type("heartbeat").map(|f| f.id.unwrap().seq.0).collect();
            prop_assert!(beats.iter().all(|b| sim.heartbeats.contains(b)));
            let ticks_since: Vec<u64> = sim.heartbeats.iter().copied().filter(|h| *h > client.accepted_after).collect();
            if !note.anchored && !note.ever_stalled && !client.is_closed() && !client.removed {
                prop_assert_eq!(beats.into_iter().collect::<Vec<_>>(), ticks_since, "{} heartbeats", conn);
            }
        }
    }

    #[test]
    fn the_same_history_gives_the_same_outputs(queue in 1usize..12, replay in 0usize..24, ops in prop::collection::vec(op(), 1..80)) {
        let (first, _) = run(queue, replay, &ops);
        let (second, _) = run(queue, replay, &ops);
        prop_assert_eq!(first.transcript(), second.transcript());
    }
}
