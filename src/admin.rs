//! The admin API: live calls (`/v1/calls`, `/v1/calls/{call_sid}`), a call's live feed
//! (`/v1/calls/{call_sid}/events`) and the original Exotel integration's `/client` feed.
//!
//! One gate in front of all of them (`admin_gate`): the bearer token, compared in constant
//! time, and the same failed-authentication standing per client address as the carrier
//! routes, so guessing the admin token is throttled like guessing a carrier credential.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use callgate_layers::http::admission::{is_websocket_upgrade, Rejection};
use callgate_layers::http::client_ip::ClientIp;
use callgate_layers::http::limit::{Refusal, Standing};
use callgate_layers::http::query_param;

use crate::routes::AppState;

/// The admin routes, behind `admin_gate` (and `/client` without it when
/// `security.client_feed_open` is set). Needs [`ClientIp`] from a layer outside.
pub fn routes(state: &AppState) -> Router<AppState> {
    let mut gated = Router::new()
        .route("/v1/calls", get(list_calls))
        .route("/v1/calls/{call_sid}", get(show_call))
        .route("/v1/calls/{call_sid}/events", get(call_events));
    let mut open = Router::new();
    if state.client_feed_open {
        open = open.route("/client", get(client_feed));
    } else {
        gated = gated.route("/client", get(client_feed));
    }
    gated
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin_gate,
        ))
        .merge(open)
}

/// Admits a request that presents `security.admin_token`: `Authorization: Bearer …`, or,
/// for the WebSocket feeds only (browsers cannot set headers), `?token=…`. A wrong token
/// counts as a failed authentication of the client address.
async fn admin_gate(
    State(state): State<AppState>,
    Extension(client_ip): Extension<ClientIp>,
    request: Request,
    next: Next,
) -> Response {
    use subtle::ConstantTimeEq;
    let expected = state.admin_token.expose();
    if expected.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "admin API disabled (security.admin_token)\n",
        )
            .into_response();
    }
    let limits = &state.security.admission.limits;
    let standing = match limits.standing(client_ip.key()).await {
        Ok(standing) => standing,
        Err(refusal) => return Rejection::from(refusal).into_response(),
    };
    let presented = bearer(request.headers())
        .or_else(|| {
            is_websocket_upgrade(request.method(), request.headers())
                .then(|| request.uri().query().and_then(|q| query_param(q, "token")))
                .flatten()
        })
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return next.run(request).await;
    }
    limits.record_failure(client_ip.key()).await;
    metrics::counter!("callgate_admin_auth_failures_total").increment(1);
    tracing::info!(client = %client_ip.0, "admin API: wrong or missing token");
    match standing {
        Standing::Good => (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response(),
        Standing::Probation(wait) => Rejection::from(Refusal::Blocked(wait)).into_response(),
    }
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// `GET /v1/calls`: live calls and their counters (admin token required): this replica's,
/// and in a cluster every other replica's from the call directory (their counters as of
/// the entry's `as_of`, refreshed every third of `cluster.lease_ttl_s`).
async fn list_calls(State(state): State<AppState>) -> axum::response::Response {
    let mut calls: Vec<_> = state
        .store
        .all()
        .iter()
        .map(|s| local_json(&state, s))
        .collect();
    if let Some(cluster) = &state.cluster {
        let here: std::collections::HashSet<_> = calls
            .iter()
            .filter_map(|c| c["call_sid"].as_str().map(str::to_owned))
            .collect();
        match cluster.calls().await {
            Some(all) => calls.extend(all.into_iter().filter(|c| {
                c["call_sid"]
                    .as_str()
                    .is_some_and(|sid| !here.contains(sid))
            })),
            None => return cluster_unavailable(),
        }
    }
    calls.sort_by_key(|c| c["started_at"].as_u64());
    Json(serde_json::json!({"calls": calls})).into_response()
}

/// `GET /v1/calls/{call_sid}`: one live call, here or on any replica (admin token required).
async fn show_call(
    State(state): State<AppState>,
    axum::extract::Path(call_sid): axum::extract::Path<String>,
) -> axum::response::Response {
    if let Some(session) = state.store.find_call(&call_sid) {
        return Json(local_json(&state, &session)).into_response();
    }
    if let Some(cluster) = &state.cluster {
        if let Some(entry) = cluster.find(&call_sid).await {
            return Json(entry).into_response();
        }
    }
    (StatusCode::NOT_FOUND, "no such live call\n").into_response()
}

/// `GET /v1/calls/{call_sid}/events` (WebSocket, admin token): the call's live feed as JSON
/// events (transcript deltas and finals, DTMF, barge-ins, the end), wherever it runs.
async fn call_events(
    State(state): State<AppState>,
    axum::extract::Path(call_sid): axum::extract::Path<String>,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    if let Some(session) = state.store.find_call(&call_sid) {
        let feed = session.feed.subscribe();
        return upgrade.on_upgrade(move |socket| forward_feed(socket, feed, None));
    }
    if let Some(cluster) = &state.cluster {
        if cluster.find(&call_sid).await.is_some() {
            if let Some(feed) = cluster.subscribe(&call_sid).await {
                return upgrade.on_upgrade(move |socket| forward_remote(socket, feed, None));
            }
            return cluster_unavailable();
        }
    }
    (StatusCode::NOT_FOUND, "no such live call\n").into_response()
}

fn cluster_unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unavailable: the call directory (Redis) cannot be reached\n",
    )
        .into_response()
}

