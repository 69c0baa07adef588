//! The `ferret-ws` command line (PROTOCOL.md §4): every setting is a flag and an environment
//! variable `FERRET_WS_<NAME>`; the flag wins. Durations are humantime (`30s`, `250ms`, `5m`),
//! sizes are bytes or binary units (`4096`, `4KiB`, `1MiB`).

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use ferret_ws_core::{ConfigError, HubConfig, OriginPolicy};

use crate::app::AppBuilder;

/// The environment variable that lists scan roots, separated like `PATH` (`:` on Unix).
pub const SCAN_ROOT_ENV: &str = "FERRET_WS_SCAN_ROOT";

/// The settings of the `ferret-ws` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ferret-ws",
    version,
    about = "ferret-ws: a real-time WebSocket event hub with an HTTP API",
    after_help = "Every setting can also be set with the environment variable shown; a flag \
                  wins over its variable. Durations: 250ms, 30s, 5m. Sizes: 4096, 4KiB, 1MiB.\n\
                  Logs go to stderr; RUST_LOG changes their level (e.g. RUST_LOG=ferret_ws=debug)."
)]
pub struct Settings {
    /// Address to listen on, IP:PORT (or :PORT for 127.0.0.1). Port 0 picks a free port; the
    /// bound address is printed on stdout as `listening on http://ADDR`.
    #[arg(long, env = "FERRET_WS_BIND", value_name = "ADDR", default_value = "127.0.0.1:8765", value_parser = parse_bind)]
    pub bind: SocketAddr,

    /// Interval of the hub-wide heartbeat event and Ping.
    #[arg(long, env = "FERRET_WS_HEARTBEAT_INTERVAL", value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A connection silent this long is closed with 4408; must exceed --heartbeat-interval.
    #[arg(long, env = "FERRET_WS_LIVENESS_TIMEOUT", value_name = "DUR", default_value = "60s", value_parser = parse_duration)]
    pub liveness_timeout: Duration,

    /// Events kept for Last-Event-ID replay (0 = replay off).
    #[arg(
        long,
        env = "FERRET_WS_REPLAY_BUFFER_SIZE",
        value_name = "N",
        default_value_t = 1000
    )]
    pub replay_buffer_size: usize,

    /// How long an event stays replayable.
    #[arg(long, env = "FERRET_WS_REPLAY_TTL", value_name = "DUR", default_value = "300s", value_parser = parse_duration)]
    pub replay_ttl: Duration,

    /// Open WebSocket connections at most; more get HTTP 503 with Retry-After.
    #[arg(
        long,
        env = "FERRET_WS_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub max_connections: usize,

    /// Largest message a client may send; larger closes with 1009.
    #[arg(long, env = "FERRET_WS_MAX_CLIENT_MESSAGE", value_name = "SIZE", default_value = "4KiB", value_parser = parse_size)]
    pub max_client_message: usize,

    /// Sustained client messages per second; faster closes with 4429.
    #[arg(
        long,
        env = "FERRET_WS_CLIENT_RATE",
        value_name = "N",
        default_value_t = 20
    )]
    pub client_rate: u32,

    /// Client messages allowed in a burst above --client-rate.
    #[arg(
        long,
        env = "FERRET_WS_CLIENT_BURST",
        value_name = "N",
        default_value_t = 40
    )]
    pub client_burst: u32,

    /// Frames queued to one connection before it is a slow consumer (close 4008).
    #[arg(
        long,
        env = "FERRET_WS_SEND_QUEUE_FRAMES",
        value_name = "N",
        default_value_t = 256
    )]
    pub send_queue_frames: usize,

    /// Bytes queued to one connection before it is a slow consumer (close 4008).
    #[arg(long, env = "FERRET_WS_SEND_QUEUE_BYTES", value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub send_queue_bytes: usize,

    /// Bytes queued to all connections together (a frame sent to many counts once); past it,
    /// those with the most queued are closed (4008).
    #[arg(long, env = "FERRET_WS_MAX_QUEUED_BYTES", value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_queued_bytes: usize,

    /// A browser origin allowed to open /ws (repeatable, or comma-separated; `*` allows all).
    /// Replaces the default: the server's own http://127.0.0.1:PORT and http://localhost:PORT.
    /// Requests without Origin (not browsers) are always allowed.
    #[arg(
        long = "allowed-origin",
        env = "FERRET_WS_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Access token: /ws takes it as ?token= or Authorization: Bearer; the HTTP API (all but
    /// /health/*, / and /ferret-ws.js) needs Authorization: Bearer TOKEN. Default: none.
    #[arg(
        long,
        env = "FERRET_WS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// A directory the scan endpoint may read, with everything below it (repeatable; env:
    /// FERRET_WS_SCAN_ROOT, several separated by ':'). Default: none, which allows any directory
    /// on a loopback bind and none otherwise.
    #[arg(long = "scan-root", value_name = "DIR")]
    pub scan_roots: Vec<PathBuf>,

    /// Allow a non-loopback --bind without --token (anyone who reaches the address can then
    /// read every event and publish).
    #[arg(long, env = "FERRET_WS_ALLOW_INSECURE_BIND", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub allow_insecure_bind: bool,

    /// How long a client may take to send an HTTP request head (including the /ws
    /// handshake request) after connecting or between requests; slower connections are closed.
    #[arg(long, env = "FERRET_WS_HANDSHAKE_TIMEOUT", value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// On SIGTERM or SIGINT: how long clients get to take their last event and close; the
    /// process exits within it.
    #[arg(long, env = "FERRET_WS_SHUTDOWN_GRACE", value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// A setting that keeps the server from starting; the message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupError(String);

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}

