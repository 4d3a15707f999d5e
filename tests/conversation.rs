//! Conversation behaviour: mark-accurate barge-in against a carrier that plays audio at real
//! time and echoes marks on time, late, early or never; DTMF sequences. (Timing is what these
//! tests are about, so they run at real time: about a second each.)

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, Debug)]
enum Echo {
    OnTime,
    Late(u64),
    Early,
    Never,
}

/// A Twilio carrier that plays received audio at real time and echoes marks per `echo`.
/// Returns (media bytes received after the clear, truth: ms played when the clear arrived).
async fn play_and_barge_in(echo: Echo, barge_after: Duration) -> (Value, u64, usize, u64) {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let carrier = Carrier::connect(&gw.url("/twilio")).await;
    let (mut sink, mut stream) = carrier.ws.split();
    sink.send(Message::Text(
        twilio_start(SID, json!({})).to_string().into(),
    ))
    .await
    .unwrap();
    upstream.conn(0).await;
    // Two seconds of model audio, sent at once (as the model does).
    upstream
        .send(
            0,
            json!({"type": "response.created", "response": {"id": "r1"}}),
        )
        .await;
    for _ in 0..10 {
        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "item_1", "delta": B64.encode([0x55u8; 1600])})).await;
    }
    upstream
        .send(
            0,
            json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "item_1"}),
        )
        .await;

    let (echo_tx, mut echo_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let started = Instant::now();
    let mut playhead = Instant::now();
    let mut first_audio: Option<Instant> = None;
    let mut barged = false;
    let mut truth = 0u64;
    let mut after_clear = 0usize;
    let deadline = tokio::time::sleep(barge_after + Duration::from_millis(600));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            Some(name) = echo_rx.recv() => {
                let mark = json!({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": name}});
                sink.send(Message::Text(mark.to_string().into())).await.unwrap();
            }
            message = stream.next() => {
                let Some(Ok(Message::Text(text))) = message else { break };
                let m: Value = serde_json::from_str(&text).unwrap();
                match m["event"].as_str().unwrap() {
                    "media" => {
                        let bytes = B64.decode(m["media"]["payload"].as_str().unwrap()).unwrap().len();
                        if barged {
                            after_clear += bytes;
                        }
                        let now = Instant::now();
                        first_audio.get_or_insert(now);
                        playhead = playhead.max(now) + Duration::from_millis(bytes as u64 / 8);
                    }
                    "mark" => {
                        let name = m["mark"]["name"].as_str().unwrap().to_owned();
                        let due = match echo {
                            Echo::OnTime => Some(playhead),
                            Echo::Late(ms) => Some(playhead + Duration::from_millis(ms)),
                            Echo::Early => Some(Instant::now()),
                            Echo::Never => None,
                        };
                        if let Some(due) = due {
                            let tx = echo_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep_until(due.into()).await;
                                let _ = tx.send(name);
                            });
                        }
                    }
                    "clear" => {
                        truth = first_audio.map_or(0, |t| t.elapsed().as_millis() as u64);
                        barged = true;
                        // More deltas of the cancelled response still arrive upstream-side.
                        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "item_1", "delta": B64.encode([0x11u8; 1600])})).await;
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until((started + barge_after).into()), if !barged && started.elapsed() < barge_after + Duration::from_millis(5) => {
                upstream.send(0, json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 2000, "item_id": "u2"})).await;
            }
            _ = &mut deadline => break,
        }
    }
    let truncate = upstream
        .events_of(0, "conversation.item.truncate")
        .await
        .first()
        .cloned()
        .unwrap_or(Value::Null);
    let sent_ms = 2000;
    (truncate, truth, after_clear, sent_ms)
}

