//! Properties of the `Host` check (PROTOCOL.md §3): listed names pass with any port and any
//! case, everything else is refused, and no input makes it panic.

use ferret_ws_core::{HostPolicy, HostVerdict, LOOPBACK_HOSTS};
use proptest::prelude::*;

/// A DNS-style name of one to four labels.
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9][a-z0-9-]{0,12}", 1..=4).prop_map(|labels| labels.join("."))
}

/// Changes the case of some ASCII letters, chosen by `mask`.
fn recase(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// `host`, with `:port` when there is one.
fn with_port(host: &str, port: Option<u16>) -> String {
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

proptest! {
    #[test]
    fn listed_names_pass_with_any_port_and_case(
        listed in prop::collection::vec(name(), 1..4),
        pick in any::<prop::sample::Index>(),
        port in any::<Option<u16>>(),
        mask in any::<u64>(),
        trailing_dot in any::<bool>(),
    ) {
        let policy = HostPolicy::only(&listed).unwrap();
        let mut host = recase(pick.get(&listed).as_str(), mask);
        if trailing_dot {
            host.push('.');
        }
        prop_assert!(policy.allows(&with_port(&host, port)), "{host:?} {port:?}");
    }

    #[test]
    fn loopback_names_pass_with_any_port_and_case(
        pick in any::<prop::sample::Index>(),
        port in any::<Option<u16>>(),
        mask in any::<u64>(),
        extra in prop::collection::vec(name(), 0..3),
    ) {
        let policy = HostPolicy::for_bind(true, &extra).unwrap();
        let host: &&str = pick.get(&LOOPBACK_HOSTS[..]);
        let host = recase(host, mask);
        prop_assert!(policy.allows(&with_port(&host, port)), "{host:?} {port:?}");
    }

    #[test]
    fn unlisted_names_are_refused_with_any_port(
        listed in prop::collection::vec(name(), 0..4),
        host in name(),
        port in any::<Option<u16>>(),
        mask in any::<u64>(),
        loopback_bind in any::<bool>(),
    ) {
        let loopback_name = loopback_bind && LOOPBACK_HOSTS.contains(&host.as_str());
        prop_assume!(!listed.contains(&host) && !loopback_name);
        prop_assume!(!listed.is_empty() || loopback_bind); // else the check is off
        let policy = HostPolicy::for_bind(loopback_bind, &listed).unwrap();
        let header = with_port(&recase(&host, mask), port);
        prop_assert_eq!(policy.judge(&header), HostVerdict::NotAllowed, "{}", header);
    }

    #[test]
    fn unlisted_ipv6_addresses_are_refused_with_any_port(
        address in any::<std::net::Ipv6Addr>(),
        port in any::<Option<u16>>(),
    ) {
        prop_assume!(!address.is_loopback());
        let header = with_port(&format!("[{address}]"), port);
        prop_assert_eq!(HostPolicy::loopback().judge(&header), HostVerdict::NotAllowed, "{}", header);
        // Written out in full, the loopback address still passes.
        let full = with_port("[0:0:0:0:0:0:0:1]", port);
        prop_assert!(HostPolicy::loopback().allows(&full));
    }

    #[test]
    fn a_listed_name_inside_a_longer_value_is_refused(
        prefix in "[a-z0-9.@:_-]{1,8}",
        suffix in "[a-z0-9.@:/_-]{1,8}",
        port in any::<Option<u16>>(),
    ) {
        // Such as `localhost.evil.example`, `evil.localhost`, `localhost@evil` or `x:localhost`.
        let policy = HostPolicy::loopback();
        for header in [
            with_port(&format!("{prefix}localhost"), port),
            with_port(&format!("localhost{suffix}"), port),
        ] {
            let trimmed = header.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches(':');
            prop_assume!(trimmed != "localhost" && trimmed != "localhost.");
            prop_assert!(!policy.allows(&header), "{}", header);
        }
    }

    #[test]
    fn any_input_is_judged_without_panicking(value in "\\PC{0,40}", bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        let policies = [HostPolicy::loopback(), HostPolicy::only(["example.com"]).unwrap(), HostPolicy::any()];
        let lossy = String::from_utf8_lossy(&bytes);
        for policy in &policies {
            let verdict = policy.judge(&value);
            prop_assert_eq!(verdict == HostVerdict::Allowed, policy.allows(&value));
            let _ = policy.judge(&lossy);
        }
        prop_assert!(HostPolicy::any().allows(&value));
    }
}
