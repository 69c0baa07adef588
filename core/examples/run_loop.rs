//! Driving the hub by hand, as a test or an adapter would: connect, publish, let time pass.
//! Run it with `cargo run -p ferret-ws-core --example run_loop`.

use std::time::{Duration, Instant};

use ferret_ws_core::{
    decide, Decision, Epoch, Event, EventType, HandshakeRequest, Hub, HubConfig, Output,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = HubConfig::builder()
        .heartbeat_interval(Duration::from_secs(30))
        .build()?;
    #[allow(clippy::disallowed_methods)] // the adapter reads the clock, never the hub
    let start = Instant::now();
    let wall = time::OffsetDateTime::UNIX_EPOCH; // likewise the wall clock, once, at start
    let mut hub = Hub::new(config.clone(), Epoch(0x1234_abcd), start, wall);

    // A browser connects with a type filter.
    let request = HandshakeRequest {
        query: Some("types=project_*"),
        ..Default::default()
    };
    let Decision::Accept(params) = decide(&config, &request, true) else {
        unreachable!("a plain request is accepted")
    };
    let conn = hub.accept(start, params);

    // The app publishes; the hub encodes once and addresses each matching connection.
    let id = hub.publish(start, Event::new(EventType::new("project_created")?))?;
    assert_eq!(id.to_string(), "1234abcd-1");
    match hub.poll_output() {
        Some(Output::Send { conn: to, frame }) => {
            assert_eq!(to, conn);
            assert!(frame.starts_with(br#"{"type":"project_created","payload":{}"#));
            println!("{}", String::from_utf8_lossy(&frame));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(hub.poll_output(), None);

    // Time passes: at the deadline the hub sends the heartbeat and a ping.
    let due = hub
        .poll_timeout()
        .expect("the heartbeat is always scheduled");
    assert_eq!(due, start + Duration::from_secs(30));
    hub.handle_timeout(due);
    assert!(matches!(hub.poll_output(), Some(Output::Send { .. })));
    assert_eq!(hub.poll_output(), Some(Output::Ping { conn }));
    Ok(())
}
