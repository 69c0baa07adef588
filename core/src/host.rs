//! The `Host` check against DNS rebinding (PROTOCOL.md §3).
//!
//! # Theory of operation
//!
//! A page on `evil.example` can point its own name at `127.0.0.1` (DNS rebinding); the
//! victim's browser then sends the page's requests to a server on loopback, and treats the
//! answers as same-origin. What the browser cannot hide is the name it thinks it is talking
//! to: every request carries `Host: evil.example:PORT`. A server on a loopback address
//! therefore answers only requests whose `Host` names the machine itself (`127.0.0.1`,
//! `localhost`, `[::1]`), plus the names the operator adds.
//!
//! [`HostPolicy::judge`] is the whole decision, a pure function of the header value:
//!
//! | `Host` value | verdict |
//! |---|---|
//! | a listed name, any case, with or without one trailing dot, any port or none | [`HostVerdict::Allowed`] |
//! | a well-formed name or address that is not listed | [`HostVerdict::NotAllowed`] |
//! | anything else (empty, a bad port, `user@host`, `%` escapes, a bare IPv6 address, non-ASCII, ...) | [`HostVerdict::Malformed`] |
//!
//! With [`HostPolicy::any`] every value is allowed, garbage included: the check is off.
//! IPv6 literals are compared as addresses, so `[0:0::1]` is `[::1]`; other names are
//! compared as lowercase text, so `127.1` is not `127.0.0.1` (browsers never send the former:
//! their URL parser writes addresses out in full).

use std::fmt;
use std::net::Ipv6Addr;

/// The names a loopback server always answers to.
pub const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

/// Which `Host` header values a server answers.
///
/// Build it with [`HostPolicy::for_bind`] (the contract's rule for a `--bind` address and
/// `--allowed-host` names), or with [`HostPolicy::loopback`], [`HostPolicy::only`] and
/// [`HostPolicy::any`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    /// `None`: every value passes (the check is off).
    allowed: Option<Vec<HostKey>>,
}

/// What [`HostPolicy::judge`] makes of a `Host` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostVerdict {
    /// The value names an allowed host (or the check is off): serve the request.
    Allowed,
    /// A well-formed name or address that the policy does not list: refuse the request
    /// (the server answers 403 `host_not_allowed`).
    NotAllowed,
    /// Not a valid `Host` value at all (RFC 9110 §7.2, RFC 3986 §3.2.2): refuse the request
    /// (the server answers 400 `invalid_host`, as RFC 9112 §3.2 asks).
    Malformed,
}

/// A name given to [`HostPolicy::only`] or [`HostPolicy::for_bind`] that is not a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNameError {
    name: String,
}

impl HostNameError {
    /// The name as it was given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for HostNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a host name (write a name such as example.com, an IPv4 address or an \
             IPv6 address such as [2001:db8::1], without a port; or * for any)",
            self.name
        )
    }
}

impl std::error::Error for HostNameError {}

impl HostPolicy {
    /// Every `Host` value is allowed: the check is off.
    pub fn any() -> HostPolicy {
        HostPolicy { allowed: None }
    }

    /// Only the loopback names ([`LOOPBACK_HOSTS`]).
    pub fn loopback() -> HostPolicy {
        HostPolicy {
            allowed: Some(loopback_keys()),
        }
    }

