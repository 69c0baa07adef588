//! The real `ferret-ws` binary: start-up line, flags and environment, the refusal of an
//! insecure bind, events seen by a WebSocket client, logs, and the SIGTERM/SIGINT shutdown.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{http, raw_until_closed, Ws, WAIT};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_ferret-ws");

/// The binary with a clean `FERRET_WS_*`/`RUST_LOG` environment plus `env`.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    with_clean_env(Command::new(BIN), args, env)
}

/// `command`, with `args` passed to the binary and the environment cleaned as there.
fn with_clean_env(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Command {
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|n| n.starts_with("FERRET_WS_") || n == "RUST_LOG")
        {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// A running server process.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    /// Starts the binary on `127.0.0.1:0` with `args` and waits for its `listening on` line.
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Process::start_exact(&all, env).await
    }

    async fn start_exact(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut child = command(args, env).spawn().expect("the binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a line on stdout in time")
            .expect("readable stdout")
            .expect("a listening line before stdout closes");
        let url = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let addr = url
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
        Process { child, addr }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit; returns the exit code, how long it took and stderr.
    async fn wait(mut self) -> (Option<i32>, Duration, String) {
        let started = Instant::now();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exits in time")
            .expect("wait");
        let took = started.elapsed();
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr).await;
        }
        (status.code(), took, stderr)
    }

    async fn get(&self, path: &str) -> common::Response {
        http(self.addr, "GET", path, &[], None).await
    }
}

/// Runs the binary to its exit; returns the code and stderr.
async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(WAIT, command(args, env).output())
        .await
        .expect("exits in time")
        .expect("runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn serves_events_and_shuts_down_on_sigterm() {
    let server = Process::start(
        &[
            "--heartbeat-interval",
            "200ms",
            "--liveness-timeout",
            "10s",
            "--shutdown-grace",
            "10s",
        ],
        &[],
    )
    .await;
    let ready = server.get("/health/ready").await.json();
    assert_eq!(ready["heartbeat_interval_ms"], 200);
    let page = server.get("/").await;
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );

    let mut ws = Ws::connect(server.addr, "", &[]).await.expect("connects");
    ws.prove_live().await;
    let mut quiet = Ws::connect(server.addr, "types=none.*", &[])
        .await
        .expect("connects");
    quiet.prove_live().await;
    let body = serde_json::to_vec(&json!({"name": "from the binary"})).unwrap();
    let created = http(
        server.addr,
        "POST",
        "/api/v1/projects",
        &[
            ("content-type", "application/json"),
            ("x-correlation-id", "bin-1"),
        ],
        Some(&body),
    )
    .await;
    assert_eq!((created.status, created.correlation_id()), (201, "bin-1"));
    let event = ws.next_event().await;
    assert_eq!(
        (event["type"].clone(), event["correlation_id"].clone()),
        (json!("project_created"), json!("bin-1"))
    );
    assert_eq!(event["payload"]["project_id"], created.json()["id"]);

    server.signal("TERM");
    for client in [&mut ws, &mut quiet] {
        let (frames, closed) = client.until_closed().await;
        let last = frames.last().expect("a last event");
        assert_eq!(
            (last["type"].clone(), last["payload"].clone()),
            (json!("health_status"), json!({"status": "shutting_down"}))
        );
        assert_eq!(closed.expect("a close frame").code, 1001);
    }
    let (code, took, stderr) = server.wait().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after the clients were closed: it waited for the 10 s grace"
    );
}

#[tokio::test]
async fn sigint_with_a_client_that_stopped_reading_exits_0_within_the_grace() {
    let server = Process::start(&["--shutdown-grace", "1s"], &[]).await;
    // The client completes the handshake and then never reads.
    let stalled = Ws::connect(server.addr, "", &[]).await.expect("connects");
    let started = Instant::now();
    server.signal("INT");
    let (code, _, stderr) = server.wait().await;
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        took < Duration::from_millis(2000),
        "took {took:?} for a 1s grace (1s of slack for a loaded machine)"
    );
    drop(stalled);
}

