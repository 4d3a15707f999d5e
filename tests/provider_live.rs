//! Calls on OpenAI GPT-Live (`upstream.provider = "openai-live"`), against a fake server that
//! speaks the wire format of `openai.types.live` (openai 3.54): `session.start` /
//! `session.started`, `session.input_audio.append`, `session.output_audio.delta`, timed
//! transcript fragments, tools through Responses delegation, `session.close` /
//! `session.closed`.

mod common;

use std::time::Duration;

use base64::Engine as _;
use callgate::config::Config;
use callgate_handlers::bridge::{Provider, Secret};
use callgate_handlers::dialect::Dialect;
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "live-admin";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn on_live(c: &mut Config) {
    c.upstream.provider = Provider::OpenaiLive;
    c.security.admin_token = Secret::new(ADMIN);
}

async fn events(upstream: &FakeUpstream, i: usize, kind: &str) -> Vec<Value> {
    upstream.events_of(i, kind).await
}

async fn wait_events(upstream: &FakeUpstream, i: usize, kind: &str, n: usize) -> Vec<Value> {
    for _ in 0..500 {
        let found = events(upstream, i, kind).await;
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} {kind} on connection {i}");
}

/// A Twilio call on a fresh gateway whose settings `tweak` changes after [`on_live`], started
/// on a fake GPT-Live server: the server, the gateway, the carrier and the `session.start`.
async fn live_call(tweak: impl FnOnce(&mut Config)) -> (FakeUpstream, Gateway, Carrier, Value) {
    let upstream = FakeUpstream::start_live().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        on_live(c);
        tweak(c);
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    let start = wait_events(&upstream, 0, "session.start", 1)
        .await
        .remove(0);
    (upstream, gw, carrier, start)
}

