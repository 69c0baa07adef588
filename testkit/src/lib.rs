//! Test support for ferret-ws, outside the product's `src`: everything here uses only the
//! public API of `ferret-ws-core`.
//!
//! - [`sim`]: a deterministic simulation of a sequencer, a hub and its clients on a
//!   simulated clock, which checks the hub's promises as it runs and records transcripts.
//! - [`ops`]: the one operation type that drives a simulation, shared by the proptests
//!   (`core/tests/props.rs`) and the `hub_ops` fuzz target, with the checks run after every
//!   step against a reference model of delivery.
//! - [`fuzzing`]: the harnesses the cargo-fuzz targets in `fuzz/` call, also replayed over
//!   their committed corpora by `core/tests/fuzz_corpus.rs`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The harnesses take their start instant from the caller; nothing here reads a clock either.

pub mod fuzzing;
pub mod ops;
pub mod sim;