/// `/client`: the original Exotel integration's subscriber protocol. The client sends a call
/// id as text and receives `{"call_sid","transcript","is_final"}` messages. Needs the admin
/// token (header or `?token=`) unless `security.client_feed_open` is set.
async fn client_feed(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    upgrade.on_upgrade(move |mut socket| async move {
        use axum::extract::ws::Message;
        let call_sid = loop {
            match socket.recv().await {
                Some(Ok(Message::Text(text))) => break text.trim().to_owned(),
                Some(Ok(_)) => continue,
                _ => return,
            }
        };
        // The subscriber may come before the call: wait for it (up to a minute), here or,
        // in a cluster, on any replica.
        for attempt in 0..600 {
            if let Some(found) = state.store.find_call(&call_sid) {
                let feed = found.feed.subscribe();
                return forward_feed(socket, feed, Some(call_sid)).await;
            }
            if let Some(cluster) = state.cluster.as_ref().filter(|_| attempt % 5 == 0) {
                if cluster.find(&call_sid).await.is_some() {
                    if let Some(feed) = cluster.subscribe(&call_sid).await {
                        return forward_remote(socket, feed, Some(call_sid)).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = socket.send(Message::Close(None)).await;
    })
}

/// Forwards the feed of a call on another replica (its events as that replica published
/// them) until the call ends or the subscriber leaves.
async fn forward_remote(
    mut socket: axum::extract::ws::WebSocket,
    feed: impl futures_util::Stream<Item = String> + Send + 'static,
    client_call: Option<String>,
) {
    use axum::extract::ws::Message;
    use futures_util::StreamExt;
    let mut feed = std::pin::pin!(feed);
    loop {
        tokio::select! {
            text = feed.next() => {
                let Some(text) = text else { break };
                let text = match &client_call {
                    None => text,
                    Some(call_sid) => match client_message(call_sid, &text) {
                        Some(message) => message,
                        None => continue,
                    },
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    close_feed(socket).await;
}

/// A published feed event as the `/client` protocol has it (transcripts only).
fn client_message(call_sid: &str, text: &str) -> Option<String> {
    let event: serde_json::Value = serde_json::from_str(text).ok()?;
    (event["type"] == "transcript").then(|| {
        serde_json::json!({"call_sid": call_sid, "transcript": event["text"], "is_final": event["is_final"]})
            .to_string()
    })
}

/// Forwards a call's feed to a subscriber until the call ends or the subscriber leaves.
async fn forward_feed(
    mut socket: axum::extract::ws::WebSocket,
    mut feed: tokio::sync::broadcast::Receiver<callgate_handlers::feed::FeedEvent>,
    client_call: Option<String>,
) {
    use axum::extract::ws::Message;
    use callgate_handlers::feed::FeedEvent;
    loop {
        tokio::select! {
            event = feed.recv() => {
                let event = match event {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let ended = matches!(event, FeedEvent::CallEnded { .. });
                let text = match (&client_call, &event) {
                    (None, event) => serde_json::to_string(event).unwrap_or_default(),
                    (Some(call_sid), FeedEvent::Transcript { text, is_final, .. }) => {
                        serde_json::json!({"call_sid": call_sid, "transcript": text, "is_final": is_final}).to_string()
                    }
                    (Some(_), _) => String::new(),
                };
                if !text.is_empty() && socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
                if ended {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    close_feed(socket).await;
}

/// Closes a feed socket with 1000 "call ended".
async fn close_feed(mut socket: axum::extract::ws::WebSocket) {
    use axum::extract::ws::{CloseFrame, Message};
    use futures_util::SinkExt;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "call ended".into(),
        })))
        .await;
    let _ = socket.flush().await;
}

/// A local call's JSON, with the replica it runs on in a cluster.
fn local_json(state: &AppState, s: &callgate_handlers::call_state::CallState) -> serde_json::Value {
    let mut json = call_json(s);
    if let Some(cluster) = &state.cluster {
        json["replica"] = cluster.replica.clone().into();
        json["replica_url"] = cluster.advertise_url.clone().into();
    }
    json
}

/// A call's admin JSON: ids, carrier, tenant, formats and counters.
pub(crate) fn call_json(s: &callgate_handlers::call_state::CallState) -> serde_json::Value {
    let c = &s.counters;
    let started = s
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    serde_json::json!({
        "call_id": s.id,
        "carrier": s.dialect.name(),
        "call_sid": s.call_sid,
        "stream_sid": s.stream_sid,
        "account_sid": s.account_sid,
        "tenant": s.identity.tenant,
        "started_at": started,
        "duration_s": s.age().as_secs(),
        "idle_ms": s.idle_for().as_millis() as u64,
        "media_format": format!("{:?}", s.media_format),
        "upstream_audio": format!("{:?}", s.upstream_audio),
        "frames_in": c.frames_in.load(Relaxed),
        "bytes_in": c.bytes_in.load(Relaxed),
        "frames_out": c.frames_out.load(Relaxed),
        "bytes_out": c.bytes_out.load(Relaxed),
        "marks_sent": c.marks_sent.load(Relaxed),
        "marks_acked": c.marks_acked.load(Relaxed),
        "dtmf": c.dtmf.load(Relaxed),
        "bad_frames": c.bad_frames.load(Relaxed),
        "audio_dropped": c.audio_dropped.load(Relaxed),
        "clears": c.clears.load(Relaxed),
    })
}
