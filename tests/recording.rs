//! Stereo recordings as the caller heard them: sample-exact caller channel on a passthrough
//! call, the assistant exactly as played and nothing after a clear, PCI silence over a key
//! sequence, a playable file after SIGKILL, and upload to an S3-compatible server.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use callgate::records::{CallRecord, RecordReader};
use common::*;
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "callgate-recording-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn record_gateway(dir: &Path) -> impl FnOnce(&mut callgate::config::Config) + '_ {
    move |c| {
        c.records.enabled = true;
        c.records.path = dir.join("calls.db").display().to_string();
        c.recording.enabled = true;
        c.recording.dir = dir.join("rec").display().to_string();
    }
}

/// Sends caller frames `from..to` of `frames` and waits until the upstream has heard them
/// (the recorder takes each frame before it goes upstream).
async fn say(
    carrier: &mut Carrier,
    upstream: &FakeUpstream,
    frames: &[String],
    range: std::ops::Range<usize>,
) {
    let end = range.end;
    for n in range {
        carrier.send(media(SID, n as u64, &frames[n])).await;
        pace(n).await;
    }
    upstream.wait_appends(0, end).await;
}

/// Waits for the carrier to receive `event` (skipping others).
async fn until(carrier: &mut Carrier, event: &str) -> Value {
    loop {
        let m = carrier.recv().await;
        if m["event"] == event {
            return m;
        }
    }
}

async fn finished_record(db: &Path) -> CallRecord {
    eventually(|| {
        let record = RecordReader::open(db)
            .ok()?
            .show(&format!("CA{}", &SID[2..]))
            .ok()??;
        record.recording_location.is_some().then_some(record)
    })
    .await
}

fn channels(path: &Path) -> (hound::WavSpec, Vec<i16>, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let left = samples.iter().step_by(2).copied().collect();
    let right = samples.iter().skip(1).step_by(2).copied().collect();
    (spec, left, right)
}