#[tokio::test]
async fn an_insecure_bind_is_refused_unless_allowed() {
    let (code, stdout, stderr) = run_to_exit(&["--bind", "0.0.0.0:0"], &[]).await;
    assert_ne!(code, Some(0));
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(
        stderr.contains("--token") && stderr.contains("--allow-insecure-bind"),
        "{stderr}"
    );

    let allowed =
        Process::start_exact(&["--bind", "0.0.0.0:0", "--allow-insecure-bind"], &[]).await;
    assert!(allowed.addr.ip().is_unspecified());
    allowed.signal("TERM");
    assert_eq!(allowed.wait().await.0, Some(0));

    let by_env = Process::start_exact(
        &[],
        &[
            ("FERRET_WS_BIND", "0.0.0.0:0"),
            ("FERRET_WS_TOKEN", "sesame"),
        ],
    )
    .await;
    let answer = http(by_env.addr, "GET", "/metrics", &[], None).await;
    assert_eq!(answer.status, 401);
    by_env.signal("TERM");
    assert_eq!(by_env.wait().await.0, Some(0));
}

#[tokio::test]
async fn malformed_settings_exit_non_zero_naming_the_setting() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case<'_>; 6] = [
        (
            &["--heartbeat-interval", "soon"],
            &[],
            &["--heartbeat-interval"],
        ),
        (
            &["--max-client-message", "lots"],
            &[],
            &["--max-client-message"],
        ),
        (&["--bind", "nowhere"], &[], &["--bind"]),
        (
            &[],
            &[("FERRET_WS_REPLAY_TTL", "forever")],
            &["--replay-ttl"],
        ),
        (
            &[],
            &[("FERRET_WS_MAX_CONNECTIONS", "many")],
            &["--max-connections"],
        ),
        (
            &["--heartbeat-interval", "10s", "--liveness-timeout", "5s"],
            &[],
            &["--liveness-timeout", "--heartbeat-interval"],
        ),
    ];
    for (args, env, names) in cases {
        let (code, _, stderr) = run_to_exit(args, env).await;
        assert_ne!(code, Some(0), "{args:?} {env:?}");
        for name in names {
            assert!(stderr.contains(name), "{args:?} {env:?}: {stderr}");
        }
    }
    let (code, _, stderr) = run_to_exit(&["--scan-root", "/no/such/ferret/dir"], &[]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--scan-root"), "{stderr}");
}

#[tokio::test]
async fn environment_sets_and_flags_win() {
    let env = [
        ("FERRET_WS_HEARTBEAT_INTERVAL", "250ms"),
        ("FERRET_WS_LIVENESS_TIMEOUT", "10s"),
    ];
    let from_env = Process::start(&[], &env).await;
    assert_eq!(
        from_env.get("/health/ready").await.json()["heartbeat_interval_ms"],
        250
    );
    from_env.signal("TERM");
    assert_eq!(from_env.wait().await.0, Some(0));

    let flag_wins = Process::start(&["--heartbeat-interval", "300ms"], &env).await;
    assert_eq!(
        flag_wins.get("/health/ready").await.json()["heartbeat_interval_ms"],
        300
    );
    flag_wins.signal("TERM");
    assert_eq!(flag_wins.wait().await.0, Some(0));
}