fn fragment(kind: &str, delta: &str, start_ms: u64, end_ms: u64) -> Value {
    json!({"type": kind, "event_id": "e", "delta": delta, "start_ms": start_ms, "end_ms": end_ms})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_call_passes_mulaw_through_both_ways_and_closes_the_session() {
    // The client speaks first: the session is configured at start.
    let (upstream, _gw, mut carrier, start) = live_call(|_| {}).await;
    let session = &start["session"];
    assert_eq!(session["model"], "gpt-live-1");
    assert_eq!(
        session["audio"]["format"],
        json!({"type": "audio/pcmu", "rate": 8000})
    );
    assert_eq!(session["audio"]["output"]["voice"], "marin");
    assert!(session["instructions"]
        .as_str()
        .is_some_and(|i| !i.is_empty()));
    assert_eq!(session["delegation"]["type"], "responses");
    assert!(session.get("input").is_none());
    for field in session.as_object().unwrap().keys() {
        assert!(
            ["model", "instructions", "audio", "delegation", "input"].contains(&field.as_str()),
            "session.start is strict: unexpected {field}"
        );
    }

    // Caller audio: the carrier's μ-law, untouched.
    let frames = fixture_frames("caller-booking-8k-mulaw.wav");
    for (i, frame) in frames.iter().take(10).enumerate() {
        carrier.send(media(SID, i as u64, frame)).await;
    }
    let appended = wait_events(&upstream, 0, "session.input_audio.append", 10).await;
    let sent: Vec<&str> = appended
        .iter()
        .map(|e| e["audio"].as_str().unwrap())
        .collect();
    assert_eq!(
        sent,
        frames[..10].iter().map(String::as_str).collect::<Vec<_>>()
    );

    // The model's voice: its bytes reach the caller, marked.
    let voice: Vec<u8> = (0..800u32).map(|i| (i % 251) as u8).collect();
    upstream
        .send(
            0,
            json!({"type": "session.output_audio.delta", "delta": B64.encode(&voice)}),
        )
        .await;
    let mut heard = Vec::new();
    let mut marked = false;
    while heard.len() < voice.len() || !marked {
        let message = carrier.recv().await;
        match message["event"].as_str() {
            Some("media") => heard.extend(
                B64.decode(message["media"]["payload"].as_str().unwrap())
                    .unwrap(),
            ),
            Some("mark") => marked = true,
            _ => {}
        }
    }
    assert_eq!(heard, voice);

    // The end: `session.close`, the server's `session.closed`, then the socket closes 1000.
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    assert_eq!(upstream.wait_closed(0).await, 1000);
    let sent: Vec<Value> = upstream.conn(0).await.lock().unwrap().events.clone();
    let last_two: Vec<&str> = sent[sent.len() - 1..]
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(last_two, ["session.close"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_are_grouped_into_lines_for_the_feed_with_digits_redacted() {
    let mut db = String::new();
    let (upstream, gw, mut carrier, _) = live_call(|c| {
        c.dtmf.pci = true;
        db = c.records.path.clone();
    })
    .await;
    let call_sid = format!("CA{}", &SID[2..]);
    let mut feed = Carrier::try_connect(
        &gw.url(&format!("/v1/calls/{call_sid}/events")),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await
    .expect("feed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let caller = "session.input_transcript.delta";
    let model = "session.output_transcript.delta";
    for event in [
        fragment(caller, "A table ", 0, 400),
        fragment(caller, "for two.", 400, 900),
        fragment(model, "At what ", 1000, 1300),
        fragment(model, "time?", 1300, 1600),
        fragment(caller, "Card 4111 1111 1111 1111.", 2000, 3500),
        fragment(model, "Thank you.", 3600, 4000),
    ] {
        upstream.send(0, event).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    let mut finals = Vec::new();
    let mut deltas = 0;
    while let Some(event) = next_event(&mut feed).await {
        if event["type"] == "transcript" {
            match event["is_final"].as_bool() {
                Some(true) => finals.push((
                    event["role"].as_str().unwrap().to_owned(),
                    event["text"].as_str().unwrap().to_owned(),
                )),
                _ => deltas += 1,
            }
        }
    }
    assert_eq!(deltas, 6, "each fragment is a delta");
    assert_eq!(finals.len(), 4, "{finals:?}");
    assert_eq!(
        finals[0],
        ("user".to_owned(), "A table for two.".to_owned())
    );
    assert_eq!(
        finals[1],
        ("assistant".to_owned(), "At what time?".to_owned())
    );
    // PCI: digit runs never reach the feed (nor records, logs or the next session).
    assert_eq!(finals[2].0, "user");
    assert!(!finals[2].1.contains("4111"), "{:?}", finals[2]);
    // The model's line was still open at the end: the session's close keeps it.
    assert_eq!(finals[3], ("assistant".to_owned(), "Thank you.".to_owned()));
    // The record holds the same lines.
    let record = finished_record(&db, &call_sid).await;
    let lines: Vec<(String, String)> = record
        .transcript
        .iter()
        .map(|l| (l.role.clone(), l.text.clone()))
        .collect();
    assert_eq!(lines, finals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_run_through_delegation_and_keys_reach_the_backend() {
    let (hook, seen) = recording_webhook(json!({"status": "shipped"})).await;
    let (upstream, _gw, mut carrier, start) =
        live_call(|c| c.tools = vec![webhook_tool("lookup", hook, 2000)]).await;
    let tools = &start["session"]["delegation"]["responses"]["tools"];
    assert_eq!(tools[0]["name"], "lookup");
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(
        start["session"]["delegation"]["responses"]["model"],
        "gpt-5-mini"
    );

    // The backend calls the tool; only the completed item counts.
    let call = |status: &str| {
        json!({"type": "response.event", "event_id": "e", "delegation_id": "d1", "event": {
            "type": "response.output_item.done", "output_index": 0,
            "item": {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "lookup", "arguments": "{\"order\":\"A1\"}", "status": status}}})
    };
    upstream.send(0, json!({"type": "response.event", "event_id": "e", "event": {"type": "response.function_call_arguments.done", "call_id": "c1", "arguments": "{\"order\":\"A1\"}"}})).await;
    upstream.send(0, call("completed")).await;
    let items = wait_events(&upstream, 0, "response.item.create", 1).await;
    assert_eq!(
        items[0]["item"],
        json!({"type": "function_call_output", "call_id": "c1", "output": "{\"status\":\"shipped\"}"})
    );
    let creates = wait_events(&upstream, 0, "response.create", 1).await;
    assert_eq!(creates.len(), 1);
    assert_eq!(seen.lock().unwrap()[0]["arguments"]["order"], "A1");

    // Keys: the digits as the caller's text for the backend, then a response.
    for digit in ["4", "2", "#"] {
        carrier.send(json!({"event": "dtmf", "streamSid": SID, "sequenceNumber": "9", "dtmf": {"track": "inbound_track", "digit": digit}})).await;
    }
    let items = wait_events(&upstream, 0, "response.item.create", 2).await;
    assert_eq!(items[1]["item"]["role"], "user");
    assert_eq!(
        items[1]["item"]["content"][0]["text"],
        "Caller entered digits: 42#"
    );
    wait_events(&upstream, 0, "response.create", 2).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_after_a_drop_is_seeded_with_the_conversation() {
    let (upstream, _gw, mut carrier, _) = live_call(|_| {}).await;
    upstream
        .send(
            0,
            fragment("session.input_transcript.delta", "I need a taxi.", 0, 800),
        )
        .await;
    upstream
        .send(
            0,
            fragment("session.output_transcript.delta", "Where to?", 900, 1400),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    upstream.close(0, 1011).await;
    // The caller goes on talking while the session is replaced: nothing of it is lost.
    let frames = fixture_frames("caller-booking-8k-mulaw.wav");
    for (i, frame) in frames.iter().take(5).enumerate() {
        carrier.send(media(SID, i as u64, frame)).await;
    }
    let start = wait_events(&upstream, 1, "session.start", 1)
        .await
        .remove(0);
    assert_eq!(
        start["session"]["input"],
        json!([
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "I need a taxi."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Where to?"}]},
        ])
    );
    // Each frame reached the old session before it went, or the new one after: all five,
    // in order, once (silence fill aside).
    let spoken = |events: Vec<Value>| -> Vec<String> {
        events
            .iter()
            .map(|e| e["audio"].as_str().unwrap().to_owned())
            .filter(|a| B64.decode(a).unwrap().iter().any(|&b| b != 0xFF))
            .collect()
    };
    let mut heard = Vec::new();
    for _ in 0..200 {
        heard = spoken(events(&upstream, 0, "session.input_audio.append").await);
        heard.extend(spoken(
            events(&upstream, 1, "session.input_audio.append").await,
        ));
        if heard.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(heard, frames[..5].to_vec());
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exotel_call_streams_its_8k_pcm_as_mulaw() {
    let upstream = FakeUpstream::start_live().await;
    let gw = Gateway::start(Some(&upstream), on_live).await;
    let exotel = callgate_handlers::dialect::messages::CarrierMessages::new(Dialect::Exotel, SID);
    let mut carrier = Carrier::connect(&gw.url("/exotel")).await;
    carrier.send(exotel.start().unwrap()).await;
    let start = wait_events(&upstream, 0, "session.start", 1)
        .await
        .remove(0);
    assert_eq!(
        start["session"]["audio"]["format"],
        json!({"type": "audio/pcmu", "rate": 8000})
    );
    let pcm = tone(
        callgate_handlers::codec::AudioFormat::Pcm16 { rate: 8000 },
        440.0,
        100,
    );
    carrier.send(exotel.media(1, 1, &pcm).unwrap()).await;
    let appended = wait_events(&upstream, 0, "session.input_audio.append", 1).await;
    let bytes: usize = appended
        .iter()
        .map(|e| B64.decode(e["audio"].as_str().unwrap()).unwrap().len())
        .sum();
    assert_eq!(bytes, pcm.len() / 2, "16-bit PCM → one μ-law byte a sample");
    carrier.send(exotel.stop(2).unwrap()).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_call_hangs_up_once_the_goodbye_has_played_and_the_model_paused() {
    let (upstream, _gw, mut carrier, _) = live_call(|_| {}).await;
    // The backend ends the call while the model says goodbye (200 ms of audio).
    upstream.send(0, json!({"type": "response.event", "event_id": "e", "event": {"type": "response.output_item.done",
        "item": {"type": "function_call", "call_id": "c9", "name": "end_call", "arguments": "{}", "status": "completed"}}})).await;
    upstream
        .send(
            0,
            json!({"type": "session.output_audio.delta", "delta": B64.encode(vec![0x55u8; 1600])}),
        )
        .await;
    // Every mark echoed as the carrier plays it, until the gateway hangs up.
    let sent_at = std::time::Instant::now();
    let mut marks = 0;
    let code = loop {
        let message = tokio::time::timeout(Duration::from_secs(5), carrier.ws.next())
            .await
            .expect("end_call never hung up");
        match message {
            Some(Ok(Message::Text(text))) => {
                let m: Value = serde_json::from_str(&text).unwrap();
                if m["event"] == "mark" {
                    marks += 1;
                    carrier.send(json!({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": m["mark"]})).await;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                break frame.map(|f| (u16::from(f.code), f.reason.to_string()))
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, Some((1000, "call ended".to_owned())));
    assert!(marks >= 2, "the goodbye's pieces were marked: {marks}");
    // Not at once: the goodbye plays, then a second of the model's silence.
    let waited = sent_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "hung up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "hung up after {waited:?}");
    let sent = upstream.conn(0).await.lock().unwrap().events.clone();
    assert_eq!(sent.last().unwrap()["type"], "session.close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_model_audio_is_paced_so_the_carrier_holds_little_unplayed() {
    // GPT-Live has no barge-in signal: the model just stops. What the carrier already holds
    // still plays, so it is never sent more than ~200 ms ahead of playback.
    let (upstream, _gw, mut carrier, _) = live_call(|_| {}).await;
    // Two seconds of audio at once.
    let sent = std::time::Instant::now();
    for _ in 0..20 {
        upstream
            .send(0, json!({"type": "session.output_audio.delta", "delta": B64.encode(vec![0x55u8; 800])}))
            .await;
    }
    let mut received_ms = 0u64;
    let mut ahead_max = 0i64;
    while received_ms < 2000 {
        let message = carrier.recv().await;
        if message["event"] == "media" {
            received_ms += B64
                .decode(message["media"]["payload"].as_str().unwrap())
                .unwrap()
                .len() as u64
                / 8;
            // How far what the carrier has is ahead of what it can have played by now.
            let ahead = received_ms as i64 - sent.elapsed().as_millis() as i64;
            ahead_max = ahead_max.max(ahead);
        }
    }
    assert!(
        ahead_max <= 400,
        "the carrier was sent {ahead_max} ms ahead of playback"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(1700),
        "paced: took {:?}",
        sent.elapsed()
    );
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_in_the_callers_audio_is_filled_with_silence() {
    let (upstream, _gw, mut carrier, _) = live_call(|_| {}).await;
    // The carrier sends nothing for 600 ms: the model still hears a continuous stream.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let appended = events(&upstream, 0, "session.input_audio.append").await;
    let silence: Vec<u8> = appended
        .iter()
        .flat_map(|e| B64.decode(e["audio"].as_str().unwrap()).unwrap())
        .collect();
    assert!(silence.iter().all(|&b| b == 0xFF), "μ-law silence");
    assert!(
        silence.len() >= 8 * 300,
        "{} ms of silence in 600 ms",
        silence.len() / 8
    );
    assert!(
        silence.len() <= 8 * 700,
        "no more than the gap: {} ms",
        silence.len() / 8
    );
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_runs_its_calls_on_gpt_live_while_others_stay_on_realtime() {
    let (realtime, live) = (
        FakeUpstream::start().await,
        FakeUpstream::start_live().await,
    );
    let live_url = live.url.clone();
    let gw = Gateway::start(Some(&realtime), |c| {
        c.conversation.profiles.insert(
            "acme".into(),
            callgate_handlers::bridge::Profile {
                provider: Some(Provider::OpenaiLive),
                model: "gpt-live-1.1".into(),
                url: live_url,
                ..Default::default()
            },
        );
    })
    .await;
    // The acme tenant's call (profile chosen by the `profile` parameter) goes to GPT-Live ...
    let mut acme = Carrier::connect(&gw.url("/twilio")).await;
    acme.send(twilio_start(SID, json!({"profile": "acme"})))
        .await;
    let start = wait_events(&live, 0, "session.start", 1).await.remove(0);
    assert_eq!(start["session"]["model"], "gpt-live-1.1");
    // ... while another call stays on the Realtime API.
    let other_sid = "MZ22222222222222222222222222222222";
    let mut other = Carrier::connect(&gw.url("/twilio")).await;
    other.send(twilio_start(other_sid, json!({}))).await;
    wait_events(&realtime, 0, "session.update", 1).await;
    assert_eq!(live.connections(), 1);
    for (carrier, sid) in [(&mut acme, SID), (&mut other, other_sid)] {
        carrier.send(stop(sid)).await;
        assert_eq!(carrier.closed().await.0, 1000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_greeting_goes_in_the_first_session_start() {
    let (_upstream, _gw, mut carrier, start) =
        live_call(|c| c.conversation.greeting = "Welcome to Acme.".into()).await;
    let instructions = start["session"]["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("\"Welcome to Acme.\""),
        "{instructions}"
    );
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}
