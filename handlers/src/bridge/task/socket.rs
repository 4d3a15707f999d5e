//! The upstream socket: connect with the deployment's credentials, send with a stall
//! deadline, close cleanly; and upstream error codes as a bounded metric label.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{BridgeConfig, BridgeError, RealtimeDialect, UpstreamAuth};
use crate::tape::{Dir, Tape};

/// One upstream WebSocket, and the call's tape when it is taped (with this connection's
/// number on the call).
pub(in crate::bridge) struct Upstream {
    /// Boxed: with TLS state inline it is ~1.4 KB, and the call's task would hold a copy per
    /// place it is moved through.
    ws: Box<WebSocketStream<MaybeTlsStream<TcpStream>>>,
    tap: Option<(Arc<Tape>, u32)>,
}

impl Upstream {
    /// The next message from the model.
    pub(in crate::bridge) async fn next(
        &mut self,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        let message = self.ws.next().await;
        if let Some((tape, conn)) = &self.tap {
            match &message {
                Some(Ok(Message::Text(text))) => tape.text(Dir::UpstreamIn, Some(*conn), text),
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                    tape.upstream_close(*conn, code, false);
                }
                None | Some(Err(_)) => tape.upstream_close(*conn, 1006, false),
                Some(Ok(_)) => {}
            }
        }
        message
    }

    /// Queues one message for the next [`Self::flush`].
    pub(in crate::bridge) async fn feed(
        &mut self,
        message: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        if let (Some((tape, conn)), Message::Text(text)) = (&self.tap, &message) {
            tape.text(Dir::UpstreamOut, Some(*conn), text);
        }
        self.ws.feed(message).await
    }

    /// Tapes this (pooled) socket for a call from now on, beginning with what was said
    /// while it was set up (`true`: from the upstream).
    pub(in crate::bridge) fn attach_tape(
        &mut self,
        tap: Option<(Arc<Tape>, u32)>,
        setup: &[(bool, String)],
    ) {
        if let Some((tape, conn)) = &tap {
            tape.upstream_open(*conn);
            for (incoming, text) in setup {
                let dir = if *incoming {
                    Dir::UpstreamIn
                } else {
                    Dir::UpstreamOut
                };
                tape.text(dir, Some(*conn), text);
            }
        }
        self.tap = tap;
    }

    /// Writes what was fed.
    pub(in crate::bridge) async fn flush(
        &mut self,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.flush().await
    }
}

/// Opens the upstream socket (TCP, TLS, WebSocket) within `connect_timeout`.
pub(in crate::bridge) async fn connect(
    config: &BridgeConfig,
    tap: Option<(Arc<Tape>, u32)>,
) -> Result<Upstream, BridgeError> {
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
        UpstreamAuth::GoogApiKey(key) => {
            let mut value = header(key.expose().to_owned())?;
            value.set_sensitive(true);
            headers.insert("x-goog-api-key", value);
        }
        UpstreamAuth::BearerFrom(source) => {
            let token = source
                .token(config.connect_timeout)
                .await
                .map_err(BridgeError::Connect)?;
            let mut value = header(format!("Bearer {}", token.expose()))?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
    }
    if config.provider == crate::bridge::Provider::OpenaiRealtime
        && config.dialect == RealtimeDialect::Beta
    {
        headers.insert("OpenAI-Beta", http::HeaderValue::from_static("realtime=v1"));
    }
    // Small read buffer: tungstenite zero-fills it before every read (ARCHITECTURE.md).
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(16 * 1024 * 1024));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Err(_) => Err(BridgeError::ConnectTimeout),
        Ok(Err(e)) => Err(BridgeError::Connect(e.to_string())),
        Ok(Ok((ws, _response))) => {
            if let Some((tape, conn)) = &tap {
                tape.upstream_open(*conn);
            }
            Ok(Upstream {
                ws: Box::new(ws),
                tap,
            })
        }
    }
}

/// Upstream error codes as a bounded metric label.
pub(in crate::bridge) fn error_code_label(code: Option<&str>) -> &'static str {
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
pub(in crate::bridge) async fn send(
    ws: &mut Upstream,
    message: Message,
    config: &BridgeConfig,
) -> Result<(), BridgeError> {
    if let (Some((tape, conn)), Message::Text(text)) = (&ws.tap, &message) {
        tape.text(Dir::UpstreamOut, Some(*conn), text);
    }
    match tokio::time::timeout(config.stall_timeout, ws.ws.send(message)).await {
        Err(_) => Err(BridgeError::Stalled),
        Ok(result) => result.map_err(closed),
    }
}

/// Sends one JSON text message (see [`send`]).
pub(in crate::bridge) async fn send_text(
    ws: &mut Upstream,
    text: String,
    config: &BridgeConfig,
) -> Result<(), BridgeError> {
    send(ws, Message::Text(text.into()), config).await
}

pub(in crate::bridge) fn closed(e: tokio_tungstenite::tungstenite::Error) -> BridgeError {
    BridgeError::Closed(e.to_string())
}

/// Closes the upstream with 1000 and waits briefly for its reply.
pub(in crate::bridge) async fn close(ws: &mut Upstream) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "call ended".into(),
    };
    if let Some((tape, conn)) = &ws.tap {
        tape.upstream_close(*conn, 1000, true);
    }
    if ws.ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = ws.ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}
