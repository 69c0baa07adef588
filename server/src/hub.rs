//! The hub the server runs: `ferret-ws-tokio`'s, re-exported so the rest of the crate (and
//! embedders) name it in one place.

pub(crate) use ferret_ws_tokio::{serve_registered, serve_upgraded, HandshakeFields};
pub use ferret_ws_tokio::{start, Admission, HubHandle, PublishError};
