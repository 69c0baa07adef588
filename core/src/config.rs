//! Hub configuration: every bound is a knob with a safe default, checked once when built.

use std::fmt;
use std::time::Duration;

use crate::handshake::OriginPolicy;

/// The hub's settings. Build one with [`HubConfig::builder`]; the defaults are the contract's.
#[derive(Debug, Clone)]
pub struct HubConfig {
    heartbeat_interval: Duration,
    liveness_timeout: Duration,
    replay_buffer_size: usize,
    replay_buffer_bytes: usize,
    replay_ttl: Duration,
    max_connections: usize,
    max_client_message: usize,
    client_rate: u32,
    client_burst: u32,
    send_queue_frames: usize,
    send_queue_bytes: usize,
    max_queued_bytes: usize,
    close_timeout: Duration,
    shutdown_grace: Duration,
    handshake_timeout: Duration,
    max_idempotency_keys: usize,
    max_connections_per_ip: Option<usize>,
    allowed_origins: OriginPolicy,
    token: Option<String>,
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            heartbeat_interval: Duration::from_secs(30),
            liveness_timeout: Duration::from_secs(60),
            replay_buffer_size: 1000,
            replay_buffer_bytes: 64 << 20,
            replay_ttl: Duration::from_secs(300),
            max_connections: 10_000,
            max_client_message: 4 << 10,
            client_rate: 20,
            client_burst: 40,
            send_queue_frames: 256,
            send_queue_bytes: 1 << 20,
            max_queued_bytes: 256 << 20,
            close_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            max_idempotency_keys: 65_536,
            max_connections_per_ip: None,
            allowed_origins: OriginPolicy::Own,
            token: None,
        }
    }
}

macro_rules! accessors {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl HubConfig {
            $($(#[$doc])* pub fn $name(&self) -> $ty { self.$name })*
        }
        impl HubConfigBuilder {
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> HubConfigBuilder {
                self.config.$name = value;
                self
            })*
        }
    };
}

accessors! {
    /// How often every connection gets one `heartbeat` event and one Ping (default 30 s).
    heartbeat_interval: Duration;
    /// How long a connection may stay silent before it is closed with 4408 (default 60 s).
    /// Must be longer than `heartbeat_interval`.
    liveness_timeout: Duration;
    /// How many events the replay buffer keeps; 0 turns replay off (default 1000).
    replay_buffer_size: usize;
    /// How many bytes of encoded events the replay buffer keeps at most (default 64 MiB).
    replay_buffer_bytes: usize;
    /// How long an event stays replayable (default 300 s).
    replay_ttl: Duration;
    /// The most open connections; more are refused with HTTP 503 (default 10 000).
    max_connections: usize;
    /// The largest client message in bytes; larger closes with 1009 (default 4 KiB).
    max_client_message: usize;
    /// Sustained client messages per second; faster closes with 4429 (default 20).
    client_rate: u32;
    /// Client messages allowed in a burst above the rate (default 40).
    client_burst: u32;
    /// Frames queued to one connection before it is a slow consumer, 4008 (default 256).
    send_queue_frames: usize;
    /// Bytes queued to one connection before it is a slow consumer, 4008 (default 1 MiB).
    /// One frame always fits in an empty queue, whatever its size.
    send_queue_bytes: usize;
    /// Bytes queued to all connections together (a frame sent to many counts once) before a
    /// publish closes the connections with the most queued, 4008, until it fits (default
    /// 256 MiB). One frame always fits when nothing is queued.
    max_queued_bytes: usize;
    /// How long a close handshake may take before the socket is aborted (default 5 s).
    close_timeout: Duration;
    /// How long shutdown waits for clients to take their last frames (default 5 s).
    shutdown_grace: Duration;
    /// How long a client may take, from the moment its connection is accepted, to send its
    /// HTTP request head (and, on the standalone accept loop, to finish the whole WebSocket
    /// handshake); slower connections are dropped (default 10 s). Bounds what a client that
    /// connects and then dribbles or withholds its request (slowloris) can hold.
    handshake_timeout: Duration;
    /// How many `Idempotency-Key`s the sequencer remembers at most (each for `replay_ttl`);
    /// past it the oldest is forgotten first (default 65 536; 0 turns the dedupe off).
    max_idempotency_keys: usize;
    /// The most open connections from one IP address; more are refused with HTTP 429 and
    /// `Retry-After` (default: no limit).
    max_connections_per_ip: Option<usize>;
}

