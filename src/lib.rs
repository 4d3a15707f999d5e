//! callgate: a gateway between telephony media streams and speech-to-speech Realtime models.
//!
//! A tour of this crate (the composition root; the domain lives in `callgate-handlers`, the
//! generic Tower middleware in `callgate-layers`):
//!
//! - [`config`]: one [`config::Config`] from TOML + `CALLGATE_*` env, every error at once.
//! - [`routes`]: the axum router and its HTTP layer stack; one WebSocket route per carrier.
//! - [`connection`]: the per-socket loop (carrier frames in, outbox out, shutdown).
//! - [`pipeline`]: the per-connection `tower::Service<Frame>` event stack.
//! - [`close`]: any error → WebSocket close code.
//! - [`loopback`]: the embedded Realtime simulator used when no model is configured.
//! - [`client`] and [`wav`]: the `callgate call` carrier simulator.
//! - [`telemetry`]: logs and the Prometheus registry.
//!
//! [`run`] takes the listener, so tests bind `127.0.0.1:0`.

pub mod client;
pub mod close;
pub mod config;
pub mod connection;
pub mod loopback;
pub mod pipeline;
pub mod routes;
pub mod telemetry;
pub mod wav;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
pub use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::routes::AppState;

/// Serves the gateway on `listener` until `shutdown` is cancelled. Live calls are then closed
/// with 1001; this returns once they have all gone (or after five seconds).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    telemetry::metrics();
    let loopback = if config.uses_loopback() {
        let loopback = loopback::start().await?;
        tracing::warn!(
            url = %loopback.url,
            "no model configured (CALLGATE_UPSTREAM_URL, OPENAI_API_KEY): using the embedded LOOPBACK \
             upstream, which plays callers' words back to them; it is not a model"
        );
        Some(loopback)
    } else {
        None
    };
    let bridge = config.bridge_config(loopback.as_ref().map(|l| l.url.as_str()));
    tracing::info!(
        upstream = %bridge.url.split('?').next().unwrap_or_default(),
        dialect = ?bridge.dialect,
        audio = ?bridge.audio,
        "upstream configured"
    );
    let state = AppState::new(&config, bridge, shutdown.clone());
    spawn_reaper(
        &state,
        Duration::from_secs(config.calls.idle_session_timeout_s.max(1)),
    );
    let app = routes::router(&config, state.clone());
    tracing::info!(addr = %listener.local_addr()?, routes = ?config.effective_routes().iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), "callgate listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !state.store.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn spawn_reaper(state: &AppState, max_idle: Duration) {
    let store = state.store.clone();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(max_idle.min(Duration::from_secs(30)));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let reaped = store.reap_idle(max_idle);
                    if reaped > 0 {
                        metrics::counter!("callgate_sessions_reaped_total").increment(reaped as u64);
                        tracing::warn!(reaped, "idle sessions reaped");
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    });
}
