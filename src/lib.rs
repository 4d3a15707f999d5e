//! callgate: a gateway between telephony media streams and speech-to-speech Realtime models.
//!
//! A tour of this crate (the composition root; the domain lives in `callgate-handlers`, the
//! generic Tower middleware in `callgate-layers`):
//!
//! - [`config`]: one [`config::Config`] from TOML + `CALLGATE_*` env, every error at once.
//! - [`routes`]: the axum router and its HTTP layer stack; one WebSocket route per carrier.
//! - [`admission`]: the stack every carrier upgrade passes (one layer per concern), and what
//!   holds a call to account after the upgrade; [`caps`]: the call caps it takes a permit from.
//! - [`carrier_socket`]: our WebSocket upgrade, the meter that counts every frame, and the
//!   close handshake.
//! - [`admin`]: the admin API (live calls, live feeds) behind one token gate.
//! - [`pacer`]: outbound pacing for carriers that drop what overflows their buffer.
//! - [`connection`]: the per-socket loop (carrier frames in, outbox out, shutdown).
//! - [`pipeline`]: the per-connection `tower::Service<Frame>` event stack.
//! - [`close`]: the one rescue: every way a call ends → close code, reason, outcome.
//! - [`security`]: auth modes, limits and caps built from configuration; [`cluster`]: the
//!   same limits and caps, single-use tokens and the call directory shared in Redis.
//! - [`records`]: call records and transcripts in SQLite or PostgreSQL, one store trait.
//! - [`recording`]: `[recording]`, stereo WAV files written as calls go, uploaded to S3.
//! - [`tape`]: `[tape]`, call tapes on disk; [`replay`]: `callgate replay`, which plays a
//!   tape into a fresh gateway and compares.
//! - [`loopback`]: the embedded Realtime simulator used when no model is configured.
//! - [`client`] and [`wav`]: the `callgate call` / `loadtest` carrier simulator, the stamped
//!   load and the echo upstream the benchmarks use, and the gateway-metrics reader.
//! - [`telemetry`]: logs, OTLP trace export and the Prometheus registry;
//!   [`metric_families`]: every metric family, exported from startup.
//! - [`carriers`]: `[carriers]`, the carriers' REST APIs for call control.
//!
//! [`run`] takes the listener, so tests bind `127.0.0.1:0`.

pub mod admin;
pub mod admission;
pub mod caps;
pub mod carrier_socket;
pub mod carriers;
pub mod client;
pub mod close;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod loopback;
pub mod metric_families;
pub mod pacer;
pub mod pipeline;
pub mod recording;
pub mod records;
pub mod replay;
pub mod routes;
pub mod security;
pub mod tape;
pub mod telemetry;
pub mod wav;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
pub use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::routes::AppState;

