//! The browser client's unit tests and the real-browser tests of the live event page
//! (`tests/browser/`, headless Debian Chromium driven by playwright-core), run against this
//! build's `ferret-ws` binary so that `cargo test` covers them too.
//!
//! `tests/browser/run.sh` installs Chromium and playwright-core on first use. Set
//! `FERRET_WS_SKIP_BROWSER=1` to leave them out on a machine that cannot install them.

use std::process::Command;

#[test]
fn browser_client_and_live_page() {
    if std::env::var_os("FERRET_WS_SKIP_BROWSER").is_some() {
        eprintln!("browser tests skipped: FERRET_WS_SKIP_BROWSER is set");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser/run.sh");
    let status = Command::new("bash")
        .arg(script)
        .env("FERRET_WS_BIN", env!("CARGO_BIN_EXE_ferret-ws"))
        .status()
        .expect("bash runs");
    assert!(
        status.success(),
        "browser tests failed ({status}); see the node test output above"
    );
}
