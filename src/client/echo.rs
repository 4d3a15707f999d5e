//! An upstream that echoes: a Realtime server answering every `input_audio_buffer.append` at
//! once with one `response.output_audio.delta` of the same audio. With it, a stamped load
//! ([`super::stamped`]) times every frame's round trip through a gateway; the relay
//! benchmark and the load-test tests serve it. It is not a model.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use super::stamped::string_field;

/// Serves echo sessions on `listener` until it fails; each session waits `setup` before
/// `session.created`, as a real model's handshake and session setup take.
pub async fn serve(listener: TcpListener, setup: Duration) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(session(stream, setup));
    }
}

async fn session(stream: TcpStream, setup: Duration) {
    // Nagle off, as on every socket of the gateway: with it, a pong queued beside a
    // delta held the next delta for the peer's delayed ACK (the 20 ms tails).
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    // A real model's TLS + WebSocket handshake and session setup, when simulated.
    tokio::time::sleep(setup).await;
    let created =
        json!({"type": "session.created", "session": {"type": "realtime", "expires_at": 0}});
    let _ = sink.send(Message::Text(created.to_string().into())).await;
    // Pings are answered by tungstenite as the stream is read; only text is an event.
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        // Cheap on purpose (the echo shares a core with the load): appends are
        // answered by string surgery, other events parsed.
        let reply = if let Some(audio) = append_audio(&text) {
            format!(
                r#"{{"type":"response.output_audio.delta","response_id":"r1","item_id":"i1","delta":"{audio}"}}"#
            )
        } else {
            let event: Value = serde_json::from_str(&text).unwrap_or_default();
            if event["type"] != "session.update" {
                continue;
            }
            json!({"type": "session.updated", "session": event["session"]}).to_string()
        };
        if sink.send(Message::Text(reply.into())).await.is_err() {
            break;
        }
    }
}

/// The audio of an `input_audio_buffer.append`, found without parsing.
fn append_audio(text: &str) -> Option<&str> {
    text.contains("\"input_audio_buffer.append\"")
        .then(|| string_field(text, "audio"))
        .flatten()
}