#[tokio::test]
async fn version_prints_the_package_version() {
    for flag in ["--version", "-V"] {
        let (code, out, err) = run_to_exit(&[flag], &[]).await;
        assert_eq!(code, Some(0), "{flag}: {err}");
        assert_eq!(
            out.trim_end(),
            format!("ferret-ws {}", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}

#[tokio::test]
async fn help_documents_every_flag_and_default() {
    let (code, help, _) = run_to_exit(&["--help"], &[]).await;
    assert_eq!(code, Some(0));
    for (flag, default) in [
        ("--bind", Some("127.0.0.1:8765")),
        ("--heartbeat-interval", Some("30s")),
        ("--liveness-timeout", Some("60s")),
        ("--replay-buffer-size", Some("1000")),
        ("--replay-ttl", Some("300s")),
        ("--max-connections", Some("10000")),
        ("--max-client-message", Some("4KiB")),
        ("--client-rate", Some("20")),
        ("--client-burst", Some("40")),
        ("--send-queue-frames", Some("256")),
        ("--send-queue-bytes", Some("1MiB")),
        ("--allowed-origin", None),
        ("--token", None),
        ("--scan-root", None),
        ("--allow-insecure-bind", None),
        ("--shutdown-grace", Some("5s")),
        ("--handshake-timeout", Some("10s")),
        ("--token-file", None),
        ("--allowed-host", None),
        ("--request-timeout", Some("30s")),
        ("--max-http-connections", Some("1024")),
        ("--max-projects", Some("10000")),
        ("--max-scan-jobs", Some("16")),
        ("--scan-max-entries", Some("1000000")),
        ("--scan-timeout", Some("5m")),
    ] {
        let start = help
            .find(&format!("{flag} "))
            .unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
        let env = format!(
            "FERRET_WS_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        let rest = &help[start..];
        let section = &rest[..rest[2..].find("\n      --").map_or(rest.len(), |i| i + 2)];
        let section = section.split_whitespace().collect::<Vec<_>>().join(" "); // undo wrapping
        assert!(section.contains(&env), "{flag}: no {env} in {section}");
        if let Some(default) = default {
            assert!(
                section.contains(&format!("[default: {default}]")),
                "{flag}: {section}"
            );
        }
    }
}

#[tokio::test]
async fn logs_are_quiet_by_default_and_debug_shows_publishes_with_their_id() {
    async fn publish_and_stop(env: &[(&str, &str)]) -> String {
        let server = Process::start(&[], env).await;
        let body = serde_json::to_vec(&json!({"type": "log.test"})).unwrap();
        let answer = http(
            server.addr,
            "POST",
            "/api/v1/events",
            &[
                ("content-type", "application/json"),
                ("x-correlation-id", "log-cid-1"),
            ],
            Some(&body),
        )
        .await;
        assert_eq!(answer.status, 202);
        server.signal("TERM");
        let (code, _, stderr) = server.wait().await;
        assert_eq!(code, Some(0));
        stderr
    }
    let quiet = publish_and_stop(&[]).await;
    assert!(quiet.contains("ferret-ws started"), "{quiet}");
    assert!(
        !quiet.contains("log-cid-1") && !quiet.contains("DEBUG"),
        "{quiet}"
    );

    let debug = publish_and_stop(&[("RUST_LOG", "ferret_ws=debug")]).await;
    let line = debug
        .lines()
        .find(|l| l.contains("published"))
        .unwrap_or_else(|| panic!("{debug}"));
    assert!(
        line.contains("log-cid-1") && line.contains("log.test"),
        "{line}"
    );
}

#[tokio::test]
async fn every_response_of_the_binary_is_json_with_a_correlation_id() {
    let server = Process::start(&[], &[]).await;
    for path in [
        "/nope",
        "/health/live",
        "/health/ready",
        "/api/v1/projects",
        "/ws",
    ] {
        let answer = server.get(path).await;
        assert!(!answer.correlation_id().is_empty());
        let _: Value = answer.json();
    }
    server.signal("TERM");
    assert_eq!(server.wait().await.0, Some(0));
}

#[tokio::test]
async fn handshake_timeout_closes_a_connection_that_never_finishes_its_request() {
    let server = Process::start(&["--handshake-timeout", "300ms"], &[]).await;
    let (answer, closed_after) =
        raw_until_closed(server.addr, b"GET /health/live HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(5)).contains(&closed_after),
        "closed after {closed_after:?}"
    );
    assert!(!answer.contains(" 200 "), "{answer}");
    assert_eq!(server.get("/health/live").await.status, 200);
    server.signal("TERM");
    assert_eq!(server.wait().await.0, Some(0));
}

#[tokio::test]
async fn the_token_can_come_from_a_file_but_not_from_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "sesame\n").unwrap();
    let path = file.to_str().unwrap();
    for (args, env) in [
        (vec!["--token-file", path], vec![]),
        (vec![], vec![("FERRET_WS_TOKEN_FILE", path)]),
    ] {
        let server = Process::start(&args, &env).await;
        assert_eq!(server.get("/metrics").await.status, 401);
        let bearer = [("authorization", "Bearer sesame")];
        let right = http(server.addr, "GET", "/metrics", &bearer, None).await;
        assert_eq!(right.status, 200, "the newline is not part of the token");
        let mut ws = Ws::connect(server.addr, "token=sesame", &[])
            .await
            .expect("connects");
        ws.prove_live().await;
        ws.close().await;
        server.signal("TERM");
        assert_eq!(server.wait().await.0, Some(0));
    }
    let (code, stdout, stderr) = run_to_exit(&["--token", "open", "--token-file", path], &[]).await;
    assert_ne!(code, Some(0));
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(
        stderr.contains("--token-file") && stderr.contains("--token"),
        "{stderr}"
    );
    let missing = dir.path().join("missing");
    let (code, _, stderr) = run_to_exit(&["--token-file", missing.to_str().unwrap()], &[]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--token-file"), "{stderr}");
}

#[tokio::test]
async fn allowed_hosts_come_from_flags_or_the_environment_and_follow_the_bind() {
    async fn status(server: &Process, host: &str) -> u16 {
        http(server.addr, "GET", "/health/live", &[("host", host)], None)
            .await
            .status
    }
    let listed = Process::start(&["--allowed-host", "Media.Local"], &[]).await;
    let from_env = Process::start(&[], &[("FERRET_WS_ALLOWED_HOST", "a.example,b.example")]).await;
    let star = Process::start(&["--allowed-host", "*"], &[]).await;
    let public = Process::start_exact(&["--bind", "0.0.0.0:0", "--allow-insecure-bind"], &[]).await;
    let public_listed = Process::start_exact(
        &[
            "--bind",
            "0.0.0.0:0",
            "--allow-insecure-bind",
            "--allowed-host",
            "ferret.example",
        ],
        &[],
    )
    .await;
    for (server, host, expected) in [
        (&listed, "media.local:8765", 200),
        (&listed, "localhost:1", 200),
        (&listed, "evil.example", 403),
        (&from_env, "b.example", 200),
        (&from_env, "evil.example", 403),
        (&star, "evil.example", 200),
        (&public, "evil.example", 200),
        (&public_listed, "ferret.example:80", 200),
        (&public_listed, "localhost", 403),
    ] {
        assert_eq!(status(server, host).await, expected, "{host}");
    }
    for server in [listed, from_env, star, public, public_listed] {
        server.signal("TERM");
        assert_eq!(server.wait().await.0, Some(0));
    }
    let (code, _, stderr) = run_to_exit(&["--allowed-host", "evil.example:80"], &[]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--allowed-host"), "{stderr}");
}

/// Out of file descriptors, accepting fails every time the loop tries (every
/// `ACCEPT_ERROR_PAUSE`); the log gets one line, not one per try, and the server recovers
/// once descriptors are free again.
#[cfg(unix)]
#[tokio::test]
async fn running_out_of_descriptors_logs_once_and_the_server_recovers() {
    const FAILED: &str = "accepting a connection failed";
    let shell = {
        let mut shell = Command::new("sh");
        shell.args(["-c", r#"ulimit -n 32 && exec "$0" "$@""#, BIN]);
        shell
    };
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--handshake-timeout",
        "60s",
        "--request-timeout",
        "60s",
    ];
    let mut child = with_clean_env(shell, &args, &[]).spawn().expect("starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("the listening line");
    let addr: SocketAddr = line
        .strip_prefix("listening on http://")
        .unwrap()
        .parse()
        .unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = lines_tx.send(line);
        }
    });

    // More connections than the server has descriptors for; they wait in the kernel's queue.
    let mut held = Vec::new();
    for _ in 0..48 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.recv().await {
            let failed = line.contains(FAILED);
            seen.push(line);
            if failed {
                break;
            }
        }
    })
    .await
    .expect("a log line about the failure");
    // The shortage lasts for ten of the loop's pauses (nothing to await: the condition
    // itself is what is being tested); the old loop wrote a line at each.
    tokio::time::sleep(ferret_ws_tokio::ACCEPT_ERROR_PAUSE * 10).await;
    drop(held);

    let live = http(addr, "GET", "/health/live", &[], None).await;
    assert_eq!(live.status, 200);
    let mut ws = Ws::connect(addr, "", &[]).await.expect("connects");
    ws.prove_live().await;
    let body = serde_json::to_vec(&json!({"type": "after.shortage"})).unwrap();
    let headers = [("content-type", "application/json")];
    let published = http(addr, "POST", "/api/v1/events", &headers, Some(&body)).await;
    assert_eq!(published.status, 202);
    assert_eq!(
        ws.event_of_type("after.shortage").await["type"],
        "after.shortage"
    );
    ws.close().await;

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-s", "TERM", &pid])
        .status();
    assert!(killed.unwrap().success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    reader.await.unwrap();
    while let Ok(line) = lines.try_recv() {
        seen.push(line);
    }
    let failures = seen.iter().filter(|l| l.contains(FAILED)).count();
    assert_eq!(failures, 1, "{seen:#?}");
}