/// Serves the gateway on `listener`. Cancelling `shutdown` starts the drain: readiness fails,
/// new upgrades get 503, live calls continue until they end or `calls.drain_deadline_s`,
/// then close with 1001; this returns once they have gone.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    telemetry::metrics();
    telemetry::spawn_metrics_upkeep();
    callgate_handlers::bridge::install_tls();
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
    let mut bridge = config.bridge_config(loopback.as_ref().map(|l| l.url.as_str()));
    if !config.upstream.fallback_audio.is_empty() {
        bridge.fallback_audio = Some(wav::read(std::path::Path::new(
            &config.upstream.fallback_audio,
        ))?);
    }
    bridge.warm = warm_pool(&config, &bridge);
    tracing::info!(
        provider = bridge.provider.name(),
        model = %bridge.model,
        upstream = %bridge.url.split('?').next().unwrap_or_default(),
        dialect = ?bridge.dialect,
        audio = ?bridge.audio,
        "upstream configured"
    );
    if config.calls.event_timeout_ms.is_some() {
        tracing::warn!("calls.event_timeout_ms has no effect (event handlers never wait) and will be removed: delete it from the configuration");
    }
    let cluster = match config.cluster.enabled() {
        true => {
            let cluster =
                cluster::Cluster::new(&config.cluster, &listener.local_addr()?.to_string())?;
            tracing::info!(replica = %cluster.replica, advertise = %cluster.advertise_url, policy = ?config.cluster.on_redis_error, "cluster mode: caps, limits, single-use tokens and the call directory shared in Redis");
            Some(cluster)
        }
        false => None,
    };
    let security = security::Security::new(&config.security, cluster.clone())?;
    let unauthenticated: Vec<String> = config
        .effective_routes()
        .into_iter()
        .filter(|r| r.auth.unwrap_or(config.security.default_auth) == config::AuthKind::None)
        .map(|r| r.path)
        .collect();
    if !unauthenticated.is_empty() && !config.listen_addr().ip().is_loopback() {
        tracing::warn!(routes = ?unauthenticated, "UNAUTHENTICATED carrier routes on a public address (security.allow_unauthenticated = true): anyone can open paid model sessions");
    }
    let replayable = config.signature_only_routes();
    if !replayable.is_empty() {
        tracing::warn!(routes = ?replayable, "twilio_signature routes without require_call_token: a signature is constant per URL, so anyone who has seen one can replay it; add a single-use call token (README, Security)");
    }
    let records = if config.records.enabled {
        let location = records::Location::of(&config.records.path, &config.records.url);
        let records = records::Records::open_with_webhook(
            &location,
            Some(&config.records.webhook_url),
            config.records.webhook_retries,
        )?;
        tracing::info!(at = %location.describe(), "call records on");
        Some(records)
    } else {
        None
    };
    let recordings = if config.may_record() {
        let recordings = recording::Recordings::new(&config.recording)?;
        tracing::info!(dir = %config.recording.dir, upload = %config.recording.url, "call recordings on");
        Some(recordings)
    } else {
        None
    };
    let tapes = if config.tape.enabled {
        let settings = replay::settings::of(&config);
        let tapes = tape::Tapes::new(&config.tape, config.dtmf.pci, settings)?;
        tracing::info!(dir = %config.tape.dir, audio = config.tape.audio, "call tapes on");
        Some(tapes)
    } else {
        None
    };
    let mut state = AppState::new(&config, bridge, security, shutdown.clone());
    state.records = records;
    state.recordings = recordings;
    state.tapes = tapes;
    if let Some(cluster) = &cluster {
        cluster.spawn_upkeep(state.store.clone(), state.hard_stop.clone());
    }
    state.cluster = cluster;
    spawn_sweeper(&state, config.calls.idle_state_timeout);
    spawn_upstream_probe(&state, loopback.is_none());
    let app = routes::router(&config, state.clone())?;
    tracing::info!(addr = %listener.local_addr()?, routes = ?config.effective_routes().iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), "callgate listening");
    // The accept loop runs through the drain, so late upgrades get a 503 rather than a
    // refused connection; it stops at the hard stop.
    let accept = tokio::spawn(serve(
        listener,
        app,
        config.security.clone(),
        state.hard_stop.clone(),
    ));
    shutdown.cancelled().await;
    if let Some(pool) = &state.bridge.warm {
        // No new calls will take them.
        pool.close().await;
    }
    drain(&state, config.calls.drain_deadline).await;
    if let Some(cluster) = &state.cluster {
        // The last calls' slots and directory entries go before the process does.
        cluster.flush().await;
    }
    accept.abort();
    Ok(())
}

/// The warm upstream sessions (`upstream.prewarm`), when asked for and allowed: never for a
/// provider that bills connected time unless `prewarm_billed_idle` says so.
fn warm_pool(
    config: &Config,
    bridge: &callgate_handlers::bridge::BridgeConfig,
) -> Option<callgate_handlers::bridge::WarmPool> {
    let up = &config.upstream;
    if up.prewarm == 0 {
        return None;
    }
    if bridge.provider.bills_connected_time() && !up.prewarm_billed_idle {
        tracing::warn!(
            prewarm = up.prewarm,
            "upstream.prewarm is off: this provider bills idle connected time (set upstream.prewarm_billed_idle = true to pay for it)"
        );
        return None;
    }
    tracing::info!(
        sessions = up.prewarm,
        max_age_s = up.prewarm_max_age_s,
        "keeping upstream sessions warm"
    );
    Some(callgate_handlers::bridge::WarmPool::start(
        Arc::new(bridge.clone()),
        up.prewarm,
        Duration::from_secs(up.prewarm_max_age_s),
    ))
}

/// Draining: readiness already fails and new upgrades get 503 (both watch `shutdown`); live
/// calls go on until they end or the deadline, then close with 1001.
async fn drain(state: &AppState, deadline: Duration) {
    let live = state.live_calls();
    tracing::info!(
        live,
        deadline_s = deadline.as_secs(),
        "draining: no new calls; waiting for live calls to end"
    );
    let until = tokio::time::Instant::now() + deadline;
    while state.live_calls() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = state.live_calls();
    if left > 0 {
        tracing::warn!(
            left,
            "drain deadline reached: closing the remaining calls with 1001"
        );
    }
    state.hard_stop.cancel();
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while state.live_calls() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!("drained");
}

