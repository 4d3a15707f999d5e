//! The whole-system comparison: callgate beside a minimal relay, under the same load.
//!
//! Three roles, each its own process so that they can be pinned to cores
//! (`benches/relay_compare.sh` runs them):
//!
//! - `echo PORT`: a Realtime upstream that answers every `input_audio_buffer.append` at once
//!   with one `response.output_audio.delta` of the same audio.
//! - `relay PORT UPSTREAM_URL`: the minimal relay, a plain tungstenite loop per call that
//!   forwards each Twilio media payload upstream and each delta back (no validation, no
//!   limits, no records): the floor for what a gateway costs.
//! - `load URL CALLS SECONDS`: CALLS Twilio calls at real time (a 20 ms frame every 20 ms),
//!   each frame stamped with its call and number; prints the frame round trip (frame out →
//!   the same audio back) as p50/p99 over every frame, and failed calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
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
        Some("load") => load(&args[1], args[2].parse().unwrap(), args[3].parse().unwrap()).await,
        _ => eprintln!("usage: relay echo PORT | relay PORT UPSTREAM | load URL CALLS SECONDS"),
    }
}

async fn echo(port: &str) {
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            // Nagle off, as on every socket of the gateway: with it, a pong queued beside a
            // delta held the next delta for the peer's delayed ACK (the 20 ms tails).
            let _ = stream.set_nodelay(true);
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let created = json!({"type": "session.created", "session": {"type": "realtime", "expires_at": 0}});
            let _ = sink.send(Message::Text(created.to_string().into())).await;
            // Pings are answered by tungstenite as the stream is read; only text is an event.
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let event: Value = serde_json::from_str(&text).unwrap_or_default();
                let reply = match event["type"].as_str() {
                    Some("session.update") => {
                        json!({"type": "session.updated", "session": event["session"]})
                    }
                    Some("input_audio_buffer.append") => {
                        json!({"type": "response.output_audio.delta",
                        "response_id": "r1", "item_id": "i1", "delta": event["audio"]})
                    }
                    _ => continue,
                };
                if sink
                    .send(Message::Text(reply.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
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

/// A 20 ms μ-law frame carrying its call and number (μ-law bytes pass through untouched).
fn frame(call: u32, n: u32) -> [u8; 160] {
    let mut bytes = [0x7fu8; 160];
    bytes[..4].copy_from_slice(&call.to_be_bytes());
    bytes[4..8].copy_from_slice(&n.to_be_bytes());
    bytes
}

async fn load(url: &str, calls: u32, seconds: u64) {
    let round_trips = Arc::new(Mutex::new(Vec::<(u32, f64)>::new()));
    let failed = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for call in 0..calls {
        let (url, round_trips, failed) = (url.to_owned(), round_trips.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the starts over a second, as calls arrive.
            tokio::time::sleep(Duration::from_millis(u64::from(call) * 1000 / u64::from(calls.max(1)))).await;
            // Nagle off, as every real carrier and gateway socket here: with it, small frames
            // wait for delayed ACKs (40 ms).
            let connecting = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true);
            let Ok((ws, _)) = connecting.await else {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let sid = format!("MZ{call:032}");
            let start = json!({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
                "accountSid": "AC1", "streamSid": sid, "callSid": format!("CA{call:032}"), "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}, "customParameters": {}}});
            sink.send(Message::Text(start.to_string().into())).await.unwrap();
            let sent: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
            let sent_by_reader = sent.clone();
            let mine = round_trips.clone();
            let reader = tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let Message::Text(text) = message else { continue };
                    let event: Value = serde_json::from_str(&text).unwrap_or_default();
                    if event["event"] != "media" {
                        continue;
                    }
                    let audio = B64.decode(event["media"]["payload"].as_str().unwrap_or("")).unwrap_or_default();
                    let now = Instant::now();
                    for chunk in audio.chunks(160).filter(|c| c.len() >= 8) {
                        let n = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
                        if let Some(at) = sent_by_reader.lock().unwrap().remove(&n) {
                            mine.lock().unwrap().push((n, now.duration_since(at).as_secs_f64() * 1000.0));
                        }
                    }
                }
            });
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for n in 0..(seconds * 50) as u32 {
                tick.tick().await;
                let media = json!({"event": "media", "sequenceNumber": (n + 2).to_string(), "streamSid": sid,
                    "media": {"track": "inbound", "chunk": (n + 1).to_string(), "timestamp": (n * 20).to_string(),
                    "payload": B64.encode(frame(call, n))}});
                sent.lock().unwrap().insert(n, Instant::now());
                if sink.send(Message::Text(media.to_string().into())).await.is_err() {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let stop = json!({"event": "stop", "sequenceNumber": "999999", "streamSid": sid, "stop": {"accountSid": "AC1", "callSid": "CA1"}});
            let _ = sink.send(Message::Text(stop.to_string().into())).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let taken = round_trips.lock().unwrap().clone();
    let percentiles = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let i = ((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1));
            times.get(i).copied().unwrap_or(f64::NAN)
        };
        (times.len(), at(0.50), at(0.99))
    };
    let (n, p50, p99) = percentiles(taken.iter().map(|(_, t)| *t).collect());
    // After each call's first second: without the session setup every gateway does first.
    let (_, s50, s99) = percentiles(
        taken
            .iter()
            .filter(|(n, _)| *n >= 50)
            .map(|(_, t)| *t)
            .collect(),
    );
    if std::env::var_os("RELAY_BENCH_DEBUG").is_some() {
        for (from, to) in [(0, 25), (25, 50), (50, 100), (100, 200), (200, 100_000)] {
            let part = percentiles(
                taken
                    .iter()
                    .filter(|(n, _)| (from..to).contains(n))
                    .map(|(_, t)| *t)
                    .collect(),
            );
            eprintln!("frames {from}..{to}: {part:?}");
        }
    }
    let expected = u64::from(calls) * seconds * 50;
    println!(
        "frames {n} of {expected} came back; round trip p50 {p50:.2} ms, p99 {p99:.2} ms (after the first second: p50 {s50:.2}, p99 {s99:.2}); failed calls {}",
        failed.load(std::sync::atomic::Ordering::Relaxed)
    );
}
