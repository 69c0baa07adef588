//! The scenario suite, instantiated for each runtime and for mixed client/server pairs.
//!
//! Every scenario is written once in `ferret_ws_tests::scenarios`; `suite!` makes one
//! `#[test]` per scenario for a given server (an adapter's standalone `serve`, or the
//! `ferret-ws` server's own path) and client runtime.

use ferret_ws_tests::{run, scenarios, Rt};

macro_rules! suite {
    ($module:ident, $server:expr, $client:expr, [$($scenario:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    run($server, $client, |ctx| Box::pin(scenarios::$scenario(ctx)));
                }
            )*
        }
    };
}

macro_rules! full_suite {
    ($module:ident, $server:expr, $client:expr) => {
        suite!(
            $module,
            $server,
            $client,
            [
                connect_broadcast_disconnect,
                envelope_shape,
                n_clients_exactly_once,
                heartbeat_once_per_interval,
                answering_client_stays,
                silent_client_closed_4408,
                slow_consumer,
                replay_after_reconnect,
                resync_reasons,
                reconnect_during_publishing,
                bad_input,
                over_capacity_503,
                graceful_shutdown,
                unfinished_handshake_dropped,
                registered_at_the_101,
                large_event_memory_returns,
                pongs_never_split_a_frame,
            ]
        );
    };
}

full_suite!(tokio, Rt::Tokio, Rt::Tokio);
full_suite!(async_std, Rt::AsyncStd, Rt::AsyncStd);
// The server's production path: its accept loop, the axum App and its `/ws` handler.
full_suite!(server, Rt::Server, Rt::Tokio);

// Cross-runtime pairs: the wire is the same whoever is on the other end.
suite!(
    tokio_client_async_std_server,
    Rt::AsyncStd,
    Rt::Tokio,
    [
        connect_broadcast_disconnect,
        n_clients_exactly_once,
        replay_after_reconnect,
        bad_input,
        graceful_shutdown,
    ]
);
suite!(
    async_std_client_tokio_server,
    Rt::Tokio,
    Rt::AsyncStd,
    [
        connect_broadcast_disconnect,
        n_clients_exactly_once,
        replay_after_reconnect,
        bad_input,
        graceful_shutdown,
    ]
);
