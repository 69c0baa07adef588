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
use ferret_ws_core::{ConfigError, HostPolicy, HubConfig, OriginPolicy};

use crate::app::AppBuilder;
use crate::cluster::ClusterConfig;

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

    /// Open WebSocket connections from one IP address at most; more get HTTP 429 with
    /// Retry-After. Default: no cap on a loopback --bind (every local client shares
    /// 127.0.0.1), 100 on any other.
    #[arg(long, env = "FERRET_WS_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

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
    /// Prefer --token-file or the environment variable: a flag shows in `ps`.
    #[arg(
        long,
        env = "FERRET_WS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Read the access token (see --token) from this file, trailing newline dropped, so it
    /// stays out of `ps` and the shell history. Conflicts with --token.
    #[arg(
        long,
        env = "FERRET_WS_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,

    /// A host name that requests may name in their Host header, besides 127.0.0.1, localhost
    /// and `[::1]` on a loopback --bind (repeatable, or comma-separated; `*` turns the check
    /// off). On another --bind, every Host is allowed unless this is given, then only these.
    /// Other hosts get 403: the check stops DNS-rebinding pages from reaching a local server.
    #[arg(
        long = "allowed-host",
        env = "FERRET_WS_ALLOWED_HOST",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

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

    /// How long a client may take to send a whole request: the head (also bounded by
    /// --handshake-timeout) and the body after it; a body still arriving then is answered 408
    /// and the connection closed.
    #[arg(long, env = "FERRET_WS_REQUEST_TIMEOUT", value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// HTTP connections served at once; more wait in the kernel's accept queue. WebSocket
    /// connections stop counting once upgraded (--max-connections bounds them).
    #[arg(
        long,
        env = "FERRET_WS_MAX_HTTP_CONNECTIONS",
        value_name = "N",
        default_value_t = crate::app::DEFAULT_MAX_HTTP_CONNECTIONS
    )]
    pub max_http_connections: usize,

    /// Projects kept in memory at most; creating more answers 409 too_many_projects.
    #[arg(
        long,
        env = "FERRET_WS_MAX_PROJECTS",
        value_name = "N",
        default_value_t = crate::app::DEFAULT_MAX_PROJECTS
    )]
    pub max_projects: usize,

    /// Scan jobs waiting or running at once; more are answered 429 with Retry-After.
    #[arg(
        long,
        env = "FERRET_WS_MAX_SCAN_JOBS",
        value_name = "N",
        default_value_t = crate::app::DEFAULT_MAX_SCAN_JOBS
    )]
    pub max_scan_jobs: usize,

    /// Directory entries one scan may read; a scan that needs more fails (job_progress
    /// status "failed", naming this limit).
    #[arg(
        long,
        env = "FERRET_WS_SCAN_MAX_ENTRIES",
        value_name = "N",
        default_value_t = crate::app::DEFAULT_SCAN_MAX_ENTRIES
    )]
    pub scan_max_entries: u64,

    /// How long one scan's walk may take; a longer one fails (job_progress status "failed",
    /// naming this limit).
    #[arg(long, env = "FERRET_WS_SCAN_TIMEOUT", value_name = "DUR", default_value = "5m", value_parser = parse_duration)]
    pub scan_timeout: Duration,

    /// On SIGTERM or SIGINT: how long clients get to take their last event and close; the
    /// process exits within it.
    #[arg(long, env = "FERRET_WS_SHUTDOWN_GRACE", value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Cluster mode: share one event stream with other nodes on this Redis
    /// (redis://HOST:PORT/DB). Without it, the hub is embedded in the process.
    #[arg(long, env = "FERRET_WS_REDIS", value_name = "URL")]
    pub redis: Option<String>,

    /// The Redis Stream's key (cluster mode).
    #[arg(long, env = "FERRET_WS_REDIS_STREAM", value_name = "KEY", default_value = crate::cluster::DEFAULT_STREAM)]
    pub redis_stream: String,

    /// The stream is trimmed to about this many events (cluster mode).
    #[arg(long, env = "FERRET_WS_REDIS_MAXLEN", value_name = "N", default_value_t = crate::cluster::DEFAULT_MAXLEN)]
    pub redis_maxlen: u64,
}

