//! Call tapes and `callgate replay`: a taped call replays with no difference, an edited
//! tape (a mark echoed later) shows the changed truncate point, and every tape shipped in
//! `tests/tapes/` replays clean. `record_the_shipped_tapes` (ignored) re-records those.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use callgate::replay::{replay, Tape};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Replays compare timing at real speed: one at a time, so that the tests of this file do
/// not slow each other's calls down.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What happens at a moment of a scripted call.
enum Step {
    /// The model sends this event.
    Model(Value),
    /// The carrier sends this message.
    Carrier(Value),
    /// The model's connection drops with this code.
    Drop(u16),
}

/// A scripted call: caller audio every 20 ms, the steps at their times (ms from `start`),
/// each mark echoed `echo_ms` after the audio before it has played (the carrier plays what
/// it receives back to back); the carrier stops at `stop_ms` unless the gateway has closed
/// first. Returns the tape.
async fn taped_call(
    tweak: impl FnOnce(&mut callgate::config::Config),
    echo_ms: u64,
    steps: Vec<(u64, Step)>,
    stop_ms: u64,
) -> String {
    let dir = std::env::temp_dir().join(format!(
        "callgate-tapes-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let upstream = FakeUpstream::start().await;
    let tapes = dir.clone();
    let gw = Gateway::start(Some(&upstream), move |c| {
        c.tape.enabled = true;
        c.tape.dir = tapes.display().to_string();
        tweak(c);
    })
    .await;
    let carrier = Carrier::connect(&gw.url("/twilio")).await;
    let (mut sink, mut stream) = carrier.ws.split();
    let text = |v: Value| Message::Text(v.to_string().into());
    sink.send(text(twilio_start(SID, json!({})))).await.unwrap();
    upstream.conn(0).await;
    let started = Instant::now();
    let mut steps = steps.into_iter().peekable();
    let mut frame = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0;
    let mut echoes: Vec<(Instant, String)> = Vec::new();
    let mut conn = 0;
    let mut playhead = Instant::now();
    let stop_at = started + Duration::from_millis(stop_ms);
    loop {
        let next_echo = echoes.iter().map(|(at, _)| *at).min();
        tokio::select! {
            _ = frame.tick() => {
                let now = Instant::now();
                while let Some((at, _)) = steps.peek() {
                    if started + Duration::from_millis(*at) > now {
                        break;
                    }
                    match steps.next().unwrap().1 {
                        Step::Model(event) => upstream.send(conn, event).await,
                        Step::Carrier(message) => sink.send(text(message)).await.unwrap(),
                        Step::Drop(code) => {
                            upstream.close(conn, code).await;
                            conn += 1;
                            upstream.conn(conn).await;
                        }
                    }
                }
                if now >= stop_at {
                    sink.send(text(stop(SID))).await.unwrap();
                    break;
                }
                n += 1;
                if sink.send(text(media(SID, n, &B64.encode([0xFFu8; 160])))).await.is_err() {
                    break;
                }
            }
            _ = async { tokio::time::sleep_until(next_echo.unwrap()).await }, if next_echo.is_some() => {
                let now = Instant::now();
                let due: Vec<String> = echoes.iter().filter(|(at, _)| *at <= now).map(|(_, m)| m.clone()).collect();
                echoes.retain(|(at, _)| *at > now);
                for name in due {
                    let mark = json!({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": name}});
                    sink.send(text(mark)).await.unwrap();
                }
            }
            message = stream.next() => match message {
                Some(Ok(Message::Text(t))) => {
                    let m: Value = serde_json::from_str(&t).unwrap();
                    match m["event"].as_str() {
                        Some("media") => {
                            let bytes = B64.decode(m["media"]["payload"].as_str().unwrap()).unwrap().len();
                            playhead = playhead.max(Instant::now()) + Duration::from_millis(bytes as u64 / 8);
                        }
                        Some("mark") => {
                            let name = m["mark"]["name"].as_str().unwrap().to_owned();
                            echoes.push((playhead + Duration::from_millis(echo_ms), name));
                        }
                        Some("clear") => {
                            playhead = Instant::now();
                            // The carrier echoes every pending mark at once after a clear.
                            for echo in &mut echoes {
                                echo.0 = Instant::now();
                            }
                        }
                        _ => {}
                    }
                }
                _ => break,
            },
        }
    }
    // Until the gateway closes.
    while let Some(Ok(message)) = stream.next().await {
        if matches!(message, Message::Close(_)) {
            break;
        }
    }
    drop(sink);
    drop(gw);
    let path: PathBuf =
        eventually(|| std::fs::read_dir(&dir).ok()?.next()?.ok().map(|e| e.path())).await;
    // The writer flushes when its queue runs dry; wait for the carrier's close to land.
    let tape = eventually(|| {
        let text = std::fs::read_to_string(&path).ok()?;
        text.contains("carrier_close").then_some(text)
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    tape
}

fn reply(response: &str, item: &str, ms: usize, byte: u8) -> Vec<Step> {
    let mut steps = vec![Step::Model(
        json!({"type": "response.created", "response": {"id": response}}),
    )];
    for _ in 0..ms / 100 {
        steps.push(Step::Model(json!({"type": "response.output_audio.delta", "response_id": response, "item_id": item, "delta": B64.encode([byte; 800])})));
    }
    steps.push(Step::Model(
        json!({"type": "response.output_audio.done", "response_id": response, "item_id": item}),
    ));
    steps
}

fn at(ms: u64, steps: Vec<Step>) -> Vec<(u64, Step)> {
    steps.into_iter().map(|s| (ms, s)).collect()
}

async fn barge_in_with_late_marks() -> String {
    let mut steps = at(200, reply("r1", "item_1", 1500, 0x55));
    steps.push((900, Step::Model(json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 900, "item_id": "u1"}))));
    taped_call(|_| {}, 220, steps, 1600).await
}

async fn dtmf_during_speech() -> String {
    let mut steps = at(200, reply("r1", "item_1", 1500, 0x55));
    for (ms, digit) in [(700, "1"), (800, "2"), (900, "#")] {
        steps.push((ms, Step::Carrier(json!({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": digit}}))));
    }
    taped_call(|c| c.dtmf.pci = false, 60, steps, 1500).await
}

async fn tool_call() -> String {
    let app = axum::Router::new().route(
        "/lookup",
        axum::routing::post(|| async { axum::Json(json!({"status": "shipped", "eta_days": 2})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/lookup", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut steps = at(
        200,
        vec![
            Step::Model(json!({"type": "response.created", "response": {"id": "r1"}})),
            Step::Model(
                json!({"type": "response.output_item.done", "response_id": "r1", "item": {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"order\":\"A1\"}"}}),
            ),
            Step::Model(
                json!({"type": "response.done", "response": {"id": "r1", "status": "completed"}}),
            ),
        ],
    );
    steps.extend(at(700, reply("r2", "item_2", 300, 0x44)));
    taped_call(
        move |c| {
            c.tools = vec![callgate_handlers::bridge::tools::ToolSpec {
                name: "lookup".into(),
                description: "Looks up an order".into(),
                parameters: json!({"type": "object"}),
                url,
                timeout: Duration::from_secs(2),
            }]
        },
        60,
        steps,
        1300,
    )
    .await
}

async fn end_call() -> String {
    let mut steps = at(200, reply("r1", "item_1", 400, 0x55));
    steps.push((250, Step::Model(json!({"type": "response.output_item.done", "response_id": "r1", "item": {"type": "function_call", "call_id": "call_9", "name": "end_call", "arguments": "{}"}}))));
    steps.push((
        260,
        Step::Model(
            json!({"type": "response.done", "response": {"id": "r1", "status": "completed"}}),
        ),
    ));
    taped_call(|_| {}, 60, steps, 3000).await
}

async fn upstream_reconnect() -> String {
    let mut steps = vec![(
        200,
        Step::Model(
            json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": "I'd like a table for two."}),
        ),
    )];
    steps.extend(at(300, reply("r1", "item_1", 300, 0x55)));
    steps.push((350, Step::Model(json!({"type": "response.output_audio_transcript.done", "response_id": "r1", "item_id": "item_1", "transcript": "For what time?"}))));
    steps.push((700, Step::Drop(1011)));
    taped_call(
        |c| {
            c.upstream.reconnect_base_delay_ms = 50;
        },
        60,
        steps,
        1600,
    )
    .await
}

fn tapes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tapes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "re-records tests/tapes (run by hand after a deliberate behaviour change)"]
async fn record_the_shipped_tapes() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tapes_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, tape) in [
        ("barge-in-late-marks", barge_in_with_late_marks().await),
        ("dtmf-during-speech", dtmf_during_speech().await),
        ("tool-call", tool_call().await),
        ("end-call", end_call().await),
        ("upstream-reconnect", upstream_reconnect().await),
    ] {
        std::fs::write(dir.join(format!("{name}.jsonl")), tape).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taped_call_replays_without_difference() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let text = barge_in_with_late_marks().await;
    let tape = Tape::parse(&text).unwrap();
    assert!(
        text.contains("conversation.item.truncate"),
        "the call had a barge-in"
    );
    let report = replay(&tape, 1.0).await.unwrap();
    assert!(report.first().is_none(), "{:?}", report.first());
    assert!(report.compared > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_echoed_later_moves_the_truncate_point() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let text = std::fs::read_to_string(tapes_dir().join("barge-in-late-marks.jsonl")).unwrap();
    let mut tape = Tape::parse(&text).unwrap();
    // The last mark echo before the barge-in arrives 100 ms later.
    let barge_in = tape
        .entries
        .iter()
        .find(|e| {
            e.dir == "upstream_in"
                && e.text
                    .as_deref()
                    .is_some_and(|t| t.contains("speech_started"))
        })
        .unwrap()
        .t;
    let echo = tape
        .entries
        .iter()
        .rposition(|e| {
            e.dir == "carrier_in"
                && e.t < barge_in
                && e.text.as_deref().is_some_and(|t| t.contains("\"mark\""))
        })
        .unwrap();
    let mut moved = tape.entries.remove(echo);
    moved.t += 100_000;
    let to = tape
        .entries
        .iter()
        .position(|e| e.t > moved.t)
        .unwrap_or(tape.entries.len());
    tape.entries.insert(to, moved);
    let report = replay(&tape, 1.0).await.unwrap();
    let difference = report.first().expect("a difference");
    assert_eq!(difference.side, "upstream_out[0]", "{difference}");
    assert_eq!(difference.field, "audio_end_ms", "{difference}");
    let (taped, replayed): (i64, i64) = (
        difference.tape.parse().unwrap(),
        difference.replay.parse().unwrap(),
    );
    assert!(
        taped - replayed >= 40,
        "the truncate point moved back: {difference}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_tape_replays_clean() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut names: Vec<PathBuf> = std::fs::read_dir(tapes_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "the five shipped tapes");
    for path in names {
        let tape = Tape::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let report = replay(&tape, 1.0).await.unwrap();
        assert!(
            report.first().is_none(),
            "{}: {}",
            path.display(),
            report.first().unwrap()
        );
    }
}
