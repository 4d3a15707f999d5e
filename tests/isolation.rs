//! One call's failure never touches another: concurrent calls, panics, upstream failures.

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const SID_B: &str = "MZ22222222222222222222222222222222";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_keep_their_own_audio_and_fates() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| c.calls.max_consecutive_bad_frames = 5).await;
    let mut a = Carrier::connect(&gw.url("/twilio")).await;
    a.send(twilio_start(SID, json!({}))).await;
    let conn_a = upstream.conn(0).await;
    let mut b = Carrier::connect(&gw.url("/smartflo")).await;
    b.send(smartflo_start(SID_B)).await;
    let conn_b = upstream.conn(1).await;
    // Interleave distinct audio.
    for n in 0..50u64 {
        a.send(media(SID, n, "AAAA")).await;
        b.send(json!({"event": "media", "sequenceNumber": "2", "streamSid": SID_B, "media": {"chunk": "1", "timestamp": "0", "payload": "////"}})).await;
    }
    upstream.wait_appends(0, 50).await;
    upstream.wait_appends(1, 50).await;
    let (audio_a, audio_b) = (
        conn_a.lock().unwrap().appends(),
        conn_b.lock().unwrap().appends(),
    );
    assert!(audio_a.iter().all(|x| x == "AAAA") && audio_a.len() == 50);
    assert!(audio_b.iter().all(|x| x == "////") && audio_b.len() == 50);

    // A floods garbage and is closed 1007; B carries on untouched.
    for _ in 0..5 {
        a.send_raw(Message::Text("garbage".into())).await;
    }
    assert_eq!(a.closed().await.0, 1007);
    b.send(json!({"event": "media", "sequenceNumber": "3", "streamSid": SID_B, "media": {"chunk": "2", "timestamp": "20", "payload": "/w=="}})).await;
    assert_eq!(upstream.wait_appends(1, 51).await.last().unwrap(), "/w==");
    upstream.send(1, json!({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": base64_frame()})).await;
    upstream
        .send(
            1,
            json!({"type": "response.output_audio.done", "response_id": "r", "item_id": "i"}),
        )
        .await;
    assert_eq!(b.recv().await["streamSid"], SID_B);
    b.send(stop(SID_B)).await;
    assert_eq!(b.closed().await.0, 1000);
}

fn base64_frame() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([0x55u8; 160])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_closes_only_its_call_with_1011() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let panics_before = metric_sum(&gw.metrics().await, "callgate_panics_total", &[]);
    let mut healthy = Carrier::connect(&gw.url("/twilio")).await;
    healthy.send(twilio_start(SID_B, json!({}))).await;
    upstream.conn(0).await;
    let mut doomed = Carrier::connect(&gw.url("/twilio")).await;
    // Test-only hook (feature `fault-injection`): this call's DTMF handler panics.
    doomed
        .send(twilio_start(
            SID,
            json!({"callgate_fault": "panic_on_dtmf"}),
        ))
        .await;
    doomed.send(json!({"event": "dtmf", "streamSid": SID, "sequenceNumber": "2", "dtmf": {"track": "inbound_track", "digit": "5"}})).await;
    assert_eq!(doomed.closed().await, (1011, "internal error".to_owned()));
    assert_eq!(
        upstream.wait_closed(1).await,
        1000,
        "the panicked call's upstream is closed"
    );
    // The other call never noticed.
    healthy.send(media(SID_B, 1, "/w==")).await;
    upstream.wait_appends(0, 1).await;
    healthy.send(json!({"event": "dtmf", "streamSid": SID_B, "sequenceNumber": "3", "dtmf": {"track": "inbound_track", "digit": "5"}})).await;
    healthy.send(stop(SID_B)).await;
    assert_eq!(healthy.closed().await.0, 1000);
    assert!(metric_sum(&gw.metrics().await, "callgate_panics_total", &[]) >= panics_before + 1.0);
    assert!(http_get(gw.addr, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_close_ends_the_call_with_1011_when_reconnects_are_off() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| c.upstream.reconnect_attempts = 0).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    upstream.close(0, 1011).await;
    assert_eq!(
        carrier.closed().await,
        (1011, "upstream unavailable".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_upstream_error_ends_the_call_and_recoverable_ones_do_not() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| c.upstream.reconnect_attempts = 0).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.send(0, json!({"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value", "message": "meh"}})).await;
    // Garbage from upstream is ignored too.
    upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": "!!!"})).await;
    carrier.send(media(SID, 1, "/w==")).await;
    upstream.wait_appends(0, 1).await;
    upstream.send(0, json!({"type": "error", "error": {"type": "invalid_request_error", "code": "session_expired", "message": "Your session hit the maximum duration"}})).await;
    assert_eq!(carrier.closed().await.0, 1011);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_ends_the_call_with_1011() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/v1/realtime", closed.local_addr().unwrap());
    drop(closed);
    let gw = Gateway::start(None, |c| {
        c.upstream.url = url;
        c.upstream.reconnect_attempts = 0;
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    assert_eq!(
        carrier.closed().await,
        (1011, "upstream unavailable".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_hangup_without_stop_closes_the_upstream() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    drop(carrier);
    assert_eq!(upstream.wait_closed(0).await, 1000);
    // The session is gone from the store, too.
    let deadline = tokio::time::Instant::now() + WAIT;
    while health(gw.addr).await["calls"] != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the session stayed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