    /// Only these names (any port). A name is written without a port: `example.com`,
    /// `192.0.2.7`, `[2001:db8::1]` or `2001:db8::1`; case and one trailing dot do not matter.
    /// `*` is not special here (see [`HostPolicy::for_bind`]); it is an error.
    pub fn only<I, S>(names: I) -> Result<HostPolicy, HostNameError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut allowed = Vec::new();
        for name in names {
            push_unique(&mut allowed, parse_configured(name.as_ref())?);
        }
        Ok(HostPolicy {
            allowed: Some(allowed),
        })
    }

    /// The contract's rule (PROTOCOL.md §3) for a server bound to a loopback address or not,
    /// with the operator's `--allowed-host` names:
    ///
    /// - any name is `*`: every value is allowed (the check is off);
    /// - a loopback bind: [`LOOPBACK_HOSTS`] and the given names;
    /// - another bind: every value when no name is given, else only the given names.
    pub fn for_bind<I, S>(loopback_bind: bool, names: I) -> Result<HostPolicy, HostNameError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let names: Vec<S> = names.into_iter().collect();
        if names.iter().any(|name| name.as_ref().trim() == "*") {
            return Ok(HostPolicy::any());
        }
        let mut policy = HostPolicy::only(&names)?;
        if loopback_bind {
            let allowed = policy.allowed.get_or_insert_with(Vec::new);
            for key in loopback_keys() {
                push_unique(allowed, key);
            }
        } else if names.is_empty() {
            policy = HostPolicy::any();
        }
        Ok(policy)
    }

    /// Whether every value is allowed (the check is off).
    pub fn is_any(&self) -> bool {
        self.allowed.is_none()
    }

    /// Judges one `Host` header value (also the authority of an absolute-form request
    /// target): `name`, `name:port`, `[ipv6]` or `[ipv6]:port`. Surrounding spaces and tabs
    /// are ignored.
    pub fn judge(&self, host_header: &str) -> HostVerdict {
        let Some(allowed) = &self.allowed else {
            return HostVerdict::Allowed;
        };
        match parse_header(host_header) {
            None => HostVerdict::Malformed,
            Some(key) if allowed.contains(&key) => HostVerdict::Allowed,
            Some(_) => HostVerdict::NotAllowed,
        }
    }

    /// Whether a request with this `Host` value may be served: [`HostPolicy::judge`] says
    /// [`HostVerdict::Allowed`].
    pub fn allows(&self, host_header: &str) -> bool {
        self.judge(host_header) == HostVerdict::Allowed
    }
}

impl Default for HostPolicy {
    /// [`HostPolicy::loopback`]: the safe choice for a server on loopback, the common case.
    fn default() -> HostPolicy {
        HostPolicy::loopback()
    }
}

/// A host as compared: an IPv6 address, or a lowercase name without its trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostKey {
    Name(Box<str>),
    V6(Ipv6Addr),
}

/// The longest name (RFC 1035 §2.3.4: 255 octets on the wire, 253 written out).
const MAX_NAME_LEN: usize = 253;
/// The longest label of a name (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

fn loopback_keys() -> Vec<HostKey> {
    LOOPBACK_HOSTS
        .iter()
        .map(|name| parse_configured(name).expect("the loopback names are valid"))
        .collect()
}

fn push_unique(keys: &mut Vec<HostKey>, key: HostKey) {
    if !keys.contains(&key) {
        keys.push(key);
    }
}

/// A name from the configuration: no port; an IPv6 address with or without brackets.
fn parse_configured(name: &str) -> Result<HostKey, HostNameError> {
    let trimmed = name.trim();
    let key = if let Some(inner) = trimmed
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        inner.parse().ok().map(HostKey::V6)
    } else if let Ok(address) = trimmed.parse::<Ipv6Addr>() {
        Some(HostKey::V6(address))
    } else {
        reg_name(trimmed).map(HostKey::Name)
    };
    key.ok_or_else(|| HostNameError {
        name: name.to_owned(),
    })
}

/// A `Host` header value: `host [":" port]` (RFC 9110 §7.2), where host is an IPv6 literal
/// in brackets or a registered name / IPv4 address (RFC 3986 §3.2.2). `None` if malformed.
fn parse_header(value: &str) -> Option<HostKey> {
    let value = value.trim_matches([' ', '\t']);
    let (key, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        // A zone id (`%25eth0`) or an IPvFuture (`v1.x`) does not parse: malformed.
        let address: Ipv6Addr = inner.parse().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (HostKey::V6(address), port)
    } else {
        let (name, port) = match value.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        };
        (HostKey::Name(reg_name(name)?), port)
    };
    match port {
        Some(port) if !is_port(port) => None,
        _ => Some(key),
    }
}

/// 1 to 5 digits, at most 65535. (RFC 3986 allows an empty port; no client sends one, so it is
/// refused as malformed rather than guessed at.)
fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u32>().is_ok_and(|port| port <= 65_535)
}

