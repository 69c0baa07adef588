//! `ferret-ws`: the server binary. See `ferret-ws --help` and PROTOCOL.md §4.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ferret_ws_server::{serve, shutdown_signal, Settings, SCAN_ROOT_ENV};
use tracing_subscriber::EnvFilter;

/// Startup lines at info, everything else of ours at debug: quiet unless RUST_LOG asks.
const DEFAULT_LOG: &str = "warn,ferret_ws=info";

fn main() -> ExitCode {
    let settings = Settings::parse();
    init_logs();
    let builder = match settings.app_builder(std::env::var_os(SCAN_ROOT_ENV)) {
        Ok(builder) => builder,
        Err(e) => {
            eprintln!("ferret-ws: error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ferret-ws: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(settings.bind).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!(
                    "ferret-ws: error: cannot listen on {} (--bind): {e}",
                    settings.bind
                );
                return ExitCode::FAILURE;
            }
        };
        let (addr, signal) = match (listener.local_addr(), shutdown_signal()) {
            (Ok(addr), Ok(signal)) => (addr, signal),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("ferret-ws: error: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        let app = builder.local_port(addr.port()).build();
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            epoch = %app.hub().epoch(),
            token = settings.token.is_some() || settings.token_file.is_some(),
            "ferret-ws started"
        );
        // Not println!: a closed stdout must not stop the server.
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "listening on http://{addr}").and_then(|()| stdout.flush());
        match serve(listener, app, signal).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferret-ws: error: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // Do not wait for blocking threads (a directory walk): the grace is over.
    runtime.shutdown_background();
    code
}

fn init_logs() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("ferret-ws: warning: ignoring RUST_LOG ({e}); using {DEFAULT_LOG}");
            EnvFilter::new(DEFAULT_LOG)
        }),
        _ => EnvFilter::new(DEFAULT_LOG),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
