//! Replays every committed fuzz input (`fuzz/corpus/<target>/*` and any
//! `fuzz/artifacts/<target>/*`) through the same harness functions the fuzz targets call, so
//! plain `cargo test` guards what the fuzzers found and the harnesses cannot rot.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ferret_ws_testkit::fuzzing;

/// The inputs of one target, sorted; hidden files (libFuzzer's `.state` and the like) skipped.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory").path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if path.is_file() && !hidden {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, harness: impl Fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no committed corpus for {target}");
    for path in &files {
        let data = fs::read(path).expect("readable corpus file");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness(&data)));
        if let Err(panic) = outcome {
            eprintln!("{target}: {} fails", path.display());
            std::panic::resume_unwind(panic);
        }
    }
    println!("{target}: {} inputs replayed", files.len());
}

/// Where the simulated clocks start. The harnesses only use offsets from it, so any instant
/// gives the same run; the test, as the caller, owns the clock.
#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

#[test]
fn empty_and_short_inputs_run() {
    fuzzing::parse_message(b"");
    fuzzing::handshake(b"", start());
    fuzzing::hub_ops(b"", start());
    fuzzing::hub_ops(&[0; fuzzing::CONFIG_BYTES + 3], start());
}

#[test]
fn parse_message_corpus() {
    replay("parse_message", fuzzing::parse_message);
}

#[test]
fn handshake_corpus() {
    let start = start();
    replay("handshake", |data| fuzzing::handshake(data, start));
}

#[test]
fn hub_ops_corpus() {
    let start = start();
    replay("hub_ops", |data| fuzzing::hub_ops(data, start));
}

/// Prints what a `hub_ops` input does: `FUZZ_INPUT=path cargo test -p ferret-ws-core
/// --all-features --test fuzz_corpus -- --ignored --nocapture`.
#[test]
#[ignore = "a tool for reading crash files, run by hand"]
fn describe_hub_ops_input() {
    let path = std::env::var("FUZZ_INPUT").expect("FUZZ_INPUT names a hub_ops input file");
    // Tests run in core/; a relative path is taken from the repository root.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let data = fs::read(&path).expect("readable input");
    println!("{}", fuzzing::describe_hub_ops(&data, start()));
}