/// A registered name or IPv4 address, lowercased and without one trailing dot: labels of
/// letters, digits, `-` and `_` (the last for names some networks use), separated by dots.
fn reg_name(name: &str) -> Option<Box<str>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| name.to_ascii_lowercase().into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_pass_with_any_port_and_case() {
        let policy = HostPolicy::loopback();
        for host in [
            "127.0.0.1",
            "127.0.0.1:8765",
            "localhost",
            "LOCALHOST:80",
            "LocalHost.:8765",
            "localhost.",
            "[::1]",
            "[::1]:8765",
            "[0:0:0:0:0:0:0:1]:1",
            " localhost:8765\t",
            "127.0.0.1.:0",
            "localhost:65535",
        ] {
            assert_eq!(policy.judge(host), HostVerdict::Allowed, "{host:?}");
        }
    }

    #[test]
    fn other_well_formed_hosts_are_not_allowed() {
        let policy = HostPolicy::loopback();
        for host in [
            "evil.example",
            "evil.example:8765",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "127.0.0.2",
            "127.1",
            "0.0.0.0:8765",
            "[::2]:8765",
            "[::ffff:127.0.0.1]",
            "xn--80ak6aa92e.com",
            "local_host",
        ] {
            assert_eq!(policy.judge(host), HostVerdict::NotAllowed, "{host:?}");
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let policy = HostPolicy::loopback();
        for host in [
            "",
            "   ",
            ":8765",
            "localhost:",
            "localhost:65536",
            "localhost:123456",
            "localhost:-1",
            "localhost:+80",
            "localhost:80:80",
            "localhost..",
            ".localhost",
            "local..host",
            "user@localhost",
            "localhost/path",
            "local%68ost",
            "lo calhost",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::1]:8765:1",
            "[fe80::1%25eth0]",
            "[v1.fe]",
            "[]",
            "[127.0.0.1]",
            "lоcalhost", // a Cyrillic о
            "\u{0}",
        ] {
            assert_eq!(policy.judge(host), HostVerdict::Malformed, "{host:?}");
            assert!(!policy.allows(host), "{host:?}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert_eq!(policy.judge(&long), HostVerdict::Malformed);
        let too_long = ["abc"; 70].join(".");
        assert_eq!(policy.judge(&too_long), HostVerdict::Malformed);
    }

    #[test]
    fn any_allows_everything_even_garbage() {
        let any = HostPolicy::any();
        assert!(any.is_any());
        for host in ["evil.example", "", "user@x", "[::1"] {
            assert_eq!(any.judge(host), HostVerdict::Allowed, "{host:?}");
        }
    }

    #[test]
    fn the_bind_decides_the_default() {
        let none: [&str; 0] = [];
        let loopback = HostPolicy::for_bind(true, none).unwrap();
        assert_eq!(loopback, HostPolicy::loopback());
        assert!(!loopback.allows("evil.example"));
        assert!(HostPolicy::for_bind(false, none).unwrap().is_any());

        let extended = HostPolicy::for_bind(true, ["Media.Local."]).unwrap();
        assert!(extended.allows("media.local:8765") && extended.allows("localhost:1"));
        assert!(!extended.allows("other.local"));

        let public = HostPolicy::for_bind(false, ["ferret.example", "2001:db8::7"]).unwrap();
        assert!(public.allows("FERRET.example:443") && public.allows("[2001:db8:0::7]"));
        assert!(!public.allows("localhost") && !public.allows("127.0.0.1"));

        for star in [["*"], [" * "]] {
            assert!(HostPolicy::for_bind(true, star).unwrap().is_any());
            assert!(HostPolicy::for_bind(false, star).unwrap().is_any());
        }
    }

    #[test]
    fn configured_names_must_be_names() {
        for bad in [
            "",
            "evil.example:80",
            "[::1]:80",
            "http://evil.example",
            "a..b",
            "*.example",
        ] {
            let err = HostPolicy::only([bad]).unwrap_err();
            assert_eq!(err.name(), bad);
            assert!(err.to_string().contains("not a host name"), "{err}");
        }
        assert_eq!(
            HostPolicy::only(["[::1]", "::1", "0:0::1"]).unwrap(),
            HostPolicy {
                allowed: Some(vec![HostKey::V6(Ipv6Addr::LOCALHOST)])
            }
        );
    }

    #[test]
    fn the_default_is_loopback() {
        assert_eq!(HostPolicy::default(), HostPolicy::loopback());
    }
}
