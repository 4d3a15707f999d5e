//! The axum router and the HTTP layer stack, in one readable place.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::{RawPathParams, RawQuery, State};
use axum::http::{header, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use callgate_handlers::bridge::BridgeConfig;
use callgate_handlers::call_state::CallIdentity;
use callgate_handlers::call_state::CallStore;
use callgate_handlers::StartAuth;
use callgate_layers::http::auth::Admitted;
use callgate_layers::http::client_ip::{ClientIp, ClientIpLayer, TrustedProxies};
use callgate_layers::http::limit::{quota, GlobalLimiter};
use callgate_layers::http::query_param;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::caps::CallPermit;
use crate::carrier_socket::CarrierUpgrade;
use crate::config::{CallsConfig, Config, RouteDialect};
use crate::security::Security;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A carrier route: path, dialect and per-route settings.
#[derive(Debug, Clone)]
pub struct Route {
    /// URL path.
    pub path: String,
    /// Carrier protocol (or detection).
    pub dialect: RouteDialect,
    /// Send the in-house `connected` greeting on open.
    pub send_connected: bool,
    /// What the carrier plays back, where it differs from what it streams (Telnyx).
    pub outbound_format: Option<callgate_handlers::codec::AudioFormat>,
    /// Record this route's calls (unset: `recording.enabled`).
    pub recording: Option<bool>,
}

/// What admission decided for one call, handed to its connection.
pub struct CallAdmission {
    /// The client's address (failed `start` tokens count against it).
    pub client_ip: ClientIp,
    /// Who the upgrade authenticated as.
    pub identity: CallIdentity,
    /// Set when the call must authenticate in `start`.
    pub start_auth: Option<Arc<dyn StartAuth>>,
    /// The call-cap permit, when taken at the upgrade.
    pub permit: Option<CallPermit>,
}

/// Counts one live call; see [`AppState::live_call`].
pub struct LiveCall(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for LiveCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Shared state: one `Clone` struct of `Arc`s.
#[derive(Clone)]
pub struct AppState {
    /// Live calls.
    pub store: CallStore,
    /// Upstream settings.
    pub bridge: Arc<BridgeConfig>,
    /// Per-call limits (`[calls]`).
    pub calls: Arc<CallsConfig>,
    /// Cancelled when draining starts: readiness fails, new upgrades get 503.
    pub shutdown: CancellationToken,
    /// Cancelled at the drain deadline: live calls close 1001.
    pub hard_stop: CancellationToken,
    live: Arc<std::sync::atomic::AtomicUsize>,
    /// Admission: limits, caps, auth.
    pub security: Arc<Security>,
    /// The model name, for spans.
    pub model: Arc<str>,
    /// Whether the upstream endpoint answered the last reachability probe.
    pub upstream_reachable: Arc<std::sync::atomic::AtomicBool>,
    /// Bearer token for `/v1/calls` (empty: those endpoints are off).
    pub admin_token: callgate_handlers::bridge::Secret,
    /// Call records (SQLite), when enabled.
    pub records: Option<crate::records::Records>,
    /// Where recordings go, when any call may be recorded.
    pub recordings: Option<crate::recording::Recordings>,
    /// `recording.enabled`: record calls whose route and profile do not say.
    pub record_by_default: bool,
    /// Call tapes, when on.
    pub tapes: Option<crate::tape::Tapes>,
    /// `/client` needs no token.
    pub client_feed_open: bool,
    /// The state shared with the other replicas (`[cluster]`), when on.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    next_id: Arc<AtomicU64>,
}

impl AppState {
    /// State for a gateway using `bridge` as its upstream.
    pub fn new(
        config: &Config,
        bridge: BridgeConfig,
        security: Security,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store: CallStore::new(),
            bridge: Arc::new(bridge),
            calls: Arc::new(config.calls.clone()),
            shutdown,
            hard_stop: CancellationToken::new(),
            live: Arc::default(),
            security: Arc::new(security),
            model: config.upstream.model_name().into(),
            upstream_reachable: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            admin_token: config.security.admin_token.clone(),
            records: None,
            recordings: None,
            record_by_default: config.recording.enabled,
            tapes: None,
            client_feed_open: config.security.client_feed_open,
            cluster: None,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Counts a live call until the guard drops (panics included).
    pub fn live_call(&self) -> LiveCall {
        self.live.fetch_add(1, Relaxed);
        LiveCall(self.live.clone())
    }

    /// Calls in progress (upgraded sockets).
    pub fn live_calls(&self) -> usize {
        self.live.load(Relaxed)
    }

    /// A fresh connection id.
    pub fn next_call_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }
}

/// The whole HTTP surface.
pub fn router(config: &Config, state: AppState) -> anyhow::Result<Router> {
    let proxies = TrustedProxies::new(
        config.security.trusted_proxies.clone(),
        config.security.forwarded_header,
    );
    let mut carriers = Router::new();
    for route in config.effective_routes() {
        let auth = state.security.auth_mode(&route)?;
        let route = Arc::new(Route {
            path: route.path,
            dialect: route.dialect,
            send_connected: route.send_connected,
            outbound_format: route.outbound_encoding.map(|e| e.format()),
            recording: route.recording,
        });
        let path = route.path.clone();
        // Reached only through the admission stack (`admission.rs`).
        let handler = move |upgrade: CarrierUpgrade,
                            State(state): State<AppState>,
                            Extension(admitted): Extension<Admitted>,
                            Extension(client_ip): Extension<ClientIp>,
                            permit: Option<Extension<CallPermit>>,
                            params: RawPathParams,
                            RawQuery(query): RawQuery| async move {
            let opened = callgate_handlers::dialect::Hints {
                call_id: params
                    .iter()
                    .find(|(k, _)| *k == "call_id")
                    .map(|(_, v)| v.to_owned()),
                // Exotel picks its sample rate with ?sample-rate=8000|16000|24000.
                sample_rate: query
                    .as_deref()
                    .and_then(|q| query_param(q, "sample-rate"))
                    .and_then(|v| v.parse().ok()),
                outbound_format: route.outbound_format,
            };
            let admission = CallAdmission {
                client_ip,
                identity: CallIdentity {
                    tenant: admitted.identity.tenant,
                    subject: admitted.identity.subject,
                },
                start_auth: admitted
                    .start_token
                    .map(|verifier| state.security.start_auth(verifier)),
                permit: permit.map(|Extension(permit)| permit),
            };
            let limits = state.security.config();
            let max = limits.max_message_bytes;
            let config = WebSocketConfig::default()
                // Sized for 20 ms frames: tungstenite zero-fills its read buffer on
                // every read (ARCHITECTURE.md, "Socket buffers").
                .read_buffer_size(4 * 1024)
                .write_buffer_size(0)
                .max_write_buffer_size(1024 * 1024)
                .max_message_size(Some(max))
                .max_frame_size(Some(max));
            // Every frame the socket reads, control and continuation frames included.
            let budget =
                GlobalLimiter::new(quota(limits.messages_per_second, limits.message_burst));
            // A token may ride in Sec-WebSocket-Protocol; only `callgate` is echoed.
            upgrade.on_upgrade(config, budget, move |socket| {
                crate::connection::serve(socket, state, route, admission, opened)
            })
        };
        let handler = axum::handler::Handler::with_state(handler, state.clone());
        carriers = carriers.route(
            &path,
            crate::admission::carrier_stack(&state, proxies.clone(), auth, handler),
        );
    }
    // The admin API: its own gate (token, failed-auth standing) after the client IP.
    let admin = crate::admin::routes(&state).route_layer(ClientIpLayer::new(proxies));
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/health", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Plivo fetches the `<Dial>` document of a transfer here (an unguessable token).
        .route("/carriers/plivo/transfer/{token}", get(plivo_transfer))
        .merge(admin)
        .merge(carriers);
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
    Ok(router.layer(http).with_state(state))
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    Json(
        serde_json::json!({"status": "ok", "calls": state.store.len(), "live_sockets": state.live_calls(), "tasks": tasks}),
    )
}

/// Ready to take calls: false (503) once draining has begun.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let draining = state.shutdown.is_cancelled();
    let upstream = state.upstream_reachable.load(Relaxed);
    let ready = !draining && upstream;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({"ready": ready, "draining": draining, "upstream_reachable": upstream, "calls": state.live_calls()});
    (status, Json(body))
}

/// The `<Dial>` XML of a Plivo transfer in progress (404 once it has expired).
async fn plivo_transfer(
    State(state): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> axum::response::Response {
    match state.bridge.carrier_apis.plivo_document(&token) {
        Some(xml) => ([(header::CONTENT_TYPE, "application/xml")], xml).into_response(),
        None => (StatusCode::NOT_FOUND, "no such transfer\n").into_response(),
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render_metrics(),
    )
}