async fn accurate(echo: Echo) {
    let (truncate, truth, after_clear, _) =
        play_and_barge_in(echo, Duration::from_millis(800)).await;
    assert_eq!(truncate["item_id"], "item_1", "{echo:?}: {truncate}");
    let heard = truncate["audio_end_ms"].as_u64().unwrap();
    // Within one piece (100 ms) of what the caller actually heard.
    assert!(
        heard.abs_diff(truth) <= 100,
        "{echo:?}: audio_end_ms {heard}, truth {truth}"
    );
    assert_eq!(
        after_clear, 0,
        "{echo:?}: audio of the cancelled response reached the caller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_with_marks_on_time() {
    accurate(Echo::OnTime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_with_late_marks() {
    accurate(Echo::Late(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_with_early_marks() {
    accurate(Echo::Early).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_without_marks() {
    accurate(Echo::Never).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_truncate_once_everything_played() {
    // 2 s of audio, echoed on time, caller speaks at 2.4 s: nothing to clear or truncate.
    let (truncate, _, _, _) = play_and_barge_in(Echo::OnTime, Duration::from_millis(2400)).await;
    assert!(
        truncate.is_null(),
        "truncate sent after full playback: {truncate}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_marks_after_clear_are_not_playback() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    let speak = |response: &str, item: &str| {
        vec![
            json!({"type": "response.output_audio.delta", "response_id": response, "item_id": item, "delta": B64.encode([0x55u8; 1600])}),
            json!({"type": "response.output_audio.done", "response_id": response, "item_id": item}),
        ]
    };
    for e in speak("r1", "item_1") {
        upstream.send(0, e).await;
    }
    let mut old_marks = Vec::new();
    while old_marks
        .last()
        .is_none_or(|m: &String| !m.ends_with("/end"))
    {
        let m = carrier.recv().await;
        if m["event"] == "mark" {
            old_marks.push(m["mark"]["name"].as_str().unwrap().to_owned());
        }
    }
    upstream.send(0, json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 10, "item_id": "u"})).await;
    assert_eq!(carrier.recv().await["event"], "clear");
    // A new response; then the old generation's marks come back (Twilio echoes them on clear).
    for e in speak("r2", "item_2") {
        upstream.send(0, e).await;
    }
    let mut new_marks = Vec::new();
    while new_marks
        .last()
        .is_none_or(|m: &String| !m.ends_with("/end"))
    {
        let m = carrier.recv().await;
        if m["event"] == "mark" {
            new_marks.push(m["mark"]["name"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        new_marks.iter().all(|m| m.starts_with("g1/item_2/")),
        "{new_marks:?}"
    );
    for name in &old_marks {
        carrier.send(json!({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": name}})).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Had the stale end mark counted, item_2 would look fully played and no truncate would go.
    upstream.send(0, json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 20, "item_id": "u2"})).await;
    assert_eq!(carrier.recv().await["event"], "clear");
    let truncates = loop {
        let t = upstream.events_of(0, "conversation.item.truncate").await;
        if t.len() >= 2 {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(truncates[1]["item_id"], "item_2");
    assert!(truncates[1]["audio_end_ms"].as_u64().unwrap() < 200);
    assert!(metric_sum(&gw.metrics().await, "callgate_stale_marks_total", &[]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_sequences_reach_the_model_and_interrupt_it() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| c.dtmf.inter_digit_timeout_ms = 300).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    let dtmf = |d: &str| json!({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": d}});
    // Terminated by '#'.
    for d in ["1", "2", "3", "4", "#"] {
        carrier.send(dtmf(d)).await;
    }
    let items = loop {
        let items = upstream.events_of(0, "conversation.item.create").await;
        if !items.is_empty() {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(items[0]["item"]["role"], "user");
    assert_eq!(
        items[0]["item"]["content"][0]["text"],
        "Caller entered digits: 1234#"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(upstream.events_of(0, "response.create").await.len(), 1);
    // Ended by the inter-digit timeout, while the assistant speaks: it is interrupted first.
    upstream
        .send(
            0,
            json!({"type": "response.created", "response": {"id": "r9"}}),
        )
        .await;
    upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r9", "item_id": "a9", "delta": B64.encode([0x55u8; 16000])})).await;
    while carrier.recv().await["event"] != "mark" {}
    carrier.send(dtmf("9")).await;
    let clear = loop {
        let m = carrier.recv().await;
        if m["event"] == "clear" {
            break m;
        }
    };
    assert_eq!(clear["streamSid"], SID);
    let items = loop {
        let items = upstream.events_of(0, "conversation.item.create").await;
        if items.len() >= 2 {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        items[1]["item"]["content"][0]["text"],
        "Caller entered digits: 9"
    );
    assert!(
        !upstream
            .events_of(0, "conversation.item.truncate")
            .await
            .is_empty(),
        "interrupted at what was heard"
    );
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}