fn mulaw(bytes: &[u8]) -> Vec<i16> {
    let mut out = Vec::new();
    AudioFormat::Mulaw.decode(bytes, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_holds_what_the_caller_heard() {
    let dir = scratch("heard");
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), record_gateway(&dir)).await;
    let frames = fixture_frames("caller-booking-8k-mulaw.wav");
    assert!(frames.len() >= 100);
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    // One second of the caller, then half a second of reply sent at once.
    say(&mut carrier, &upstream, &frames, 0..50).await;
    let reply = [0x55u8; 4000];
    upstream
        .send(
            0,
            json!({"type": "response.created", "response": {"id": "r1"}}),
        )
        .await;
    upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": B64.encode(reply)})).await;
    let mut played = 0;
    while played < reply.len() {
        let m = until(&mut carrier, "media").await;
        played += B64
            .decode(m["media"]["payload"].as_str().unwrap())
            .unwrap()
            .len();
    }
    // 200 ms later the caller speaks over it: the carrier is told to clear the rest.
    say(&mut carrier, &upstream, &frames, 50..60).await;
    upstream.send(0, json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1200, "item_id": "u2"})).await;
    until(&mut carrier, "clear").await;
    say(&mut carrier, &upstream, &frames, 60..100).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);

    let record = finished_record(&dir.join("calls.db")).await;
    let path = PathBuf::from(record.recording_location.unwrap());
    assert_eq!(record.recording_ms, Some(2000));
    let (spec, left, right) = channels(&path);
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    assert_eq!(left.len(), 100 * 160, "as long as the call's audio");
    let sent: Vec<u8> = frames[..100]
        .iter()
        .flat_map(|f| B64.decode(f).unwrap())
        .collect();
    assert!(
        left == mulaw(&sent),
        "the caller channel is the caller's audio, sample for sample"
    );
    let voice = mulaw(&[0x55]);
    assert!(
        right[..8000].iter().all(|&s| s == 0),
        "silent before the reply"
    );
    assert!(
        right[8000..9600].iter().all(|&s| s == voice[0]),
        "played from 1.0 s to the barge-in"
    );
    assert!(
        right[9600..].iter().all(|&s| s == 0),
        "nothing after the clear"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_presses_are_silent_in_the_recording() {
    let dir = scratch("pci");
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), record_gateway(&dir)).await;
    // A steady tone stands in for the caller (and the in-band DTMF tones).
    let tone = tone(AudioFormat::Mulaw, 440.0, 4000);
    let frames: Vec<String> = tone.chunks(160).map(|c| B64.encode(c)).collect();
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    say(&mut carrier, &upstream, &frames, 0..75).await;
    for (digit, frames_after) in [("4", 80), ("2", 85), ("#", 90)] {
        carrier.send(json!({"event": "dtmf", "streamSid": SID, "sequenceNumber": "1", "dtmf": {"track": "inbound_track", "digit": digit}})).await;
        let from = upstream.appends_len(0).await;
        say(&mut carrier, &upstream, &frames, from..frames_after).await;
    }
    say(&mut carrier, &upstream, &frames, 90..200).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    let record = finished_record(&dir.join("calls.db")).await;
    let (_, left, _) = channels(Path::new(&record.recording_location.unwrap()));
    let ms = |t: usize| t * 8;
    // The first key at 1.5 s silences from 300 ms before it (the tone began before the
    // event) to 300 ms after the terminator at 1.7 s.
    assert!(
        rms(&left[ms(500)..ms(1150)]) > 1000.0,
        "the caller before the sequence"
    );
    assert!(
        left[ms(1200)..ms(2000)].iter().all(|&s| s == 0),
        "silent over the digits"
    );
    assert!(
        rms(&left[ms(2050)..ms(3900)]) > 1000.0,
        "the caller after it"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_leaves_a_playable_recording() {
    let dir = scratch("kill");
    let upstream = FakeUpstream::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .env("CALLGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("CALLGATE_UPSTREAM_URL", &upstream.url)
        .env("CALLGATE_RECORDS__PATH", dir.join("calls.db"))
        .env("CALLGATE_RECORDING__ENABLED", "true")
        .env("CALLGATE_RECORDING__DIR", dir.join("rec"))
        // The test plays audio faster than real time.
        .env("CALLGATE_SECURITY__AUDIO_BURST_MS", "60000")
        .env("CALLGATE_UPSTREAM__QUEUE_MS", "10000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let frames = fixture_frames("caller-booking-8k-mulaw.wav");
    let mut carrier = Carrier::connect(&format!("ws://{addr}/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    // 2.5 s of audio: two chunks are on disk, the rest is held when the process dies.
    say(&mut carrier, &upstream, &frames, 0..125).await;
    let wav = std::fs::read_dir(dir.join("rec"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    eventually(|| (std::fs::metadata(&wav).ok()?.len() > 44 + 8000 * 4).then_some(())).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let (spec, left, _) = channels(&wav);
    assert_eq!(spec.channels, 2);
    assert!(
        left.len() >= 8000 && left.len() % 160 == 0,
        "{} samples: whole chunks",
        left.len()
    );
    let sent: Vec<u8> = frames.iter().flat_map(|f| B64.decode(f).unwrap()).collect();
    assert!(
        left == mulaw(&sent)[..left.len()],
        "what was flushed is the caller's audio"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every `PUT` an endpoint received: (bucket/key, body, signed with our key).
type Puts = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// An S3 endpoint on loopback: it stores every `PUT /bucket/key` it is sent.
async fn fake_s3() -> (String, Puts) {
    use axum::extract::{Path as UrlPath, Request};
    let puts: Puts = Arc::default();
    let seen = puts.clone();
    let app = axum::Router::new().route(
        "/{*key}",
        axum::routing::put(move |UrlPath(key): UrlPath<String>, request: Request| {
            let seen = seen.clone();
            async move {
                let signed = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential=test-key/"));
                let body = axum::body::to_bytes(request.into_body(), usize::MAX)
                    .await
                    .unwrap();
                seen.lock().unwrap().push((key, body.to_vec(), signed));
                ([("etag", "\"1\"")], "")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), puts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_are_uploaded_to_an_s3_compatible_store() {
    let dir = scratch("s3");
    let (endpoint, puts) = fake_s3().await;
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        record_gateway(&dir)(c);
        c.recording.url = "s3://calls/recordings/".into();
        c.recording.s3_endpoint = endpoint.clone();
        c.recording.s3_access_key_id = "test-key".into();
        c.recording.s3_secret_access_key = callgate_handlers::bridge::Secret::new("test-secret");
    })
    .await;
    let frames = fixture_frames("caller-booking-8k-mulaw.wav");
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    say(&mut carrier, &upstream, &frames, 0..50).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    let record = finished_record(&dir.join("calls.db")).await;
    let location = record.recording_location.unwrap();
    let (key, body, signed) = puts.lock().unwrap()[0].clone();
    assert!(signed, "a SigV4-signed request");
    assert!(
        key.starts_with("calls/recordings/") && key.ends_with(".wav"),
        "{key}"
    );
    assert_eq!(
        location,
        format!("s3://calls/{}", key.trim_start_matches("calls/"))
    );
    let wav = hound::WavReader::new(std::io::Cursor::new(body)).unwrap();
    assert_eq!((wav.spec().channels, wav.len()), (2, 2 * 50 * 160));
    assert!(
        std::fs::read_dir(dir.join("rec")).unwrap().next().is_none(),
        "the local copy is removed after the upload"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_overrides_its_route_and_a_route_overrides_the_default() {
    let dir = scratch("switches");
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        record_gateway(&dir)(c);
        c.recording.enabled = false;
        let mut route = callgate::config::RouteConfig::new(
            "/twilio",
            callgate_handlers::dialect::Dialect::Twilio,
            false,
        );
        route.recording = Some(true);
        c.routes.push(route);
        c.conversation.profiles.insert(
            "quiet".into(),
            callgate_handlers::bridge::Profile {
                recording: Some(false),
                ..Default::default()
            },
        );
    })
    .await;
    let frames = fixture_frames("caller-booking-8k-mulaw.wav");
    for (sid, params) in [
        (SID, json!({})),
        (
            "MZ22222222222222222222222222222222",
            json!({"profile": "quiet"}),
        ),
    ] {
        let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
        carrier.send(twilio_start(sid, params)).await;
        for n in 0..10 {
            carrier.send(media(sid, n, &frames[n as usize])).await;
        }
        carrier.send(stop(sid)).await;
        assert_eq!(carrier.closed().await.0, 1000);
    }
    let db = dir.join("calls.db");
    let routed = finished_record(&db).await;
    assert!(routed.recording_location.is_some(), "the route records");
    let quiet = eventually(|| {
        let record = RecordReader::open(&db)
            .ok()?
            .show("CA22222222222222222222222222222222")
            .ok()??;
        (record.outcome != "in progress or interrupted").then_some(record)
    })
    .await;
    assert_eq!(quiet.recording_location, None, "the profile does not");
    assert_eq!(std::fs::read_dir(dir.join("rec")).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
