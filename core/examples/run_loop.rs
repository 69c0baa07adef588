//! Driving the hub by hand, as a test or an adapter would: connect, publish, let time pass.
//! Run it with `cargo run -p ferret-ws-core --example run_loop`.

use std::time::{Duration, Instant};

use ferret_ws_core::{
    Admission, Admit, Epoch, Event, EventType, HandshakeRequest, Hub, HubConfig, Output, Sequencer,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = HubConfig::builder()
        .heartbeat_interval(Duration::from_secs(30))
        .build()?;
    #[allow(clippy::disallowed_methods)] // the adapter reads the clock, never the hub
    let start = Instant::now();
    let wall = time::OffsetDateTime::UNIX_EPOCH; // likewise the wall clock
    let epoch = Epoch(0x1234_abcd); // random at every start of a real hub
    let mut sequencer = Sequencer::new(&config, epoch, start, wall);
    let mut hub = Hub::new(config.clone(), epoch, start, wall);
    let mut admission = Admission::new(&config);

    // A browser connects with a type filter; it is registered before the 101 is sent.
    let request = HandshakeRequest {
        query: Some("types=project_*"),
        ..Default::default()
    };
    let Admit::Accept(params, slot) = admission.admit(&request) else {
        unreachable!("a plain request is accepted")
    };
    let conn = hub.accept(start, params);

    // The app publishes: the sequencer gives the event its id and encodes it once, and the
    // hub addresses each matching connection with the same bytes.
    let event = sequencer.sequence(start, Event::new(EventType::new("project_created")?));
    assert_eq!(event.id().to_string(), "1234abcd-1");
    let _ = hub.deliver(start, event);
    match hub.poll_output() {
        Some(Output::Send { conn: to, frame }) => {
            assert_eq!(to, conn);
            assert!(frame.starts_with(br#"{"type":"project_created","payload":{}"#));
            println!("{}", String::from_utf8_lossy(&frame));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(hub.poll_output(), None);

    // Time passes: at the deadline the hub sends the heartbeat, naming the newest event, and
    // a ping.
    let due = hub
        .poll_timeout()
        .expect("the heartbeat is always scheduled");
    assert_eq!(due, start + Duration::from_secs(30));
    hub.handle_timeout(due);
    match hub.poll_output() {
        Some(Output::Send { frame, .. }) => {
            assert!(frame.ends_with(br#""event_id":"1234abcd-1"}"#));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(hub.poll_output(), Some(Output::Ping { conn }));

    // The socket is gone: the slot comes back.
    admission.release(slot);
    Ok(())
}