impl Settings {
    /// Checks the settings together and returns the app builder they describe (without a
    /// hub: [`AppBuilder::build`] starts one from [`Settings::hub_config`]).
    ///
    /// `scan_root_env` is the value of [`SCAN_ROOT_ENV`], used when no `--scan-root` is given.
    pub fn app_builder(&self, scan_root_env: Option<OsString>) -> Result<AppBuilder, StartupError> {
        self.check_bind()?;
        let config = self.hub_config()?;
        let roots = self.scan_roots(scan_root_env)?;
        Ok(AppBuilder::default()
            .hub_config(config)
            .scan_any_directory(roots.is_empty() && self.bind.ip().is_loopback())
            .scan_roots(roots))
    }

    /// Refuses a non-loopback bind without `--token`, unless `--allow-insecure-bind`.
    pub fn check_bind(&self) -> Result<(), StartupError> {
        if self.bind.ip().is_loopback() || self.token.is_some() || self.allow_insecure_bind {
            return Ok(());
        }
        Err(StartupError(format!(
            "refusing to listen on {} without --token: every host that can reach it could read all \
             events and publish. Set --token TOKEN (or FERRET_WS_TOKEN), or pass \
             --allow-insecure-bind to accept that.",
            self.bind
        )))
    }

    /// The hub configuration, checked by the core; errors name the flags.
    pub fn hub_config(&self) -> Result<HubConfig, StartupError> {
        let origins = if self.allowed_origins.iter().any(|o| o.trim() == "*") {
            OriginPolicy::Any
        } else if self.allowed_origins.is_empty() {
            OriginPolicy::Own
        } else {
            OriginPolicy::List(
                self.allowed_origins
                    .iter()
                    .map(|o| o.trim().to_owned())
                    .collect(),
            )
        };
        HubConfig::builder()
            .heartbeat_interval(self.heartbeat_interval)
            .liveness_timeout(self.liveness_timeout)
            .replay_buffer_size(self.replay_buffer_size)
            .replay_ttl(self.replay_ttl)
            .max_connections(self.max_connections)
            .max_client_message(self.max_client_message)
            .client_rate(self.client_rate)
            .client_burst(self.client_burst)
            .send_queue_frames(self.send_queue_frames)
            .send_queue_bytes(self.send_queue_bytes)
            .max_queued_bytes(self.max_queued_bytes)
            .shutdown_grace(self.shutdown_grace)
            .handshake_timeout(self.handshake_timeout)
            .allowed_origins(origins)
            .token(self.token.clone())
            .build()
            .map_err(|e| StartupError(config_error_message(&e)))
    }

