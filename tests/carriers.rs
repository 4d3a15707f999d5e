//! Every carrier end to end over loopback: fixture audio at the carrier's native format
//! through the gateway to the fake upstream and back (PROTOCOLS.md §4–§6).

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use callgate_handlers::codec::AudioFormat;
use callgate_handlers::dialect::Dialect;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn tone(format: AudioFormat, freq: f64, ms: usize) -> Vec<u8> {
    let rate = format.sample_rate() as usize;
    let samples: Vec<i16> = (0..ms * rate / 1000)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as i16)
        .collect();
    let mut out = Vec::new();
    format.encode(&samples, &mut out);
    out
}

fn hz(samples: &[i16], rate: u32) -> f64 {
    samples.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count() as f64 * rate as f64 / samples.len() as f64
}

fn rms(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len().max(1) as f64).sqrt()
}

fn decode_appends(appends: &[String], format: AudioFormat) -> Vec<i16> {
    let mut samples = Vec::new();
    for a in appends {
        format.decode(&B64.decode(a).unwrap(), &mut samples);
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_audio_is_binary_pcm24k_passthrough_both_ways() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/ws/audio/call-77")).await;
    // No start event: the socket opening is the start, the call id is the path's.
    let update = upstream_update(&upstream).await;
    assert_eq!(update["session"]["audio"]["input"]["format"], json!({"type": "audio/pcm", "rate": 24000}));
    let audio = callgate::wav::read(&fixture("caller-booking-24k-pcm16.wav")).unwrap().1;
    let frames: Vec<&[u8]> = audio.chunks(960).collect();
    carrier.send_raw(Message::Binary(frames[0].to_vec().into())).await;
    upstream.wait_appends(0, 1).await;
    for (n, frame) in frames.iter().enumerate().skip(1) {
        carrier.send_raw(Message::Binary(frame.to_vec().into())).await;
        pace(n).await;
    }
    // Sample-accurate: the appends are exactly the bytes sent.
    let appends = upstream.wait_appends(0, frames.len()).await;
    let received: Vec<u8> = appends.iter().flat_map(|a| B64.decode(a).unwrap()).collect();
    assert_eq!(received, audio);
    // Model audio comes back as binary PCM16 frames, byte for byte.
    let reply = tone(AudioFormat::Pcm16 { rate: 24000 }, 440.0, 300);
    for chunk in reply.chunks(4800) {
        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": B64.encode(chunk)})).await;
    }
    let mut back = Vec::new();
    while back.len() < reply.len() {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut carrier.ws)).await.unwrap() {
            Some(Ok(Message::Binary(bytes))) => back.extend_from_slice(&bytes),
            other => panic!("expected binary audio, got {other:?}"),
        }
    }
    assert_eq!(back, reply);
    // Hanging up is closing the socket (the protocol has no stop): the upstream closes too.
    carrier.ws.close(None).await.unwrap();
    assert_eq!(upstream.wait_closed(0).await, 1000);
}

async fn upstream_update(upstream: &FakeUpstream) -> Value {
    for _ in 0..500 {
        if let Some(u) = upstream.events_of(0, "session.update").await.first() {
            return u.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("no session.update")
}
