//! Every carrier end to end over loopback: fixture audio at the carrier's native format
//! through the gateway to the fake upstream and back (PROTOCOLS.md §4–§6).

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use callgate_handlers::dialect::Dialect;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

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
    assert_eq!(
        update["session"]["audio"]["input"]["format"],
        json!({"type": "audio/pcm", "rate": 24000})
    );
    let audio = callgate::wav::read(&fixture("caller-booking-24k-pcm16.wav"))
        .unwrap()
        .1;
    let frames: Vec<&[u8]> = audio.chunks(960).collect();
    carrier
        .send_raw(Message::Binary(frames[0].to_vec().into()))
        .await;
    upstream.wait_appends(0, 1).await;
    for (n, frame) in frames.iter().enumerate().skip(1) {
        carrier
            .send_raw(Message::Binary(frame.to_vec().into()))
            .await;
        pace(n).await;
    }
    // Sample-accurate: the appends are exactly the bytes sent.
    let appends = upstream.wait_appends(0, frames.len()).await;
    let received: Vec<u8> = appends
        .iter()
        .flat_map(|a| B64.decode(a).unwrap())
        .collect();
    assert_eq!(received, audio);
    // Model audio comes back as binary PCM16 frames, byte for byte.
    let reply = tone(AudioFormat::Pcm16 { rate: 24000 }, 440.0, 300);
    for chunk in reply.chunks(4800) {
        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": B64.encode(chunk)})).await;
    }
    let mut back = Vec::new();
    while back.len() < reply.len() {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut carrier.ws))
            .await
            .unwrap()
        {
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
    upstream_update_of(upstream, 0).await
}