impl HubConfig {
    /// A builder holding the defaults.
    pub fn builder() -> HubConfigBuilder {
        HubConfigBuilder {
            config: HubConfig::default(),
        }
    }

    /// Which browser origins may connect (default: the server's own).
    pub fn allowed_origins(&self) -> &OriginPolicy {
        &self.allowed_origins
    }

    /// The access token `/ws` requires, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// Builds a [`HubConfig`]; [`HubConfigBuilder::build`] checks the settings together.
#[derive(Debug, Clone)]
pub struct HubConfigBuilder {
    config: HubConfig,
}

impl HubConfigBuilder {
    /// Sets which browser origins may connect.
    pub fn allowed_origins(mut self, policy: OriginPolicy) -> HubConfigBuilder {
        self.config.allowed_origins = policy;
        self
    }

    /// Sets the access token `/ws` requires (`None`: no token).
    pub fn token(mut self, token: Option<String>) -> HubConfigBuilder {
        self.config.token = token;
        self
    }

    /// Checks the settings and returns the configuration.
    pub fn build(self) -> Result<HubConfig, ConfigError> {
        let c = &self.config;
        let positive = [
            ("heartbeat_interval", c.heartbeat_interval.is_zero()),
            ("replay_ttl", c.replay_ttl.is_zero()),
            ("handshake_timeout", c.handshake_timeout.is_zero()),
            ("max_connections", c.max_connections == 0),
            (
                "max_connections_per_ip",
                c.max_connections_per_ip == Some(0),
            ),
            ("max_client_message", c.max_client_message == 0),
            ("client_rate", c.client_rate == 0),
            ("client_burst", c.client_burst == 0),
            ("send_queue_frames", c.send_queue_frames == 0),
            ("send_queue_bytes", c.send_queue_bytes == 0),
            ("max_queued_bytes", c.max_queued_bytes == 0),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::Zero(name));
        }
        if c.liveness_timeout <= c.heartbeat_interval {
            return Err(ConfigError::LivenessNotAfterHeartbeat);
        }
        if c.token.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::EmptyToken);
        }
        Ok(self.config)
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// This setting must be greater than zero.
    Zero(&'static str),
    /// `liveness_timeout` must be longer than `heartbeat_interval`, or connections that answer
    /// every ping could be closed.
    LivenessNotAfterHeartbeat,
    /// The token is empty; leave it unset instead.
    EmptyToken,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Zero(name) => write!(f, "{name} must be greater than zero"),
            ConfigError::LivenessNotAfterHeartbeat => {
                f.write_str("liveness_timeout must be longer than heartbeat_interval")
            }
            ConfigError::EmptyToken => f.write_str("token must not be empty"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_contracts() {
        let c = HubConfig::builder().build().unwrap();
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(30));
        assert_eq!(c.liveness_timeout(), Duration::from_secs(60));
        assert_eq!(c.replay_buffer_size(), 1000);
        assert_eq!(c.replay_ttl(), Duration::from_secs(300));
        assert_eq!(c.max_connections(), 10_000);
        assert_eq!(c.max_client_message(), 4096);
        assert_eq!((c.client_rate(), c.client_burst()), (20, 40));
        assert_eq!(
            (c.send_queue_frames(), c.send_queue_bytes()),
            (256, 1 << 20)
        );
        assert_eq!(c.max_queued_bytes(), 256 << 20);
        assert_eq!(c.shutdown_grace(), Duration::from_secs(5));
        assert_eq!(c.handshake_timeout(), Duration::from_secs(10));
        assert_eq!(c.allowed_origins(), &OriginPolicy::Own);
    }

    #[test]
    fn impossible_settings_are_refused() {
        let err = HubConfig::builder().client_rate(0).build().unwrap_err();
        assert_eq!(err, ConfigError::Zero("client_rate"));
        let err = HubConfig::builder()
            .handshake_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::Zero("handshake_timeout"));
        let err = HubConfig::builder()
            .heartbeat_interval(Duration::from_secs(10))
            .liveness_timeout(Duration::from_secs(10))
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::LivenessNotAfterHeartbeat);
        let err = HubConfig::builder()
            .token(Some(String::new()))
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::EmptyToken);
        assert!(HubConfig::builder().replay_buffer_size(0).build().is_ok());
    }
}
