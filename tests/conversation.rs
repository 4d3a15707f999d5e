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
    let mut spoke = false;
    // Played audio when the caller spoke; `truth` below is when the clear arrived. What the
    // caller heard lies between the two.
    let mut heard_at_speech = 0u64;
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
            _ = tokio::time::sleep_until((started + barge_after).into()), if !spoke => {
                spoke = true;
                heard_at_speech = first_audio.map_or(0, |t| t.elapsed().as_millis() as u64);
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
    (truncate, truth, after_clear, heard_at_speech)
}

async fn accurate(echo: Echo) {
    let (truncate, at_clear, after_clear, at_speech) =
        play_and_barge_in(echo, Duration::from_millis(800)).await;
    assert_eq!(truncate["item_id"], "item_1", "{echo:?}: {truncate}");
    let heard = truncate["audio_end_ms"].as_u64().unwrap();
    // The caller heard between `at_speech` (when they spoke) and `at_clear` (when the clear
    // reached the carrier); the estimate must fall in that window, give or take one piece.
    assert!(
        heard + 100 >= at_speech && heard <= at_clear + 100,
        "{echo:?}: audio_end_ms {heard}, heard between {at_speech} and {at_clear} ms"
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
    let before = gw.metrics_baseline().await;
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
    assert!(
        gw.metric_delta(&before, "callgate_stale_marks_total", &[])
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_sequences_reach_the_model_and_interrupt_it() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.dtmf.inter_digit_timeout = Duration::from_millis(300)
    })
    .await;
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

/// A webhook server for tools: `/ok` answers JSON, `/slow` never in time, `/fail` 500.
async fn tool_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
) {
    use axum::routing::post;
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let record = seen.clone();
    let app = axum::Router::new()
        .route(
            "/ok",
            post(move |body: axum::Json<Value>| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(body.0);
                    axum::Json(json!({"status": "shipped", "eta_days": 2}))
                }
            }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "too late"
            }),
        )
        .route(
            "/fail",
            post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_succeed_time_out_and_fail_into_function_call_output() {
    let (hooks, seen) = tool_server().await;
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.tools = vec![
            webhook_tool("lookup_order", format!("http://{hooks}/ok"), 2000),
            webhook_tool("slow_tool", format!("http://{hooks}/slow"), 200),
            webhook_tool("broken_tool", format!("http://{hooks}/fail"), 2000),
        ];
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier
        .send(twilio_start(SID, json!({"tenant": "acme"})))
        .await;
    let update = loop {
        if let Some(u) = upstream.events_of(0, "session.update").await.first() {
            break u.clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let names: Vec<&str> = update["session"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["lookup_order", "slow_tool", "broken_tool", "end_call"]
    );
    for (call_id, name) in [
        ("c1", "lookup_order"),
        ("c2", "slow_tool"),
        ("c3", "broken_tool"),
    ] {
        upstream
            .send_function_call(0, call_id, name, "{\"order_id\": \"A-17\"}")
            .await;
    }
    let outputs = loop {
        let items = upstream.events_of(0, "conversation.item.create").await;
        if items.len() >= 3 {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let output = |id: &str| {
        outputs.iter().find(|i| i["item"]["call_id"] == id).unwrap()["item"]["output"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        serde_json::from_str::<Value>(&output("c1")).unwrap(),
        json!({"status": "shipped", "eta_days": 2})
    );
    assert!(output("c2").contains("timed out"), "{}", output("c2"));
    assert!(output("c3").contains("HTTP 500"), "{}", output("c3"));
    assert!(outputs
        .iter()
        .all(|i| i["item"]["type"] == "function_call_output"));
    let posted = seen.lock().unwrap()[0].clone();
    assert_eq!(posted["arguments"]["order_id"], "A-17");
    assert_eq!(posted["call"]["stream_sid"], SID);
    assert_eq!(posted["call"]["custom_parameters"]["tenant"], "acme");
    // One response.create per result (no response was in progress).
    assert_eq!(upstream.events_of(0, "response.create").await.len(), 3);
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

/// The model says goodbye (`bytes` of μ-law) and calls `end_call` in the same response.
async fn say_goodbye_and_end_call(upstream: &FakeUpstream, bytes: usize) {
    upstream
        .send(
            0,
            json!({"type": "response.created", "response": {"id": "r1"}}),
        )
        .await;
    upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "bye", "delta": B64.encode(vec![0x55u8; bytes])})).await;
    upstream
        .send(
            0,
            json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "bye"}),
        )
        .await;
    upstream.send_function_call(0, "c9", "end_call", "{}").await;
    upstream
        .send(
            0,
            json!({"type": "response.done", "response": {"id": "r1", "status": "completed"}}),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_call_hangs_up_after_the_goodbye_played() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    say_goodbye_and_end_call(&upstream, 1600).await;
    let marks = marks_until_end(&mut carrier).await;
    // Not before the goodbye has played: nothing closes while its marks are outstanding.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in &marks {
        carrier.send(json!({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": name}})).await;
    }
    let started = std::time::Instant::now();
    assert_eq!(carrier.closed().await, (1000, "call ended".to_owned()));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(upstream.wait_closed(0).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_call_hangs_up_while_the_caller_keeps_streaming() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    // Real carriers never fall silent: a frame every 20 ms until the line drops.
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    say_goodbye_and_end_call(&upstream, 800).await;
    let started = std::time::Instant::now();
    let mut n = 0;
    let code = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "end_call never hung up"
        );
        n += 1;
        carrier
            .send(media(SID, n, "/////////////////////w=="))
            .await;
        match tokio::time::timeout(Duration::from_millis(20), carrier.ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                // Echo each mark as the carrier plays it, as Twilio does.
                let m: serde_json::Value = serde_json::from_str(&text).unwrap();
                if m["event"] == "mark" {
                    carrier.send(json!({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": m["mark"]})).await;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    };
    assert_eq!(code, Some(1000));
    assert!(n > 5, "the caller streamed throughout ({n} frames)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_allowlists_and_the_greeting() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.conversation.voices = vec!["cedar".into()];
        c.conversation.languages = vec!["hi".into()];
        c.conversation.profiles.insert(
            "sales".into(),
            callgate_handlers::bridge::Profile {
                instructions: "You sell widgets.".into(),
                voice: "ash".into(),
                language: String::new(),
                greeting: "Hello from Acme sales!".into(),
                ..Default::default()
            },
        );
    })
    .await;
    let update_of = |i: usize| {
        let upstream = upstream.clone();
        async move {
            loop {
                if let Some(u) = upstream.events_of(i, "session.update").await.first() {
                    return u.clone();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // A profile, then an allowed voice and language on top.
    let mut a = Carrier::connect(&gw.url("/twilio")).await;
    a.send(twilio_start(
        SID,
        json!({"profile": "sales", "voice": "cedar", "language": "hi"}),
    ))
    .await;
    let update = update_of(0).await;
    assert!(update["session"]["instructions"]
        .as_str()
        .unwrap()
        .starts_with("You sell widgets."));
    assert!(update["session"]["instructions"]
        .as_str()
        .unwrap()
        .contains("hi"));
    assert_eq!(update["session"]["audio"]["output"]["voice"], "cedar");
    assert_eq!(
        update["session"]["audio"]["input"]["transcription"]["language"],
        "hi"
    );
    // The greeting: the assistant speaks first.
    let greet = loop {
        if let Some(r) = upstream.events_of(0, "response.create").await.first() {
            break r.clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(greet["response"]["instructions"]
        .as_str()
        .unwrap()
        .contains("Hello from Acme sales!"));
    // Values outside the allowlists are ignored.
    let mut b = Carrier::connect(&gw.url("/twilio")).await;
    b.send(twilio_start(
        "MZ22222222222222222222222222222222",
        json!({"voice": "evil", "language": "xx", "profile": "nope"}),
    ))
    .await;
    let update = update_of(1).await;
    assert_eq!(update["session"]["audio"]["output"]["voice"], "marin");
    assert!(update["session"]["audio"]["input"]["transcription"]
        .get("language")
        .is_none());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        upstream.events_of(1, "response.create").await.is_empty(),
        "no greeting configured for this call"
    );
    a.send(stop(SID)).await;
    b.send(stop("MZ22222222222222222222222222222222")).await;
    assert_eq!(a.closed().await.0, 1000);
    assert_eq!(b.closed().await.0, 1000);
}

/// A Twilio call on a fresh gateway whose model has begun response `r1` on connection 0.
async fn twilio_call_with_response_r1() -> (FakeUpstream, Gateway, Carrier) {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    upstream
        .send(
            0,
            json!({"type": "response.created", "response": {"id": "r1"}}),
        )
        .await;
    (upstream, gw, carrier)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_audio_is_never_held_while_the_carrier_has_little_queued() {
    let (upstream, _gw, mut carrier) = twilio_call_with_response_r1().await;
    // One second of audio as fifty 20 ms deltas, as fast as the model streams them.
    for _ in 0..50 {
        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": B64.encode([0x55u8; 160])})).await;
    }
    upstream
        .send(
            0,
            json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "i1"}),
        )
        .await;
    let mut sizes = Vec::new();
    loop {
        let m = carrier.recv().await;
        match m["event"].as_str() {
            Some("media") => sizes.push(
                B64.decode(m["media"]["payload"].as_str().unwrap())
                    .unwrap()
                    .len(),
            ),
            Some("mark") if m["mark"]["name"].as_str().unwrap().ends_with("/end") => break,
            _ => {}
        }
    }
    assert_eq!(sizes.iter().sum::<usize>(), 8000);
    // The first 20 ms went out alone, at once; once 100 ms were queued at the carrier, the
    // rest was gathered into 100 ms pieces (one mark each, not one per delta).
    assert_eq!(sizes[0], 160, "{sizes:?}");
    assert!(
        sizes.iter().filter(|&&n| n == 800).count() >= 8,
        "{sizes:?}"
    );
    assert!(sizes.len() <= 15, "{sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_audio_is_marked_every_piece_even_when_echoes_come_at_once() {
    // A model streaming 20 ms deltas in real time to a carrier that echoes each mark at
    // once: every delta goes out early, and a mark follows only each 100 ms of it (a mark
    // per delta would double the carrier messages for no accuracy).
    let (upstream, _gw, mut carrier) = twilio_call_with_response_r1().await;
    let mut marks = Vec::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..10 {
        tick.tick().await;
        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": B64.encode([0x55u8; 160])})).await;
        loop {
            let m = carrier.recv().await;
            if m["event"] == "mark" {
                let name = m["mark"]["name"].as_str().unwrap().to_owned();
                carrier
                    .send(json!({"event": "mark", "streamSid": SID, "mark": {"name": name}}))
                    .await;
                marks.push(name);
            }
            if m["event"] == "media" {
                break;
            }
        }
    }
    // The mark of the last delta may still be on its way.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    while let Ok(m) =
        tokio::time::timeout(std::time::Duration::from_millis(50), carrier.recv()).await
    {
        if m["event"] == "mark" {
            marks.push(m["mark"]["name"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        marks,
        ["g0/i1/100", "g0/i1/200"],
        "one mark per 100 ms of audio"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_sent_early_keeps_the_carriers_framing() {
    // Telnyx takes whole 20 ms frames: 250-byte deltas go out early only in 160-byte
    // multiples (the fourth crosses 100 ms and brings a mark, at which the writer would pad a
    // partial frame in mid-sentence), and only the very end of the response is padded with silence.
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let says = CarrierMessages::new(Dialect::Telnyx, SID);
    let mut carrier = Carrier::connect(&gw.url("/telnyx")).await;
    carrier.send(says.start().unwrap()).await;
    upstream.conn(0).await;
    upstream
        .send(
            0,
            json!({"type": "response.created", "response": {"id": "r1"}}),
        )
        .await;
    for _ in 0..5 {
        upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": B64.encode([0x42u8; 250])})).await;
    }
    upstream
        .send(
            0,
            json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "i1"}),
        )
        .await;
    let mut payloads = Vec::new();
    loop {
        let m = carrier.recv().await;
        match m["event"].as_str() {
            Some("media") => {
                payloads.push(B64.decode(m["media"]["payload"].as_str().unwrap()).unwrap())
            }
            Some("mark") if m["mark"]["name"].as_str().unwrap().ends_with("/end") => break,
            _ => {}
        }
    }
    let sizes: Vec<usize> = payloads.iter().map(Vec::len).collect();
    assert!(sizes.iter().all(|n| n % 160 == 0), "{sizes:?}");
    assert_eq!(
        sizes.iter().sum::<usize>(),
        1280,
        "1250 bytes, the last frame padded"
    );
    let (last, before) = payloads.split_last().unwrap();
    assert!(
        before.iter().flatten().all(|&b| b == 0x42),
        "no silence mid-sentence"
    );
    assert_eq!(last.iter().filter(|&&b| b == 0xFF).count(), 30);
}