/// The per-address cap of `/ws` connections on a non-loopback `--bind`, unless
/// `--max-connections-per-ip` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 100;

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
        self.check_limits()?;
        let config = self.hub_config()?;
        let roots = self.scan_roots(scan_root_env)?;
        let mut builder = AppBuilder::default();
        if let Some(url) = &self.redis {
            let cluster = ClusterConfig {
                url: url.clone(),
                stream: self.redis_stream.clone(),
                maxlen: self.redis_maxlen,
            };
            cluster.check().map_err(|e| StartupError(e.to_string()))?;
            builder = builder.cluster(cluster);
        }
        Ok(builder
            .hub_config(config)
            .host_policy(self.host_policy()?)
            .request_timeout(self.request_timeout)
            .max_http_connections(self.max_http_connections)
            .max_projects(self.max_projects)
            .max_scan_jobs(self.max_scan_jobs)
            .scan_max_entries(self.scan_max_entries)
            .scan_timeout(self.scan_timeout)
            .scan_any_directory(roots.is_empty() && self.bind.ip().is_loopback())
            .scan_roots(roots))
    }

    /// Refuses a non-loopback bind without `--token` (or `--token-file`), unless
    /// `--allow-insecure-bind`.
    pub fn check_bind(&self) -> Result<(), StartupError> {
        let has_token = self.token.is_some() || self.token_file.is_some();
        if self.bind.ip().is_loopback() || has_token || self.allow_insecure_bind {
            return Ok(());
        }
        Err(StartupError(format!(
            "refusing to listen on {} without --token: every host that can reach it could read all \
             events and publish. Set --token-file PATH or FERRET_WS_TOKEN (or --token TOKEN), or \
             pass --allow-insecure-bind to accept that.",
            self.bind
        )))
    }

    /// The `Host` check for `--bind` and `--allowed-host` (PROTOCOL.md §3).
    pub fn host_policy(&self) -> Result<HostPolicy, StartupError> {
        HostPolicy::for_bind(self.bind.ip().is_loopback(), &self.allowed_hosts)
            .map_err(|e| StartupError(format!("--allowed-host: {e}")))
    }

    /// The access token: `--token`, or the contents of `--token-file` without the trailing
    /// newline. A file that cannot be read, is empty or holds more than one line is an error
    /// naming `--token-file`.
    pub fn token(&self) -> Result<Option<String>, StartupError> {
        let Some(path) = &self.token_file else {
            return Ok(self.token.clone());
        };
        let fail = |why: String| StartupError(format!("--token-file {}: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let token = text.trim_end_matches(['\n', '\r']);
        if token.is_empty() {
            return Err(fail("the file holds no token".into()));
        }
        if token.contains(['\n', '\r']) {
            return Err(fail("the token must be on one line".into()));
        }
        Ok(Some(token.to_owned()))
    }

    /// Refuses limits of zero, naming the flag.
    fn check_limits(&self) -> Result<(), StartupError> {
        let zero = [
            ("--max-http-connections", self.max_http_connections == 0),
            ("--max-projects", self.max_projects == 0),
            ("--max-scan-jobs", self.max_scan_jobs == 0),
            ("--scan-max-entries", self.scan_max_entries == 0),
            ("--request-timeout", self.request_timeout.is_zero()),
            ("--scan-timeout", self.scan_timeout.is_zero()),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((flag, _)) => Err(StartupError(format!("{flag} must be greater than zero"))),
            None => Ok(()),
        }
    }

    /// The per-address cap: the flag, else none on a loopback bind and
    /// [`DEFAULT_MAX_CONNECTIONS_PER_IP`] on any other.
    fn connections_per_ip(&self) -> Option<usize> {
        self.max_connections_per_ip
            .or((!self.bind.ip().is_loopback()).then_some(DEFAULT_MAX_CONNECTIONS_PER_IP))
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
            .max_connections_per_ip(self.connections_per_ip())
            .max_client_message(self.max_client_message)
            .client_rate(self.client_rate)
            .client_burst(self.client_burst)
            .send_queue_frames(self.send_queue_frames)
            .send_queue_bytes(self.send_queue_bytes)
            .max_queued_bytes(self.max_queued_bytes)
            .shutdown_grace(self.shutdown_grace)
            .handshake_timeout(self.handshake_timeout)
            .allowed_origins(origins)
            .token(self.token()?)
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
        assert_eq!(s.request_timeout, Duration::from_secs(30));
        assert_eq!(s.max_http_connections, 1024);
        assert_eq!(s.max_projects, 10_000);
        assert_eq!((s.max_scan_jobs, s.scan_max_entries), (16, 1_000_000));
        assert_eq!(s.scan_timeout, Duration::from_secs(300));
        assert!(s.allowed_hosts.is_empty() && s.token_file.is_none());
        assert_eq!(s.host_policy().unwrap(), HostPolicy::loopback());
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
            ("--request-timeout", "soon"),
            ("--max-http-connections", "many"),
            ("--max-projects", "-5"),
            ("--max-scan-jobs", "x"),
            ("--scan-max-entries", "1e6"),
            ("--scan-timeout", "forever"),
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
    fn zero_limits_name_the_flag() {
        for flag in [
            "--max-http-connections",
            "--max-projects",
            "--max-scan-jobs",
            "--scan-max-entries",
            "--request-timeout",
            "--scan-timeout",
        ] {
            let value = if flag.ends_with("timeout") { "0s" } else { "0" };
            let err = parse(&[flag, value])
                .unwrap()
                .app_builder(None)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(flag), "{err}");
        }
    }

    #[test]
    fn allowed_hosts_follow_the_bind() {
        let loopback = parse(&[
            "--allowed-host",
            "media.local,Other.Local",
            "--allowed-host",
            "x",
        ])
        .unwrap()
        .host_policy()
        .unwrap();
        assert!(loopback.allows("localhost:8765") && loopback.allows("other.local:1"));
        assert!(loopback.allows("x") && !loopback.allows("evil.example"));
        let public = parse(&["--bind", "0.0.0.0:8765"]).unwrap();
        assert!(public.host_policy().unwrap().is_any());
        let listed = parse(&["--bind", "0.0.0.0:8765", "--allowed-host", "ferret.example"])
            .unwrap()
            .host_policy()
            .unwrap();
        assert!(listed.allows("ferret.example:8765") && !listed.allows("localhost"));
        assert!(parse(&["--allowed-host", "*"])
            .unwrap()
            .host_policy()
            .unwrap()
            .is_any());
        let err = parse(&["--allowed-host", "evil.example:80"])
            .unwrap()
            .host_policy()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--allowed-host") && err.contains("evil.example:80"),
            "{err}"
        );
    }

    #[test]
    fn the_token_file_gives_the_token_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        for (content, token) in [
            ("sesame\n", "sesame"),
            ("sesame\r\n", "sesame"),
            ("se same", "se same"),
        ] {
            std::fs::write(&file, content).unwrap();
            let s = parse(&["--token-file", file.to_str().unwrap()]).unwrap();
            assert_eq!(s.token().unwrap().as_deref(), Some(token), "{content:?}");
            assert_eq!(s.hub_config().unwrap().token(), Some(token));
        }
        for bad in ["", "\n", "two\nlines\n"] {
            std::fs::write(&file, bad).unwrap();
            let err = parse(&["--token-file", file.to_str().unwrap()])
                .unwrap()
                .token()
                .unwrap_err()
                .to_string();
            assert!(err.contains("--token-file"), "{err}");
        }
        let missing = dir.path().join("missing");
        let err = parse(&["--token-file", missing.to_str().unwrap()])
            .unwrap()
            .app_builder(None)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("--token-file") && err.contains("missing"),
            "{err}"
        );
        // With a token file, a public bind needs no --allow-insecure-bind.
        std::fs::write(&file, "sesame\n").unwrap();
        assert!(parse(&[
            "--bind",
            "0.0.0.0:1",
            "--token-file",
            file.to_str().unwrap()
        ])
        .unwrap()
        .check_bind()
        .is_ok());
        let err = parse(&["--token", "t", "--token-file", file.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--token-file") && err.contains("--token"),
            "{err}"
        );
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
