//! Properties of the hub over arbitrary interleavings of connects (with any anchor, also one
//! taken from another client's frames), disconnects, publishes, log skips, repeats and epoch
//! changes, client messages, stalls, flushes, wall-clock steps and time.
//!
//! The operations and the checks are the test kit's (`ferret_ws_testkit::ops`), shared with
//! the `hub_ops` fuzz target: proptest generates the same input bytes the fuzzer mutates.

// The simulated clock needs one arbitrary origin; only offsets from it are ever compared.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use ferret_ws_testkit::ops::{hub_ops, CONFIG_BYTES};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every check of `ops` holds after every step, and a second run gives the same
    /// transcript.
    #[test]
    fn the_hub_keeps_its_promises(data in prop::collection::vec(any::<u8>(), CONFIG_BYTES..1200)) {
        hub_ops(&data, Instant::now());
    }

    /// The same, with the log misbehaving often: every other opcode is a skip, a repeat or a
    /// new epoch, so in-band resyncs happen while clients catch up, stall and resume.
    #[test]
    fn a_misbehaving_log_keeps_every_promise(
        config in prop::collection::vec(any::<u8>(), CONFIG_BYTES),
        ops in prop::collection::vec((any::<u8>(), any::<[u8; 4]>(), 0u8..3), 1..150),
    ) {
        let mut data = config;
        for (op, fields, log) in ops {
            data.push(op);
            data.extend_from_slice(&fields);
            // The log's opcodes (see `ops::Op`): LogJump is 2, LogRepeat 19.
            data.push([2, 19, 2][usize::from(log)]);
            data.extend_from_slice(&fields[..2]);
        }
        hub_ops(&data, Instant::now());
    }
}
