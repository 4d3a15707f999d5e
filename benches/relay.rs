//! The whole-system comparison: callgate beside a minimal relay, under the same load.
//!
//! Two roles, each its own process so that they can be pinned to cores
//! (`benches/relay_compare.sh` runs them beside the project's own load generator,
//! `callgate loadtest --stamped`, which stamps every 20 ms frame and times its round trip):
//!
//! - `echo PORT`: a Realtime upstream that answers every `input_audio_buffer.append` at once
//!   with one `response.output_audio.delta` of the same audio (`ECHO_SETUP_MS`: wait this
//!   long before `session.created`, as a real model's handshake and setup take).
//! - `relay PORT UPSTREAM_URL`: the minimal relay, a plain tungstenite loop per call that
//!   forwards each Twilio media payload upstream and each delta back (no validation, no
//!   limits, no records): the floor for what a gateway costs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("echo") => echo(&args[1]).await,
        Some("relay") => relay(&args[1], &args[2]).await,
        _ => eprintln!("usage: relay echo PORT | relay PORT UPSTREAM"),
    }
}

async fn echo(port: &str) {
    let setup = Duration::from_millis(
        std::env::var("ECHO_SETUP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    callgate::client::echo::serve(listener, setup).await;
}

async fn relay(port: &str, upstream: &str) {
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    while let Ok((stream, _)) = listener.accept().await {
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(carrier) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let connecting =
                tokio_tungstenite::connect_async_with_config(upstream.as_str(), None, true);
            let Ok((model, _)) = connecting.await else {
                return;
            };
            let (mut to_carrier, mut from_carrier) = carrier.split();
            let (mut to_model, mut from_model) = model.split();
            let sid = Arc::new(Mutex::new(String::new()));
            let stream_sid = sid.clone();
            let mut up = tokio::spawn(async move {
                while let Some(Ok(Message::Text(text))) = from_carrier.next().await {
                    let event: Value = serde_json::from_str(&text).unwrap_or_default();
                    match event["event"].as_str() {
                        Some("start") => {
                            *stream_sid.lock().unwrap() =
                                event["streamSid"].as_str().unwrap_or("").to_owned()
                        }
                        Some("media") => {
                            let append = json!({"type": "input_audio_buffer.append", "audio": event["media"]["payload"]});
                            if to_model
                                .send(Message::Text(append.to_string().into()))
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                        Some("stop") => break,
                        _ => {}
                    }
                }
            });
            loop {
                let message = tokio::select! {
                    message = from_model.next() => message,
                    _ = &mut up => break,
                };
                let Some(Ok(Message::Text(text))) = message else {
                    break;
                };
                let event: Value = serde_json::from_str(&text).unwrap_or_default();
                if event["type"] == "response.output_audio.delta" {
                    let sid = sid.lock().unwrap().clone();
                    let media = json!({"event": "media", "streamSid": sid, "media": {"payload": event["delta"]}});
                    if to_carrier
                        .send(Message::Text(media.to_string().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            let _ = to_carrier.send(Message::Close(None)).await;
        });
    }
}