async fn upstream_update_of(upstream: &FakeUpstream, conn: usize) -> Value {
    for _ in 0..500 {
        if let Some(u) = upstream.events_of(conn, "session.update").await.first() {
            return u.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("no session.update")
}

struct Case {
    dialect: Dialect,
    path: &'static str,
    format: AudioFormat,
    upstream: AudioFormat,
}

/// A full call for one carrier against the fake upstream: caller tone in, model tone out,
/// framing, marks, barge-in and stop, all checked.
async fn full_call(case: Case) {
    use callgate::client::CallOptions;
    let name = case.dialect.name();
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut options = CallOptions::new(gw.url(case.path), case.dialect, Vec::new());
    options.format = case.format;
    let says = options.messages();
    let mut carrier = Carrier::connect(&options.url).await;
    if let Some(connected) = says.connected() {
        carrier.send(connected).await;
    }
    carrier.send(says.start().unwrap()).await;
    let update = upstream_update(&upstream).await;
    let expected_format = match case.upstream {
        AudioFormat::Mulaw => json!({"type": "audio/pcmu"}),
        AudioFormat::Alaw => json!({"type": "audio/pcma"}),
        AudioFormat::Pcm16 { .. } => json!({"type": "audio/pcm", "rate": 24000}),
    };
    assert_eq!(
        update["session"]["audio"]["input"]["format"], expected_format,
        "{name}"
    );

    // Caller: one second of a 1 kHz tone in the carrier's format, 20 ms frames.
    let audio = tone(case.format, 1000.0, 1000);
    let frame = case.format.bytes_per_ms() * 20;
    let frames: Vec<&[u8]> = audio.chunks(frame).collect();
    for (n, chunk) in frames.iter().enumerate() {
        carrier
            .send(says.media(n as u64 + 2, n as u64 + 1, chunk).unwrap())
            .await;
        if n == 0 {
            upstream.wait_appends(0, 1).await;
        }
        pace(n).await;
    }
    let appends = upstream
        .wait_appends(
            0,
            if case.format == case.upstream {
                frames.len()
            } else {
                40
            },
        )
        .await;
    if case.format == case.upstream {
        let sent: Vec<u8> = appends
            .iter()
            .flat_map(|a| B64.decode(a).unwrap())
            .collect();
        assert_eq!(sent, audio, "{name}: passthrough must be sample-accurate");
    } else {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let appends = upstream.wait_appends(0, 1).await;
        let samples = decode_appends(&appends, case.upstream);
        let rate = case.upstream.sample_rate();
        let steady = &samples[samples.len() / 10..samples.len() * 9 / 10];
        let f = hz(steady, rate);
        assert!((f - 1000.0).abs() < 15.0, "{name}: upstream tone at {f} Hz");
        let mut original = Vec::new();
        case.format.decode(&audio, &mut original);
        let level = 20.0 * (rms(steady) / rms(&original)).log10();
        assert!(level.abs() < 1.0, "{name}: level changed by {level} dB");
    }

    // Model: 600 ms of a 500 Hz tone in the upstream format, in uneven deltas.
    let reply = tone(case.upstream, 500.0, 600);
    for chunk in reply.chunks(1234) {
        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "item_1", "delta": B64.encode(chunk)})).await;
    }
    upstream
        .send(
            0,
            json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "item_1"}),
        )
        .await;
    let mut payloads = Vec::new();
    let mut messages = Vec::new();
    let mut first_mark: Option<String> = None;
    let mark = loop {
        let m = carrier.recv().await;
        messages.push(m.clone());
        match m["event"].as_str().unwrap() {
            "media" | "playAudio" => {
                payloads.push(B64.decode(m["media"]["payload"].as_str().unwrap()).unwrap())
            }
            "mark" | "checkpoint" => {
                let name = m["mark"]["name"]
                    .as_str()
                    .or(m["name"].as_str())
                    .unwrap()
                    .to_owned();
                first_mark.get_or_insert(name.clone());
                if name.ends_with("/end") {
                    break first_mark.clone();
                }
            }
            "start" => {}
            other => panic!("{name}: unexpected {other}"),
        }
        if !case.dialect.has_marks()
            && payloads.iter().map(Vec::len).sum::<usize>() >= case.format.bytes_per_ms() * 590
        {
            break None;
        }
    };
    let mut back = Vec::new();
    for p in &payloads {
        case.format.decode(p, &mut back);
    }
    let f = hz(
        &back[back.len() / 10..back.len() * 8 / 10],
        case.format.sample_rate(),
    );
    assert!((f - 500.0).abs() < 10.0, "{name}: caller hears {f} Hz");
    match case.dialect {
        Dialect::Exotel => {
            let frame = case.format.bytes_per_ms() * 20;
            for p in &payloads {
                assert!(
                    p.len() % frame == 0 && p.len() >= frame * 10,
                    "{name}: chunk of {} bytes",
                    p.len()
                );
            }
            assert!(
                messages.iter().all(|m| m.get("stream_sid").is_some()),
                "{name}: stream_sid on every message"
            );
        }
        Dialect::Telnyx => assert!(
            payloads.iter().all(|p| p.len() % 160 == 0),
            "{name}: 20 ms multiples"
        ),
        Dialect::Voximplant => {
            assert_eq!(
                messages[0]["event"], "start",
                "{name}: our own start comes first"
            );
            assert_eq!(messages[0]["start"]["mediaFormat"]["encoding"], "ULAW");
        }
        _ => {}
    }
    if let Some(mark) = &mark {
        assert!(mark.contains("item_1"), "{name}: {mark}");
        carrier.send(says.mark(900, mark)).await;
    }

    // Barge-in: the dialect's own clear.
    upstream.send(0, json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": "item_2"})).await;
    let clear = carrier.recv().await;
    let clear = if clear["event"] == "stop" {
        carrier.recv().await
    } else {
        clear
    };
    let expected = match case.dialect {
        Dialect::Plivo => "clearAudio",
        Dialect::Voximplant => "gw.clear",
        _ => "clear",
    };
    assert_eq!(clear["event"], expected, "{name}");

    carrier.send(says.stop(999).unwrap()).await;
    assert_eq!(carrier.closed().await.0, 1000, "{name}");
    assert_eq!(upstream.wait_closed(0).await, 1000, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_8k_transcodes_to_mulaw_and_frames_in_3200_byte_chunks() {
    full_call(Case {
        dialect: Dialect::Exotel,
        path: "/exotel",
        format: AudioFormat::Pcm16 { rate: 8000 },
        upstream: AudioFormat::Mulaw,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_16k_goes_to_24k_pcm() {
    full_call(Case {
        dialect: Dialect::Exotel,
        path: "/exotel",
        format: AudioFormat::Pcm16 { rate: 16000 },
        upstream: AudioFormat::Pcm16 { rate: 24000 },
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_24k_is_a_passthrough() {
    full_call(Case {
        dialect: Dialect::Exotel,
        path: "/exotel",
        format: AudioFormat::Pcm16 { rate: 24000 },
        upstream: AudioFormat::Pcm16 { rate: 24000 },
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voximplant_ulaw_passthrough_with_its_own_start_and_clear() {
    full_call(Case {
        dialect: Dialect::Voximplant,
        path: "/voximplant/call-5",
        format: AudioFormat::Mulaw,
        upstream: AudioFormat::Mulaw,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plivo_play_audio_checkpoints_and_clear_audio() {
    full_call(Case {
        dialect: Dialect::Plivo,
        path: "/plivo",
        format: AudioFormat::Mulaw,
        upstream: AudioFormat::Mulaw,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_pcmu_passthrough() {
    full_call(Case {
        dialect: Dialect::Telnyx,
        path: "/telnyx",
        format: AudioFormat::Mulaw,
        upstream: AudioFormat::Mulaw,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_frames_are_reordered() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/telnyx")).await;
    carrier.send(json!({"event": "start", "sequence_number": "1", "stream_id": "t1", "start": {"call_control_id": "v2:1",
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}})).await;
    let payload = |n: u8| B64.encode([n; 160]);
    let media = |n: u8| {
        json!({"event": "media", "sequence_number": (n as u64 + 1).to_string(), "stream_id": "t1",
        "media": {"chunk": n.to_string(), "timestamp": (n as u64 * 20).to_string(), "payload": payload(n)}})
    };
    carrier.send(media(1)).await;
    upstream.wait_appends(0, 1).await;
    for n in [3, 2, 5, 4, 6] {
        carrier.send(media(n)).await;
    }
    let appends = upstream.wait_appends(0, 6).await;
    assert_eq!(appends, (1..=6).map(payload).collect::<Vec<_>>());

    // Frame 7 never comes: past the 5-frame window the gap is given up on; when 7 turns up
    // after all, it is too late. Both count as dropped, under their own reason.
    let lost = |metrics: &str| {
        metric_sum(
            metrics,
            "callgate_audio_dropped_total",
            &[("direction", "inbound"), ("reason", "reorder")],
        )
    };
    let before = lost(&gw.metrics().await);
    for n in [8, 9, 10, 11, 12, 13, 7] {
        carrier.send(media(n)).await;
    }
    let appends = upstream.wait_appends(0, 12).await;
    let expected: Vec<String> = (1..=6).chain(8..=13).map(payload).collect();
    assert_eq!(appends, expected, "the gap skipped, the late frame dropped");
    // Per-call counts reach the metrics when the call ends.
    carrier
        .send(json!({"event": "stop", "sequence_number": "20", "stream_id": "t1"}))
        .await;
    assert_eq!(carrier.closed().await.0, 1000);
    assert_eq!(lost(&gw.metrics().await) - before, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voximplant_dtmf_and_hangup_text_events() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/voximplant")).await;
    carrier.send(json!({"event": "start", "sequenceNumber": 0, "start": {"tag": "caller", "customParameters": {"callId": "vox-1"},
        "mediaFormat": {"encoding": "ULAW", "sampleRate": 8000}}})).await;
    carrier
        .send(json!({"event": "gw.dtmf", "digit": "7"}))
        .await;
    carrier.send(json!({"event": "media", "sequenceNumber": 1, "media": {"chunk": 1, "timestamp": 160, "payload": "/w=="}})).await;
    upstream.wait_appends(0, 1).await;
    carrier.send(json!({"event": "gw.hangup"})).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_route_detects_every_carrier_and_rejects_garbage() {
    let gw = Gateway::start(None, |_| {}).await;
    let audio = callgate::wav::read(&fixture("caller-hours-8k-mulaw.wav"))
        .unwrap()
        .1;
    for dialect in [
        Dialect::Twilio,
        Dialect::Smartflo,
        Dialect::Exotel,
        Dialect::Voximplant,
        Dialect::Plivo,
        Dialect::Telnyx,
    ] {
        let mut options =
            callgate::client::CallOptions::new(gw.url("/stream"), dialect, Vec::new());
        options.audio = callgate::wav::convert(AudioFormat::Mulaw, &audio, options.format).unwrap();
        options.pace = 50.0;
        let summary = callgate::client::run(options).await.unwrap();
        assert_eq!(
            summary.close.as_ref().map(|c| c.0),
            Some(1000),
            "{dialect:?}: {:?}",
            summary.close
        );
        assert!(
            summary.frames_received > 0,
            "{dialect:?}: no reply through /stream"
        );
    }
    for (garbage, says) in [
        (Message::Text("not json".into()), "not JSON"),
        (
            Message::Text(r#"{"event":"media","media":{"payload":"AA=="}}"#.into()),
            "media before start",
        ),
        (Message::Binary(vec![0u8; 160].into()), "binary"),
    ] {
        let mut carrier = Carrier::connect(&gw.url("/stream")).await;
        carrier.ws.send(garbage).await.unwrap();
        let (code, reason) = carrier.closed().await;
        assert_eq!(code, 1008);
        assert!(reason.contains(says), "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_carrier_completes_a_call_with_the_loopback() {
    let gw = Gateway::start(None, |_| {}).await;
    let (format, audio) = callgate::wav::read(&fixture("caller-booking-8k-pcm16.wav")).unwrap();
    for dialect in Dialect::ALL {
        let mut options = callgate::client::CallOptions::new("", dialect, Vec::new());
        options.url = match dialect {
            Dialect::RawAudio => gw.url(&format!("/ws/audio/{}", options.call_sid)),
            d => gw.url(&format!("/{}", d.name())),
        };
        options.audio = callgate::wav::convert(format, &audio, options.format).unwrap();
        options.pace = 50.0;
        let summary = callgate::client::run(options.clone()).await.unwrap();
        let expected_close = if dialect == Dialect::RawAudio {
            None
        } else {
            Some(1000)
        };
        assert_eq!(
            summary.close.as_ref().map(|c| c.0),
            expected_close,
            "{dialect:?}"
        );
        let reply_ms = options.format.duration_ms(summary.received_audio.len());
        assert!(reply_ms > 2000, "{dialect:?}: only {reply_ms} ms of reply");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voximplant_audio_is_paced_near_real_time() {
    // Voximplant buffers about 10 s and silently drops the rest: the gateway keeps at most
    // 2 s ahead of playback. (Timing is what this test is about: it runs ~1.5 s.)
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/voximplant")).await;
    carrier.send(json!({"event": "start", "sequenceNumber": 0, "start": {"mediaFormat": {"encoding": "ULAW", "sampleRate": 8000}}})).await;
    upstream_update(&upstream).await;
    let started = std::time::Instant::now();
    for _ in 0..35 {
        // 35 × 100 ms = 3.5 s of model audio, all at once.
        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": B64.encode([0x55u8; 800])})).await;
    }
    let mut received_ms = 0u64;
    let mut early_ms = None;
    while received_ms < 3500 {
        let m = carrier.recv().await;
        if m["event"] == "media" {
            received_ms += B64
                .decode(m["media"]["payload"].as_str().unwrap())
                .unwrap()
                .len() as u64
                / 8;
        }
        if early_ms.is_none() && started.elapsed() > std::time::Duration::from_millis(300) {
            early_ms = Some(received_ms);
        }
    }
    let early = early_ms.unwrap_or(received_ms);
    assert!(
        early <= 2400,
        "{early} ms of audio sent in the first 300 ms"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1200),
        "the rest followed at playback pace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_tracks_only_the_callers_audio_reaches_the_model() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    let mut start = twilio_start(SID, json!({}));
    start["start"]["tracks"] = json!(["inbound", "outbound"]);
    carrier.send(start).await;
    // Interleaved, as Twilio streams `both_tracks`: the caller (0x11) and what the caller
    // hears (0x22).
    let caller = B64.encode([0x11u8; 160]);
    let heard = B64.encode([0x22u8; 160]);
    for n in 0..10u64 {
        for (track, payload) in [("inbound", &caller), ("outbound", &heard)] {
            carrier
                .send(json!({"event": "media", "streamSid": SID, "sequenceNumber": (2 * n + 2).to_string(), "media": {"track": track, "chunk": (n + 1).to_string(), "timestamp": (n * 20).to_string(), "payload": payload}}))
                .await;
        }
    }
    upstream.wait_appends(0, 10).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    assert_eq!(upstream.wait_closed(0).await, 1000);
    let appends = upstream.conns.lock().unwrap()[0].lock().unwrap().appends();
    let bytes: Vec<u8> = appends
        .iter()
        .flat_map(|a| B64.decode(a).unwrap())
        .collect();
    assert_eq!(bytes.len(), 1600, "ten caller frames, nothing else");
    assert!(
        bytes.iter().all(|&b| b == 0x11),
        "outbound-track audio reached the model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_labels_from_its_simulators_still_carry_audio() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let before = gw.metrics_baseline().await;
    for format in [
        json!({"encoding": "audio/x-raw", "sample_rate": "8000Hz"}),
        json!({"encoding": "base64", "bit_rate": "128kbps", "sample_rate": "8000"}),
        json!({"encoding": "audio/L16;rate=8000"}),
        json!({"encoding": "something/new", "sample_rate": "8000Hz"}),
    ] {
        let n = upstream.connections();
        let mut carrier = Carrier::connect(&gw.url("/exotel")).await;
        carrier
            .send(json!({"event": "start", "stream_sid": "s1", "start": {"call_sid": "c1", "media_format": format}}))
            .await;
        let pcm = B64.encode(tone(AudioFormat::Pcm16 { rate: 8000 }, 440.0, 100));
        carrier
            .send(json!({"event": "media", "stream_sid": "s1", "media": {"chunk": 1, "payload": pcm}}))
            .await;
        assert!(!upstream.wait_appends(n, 1).await.is_empty(), "{format}");
        carrier
            .send(json!({"event": "stop", "stream_sid": "s1"}))
            .await;
        assert_eq!(carrier.closed().await.0, 1000, "{format}");
    }
    // Only the label nobody documents fell back, and it was counted (no other test here
    // sends an unknown Exotel label).
    let fallbacks = gw
        .metric_delta(
            &before,
            "callgate_format_fallbacks_total",
            &[("carrier", "exotel")],
        )
        .await;
    assert_eq!(fallbacks, 1.0);
}

/// The audio of every `media` message a Telnyx carrier received.
async fn telnyx_reply(carrier: &mut Carrier, bytes: usize) -> Vec<u8> {
    let mut audio = Vec::new();
    while audio.len() < bytes {
        let m = carrier.recv().await;
        if m["event"] == "media" {
            audio.extend(B64.decode(m["media"]["payload"].as_str().unwrap()).unwrap());
        }
    }
    audio
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_streams_pcma_and_is_answered_in_its_outbound_codec() {
    use callgate_handlers::codec::g711;
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        // The default outbound codec (PCMU) on /telnyx; PCMA on a second route.
        let mut pcma = callgate::config::RouteConfig::new("/telnyx-pcma", Dialect::Telnyx, false);
        pcma.outbound_encoding = Some(callgate::config::OutboundEncoding::Pcma);
        c.routes.push(pcma);
    })
    .await;
    for (path, law) in [("/telnyx", "pcmu"), ("/telnyx-pcma", "pcma")] {
        let n = upstream.connections();
        let mut carrier = Carrier::connect(&gw.url(path)).await;
        carrier.send(json!({"event": "start", "sequence_number": "1", "stream_id": "t1", "start": {"call_control_id": "v2:1",
            "media_format": {"encoding": "PCMA", "sample_rate": 8000, "channels": 1}}})).await;
        let update = upstream_update_of(&upstream, n).await;
        let format = update["session"]["audio"]["output"]["format"]["type"].clone();
        // The model speaks a 1 kHz tone in its own format; the carrier must hear it in `law`.
        let tone_pcm = tone(AudioFormat::Pcm16 { rate: 8000 }, 1000.0, 100);
        let samples: Vec<i16> = tone_pcm
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let model_bytes: Vec<u8> = match format.as_str() {
            Some("audio/pcma") => samples.iter().map(|&s| g711::alaw_encode(s)).collect(),
            Some("audio/pcmu") => samples.iter().map(|&s| g711::mulaw_encode(s)).collect(),
            other => panic!("upstream format {other:?}"),
        };
        upstream.send(n, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "a1", "delta": B64.encode(&model_bytes)})).await;
        upstream
            .send(
                n,
                json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "a1"}),
            )
            .await;
        let heard = telnyx_reply(&mut carrier, 800).await;
        let decoded: Vec<i16> = match law {
            "pcmu" => heard.iter().map(|&b| g711::mulaw_decode(b)).collect(),
            _ => heard.iter().map(|&b| g711::alaw_decode(b)).collect(),
        };
        assert!(
            (hz(&decoded, 8000) - 1000.0).abs() < 20.0,
            "{path}: {} Hz",
            hz(&decoded, 8000)
        );
        assert!(
            rms(&decoded) > 0.5 * rms(&samples),
            "{path}: the tone survived at level"
        );
        carrier
            .send(json!({"event": "stop", "sequence_number": "9", "stream_id": "t1"}))
            .await;
        assert_eq!(carrier.closed().await.0, 1000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codec_we_cannot_decode_is_refused_at_start_naming_the_setting() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/telnyx")).await;
    carrier.send(json!({"event": "start", "sequence_number": "1", "stream_id": "t1", "start": {"call_control_id": "v2:1",
        "media_format": {"encoding": "G722", "sample_rate": 16000, "channels": 1}}})).await;
    let (code, reason) = carrier.closed().await;
    assert_eq!(code, 1003);
    assert!(
        reason.contains("g722") && reason.contains("stream_codec"),
        "{reason}"
    );
    assert_eq!(upstream.connections(), 0, "no model session for it");
}
