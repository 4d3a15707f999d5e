//! Full calls over loopback: carrier ⇄ gateway ⇄ fake Realtime upstream.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use callgate_handlers::dialect::Dialect;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_call_passes_audio_through_both_ways() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.session.voice = "cedar".into();
        c.session.instructions = "Be brief.".into();
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier
        .send(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        .await;
    carrier
        .send(twilio_start(SID, json!({"tenant": "acme"})))
        .await;

    // session.update: GA, μ-law both ways, settings from config.
    let update = eventually_update(&upstream).await;
    let session = &update["session"];
    assert_eq!(session["type"], "realtime");
    assert_eq!(
        session["audio"]["input"]["format"],
        json!({"type": "audio/pcmu"})
    );
    assert_eq!(
        session["audio"]["output"]["format"],
        json!({"type": "audio/pcmu"})
    );
    assert_eq!(session["audio"]["output"]["voice"], "cedar");
    assert_eq!(session["instructions"], "Be brief.");
    assert_eq!(
        session["audio"]["input"]["turn_detection"]["type"],
        "server_vad"
    );
    assert_eq!(
        session["audio"]["input"]["transcription"]["model"],
        "gpt-4o-mini-transcribe"
    );

    // Every caller frame reaches upstream, in order, byte-identical (passthrough).
    // The first frame is held until session.updated, then flushed; the rest follow faster
    // than real time (the hold queue is bounded at 2 s, so a test must not outrun it).
    let frames = fixture_frames("caller-booking-8k-mulaw.wav");
    assert!(frames.len() > 200);
    carrier.send(media(SID, 1, &frames[0])).await;
    upstream.wait_appends(0, 1).await;
    for (n, payload) in frames.iter().enumerate().skip(1) {
        carrier.send(media(SID, n as u64 + 1, payload)).await;
        pace(n).await;
    }
    let appends = upstream.wait_appends(0, frames.len()).await;
    assert_eq!(appends, frames);
    let conn = upstream.conn(0).await;
    let first_append = conn
        .lock()
        .unwrap()
        .events
        .iter()
        .position(|e| e["type"] == "input_audio_buffer.append")
        .unwrap();
    let update_at = conn
        .lock()
        .unwrap()
        .events
        .iter()
        .position(|e| e["type"] == "session.update")
        .unwrap();
    assert!(
        update_at < first_append,
        "audio must wait for the session configuration"
    );

    // Model audio comes back as media with the call's streamSid. Nothing is queued at the
    // carrier yet, so the first 50 ms delta goes out at once (no waiting for a 100 ms piece
    // or for the response to end); marks still come a piece apart.
    let deltas: Vec<String> = (0..3u8).map(|i| B64.encode(vec![i; 400])).collect();
    upstream.send(0, json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})).await;
    let delta = |d: &str| json!({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_9", "output_index": 0, "content_index": 0, "delta": d});
    upstream.send(0, delta(&deltas[0])).await;
    let first = carrier.recv().await;
    assert_eq!(first["event"], "media");
    assert_eq!(first["media"]["payload"], deltas[0].as_str());
    assert_eq!(
        first.as_object().unwrap().len(),
        3,
        "no extra fields for Twilio: {first}"
    );
    for d in &deltas[1..] {
        upstream.send(0, delta(d)).await;
    }
    upstream.send(0, json!({"type": "response.output_audio.done", "response_id": "resp_1", "item_id": "item_9", "output_index": 0, "content_index": 0})).await;
    // The rest goes in pieces of at most 100 ms (800 bytes), each followed by its mark; the
    // bytes are the model's, untouched.
    let mut received = B64
        .decode(first["media"]["payload"].as_str().unwrap())
        .unwrap();
    let mut marks = Vec::new();
    loop {
        let m = carrier.recv().await;
        assert_eq!(m["streamSid"], SID);
        match m["event"].as_str().unwrap() {
            "media" => {
                let piece = B64.decode(m["media"]["payload"].as_str().unwrap()).unwrap();
                assert!(piece.len() <= 800);
                received.extend(piece);
            }
            "mark" => {
                let name = m["mark"]["name"].as_str().unwrap().to_owned();
                marks.push(name.clone());
                if name.ends_with("/end") {
                    break;
                }
            }
            other => panic!("unexpected {other}"),
        }
    }
    let sent: Vec<u8> = deltas.iter().flat_map(|d| B64.decode(d).unwrap()).collect();
    assert_eq!(received, sent);
    assert_eq!(marks, ["g0/item_9/100", "g0/item_9/150/end"]);
    // The first piece's mark comes back; the caller then speaks: `clear` first, then a
    // truncate at what was heard, never past the end.
    carrier.send(json!({"event": "mark", "sequenceNumber": "900", "streamSid": SID, "mark": {"name": marks[0]}})).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    upstream.send(0, json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": "item_10"})).await;
    assert_eq!(
        carrier.recv().await,
        json!({"event": "clear", "streamSid": SID})
    );
    let truncate = loop {
        if let Some(t) = upstream
            .events_of(0, "conversation.item.truncate")
            .await
            .first()
        {
            break t.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(truncate["item_id"], "item_9");
    assert_eq!(truncate["content_index"], 0);
    let heard = truncate["audio_end_ms"].as_u64().unwrap();
    // The echo came back at once (earlier than real playback), so the wall-clock bound
    // applies: never more than the time since the audio went out, nor than what was sent.
    assert!(heard < 150, "audio_end_ms {heard}");
    // Twilio echoes pending marks on clear: an old-generation mark is not playback.
    carrier.send(json!({"event": "mark", "sequenceNumber": "901", "streamSid": SID, "mark": {"name": marks[1]}})).await;

    // stop → upstream closed with 1000, carrier closed with 1000.
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    assert_eq!(upstream.wait_closed(0).await, 1000);
    assert_eq!(upstream.connections(), 1);
}

async fn eventually_update(upstream: &FakeUpstream) -> serde_json::Value {
    for _ in 0..500 {
        if let Some(u) = upstream.events_of(0, "session.update").await.first() {
            return u.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("no session.update")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_20_ms_delta_reaches_the_carrier_before_the_next_is_sent() {
    // No added latency: a model streaming in 20 ms deltas is never held for a fuller piece.
    // The upstream sends the next delta only once the carrier has the previous one.
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    carrier
        .send(media(SID, 1, &B64.encode([0xffu8; 160])))
        .await;
    upstream.wait_appends(0, 1).await;
    upstream
        .send(
            0,
            json!({"type": "response.created", "response": {"id": "r1"}}),
        )
        .await;
    for i in 0..5u8 {
        let delta = B64.encode([i; 160]);
        upstream
            .send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": delta}))
            .await;
        let got = loop {
            let message = carrier.recv().await;
            if message["event"] == "media" {
                break message;
            }
        };
        assert_eq!(got["media"]["payload"], delta.as_str(), "delta {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smartflo_call_frames_outbound_audio_in_160_byte_multiples() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/smartflo")).await;
    carrier.send(json!({"event": "connected"})).await;
    carrier.send(smartflo_start(SID)).await;
    let frames = fixture_frames("caller-hours-8k-mulaw.wav");
    for (n, payload) in frames.iter().enumerate() {
        if n == 1 {
            upstream.wait_appends(0, 1).await;
        }
        carrier.send(json!({"event": "media", "sequenceNumber": (n + 2).to_string(), "streamSid": SID,
            "media": {"chunk": (n + 1).to_string(), "timestamp": (n * 20).to_string(), "payload": payload}})).await;
        pace(n).await;
    }
    assert_eq!(upstream.wait_appends(0, frames.len()).await, frames);

    // 250 + 250 bytes of model audio: out in 160-byte multiples (what does not fill one waits
    // for the next delta), the last 20 bytes padded to 160 before the end mark.
    upstream
        .send(
            0,
            json!({"type": "response.created", "response": {"id": "resp_1"}}),
        )
        .await;
    for _ in 0..2 {
        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_1", "delta": B64.encode([0x42u8; 250])})).await;
    }
    upstream.send(0, json!({"type": "response.output_audio.done", "response_id": "resp_1", "item_id": "item_1"})).await;
    let mut media = Vec::new();
    let mark = loop {
        let m = carrier.recv().await;
        match m["event"].as_str() {
            Some("media") => media.push(m),
            Some("mark") if m["mark"]["name"].as_str().unwrap().ends_with("/end") => break m,
            _ => {}
        }
    };
    let payloads: Vec<Vec<u8>> = media
        .iter()
        .map(|m| B64.decode(m["media"]["payload"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        payloads.iter().all(|p| p.len() % 160 == 0),
        "{:?}",
        payloads.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(payloads.iter().map(Vec::len).sum::<usize>(), 640);
    let last = payloads.last().unwrap();
    assert!(
        last[..last.len() - 140].iter().all(|&b| b == 0x42)
            && last[last.len() - 140..].iter().all(|&b| b == 0xFF),
        "padded with μ-law silence: {:?}",
        payloads
            .iter()
            .map(|p| (p.len(), p.iter().filter(|&&b| b == 0xFF).count()))
            .collect::<Vec<_>>()
    );
    for (i, m) in media.iter().enumerate() {
        assert_eq!(m["media"]["chunk"], json!(i + 1), "numeric chunk counter");
        assert_eq!(m["streamSid"], SID);
        assert!(m.get("sequenceNumber").is_none());
    }
    assert_eq!(mark["event"], "mark");

    carrier.send(json!({"event": "stop", "sequenceNumber": "99", "streamSid": SID,
        "stop": {"accountSid": "AC1", "callSid": "CA1", "reason": "The caller disconnected the call"}})).await;
    assert_eq!(carrier.closed().await.0, 1000);
    assert_eq!(upstream.wait_closed(0).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_stream_serves_the_in_house_test_client_unchanged() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut client = Carrier::connect(&gw.url("/vendor-stream")).await;
    // The greeting comes first, unprompted.
    assert_eq!(
        client.recv().await,
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    );
    // The in-house test client's exact messages (seeds/000 and 001).
    client
        .send(
            json!({"event": "start", "sequenceNumber": "1", "streamSid": "ST_TEST_123",
        "start": {"callSid": "CA_TEST_123", "streamSid": "ST_TEST_123"}}),
        )
        .await;
    client
        .send(
            json!({"event": "media", "sequenceNumber": "2", "streamSid": "ST_TEST_123",
        "media": {"payload": "AAECAwQFBgc=", "chunk": "1", "timestamp": "1234567890"}}),
        )
        .await;
    client.send(json!({"event": "dtmf", "sequenceNumber": "10", "streamSid": "ST_TEST_123", "dtmf": {"digit": "1", "track": "inbound"}})).await;
    assert_eq!(upstream.wait_appends(0, 1).await, ["AAECAwQFBgc="]);
    upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": B64.encode([7u8; 160])})).await;
    upstream
        .send(
            0,
            json!({"type": "response.output_audio.done", "response_id": "r", "item_id": "i"}),
        )
        .await;
    let media = client.recv().await;
    assert_eq!(media["sequenceNumber"], json!(1));
    assert_eq!(media["streamSid"], "ST_TEST_123");
    client
        .send(
            json!({"event": "stop", "sequenceNumber": "3", "streamSid": "ST_TEST_123",
        "stop": {"callSid": "CA_TEST_123", "streamSid": "ST_TEST_123"}}),
        )
        .await;
    assert_eq!(client.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carriers_never_get_the_greeting_and_routes_are_configurable() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.routes.push(callgate::config::RouteConfig::new(
            "/ws/media",
            Dialect::Twilio,
            false,
        ));
    })
    .await;
    for path in ["/twilio", "/smartflo", "/ws/media"] {
        let mut carrier = Carrier::connect(&gw.url(path)).await;
        // Nothing is sent before start: the first thing we hear is the close after stop.
        carrier.send(stop(SID)).await;
        assert_eq!(carrier.closed().await.0, 1000, "{path}");
    }
    assert_eq!(upstream.connections(), 0, "no upstream before start");
    assert!(http_get(gw.addr, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(http_get(gw.addr, "/health")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(http_get(gw.addr, "/nope").await.starts_with("HTTP/1.1 404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcm24k_upstream_transcodes_both_ways() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.upstream.audio = callgate_handlers::bridge::UpstreamAudio::Pcm24k
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    let update = eventually_update(&upstream).await;
    assert_eq!(
        update["session"]["audio"]["input"]["format"],
        json!({"type": "audio/pcm", "rate": 24000})
    );

    // Inbound: 1 s of a 1 kHz μ-law tone → 24 kHz PCM upstream, same pitch and level.
    let tone = tone(AudioFormat::Mulaw, 1000.0, 1000);
    for (n, chunk) in tone.chunks(160).enumerate() {
        carrier
            .send(media(SID, n as u64 + 1, &B64.encode(chunk)))
            .await;
        pace(n).await;
    }
    let appends = upstream.wait_appends(0, 48).await;
    let mut pcm = Vec::new();
    for a in &appends {
        AudioFormat::Pcm16 { rate: 24000 }.decode(&B64.decode(a).unwrap(), &mut pcm);
    }
    assert!(pcm.len() >= 23_000, "got {} samples", pcm.len());
    let steady = &pcm[2400..pcm.len() - 2400];
    let f = hz(steady, 24000);
    assert!((f - 1000.0).abs() < 10.0, "upstream tone at {f} Hz");
    let mut original = Vec::new();
    AudioFormat::Mulaw.decode(&tone, &mut original);
    let level = 20.0 * (rms(steady) / rms(&original)).log10();
    assert!(level.abs() < 0.5, "level changed by {level} dB");

    // Outbound: 24 kHz PCM deltas of a 1 kHz tone → μ-law to the carrier.
    let samples: Vec<i16> = (0..24000)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 24000.0).sin()) as i16)
        .collect();
    let mut bytes = Vec::new();
    AudioFormat::Pcm16 { rate: 24000 }.encode(&samples, &mut bytes);
    for chunk in bytes.chunks(4800) {
        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": B64.encode(chunk)})).await;
    }
    upstream
        .send(
            0,
            json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "i1"}),
        )
        .await;
    let mut received = Vec::new();
    loop {
        let m = carrier.recv().await;
        if m["event"] == "mark" {
            if m["mark"]["name"].as_str().unwrap().ends_with("/end") {
                break;
            }
            continue;
        }
        AudioFormat::Mulaw.decode(
            &B64.decode(m["media"]["payload"].as_str().unwrap()).unwrap(),
            &mut received,
        );
    }
    assert!(
        (7900..=8400).contains(&received.len()),
        "{} samples back",
        received.len()
    );
    let f = hz(&received[800..7200], 8000);
    assert!((f - 1000.0).abs() < 10.0, "carrier tone at {f} Hz");
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_upstream_answers_a_recorded_caller() {
    // The newcomer's path: no model configured, `callgate call` plays a fixture.
    let gw = Gateway::start(None, |_| {}).await;
    let (format, audio) = callgate::wav::read(&fixture("caller-booking-8k-pcm16.wav")).unwrap();
    let audio = callgate::wav::convert(format, &audio, AudioFormat::Mulaw).unwrap();
    let mut options =
        callgate::client::CallOptions::new(gw.url("/twilio"), Dialect::Twilio, audio.clone());
    options.pace = 50.0;
    let summary = callgate::client::run(options).await.unwrap();
    assert_eq!(summary.close.as_ref().map(|c| c.0), Some(1000));
    assert!(summary.frames_received > 0, "no reply audio");
    // The loopback plays back what it heard: most of the caller's speech comes back.
    assert!(
        summary.received_audio.len() > audio.len() / 3,
        "only {} bytes of reply",
        summary.received_audio.len()
    );
    assert!(summary.marks.iter().any(|m| m.ends_with("/end")));
    let out = std::env::temp_dir().join(format!("callgate-reply-{}.wav", std::process::id()));
    callgate::wav::write_as_pcm(&out, AudioFormat::Mulaw, &summary.received_audio).unwrap();
    let (back_format, back) = callgate::wav::read(&out).unwrap();
    assert_eq!(
        back_format,
        callgate_handlers::codec::AudioFormat::Pcm16 { rate: 8000 }
    );
    assert_eq!(back.len(), summary.received_audio.len() * 2);
    let _ = std::fs::remove_file(out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_go_out_in_the_configured_header_and_beta_is_selectable() {
    use callgate::config::AuthStyle;
    use callgate_handlers::bridge::{RealtimeDialect, Secret};
    for (style, dialect, expect_header, expect_value) in [
        (
            AuthStyle::Auto,
            RealtimeDialect::Ga,
            "authorization",
            "Bearer sk-test-key",
        ),
        (
            AuthStyle::ApiKey,
            RealtimeDialect::Beta,
            "api-key",
            "sk-test-key",
        ),
    ] {
        let upstream = FakeUpstream::start().await;
        let gw = Gateway::start(Some(&upstream), |c| {
            c.upstream.openai_api_key = Secret::new("sk-test-key");
            c.upstream.auth = style;
            c.upstream.dialect = dialect;
        })
        .await;
        let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
        carrier.send(twilio_start(SID, json!({}))).await;
        let update = eventually_update(&upstream).await;
        let conn = upstream.conn(0).await;
        let headers = conn.lock().unwrap().headers.clone();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header(expect_header).as_deref(),
            Some(expect_value),
            "{headers:?}"
        );
        match dialect {
            RealtimeDialect::Ga => {
                assert!(header("openai-beta").is_none());
                assert_eq!(update["session"]["type"], "realtime");
            }
            RealtimeDialect::Beta => {
                assert_eq!(header("openai-beta").as_deref(), Some("realtime=v1"));
                assert_eq!(update["session"]["input_audio_format"], "g711_ulaw");
                assert_eq!(update["session"]["output_audio_format"], "g711_ulaw");
                // Beta event names are understood on the way back.
                upstream.send(0, json!({"type": "response.audio.delta", "response_id": "r", "item_id": "i", "delta": "/w=="})).await;
                upstream
                    .send(
                        0,
                        json!({"type": "response.audio.done", "response_id": "r", "item_id": "i"}),
                    )
                    .await;
                assert_eq!(carrier.recv().await["media"]["payload"], "/w==");
            }
        }
        carrier.send(stop(SID)).await;
        assert_eq!(carrier.closed().await.0, 1000);
    }
}
