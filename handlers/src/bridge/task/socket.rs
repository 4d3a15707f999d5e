//! The upstream socket: connect with the deployment's credentials, send with a stall
//! deadline, close cleanly; and upstream error codes as a bounded metric label.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{BridgeConfig, BridgeError, RealtimeDialect, UpstreamAuth};

/// One upstream WebSocket.
pub(super) type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the upstream socket (TCP, TLS, WebSocket) within `connect_timeout`.
pub(super) async fn connect(config: &BridgeConfig) -> Result<Upstream, BridgeError> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| BridgeError::Connect(e.to_string()))?;
    let headers = request.headers_mut();
    let header = |value: String| {
        http::HeaderValue::from_str(&value)
            .map_err(|_| BridgeError::Connect("credential is not a valid header value".into()))
    };
    match &config.auth {
        UpstreamAuth::None => {}
        UpstreamAuth::Bearer(key) => {
            let mut value = header(format!("Bearer {}", key.expose()))?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        UpstreamAuth::ApiKey(key) => {
            let mut value = header(key.expose().to_owned())?;
            value.set_sensitive(true);
            headers.insert("api-key", value);
        }
    }
    if config.dialect == RealtimeDialect::Beta {
        headers.insert("OpenAI-Beta", http::HeaderValue::from_static("realtime=v1"));
    }
    // Small read buffer: tungstenite zero-fills it before every read (ARCHITECTURE.md).
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(16 * 1024 * 1024));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Err(_) => Err(BridgeError::ConnectTimeout),
        Ok(Err(e)) => Err(BridgeError::Connect(e.to_string())),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// Upstream error codes as a bounded metric label.
pub(super) fn error_code_label(code: Option<&str>) -> &'static str {
    const KNOWN: &[&str] = &[
        "invalid_event",
        "invalid_value",
        "invalid_request_error",
        "session_expired",
        "server_error",
        "rate_limit_exceeded",
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "item_truncate_invalid_item_id",
        "input_audio_buffer_commit_empty",
    ];
    match code {
        None => "none",
        Some(code) => KNOWN
            .iter()
            .find(|k| **k == code)
            .copied()
            .unwrap_or("other"),
    }
}

/// Sends one message, treating a write that cannot complete in `stall_timeout` as a stall.
pub(super) async fn send(
    ws: &mut Upstream,
    message: Message,
    config: &BridgeConfig,
) -> Result<(), BridgeError> {
    match tokio::time::timeout(config.stall_timeout, ws.send(message)).await {
        Err(_) => Err(BridgeError::Stalled),
        Ok(result) => result.map_err(closed),
    }
}

/// Sends one JSON text message (see [`send`]).
pub(super) async fn send_text(
    ws: &mut Upstream,
    text: String,
    config: &BridgeConfig,
) -> Result<(), BridgeError> {
    send(ws, Message::Text(text.into()), config).await
}

pub(super) fn closed(e: tokio_tungstenite::tungstenite::Error) -> BridgeError {
    BridgeError::Closed(e.to_string())
}

/// Closes the upstream with 1000 and waits briefly for its reply.
pub(super) async fn close(ws: &mut Upstream) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "call ended".into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}
