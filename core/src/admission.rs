//! Admission: the `/ws` handshake decision together with the connection slots it hands out.
//!
//! Both handshake paths (the standalone accept loop and a host framework's upgrade handler)
//! call [`Admission::admit`] and nothing else: it reads the request, checks the slots (all
//! connections, and those of the client's address), and counts what it refused for the
//! metrics. Every admitted handshake holds a [`Slot`], accepted or rejected (a 4400/4401
//! still holds its connection until the socket is gone), which the caller gives back with
//! [`Admission::release`].
//!
//! Handshakes are decided in the connection's own task, away from the hub's, so the
//! adapter keeps its `Admission` behind a lock; every call is short and never waits.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::HubConfig;
use crate::handshake::{
    decide, Capacity, ConnParams, Decision, HandshakeRequest, Refusal, Rejection,
};
use crate::metrics::Metrics;

/// Connection slots and refusal counts, with the handshake decision.
#[derive(Debug)]
pub struct Admission {
    config: HubConfig,
    /// Slots held now.
    held: usize,
    /// Slots held now per client address (only with `max_connections_per_ip`).
    per_peer: BTreeMap<IpAddr, usize>,
    /// Handshakes refused before upgrading, by HTTP status.
    refused: BTreeMap<u16, u64>,
    /// Handshakes answered with a close frame after upgrading, by close code.
    rejected: BTreeMap<u16, u64>,
    /// Whether the hub can serve: `false` until a cluster node has reached its log.
    available: bool,
}

/// One of the `max_connections` slots, held by an admitted handshake until its socket is
/// gone; give it back with [`Admission::release`]. Not `Clone`: each slot is released once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a slot must be given back with Admission::release"]
pub struct Slot {
    peer: Option<IpAddr>,
}

/// What to do with a `/ws` request ([`Admission::admit`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Upgrade, then register the connection with these parameters
    /// ([`crate::Hub::accept`]).
    Accept(ConnParams, Slot),
    /// Upgrade, then send this close frame (4400, 4401) and end the connection.
    Reject(Rejection, Slot),
    /// Answer with this HTTP error and do not upgrade; no slot is held.
    Refuse(Refusal),
}

impl Admission {
    /// Admission for a hub with this configuration: no slot held, nothing counted.
    pub fn new(config: &HubConfig) -> Admission {
        Admission {
            config: config.clone(),
            held: 0,
            per_peer: BTreeMap::new(),
            refused: BTreeMap::new(),
            rejected: BTreeMap::new(),
            available: true,
        }
    }

    /// Whether new connections can be served. A cluster node that has not yet reached its
    /// log sets `false`: handshakes are then refused with 503 and `Retry-After`.
    pub fn set_available(&mut self, available: bool) {
        self.available = available;
    }

    /// Decides a handshake ([`decide`]) and takes a slot for an upgrade.
    pub fn admit(&mut self, request: &HandshakeRequest<'_>) -> Admit {
        let decision = decide(&self.config, request, self.capacity(request.peer));
        match decision {
            Decision::Refuse(refusal) => {
                *self.refused.entry(refusal.status).or_default() += 1;
                Admit::Refuse(refusal)
            }
            Decision::Accept(params) => Admit::Accept(params, self.take(request.peer)),
            Decision::Reject(rejection) => {
                *self.rejected.entry(rejection.code.0).or_default() += 1;
                Admit::Reject(rejection, self.take(request.peer))
            }
        }
    }

    /// Gives a slot back: its socket is gone.
    pub fn release(&mut self, slot: Slot) {
        self.held = self.held.saturating_sub(1);
        if let Some(peer) = slot.peer {
            if let Some(count) = self.per_peer.get_mut(&peer) {
                *count -= 1;
                if *count == 0 {
                    self.per_peer.remove(&peer);
                }
            }
        }
    }

    /// How many slots are held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Adds what admission counted to the hub's metrics: refusals by status, and the
    /// rejections' close codes.
    pub fn record(&self, metrics: &mut Metrics) {
        for (&status, &count) in &self.refused {
            *metrics.handshakes_refused.entry(status).or_default() += count;
        }
        for (&code, &count) in &self.rejected {
            *metrics.closes.entry(code).or_default() += count;
        }
    }

    fn capacity(&self, peer: Option<IpAddr>) -> Capacity {
        if !self.available {
            return Capacity::Unavailable;
        }
        if self.held >= self.config.max_connections() {
            return Capacity::Full;
        }
        let per_peer = |peer| self.per_peer.get(&peer).copied().unwrap_or(0);
        match (self.config.max_connections_per_ip(), peer) {
            (Some(max), Some(peer)) if per_peer(peer) >= max => Capacity::PeerFull,
            _ => Capacity::Free,
        }
    }

    fn take(&mut self, peer: Option<IpAddr>) -> Slot {
        self.held += 1;
        let peer = peer.filter(|_| self.config.max_connections_per_ip().is_some());
        if let Some(peer) = peer {
            *self.per_peer.entry(peer).or_default() += 1;
        }
        Slot { peer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(query: &'a str, peer: &str) -> HandshakeRequest<'a> {
        HandshakeRequest {
            query: Some(query),
            peer: Some(peer.parse().expect("an address")),
            ..Default::default()
        }
    }

    #[test]
    fn slots_bound_connections_and_come_back() {
        let config = HubConfig::builder()
            .max_connections(2)
            .build()
            .expect("valid");
        let mut admission = Admission::new(&config);
        let Admit::Accept(_, first) = admission.admit(&request("", "127.0.0.1")) else {
            panic!("room for the first");
        };
        // A rejected handshake holds its slot too, until its socket is gone.
        let Admit::Reject(rejection, second) = admission.admit(&request("types=,", "127.0.0.1"))
        else {
            panic!("a bad parameter is rejected after the upgrade");
        };
        assert_eq!(rejection.code.0, 4400);
        let Admit::Refuse(full) = admission.admit(&request("", "127.0.0.1")) else {
            panic!("no third slot");
        };
        assert_eq!(full.status, 503);
        admission.release(first);
        admission.release(second);
        assert_eq!(admission.held(), 0);
        assert!(matches!(
            admission.admit(&request("", "127.0.0.1")),
            Admit::Accept(..)
        ));
        let mut metrics = Metrics::default();
        admission.record(&mut metrics);
        assert_eq!(metrics.handshakes_refused.get(&503), Some(&1));
        assert_eq!(metrics.closes.get(&4400), Some(&1));
    }

    #[test]
    fn the_per_address_cap_spares_other_addresses() {
        let config = HubConfig::builder()
            .max_connections_per_ip(Some(1))
            .build()
            .expect("valid");
        let mut admission = Admission::new(&config);
        let Admit::Accept(_, slot) = admission.admit(&request("", "10.0.0.1")) else {
            panic!("room");
        };
        let Admit::Refuse(refusal) = admission.admit(&request("", "10.0.0.1")) else {
            panic!("one per address");
        };
        assert_eq!(refusal.status, 429);
        assert!(matches!(
            admission.admit(&request("", "10.0.0.2")),
            Admit::Accept(..)
        ));
        admission.release(slot);
        assert!(matches!(
            admission.admit(&request("", "10.0.0.1")),
            Admit::Accept(..)
        ));
    }
}
