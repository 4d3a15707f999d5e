//! SECURITY.md's reliability table as chaos tests: a fake upstream that drops, stalls,
//! expires early, delays, refuses; carriers that go quiet. The call survives where the budget
//! allows and ends cleanly where it does not.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use serde_json::json;

fn fast_reconnects(c: &mut callgate::config::Config) {
    c.upstream.reconnect_attempts = 3;
    c.upstream.reconnect_budget_ms = 3_000;
    c.upstream.reconnect_base_delay_ms = 20;
}

fn frame(n: u16) -> String {
    B64.encode(n.to_be_bytes().repeat(80))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_drop_reconnects_replays_the_session_and_reseeds_the_conversation() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), fast_reconnects).await;
    let before = gw.metrics_baseline().await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    carrier.send(media(SID, 1, &frame(1))).await;
    upstream.wait_appends(0, 1).await;
    // Something was said before the drop.
    upstream.send(0, json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "content_index": 0, "transcript": "I'd like to book a table for two."})).await;
    upstream.send(0, json!({"type": "response.output_audio_transcript.done", "response_id": "r1", "item_id": "a1", "transcript": "Sure, for what time?"})).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    upstream.close(0, 1011).await;
    // Audio sent during the gap is held and delivered to the new session.
    for n in 2..=10 {
        carrier.send(media(SID, n as u64, &frame(n))).await;
    }
    let update = {
        let conn = upstream.conn(1).await;
        eventually(|| conn.lock().unwrap().events.first().cloned()).await
    };
    assert_eq!(
        update["type"], "session.update",
        "the configuration is replayed first"
    );
    let conn1 = upstream.conn(1).await;
    eventually(|| {
        (conn1
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| e["type"] == "conversation.item.create")
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    let seeded = upstream.events_of(1, "conversation.item.create").await;
    let texts: Vec<(&str, &str)> = seeded
        .iter()
        .map(|e| {
            (
                e["item"]["role"].as_str().unwrap(),
                e["item"]["content"][0]["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("user", "I'd like to book a table for two."),
            ("assistant", "Sure, for what time?")
        ]
    );
    assert_eq!(seeded[1]["item"]["content"][0]["type"], "output_text");
    // Frames sent as the drop happened may still have reached the old session; none is lost
    // and none repeated, across both.
    let expected: Vec<String> = (1..=10).map(frame).collect();
    eventually(|| (upstream.all_appends().len() >= expected.len()).then_some(())).await;
    assert_eq!(
        upstream.all_appends(),
        expected,
        "no caller audio lost in the gap"
    );
    carrier.send(media(SID, 11, &frame(11))).await;
    let conn1 = upstream.conn(1).await;
    eventually(|| {
        conn1
            .lock()
            .unwrap()
            .events
            .iter()
            .any(|e| e["audio"] == frame(11).as_str())
            .then_some(())
    })
    .await;
    // Replies flow again on the new session.
    upstream.send(1, json!({"type": "response.output_audio.delta", "response_id": "r2", "item_id": "a2", "delta": "/w=="})).await;
    upstream
        .send(
            1,
            json!({"type": "response.output_audio.done", "response_id": "r2", "item_id": "a2"}),
        )
        .await;
    assert_eq!(carrier.recv().await["media"]["payload"], "/w==");
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    assert_eq!(upstream.wait_closed(1).await, 1000);
    assert!(
        gw.metric_delta(
            &before,
            "callgate_upstream_reconnects_total",
            &[("outcome", "attempt")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_budget_plays_the_fallback_and_closes_1011() {
    let upstream = FakeUpstream::start_with(Faults {
        refuse_after: Some(1),
        ..Faults::default()
    })
    .await;
    let gw = Gateway::start(Some(&upstream), |c| {
        fast_reconnects(c);
        c.upstream.reconnect_budget_ms = 500;
        c.upstream.fallback_audio = fixture("caller-hours-8k-mulaw.wav")
            .to_string_lossy()
            .into_owned();
    })
    .await;
    let before = gw.metrics_baseline().await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    upstream.close(0, 1011).await;
    let started = std::time::Instant::now();
    let mut fallback_bytes = 0;
    let close = loop {
        match tokio::time::timeout(WAIT * 3, futures_util::StreamExt::next(&mut carrier.ws))
            .await
            .unwrap()
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let m: serde_json::Value = serde_json::from_str(&t).unwrap();
                if m["event"] == "media" {
                    fallback_bytes += B64
                        .decode(m["media"]["payload"].as_str().unwrap())
                        .unwrap()
                        .len();
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                break u16::from(f.code)
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close, 1011);
    let fixture_len = callgate::wav::read(&fixture("caller-hours-8k-mulaw.wav"))
        .unwrap()
        .1
        .len();
    assert_eq!(fallback_bytes, fixture_len, "the whole fallback was sent");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "the close waited for the fallback to play"
    );
    assert!(
        gw.metric_delta(
            &before,
            "callgate_upstream_reconnects_total",
            &[("outcome", "gave_up")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_is_replaced() {
    let upstream = FakeUpstream::start_with(Faults {
        stall_conn: Some(0),
        ..Faults::default()
    })
    .await;
    let gw = Gateway::start(Some(&upstream), |c| {
        fast_reconnects(c);
        c.upstream.ping_interval_ms = 100;
        c.upstream.stall_timeout_ms = 400;
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    // Connection 0 never answers again; the gateway notices and moves to connection 1.
    upstream.conn(1).await;
    carrier.send(media(SID, 1, &frame(1))).await;
    assert_eq!(upstream.wait_appends(1, 1).await, [frame(1)]);
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_rolls_over_before_it_expires_without_losing_audio() {
    let upstream = FakeUpstream::start_with(Faults {
        expires_in_s: Some(2),
        ..Faults::default()
    })
    .await;
    let gw = Gateway::start(Some(&upstream), |c| c.upstream.rollover_margin_s = 1).await;
    let before = gw.metrics_baseline().await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    upstream.send(0, json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": "My name is Ada."})).await;
    // Caller audio at real-time pace across the rollover (~1 s in).
    let frames: Vec<String> = (1..=110).map(frame).collect();
    for (n, f) in frames.iter().enumerate() {
        carrier.send(media(SID, n as u64 + 1, f)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upstream.wait_closed(0).await,
        1000,
        "the old session is closed normally"
    );
    let conn1 = upstream.conn(1).await;
    eventually(|| {
        let any = conn1
            .lock()
            .unwrap()
            .events
            .iter()
            .any(|e| e["type"] == "conversation.item.create");
        any.then_some(())
    })
    .await;
    let seeded = upstream.events_of(1, "conversation.item.create").await;
    assert_eq!(seeded[0]["item"]["content"][0]["text"], "My name is Ada.");
    eventually(|| (upstream.all_appends().len() >= frames.len()).then_some(())).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    // Each new session also expires 2 s in, so there may be more than one rollover.
    assert!(upstream.connections() >= 2);
    assert_eq!(
        upstream.all_appends(),
        frames,
        "every frame reached exactly one session, in order"
    );
    assert!(
        gw.metric_delta(&before, "callgate_upstream_rollovers_total", &[])
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_drops_the_oldest_audio_and_counts_it() {
    let upstream = FakeUpstream::start_with(Faults {
        delay_ms: 400,
        ..Faults::default()
    })
    .await;
    let gw = Gateway::start(Some(&upstream), |c| c.upstream.queue_ms = 1_000).await;
    let before = metric_sum(
        &gw.metrics().await,
        "callgate_audio_dropped_total",
        &[("reason", "queue_full")],
    );
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    // 2 s of audio while the session is still being configured: the queue keeps the last 1 s.
    let frames: Vec<String> = (1..=100).map(frame).collect();
    for (n, f) in frames.iter().enumerate() {
        carrier.send(media(SID, n as u64 + 1, f)).await;
    }
    let appends = upstream.wait_appends(0, 50).await;
    assert_eq!(
        appends,
        frames[50..],
        "the newest second survives, in order"
    );
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    let after = metric_sum(
        &gw.metrics().await,
        "callgate_audio_dropped_total",
        &[("reason", "queue_full")],
    );
    assert!(
        after >= before + 50.0,
        "dropped audio counted ({before} → {after})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_events_are_ignored() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    let tx = upstream.conn(0).await;
    drop(tx);
    for junk in [
        json!("just a string"),
        json!({"no": "type"}),
        json!({"type": "response.output_audio.delta", "delta": "%%%"}),
        json!({"type": "error"}),
    ] {
        upstream.send(0, junk).await;
    }
    upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": "/w=="})).await;
    upstream
        .send(
            0,
            json!({"type": "response.output_audio.done", "response_id": "r", "item_id": "i"}),
        )
        .await;
    assert_eq!(carrier.recv().await["media"]["payload"], "/w==");
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_carrier_socket_is_closed_and_billing_stops() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.calls.idle_timeout = Duration::from_secs(1)
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    // Then silence: no frame at all.
    assert_eq!(carrier.closed().await, (1001, "carrier idle".to_owned()));
    assert_eq!(upstream.wait_closed(0).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_stops_reading_is_dropped() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.calls.carrier_write_timeout = Duration::from_millis(300)
    })
    .await;
    let before = gw.metrics_baseline().await;
    let carrier = Carrier::connect(&gw.url("/twilio")).await;
    let mut carrier = carrier;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    // The carrier never reads; the model talks a lot (64 KiB per delta).
    let big = B64.encode(vec![0x55u8; 64 * 1024]);
    for _ in 0..400 {
        if !upstream.try_send(0, json!({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": big})).await {
            break;
        }
    }
    // The gateway gives up on the unread socket and closes the upstream.
    let code = tokio::time::timeout(Duration::from_secs(20), upstream.wait_closed(0))
        .await
        .expect("upstream not closed");
    assert_eq!(code, 1000);
    assert!(
        gw.metric_delta(&before, "callgate_carrier_write_timeouts_total", &[])
            .await
            >= 1.0
    );
    drop(carrier);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_bridge_closes_only_its_call() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let before = gw.metrics_baseline().await;
    let mut healthy = Carrier::connect(&gw.url("/twilio")).await;
    healthy
        .send(twilio_start(
            "MZ22222222222222222222222222222222",
            json!({}),
        ))
        .await;
    upstream.conn(0).await;
    let mut doomed = Carrier::connect(&gw.url("/twilio")).await;
    doomed
        .send(twilio_start(
            SID,
            json!({"callgate_fault": "panic_in_bridge"}),
        ))
        .await;
    assert_eq!(
        doomed.closed().await,
        (1011, "upstream unavailable".to_owned())
    );
    healthy
        .send(media("MZ22222222222222222222222222222222", 1, "/w=="))
        .await;
    upstream.wait_appends(0, 1).await;
    healthy
        .send(stop("MZ22222222222222222222222222222222"))
        .await;
    assert_eq!(healthy.closed().await.0, 1000);
    assert!(gw.metric_delta(&before, "callgate_panics_total", &[]).await >= 1.0);
}
