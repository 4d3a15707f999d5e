//! Calls on Google Gemini Live (`upstream.provider = "gemini-live"`), against a fake server
//! that speaks the wire format of `google.genai.types` (google-genai 3.3): `setup` /
//! `setupComplete` (sent in a binary frame, as the server may), `realtimeInput` audio at
//! 16 kHz, `serverContent` with 24 kHz audio, transcriptions, `interrupted` and
//! `turnComplete`, `toolCall` / `toolResponse`, `goAway` and resumption handles.

mod common;

use std::time::Duration;

use base64::Engine as _;
use callgate::config::Config;
use callgate_handlers::bridge::{Provider, Secret};
use callgate_handlers::codec::AudioFormat;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn on_gemini(c: &mut Config) {
    c.upstream.provider = Provider::GeminiLive;
    c.upstream.gemini_api_key = Secret::new("g-test-key");
}

async fn wait_with(upstream: &FakeUpstream, i: usize, key: &str, n: usize) -> Vec<Value> {
    for _ in 0..500 {
        let found = upstream.messages_with(i, key).await;
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} {key} messages on connection {i}");
}

/// `ms` of model audio (24 kHz PCM16) in one `serverContent`.
fn model_audio(ms: usize) -> Value {
    let pcm = tone(AudioFormat::Pcm16 { rate: 24000 }, 500.0, ms);
    json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": B64.encode(pcm)}}]}}})
}