/// The accept loop: HTTP/1.1 with upgrades, a header-read timeout (slowloris), and caps on
/// connections not yet upgraded, in all and per host (beyond: a canned 503 and close).
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    security: config::SecurityConfig,
    shutdown: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::Service;

    let connections = Arc::new(tokio::sync::Semaphore::new(security.max_connections));
    // Per host, except the trusted proxies (every connection comes through them).
    let per_host =
        callgate_layers::http::limit::ConnectionsPerKey::new(security.max_connections_per_ip);
    let proxies = callgate_layers::http::client_ip::TrustedProxies::new(
        security.trusted_proxies.clone(),
        security.forwarded_header,
    );
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(security.header_read_timeout_ms));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let host = callgate_layers::http::client_ip::ClientIp(peer.ip().to_canonical());
        let host_slot = match proxies.trusts(host.0) {
            true => None,
            false => match per_host.try_acquire(host.key()) {
                Some(slot) => Some(slot),
                None => {
                    refuse_connection(stream, "connection_cap_per_ip");
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refuse_connection(stream, "connection_cap");
            continue;
        };
        let _ = stream.set_nodelay(true);
        // A telephony socket carries tens of KB a second: a small receive buffer (instead of
        // autotuning's megabytes) bounds memory per call, and lets TCP push back on a peer
        // we stopped reading (see `connection::linger`).
        let _ = socket2::SockRef::from(&stream).set_recv_buffer_size(RECV_BUFFER);
        let router = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                router.clone().call(request)
            },
        );
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::spawn(async move {
            // Ends at the upgrade (the call then lives in its own task) or when the client
            // goes; either way the connection slot is free again.
            let _ = connection.await;
            drop((permit, host_slot));
        });
    }
    // Connections still reading headers end with the process (or their header timeout);
    // upgraded calls have seen `shutdown` and close with 1001.
}

/// Kernel receive buffer per accepted connection (Linux doubles it for its own overhead).
const RECV_BUFFER: usize = 64 * 1024;

/// A canned 503 for a connection over a cap, counted, written off the accept loop.
fn refuse_connection(mut stream: tokio::net::TcpStream, reason: &'static str) {
    use tokio::io::AsyncWriteExt;
    metrics::counter!("callgate_upgrades_rejected_total", "reason" => reason).increment(1);
    tokio::spawn(async move {
        let _ = stream
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    });
}

/// Readiness follows the upstream: every 5 s a TCP connect to its host and port (2 s limit).
fn spawn_upstream_probe(state: &AppState, enabled: bool) {
    if !enabled {
        return;
    }
    let Some(target) = upstream_host_port(&state.bridge.url) else {
        return;
    };
    let reachable = state.upstream_reachable.clone();
    let hard_stop = state.hard_stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = hard_stop.cancelled() => return,
            }
            let ok = matches!(
                tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(&target)
                )
                .await,
                Ok(Ok(_))
            );
            if reachable.swap(ok, std::sync::atomic::Ordering::Relaxed) != ok {
                if ok {
                    tracing::info!(target, "upstream reachable again: ready");
                } else {
                    tracing::warn!(target, "upstream unreachable: not ready");
                }
            }
        }
    });
}

/// `host:port` of a ws:// or wss:// URL (the scheme's port when none is given).
fn upstream_host_port(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let default = if uri.scheme_str() == Some("ws") {
        80
    } else {
        443
    };
    Some(format!(
        "{}:{}",
        uri.host()?,
        uri.port_u16().unwrap_or(default)
    ))
}

/// Periodically reaps idle sessions and sweeps the limiters' per-IP state.
fn spawn_sweeper(state: &AppState, max_idle: Duration) {
    let store = state.store.clone();
    let admission = state.security.admission.clone();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(max_idle.min(Duration::from_secs(30)));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    admission.sweep();
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

#[cfg(test)]
mod tests {
    use super::upstream_host_port;

    #[test]
    fn upstream_probe_targets_host_and_port() {
        let target = |url| upstream_host_port(url);
        assert_eq!(
            target("wss://api.openai.com/v1/realtime?model=m").as_deref(),
            Some("api.openai.com:443")
        );
        assert_eq!(
            target("ws://127.0.0.1:9000/v1/realtime").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(target("ws://user@[::1]/x").as_deref(), Some("[::1]:80"));
        assert_eq!(target("not a url"), None);
    }
}
