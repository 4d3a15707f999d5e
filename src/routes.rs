//! The axum router and the HTTP layer stack, in one readable place.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, Request};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use callgate_handlers::bridge::BridgeConfig;
use callgate_handlers::dialect::Dialect;
use callgate_handlers::session::SessionStore;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::{CallsConfig, Config};

/// Carrier sockets carry 20 ms frames; larger messages are refused (1009).
pub const MAX_CARRIER_MESSAGE: usize = 64 * 1024;

/// A carrier route: path, dialect and per-route settings.
#[derive(Debug, Clone)]
pub struct Route {
    /// URL path.
    pub path: String,
    /// Carrier protocol.
    pub dialect: Dialect,
    /// Send the in-house `connected` greeting on open.
    pub send_connected: bool,
}

/// Per-call limits, resolved to durations.
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// Consecutive bad frames before 1007.
    pub max_consecutive_bad_frames: u32,
    /// Time limit per event.
    pub event_timeout: Duration,
    /// Wait for the upstream to close after `stop`.
    pub upstream_close_wait: Duration,
}

impl From<&CallsConfig> for CallLimits {
    fn from(c: &CallsConfig) -> Self {
        Self {
            max_consecutive_bad_frames: c.max_consecutive_bad_frames,
            event_timeout: Duration::from_millis(c.event_timeout_ms),
            upstream_close_wait: Duration::from_millis(c.upstream_close_wait_ms),
        }
    }
}

/// Shared state: one `Clone` struct of `Arc`s.
#[derive(Clone)]
pub struct AppState {
    /// Live calls.
    pub store: SessionStore,
    /// Upstream settings.
    pub bridge: Arc<BridgeConfig>,
    /// Per-call limits.
    pub calls: Arc<CallLimits>,
    /// Cancelled on shutdown: live calls close 1001.
    pub shutdown: CancellationToken,
    next_id: Arc<AtomicU64>,
}

impl AppState {
    /// State for a gateway using `bridge` as its upstream.
    pub fn new(config: &Config, bridge: BridgeConfig, shutdown: CancellationToken) -> Self {
        Self {
            store: SessionStore::new(),
            bridge: Arc::new(bridge),
            calls: Arc::new(CallLimits::from(&config.calls)),
            shutdown,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A fresh connection id.
    pub fn next_call_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }
}

/// The whole HTTP surface.
pub fn router(config: &Config, state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/health", get(healthz))
        .route("/metrics", get(metrics));
    for route in config.effective_routes() {
        let route = Arc::new(Route {
            path: route.path,
            dialect: route.dialect,
            send_connected: route.send_connected,
        });
        let path = route.path.clone();
        router = router.route(
            &path,
            get(
                move |upgrade: WebSocketUpgrade, State(state): State<AppState>| async move {
                    upgrade
                        // Sized for 20 ms frames: tungstenite zero-fills its read buffer on
                        // every read (ARCHITECTURE.md, "Socket buffers").
                        .read_buffer_size(4 * 1024)
                        .write_buffer_size(0)
                        .max_write_buffer_size(1024 * 1024)
                        .max_message_size(MAX_CARRIER_MESSAGE)
                        .max_frame_size(MAX_CARRIER_MESSAGE)
                        .on_upgrade(move |socket| crate::connection::serve(socket, state, route))
                },
            ),
        );
    }
    // ServiceBuilder reads top-down: the first layer is the outermost.
    let http = ServiceBuilder::new()
        // Every request gets an id (kept if the client sent one) ...
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // ... and a span that records the path only: query strings may carry tokens.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = id)
        }))
        // A panic in a handler answers 500 instead of dropping the connection.
        .layer(CatchPanicLayer::new())
        .layer(PropagateRequestIdLayer::x_request_id());
    router.layer(http).with_state(state)
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok", "calls": state.store.len()}))
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render_metrics(),
    )
}