async fn started(
    upstream: &FakeUpstream,
    tweak: impl FnOnce(&mut Config),
) -> (Gateway, Carrier, Value) {
    let gw = Gateway::start(Some(upstream), |c| {
        on_gemini(c);
        tweak(c);
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    let setup = wait_with(upstream, 0, "setup", 1).await.remove(0);
    (gw, carrier, setup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_call_on_gemini_resamples_both_ways_with_the_key_in_a_header() {
    let upstream = FakeUpstream::start_gemini().await;
    let (gw, mut carrier, setup) = started(&upstream, |_| {}).await;
    let setup = &setup["setup"];
    assert_eq!(setup["model"], "models/gemini-3.1-flash-live-preview");
    assert_eq!(
        setup["generationConfig"]["responseModalities"],
        json!(["AUDIO"])
    );
    assert!(setup["systemInstruction"]["parts"][0]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(
        setup["tools"][0]["functionDeclarations"][0]["name"],
        "end_call"
    );
    let headers = upstream.conn(0).await.lock().unwrap().headers.clone();
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-goog-api-key" && v == "g-test-key"),
        "{headers:?}"
    );
    assert!(!upstream.url.contains("key="));

    // Caller μ-law at 8 kHz → PCM16 at 16 kHz: 4 bytes upstream per byte in.
    let frames = fixture_frames("caller-booking-8k-mulaw.wav");
    for (i, frame) in frames.iter().take(10).enumerate() {
        carrier.send(media(SID, i as u64, frame)).await;
    }
    let sent = wait_with(&upstream, 0, "realtimeInput", 10).await;
    assert!(sent
        .iter()
        .all(|m| m["realtimeInput"]["audio"]["mimeType"] == "audio/pcm;rate=16000"));
    let bytes: usize = sent
        .iter()
        .map(|m| {
            B64.decode(m["realtimeInput"]["audio"]["data"].as_str().unwrap())
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(bytes, 10 * 160 * 4);

    // Bad input from the server: a binary frame that is not UTF-8, one that is not JSON.
    // Each is counted and ignored; the call goes on.
    let before = gw.metrics_baseline().await;
    upstream
        .send_message(0, Message::Binary(vec![0xff, 0xfe, 0x00].into()))
        .await;
    upstream
        .send_message(0, Message::Binary(b"{not json".to_vec().into()))
        .await;
    // The model's 24 kHz voice → μ-law at 8 kHz for the caller, then its turn ends (end mark).
    upstream.send(0, model_audio(200)).await;
    upstream
        .send(0, json!({"serverContent": {"turnComplete": true}}))
        .await;
    let mut heard = Vec::new();
    let mut end = false;
    while !end {
        let message = carrier.recv().await;
        match message["event"].as_str() {
            Some("media") => heard.extend(
                B64.decode(message["media"]["payload"].as_str().unwrap())
                    .unwrap(),
            ),
            Some("mark") => {
                end = message["mark"]["name"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("/end"))
            }
            _ => {}
        }
    }
    assert!(
        (1500..=1700).contains(&heard.len()),
        "{} bytes of μ-law for 200 ms",
        heard.len()
    );
    let mut pcm = Vec::new();
    AudioFormat::Mulaw.decode(&heard, &mut pcm);
    let f = hz(&pcm[200..1400], 8000);
    assert!((f - 500.0).abs() < 15.0, "the caller hears {f} Hz");
    let ignored = |reason| {
        let before = &before;
        let gw = &gw;
        async move {
            gw.metric_delta(
                before,
                "callgate_upstream_events_ignored_total",
                &[("reason", reason)],
            )
            .await
        }
    };
    assert_eq!(ignored("binary").await, 1.0, "the frame that is not UTF-8");
    assert_eq!(ignored("invalid").await, 1.0, "the frame that is not JSON");
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    assert_eq!(upstream.wait_closed(0).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_clears_the_carrier() {
    let upstream = FakeUpstream::start_gemini().await;
    let (_gw, mut carrier, _) = started(&upstream, |_| {}).await;
    upstream.send(0, model_audio(400)).await;
    while carrier.recv().await["event"] != "media" {}
    upstream
        .send(0, json!({"serverContent": {"interrupted": true}}))
        .await;
    loop {
        if carrier.recv().await["event"] == "clear" {
            break;
        }
    }
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_greeting_keys_and_transcripts() {
    let (hook, seen) = recording_webhook(json!({"status": "shipped"})).await;
    let upstream = FakeUpstream::start_gemini().await;
    let mut db = String::new();
    let (gw, mut carrier, setup) = started(&upstream, |c| {
        c.dtmf.pci = true;
        db = c.records.path.clone();
        c.conversation.greeting = "Welcome to Acme.".into();
        c.security.admin_token = Secret::new("g-admin");
        c.tools = vec![webhook_tool("lookup", hook, 2000)];
    })
    .await;
    assert_eq!(
        setup["setup"]["tools"][0]["functionDeclarations"][0]["name"],
        "lookup"
    );
    // The greeting: a user turn asking the model to say it.
    let turns = wait_with(&upstream, 0, "clientContent", 1).await;
    assert!(turns[0]["clientContent"]["turns"][0]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Welcome to Acme."));
    assert_eq!(turns[0]["clientContent"]["turnComplete"], true);

    upstream.send(0, json!({"toolCall": {"functionCalls": [{"id": "f1", "name": "lookup", "args": {"order": "A1"}}]}})).await;
    let responses = wait_with(&upstream, 0, "toolResponse", 1).await;
    assert_eq!(
        responses[0]["toolResponse"]["functionResponses"][0],
        json!({"id": "f1", "name": "lookup", "response": {"status": "shipped"}})
    );
    assert_eq!(seen.lock().unwrap()[0]["arguments"]["order"], "A1");

    for digit in ["4", "2", "#"] {
        carrier.send(json!({"event": "dtmf", "streamSid": SID, "sequenceNumber": "9", "dtmf": {"track": "inbound_track", "digit": digit}})).await;
    }
    let turns = wait_with(&upstream, 0, "clientContent", 2).await;
    assert_eq!(
        turns[1]["clientContent"]["turns"][0]["parts"][0]["text"],
        "Caller entered digits: 42#"
    );

    let call_sid = format!("CA{}", &SID[2..]);
    let mut feed = Carrier::try_connect(
        &gw.url(&format!("/v1/calls/{call_sid}/events")),
        &[("authorization", "Bearer g-admin")],
    )
    .await
    .expect("feed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    upstream
        .send(
            0,
            json!({"serverContent": {"inputTranscription": {"text": "Where is "}}}),
        )
        .await;
    upstream.send(0, json!({"serverContent": {"inputTranscription": {"text": "my order?", "finished": true}}})).await;
    upstream
        .send(
            0,
            json!({"serverContent": {"outputTranscription": {"text": "It has shipped."}}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    let mut finals = Vec::new();
    while let Some(event) = next_event(&mut feed).await {
        if event["type"] == "transcript" && event["is_final"] == true {
            finals.push((
                event["role"].as_str().unwrap().to_owned(),
                event["text"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(
        finals.contains(&("user".to_owned(), "Where is my order?".to_owned())),
        "{finals:?}"
    );
    assert!(
        finals.contains(&("assistant".to_owned(), "It has shipped.".to_owned())),
        "{finals:?}"
    );
    // PCI: digit runs never reach the feed; the record holds the same lines.
    assert!(
        finals.iter().all(|(_, text)| !text.contains("4111")),
        "{finals:?}"
    );
    let record = finished_record(&db, &format!("CA{}", &SID[2..])).await;
    let lines: Vec<(&str, &str)> = record
        .transcript
        .iter()
        .map(|l| (l.role.as_str(), l.text.as_str()))
        .collect();
    assert!(lines.contains(&("user", "Where is my order?")), "{lines:?}");
    assert!(
        lines.contains(&("assistant", "It has shipped.")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|(_, text)| !text.contains("4111")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_away_resumes_on_a_new_connection_with_the_latest_handle_and_no_audio_lost() {
    let upstream = FakeUpstream::start_gemini().await;
    let (_gw, mut carrier, _) = started(&upstream, |_| {}).await;
    upstream
        .send(
            0,
            json!({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": true}}),
        )
        .await;
    upstream
        .send(
            0,
            json!({"sessionResumptionUpdate": {"newHandle": "h2", "resumable": true}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    upstream
        .send(0, json!({"goAway": {"timeLeft": "10s"}}))
        .await;
    // The caller keeps talking across the move.
    let frames = fixture_frames("caller-booking-8k-mulaw.wav");
    for (i, frame) in frames.iter().take(20).enumerate() {
        carrier.send(media(SID, i as u64, frame)).await;
    }
    let setup = wait_with(&upstream, 1, "setup", 1).await.remove(0);
    assert_eq!(setup["setup"]["sessionResumption"], json!({"handle": "h2"}));
    assert_eq!(
        upstream.wait_closed(0).await,
        1000,
        "the old connection is closed by us"
    );
    // Every frame reached one connection or the other, none twice.
    let expected = 20 * 160 * 4;
    let mut bytes = 0;
    for _ in 0..200 {
        bytes = 0;
        for conn in 0..2 {
            bytes += upstream
                .messages_with(conn, "realtimeInput")
                .await
                .iter()
                .map(|m| {
                    B64.decode(m["realtimeInput"]["audio"]["data"].as_str().unwrap())
                        .unwrap()
                        .len()
                })
                .sum::<usize>();
        }
        if bytes >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bytes, expected);
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exotel_call_streams_its_8k_pcm_at_16k_and_hears_8k() {
    let upstream = FakeUpstream::start_gemini().await;
    let gw = Gateway::start(Some(&upstream), on_gemini).await;
    let exotel = callgate_handlers::dialect::messages::CarrierMessages::new(
        callgate_handlers::dialect::Dialect::Exotel,
        SID,
    );
    let mut carrier = Carrier::connect(&gw.url("/exotel")).await;
    carrier.send(exotel.start().unwrap()).await;
    wait_with(&upstream, 0, "setup", 1).await;
    let pcm = tone(AudioFormat::Pcm16 { rate: 8000 }, 440.0, 100);
    carrier.send(exotel.media(1, 1, &pcm).unwrap()).await;
    let sent = wait_with(&upstream, 0, "realtimeInput", 1).await;
    let mut upstream_pcm = Vec::new();
    for m in &sent {
        upstream_pcm.extend(
            B64.decode(m["realtimeInput"]["audio"]["data"].as_str().unwrap())
                .unwrap(),
        );
    }
    // 100 ms at 16 kHz (the resampler may hold back a little of the tail).
    assert!(
        (2800..=3200).contains(&upstream_pcm.len()),
        "{} bytes",
        upstream_pcm.len()
    );
    let samples: Vec<i16> = upstream_pcm
        .chunks(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let f = hz(&samples[200..1200], 16000);
    assert!((f - 440.0).abs() < 15.0, "the model hears {f} Hz");
    // The model's 24 kHz voice reaches Exotel as 8 kHz PCM in its 3200-byte chunks.
    upstream.send(0, model_audio(400)).await;
    upstream
        .send(0, json!({"serverContent": {"turnComplete": true}}))
        .await;
    let message = loop {
        let m = carrier.recv().await;
        if m["event"] == "media" {
            break m;
        }
    };
    let chunk = B64
        .decode(message["media"]["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(chunk.len() % 3200, 0, "{} bytes", chunk.len());
    carrier.send(exotel.stop(2).unwrap()).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_call_hangs_up_once_the_goodbye_has_played() {
    let upstream = FakeUpstream::start_gemini().await;
    let (_gw, mut carrier, _) = started(&upstream, |_| {}).await;
    // The model says goodbye and ends the call in the same turn.
    upstream.send(0, model_audio(200)).await;
    upstream
        .send(
            0,
            json!({"toolCall": {"functionCalls": [{"id": "f9", "name": "end_call", "args": {}}]}}),
        )
        .await;
    upstream
        .send(0, json!({"serverContent": {"turnComplete": true}}))
        .await;
    let marks = marks_until_end(&mut carrier).await;
    // Not before the goodbye has played: nothing closes while its marks are outstanding.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in &marks {
        carrier.send(json!({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": name}})).await;
    }
    let echoed = std::time::Instant::now();
    assert_eq!(carrier.closed().await, (1000, "call ended".to_owned()));
    assert!(echoed.elapsed() < Duration::from_secs(2));
    assert_eq!(upstream.wait_closed(0).await, 1000);
    assert!(
        upstream.messages_with(0, "toolResponse").await.is_empty(),
        "end_call is not answered"
    );
}
