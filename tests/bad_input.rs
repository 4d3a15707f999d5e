//! Bad input: each kind is rejected with a counter and a log line, the call survives one,
//! and a run of them closes the socket with 1007.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Sends `bad` once on a started call, then shows the call still works (a valid frame
/// reaches upstream) and ends normally.
async fn rejected_but_survivable(bad: Message, reason: &str) {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let before = metric_sum(
        &gw.metrics().await,
        "callgate_bad_frames_total",
        &[("reason", reason)],
    );
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    carrier.send_raw(bad).await;
    carrier.send(media(SID, 1, "/w==")).await;
    assert_eq!(
        upstream.wait_appends(0, 1).await,
        ["/w=="],
        "{reason}: the call must survive one bad frame"
    );
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000, "{reason}");
    let after = metric_sum(
        &gw.metrics().await,
        "callgate_bad_frames_total",
        &[("reason", reason)],
    );
    assert!(
        after >= before + 1.0,
        "{reason}: counter did not move ({before} → {after})"
    );
}

fn text(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json() {
    rejected_but_survivable(Message::Text("{not json".into()), "invalid_json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_field() {
    rejected_but_survivable(
        text(json!({"event": "media", "streamSid": SID, "media": {"chunk": "1"}})),
        "missing_field",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sid_of_another_call() {
    rejected_but_survivable(
        text(media("MZ99999999999999999999999999999999", 1, "/w==")),
        "stream_sid_mismatch",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_base64() {
    rejected_but_survivable(text(media(SID, 1, "not*base64!")), "bad_base64").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frame() {
    rejected_but_survivable(Message::Binary(vec![0xFF; 160].into()), "binary_frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_start() {
    rejected_but_survivable(text(twilio_start(SID, json!({}))), "duplicate_start").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_events_are_counted_not_fatal() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let before = metric_sum(&gw.metrics().await, "callgate_unknown_events_total", &[]);
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    for _ in 0..20 {
        carrier
            .send(json!({"event": "somethingNew", "streamSid": SID}))
            .await;
    }
    carrier.send(media(SID, 1, "/w==")).await;
    upstream.wait_appends(0, 1).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    assert!(metric_sum(&gw.metrics().await, "callgate_unknown_events_total", &[]) >= before + 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_before_start_never_opens_an_upstream() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let before = gw.metrics_baseline().await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    for n in 0..10 {
        carrier.send(media(SID, n, "/w==")).await;
    }
    let (code, reason) = carrier.closed().await;
    assert_eq!(code, 1007);
    assert_eq!(reason, "too many invalid frames");
    assert_eq!(upstream.connections(), 0);
    assert!(
        gw.metric_delta(
            &before,
            "callgate_bad_frames_total",
            &[("reason", "before_start")]
        )
        .await
            >= 10.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_bad_frames_closes_1007_and_the_limit_is_configurable() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| c.calls.max_consecutive_bad_frames = 3).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    // Two bad frames, then a good one: the run resets.
    carrier.send_raw(Message::Text("x".into())).await;
    carrier.send_raw(Message::Text("y".into())).await;
    carrier.send(media(SID, 1, "/w==")).await;
    upstream.wait_appends(0, 1).await;
    // Three in a row: closed.
    for _ in 0..3 {
        carrier.send_raw(Message::Text("z".into())).await;
    }
    assert_eq!(
        carrier.closed().await,
        (1007, "too many invalid frames".to_owned())
    );
    // The upstream is closed too (billing stops).
    assert_eq!(upstream.wait_closed(0).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_closes_1009() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    let huge = "A".repeat(1024 * 1024);
    let _ = carrier
        .ws
        .send(Message::Text(media(SID, 1, &huge).to_string().into()))
        .await;
    assert_eq!(carrier.closed().await.0, 1009);
}