    /// The scan roots, each canonical; a root that does not exist is an error naming it.
    fn scan_roots(&self, env: Option<OsString>) -> Result<Vec<PathBuf>, StartupError> {
        let (roots, source): (Vec<PathBuf>, &str) = if !self.scan_roots.is_empty() {
            (self.scan_roots.clone(), "--scan-root")
        } else if let Some(value) = env.filter(|v| !v.is_empty()) {
            (
                std::env::split_paths(&value)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect(),
                SCAN_ROOT_ENV,
            )
        } else {
            return Ok(Vec::new());
        };
        roots
            .into_iter()
            .map(|root| match root.canonicalize() {
                Ok(dir) if dir.is_dir() => Ok(dir),
                Ok(_) => Err(StartupError(format!(
                    "{source} {}: not a directory",
                    root.display()
                ))),
                Err(e) => Err(StartupError(format!("{source} {}: {e}", root.display()))),
            })
            .collect()
    }
}

/// The core's message with setting names written as flags.
fn config_error_message(error: &ConfigError) -> String {
    match error {
        ConfigError::Zero(name) => {
            format!("--{} must be greater than zero", name.replace('_', "-"))
        }
        ConfigError::LivenessNotAfterHeartbeat => {
            "--liveness-timeout must be longer than --heartbeat-interval".to_owned()
        }
        ConfigError::EmptyToken => "--token must not be empty".to_owned(),
        other => format!("invalid configuration: {other}"),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{e} (write e.g. 250ms, 30s, 5m)"))
}

fn parse_size(text: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = text
        .trim()
        .parse()
        .map_err(|e| format!("{e} (write e.g. 4096, 4KiB, 1MiB)"))?;
    usize::try_from(size.as_u64()).map_err(|_| "too large".to_owned())
}

fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let full;
    let text = if text.starts_with(':') {
        full = format!("127.0.0.1{text}");
        &full
    } else {
        text
    };
    text.parse()
        .map_err(|e| format!("{e} (write IP:PORT, e.g. 127.0.0.1:8765 or [::1]:0)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        Settings::try_parse_from(std::iter::once("ferret-ws").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_the_contracts() {
        // Tests run with a clean FERRET_WS_* environment (none of them set these variables).
        let s = parse(&[]).unwrap();
        assert_eq!(s.bind, "127.0.0.1:8765".parse().unwrap());
        assert_eq!(s.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(s.liveness_timeout, Duration::from_secs(60));
        assert_eq!(s.replay_buffer_size, 1000);
        assert_eq!(s.replay_ttl, Duration::from_secs(300));
        assert_eq!(s.max_connections, 10_000);
        assert_eq!(s.max_client_message, 4096);
        assert_eq!((s.client_rate, s.client_burst), (20, 40));
        assert_eq!((s.send_queue_frames, s.send_queue_bytes), (256, 1 << 20));
        assert_eq!(s.max_queued_bytes, 256 << 20);
        assert!(s.allowed_origins.is_empty() && s.token.is_none() && s.scan_roots.is_empty());
        assert!(!s.allow_insecure_bind);
        assert_eq!(s.shutdown_grace, Duration::from_secs(5));
        assert_eq!(s.handshake_timeout, Duration::from_secs(10));
        let config = s.hub_config().unwrap();
        assert_eq!(config.allowed_origins(), &OriginPolicy::Own);
        assert_eq!(config.handshake_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn durations_sizes_and_addresses() {
        let s = parse(&[
            "--heartbeat-interval",
            "250ms",
            "--liveness-timeout",
            "5m",
            "--max-client-message",
            "1MiB",
            "--send-queue-bytes",
            "2048",
            "--max-queued-bytes",
            "64MiB",
            "--bind",
            ":0",
            "--allowed-origin",
            "http://a.example,http://b.example",
            "--allowed-origin",
            "http://c.example",
        ])
        .unwrap();
        assert_eq!(s.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(s.liveness_timeout, Duration::from_secs(300));
        assert_eq!(s.max_client_message, 1 << 20);
        assert_eq!(s.send_queue_bytes, 2048);
        assert_eq!(s.hub_config().unwrap().max_queued_bytes(), 64 << 20);
        assert_eq!(s.bind, "127.0.0.1:0".parse().unwrap());
        assert_eq!(
            s.hub_config().unwrap().allowed_origins(),
            &OriginPolicy::List(vec![
                "http://a.example".into(),
                "http://b.example".into(),
                "http://c.example".into()
            ])
        );
        let any = parse(&["--allowed-origin", "*"]).unwrap();
        assert_eq!(
            any.hub_config().unwrap().allowed_origins(),
            &OriginPolicy::Any
        );
        assert_eq!(
            parse(&["--max-client-message", "4KiB"])
                .unwrap()
                .max_client_message,
            4096
        );
    }

    #[test]
    fn malformed_values_name_the_flag() {
        for (flag, value) in [
            ("--heartbeat-interval", "soon"),
            ("--heartbeat-interval", "30"),
            ("--max-client-message", "lots"),
            ("--bind", "localhost"),
            ("--max-connections", "-1"),
        ] {
            let err = parse(&[&format!("{flag}={value}")])
                .unwrap_err()
                .to_string();
            assert!(err.contains(flag), "{err}");
        }
    }

    #[test]
    fn impossible_combinations_name_the_flags() {
        let s = parse(&["--heartbeat-interval", "10s", "--liveness-timeout", "10s"]).unwrap();
        let err = s.hub_config().unwrap_err().to_string();
        assert!(
            err.contains("--liveness-timeout") && err.contains("--heartbeat-interval"),
            "{err}"
        );
        let err = parse(&["--client-rate", "0"])
            .unwrap()
            .hub_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--client-rate"), "{err}");
        let err = parse(&["--handshake-timeout", "0s"])
            .unwrap()
            .hub_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--handshake-timeout"), "{err}");
        let short = parse(&["--handshake-timeout", "300ms"]).unwrap();
        assert_eq!(
            short.hub_config().unwrap().handshake_timeout(),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn insecure_binds_are_refused_unless_allowed() {
        let err = parse(&["--bind", "0.0.0.0:8765"])
            .unwrap()
            .check_bind()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--token") && err.contains("--allow-insecure-bind"),
            "{err}"
        );
        assert!(parse(&["--bind", "0.0.0.0:8765", "--token", "t"])
            .unwrap()
            .check_bind()
            .is_ok());
        assert!(parse(&["--bind", "0.0.0.0:8765", "--allow-insecure-bind"])
            .unwrap()
            .check_bind()
            .is_ok());
        assert!(parse(&["--bind", "[::1]:8765"])
            .unwrap()
            .check_bind()
            .is_ok());
    }

    #[test]
    fn scan_roots_must_exist() {
        let s = parse(&["--scan-root", "/no/such/ferret/dir"]).unwrap();
        let err = s.scan_roots(None).unwrap_err().to_string();
        assert!(err.contains("--scan-root"), "{err}");
        let env = std::env::join_paths(["/tmp", "/"]).unwrap();
        let roots = parse(&[]).unwrap().scan_roots(Some(env)).unwrap();
        assert_eq!(roots.len(), 2);
        assert!(parse(&["--scan-root", "/tmp"])
            .unwrap()
            .scan_roots(Some("/nope".into()))
            .is_ok());
    }
}
