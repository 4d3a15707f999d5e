//! Warm upstream sessions (`upstream.prewarm`): connected and configured before a call
//! needs them, taken only by admitted calls, refilled, replaced when they age or die.

mod common;

use common::*;
use serde_json::json;

const SID: &str = "MZ00000000000000000000000000000001";

/// Event types connection `i` has received so far.
async fn kinds(upstream: &FakeUpstream, i: usize) -> Vec<String> {
    let conn = upstream.conn(i).await;
    let events = conn.lock().unwrap().events.clone();
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Waits until `n` connections have been configured (each has its `session.update`).
async fn warm(upstream: &FakeUpstream, n: usize) {
    for i in 0..n {
        eventually(|| (upstream.connections() > i).then_some(())).await;
        let c = upstream.conn(i).await;
        eventually(|| {
            let events = &c.lock().unwrap().events;
            events
                .iter()
                .any(|e| e["type"] == "session.update")
                .then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_takes_a_warm_session_and_the_pool_refills() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.upstream.prewarm = 2;
        c.conversation.greeting = "Welcome to the test line.".into();
    })
    .await;
    warm(&upstream, 2).await;
    assert_eq!(
        upstream.connections(),
        2,
        "the pool opens exactly `prewarm`"
    );
    let before = gw.metrics_baseline().await;

    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    carrier.send(media(SID, 1, &"/".repeat(216))).await;
    // The call is served on one of the warm sessions: its greeting and the caller's audio go
    // there, with no second configuration (the call's settings are the defaults).
    let used = eventually(|| {
        let conns = upstream.conns.lock().unwrap().clone();
        (0..2).find(|&i| !conns[i].lock().unwrap().appends().is_empty())
    })
    .await;
    let other = 1 - used;
    assert_eq!(
        kinds(&upstream, used).await,
        [
            "session.update",
            "response.create",
            "input_audio_buffer.append"
        ]
    );
    // The model's audio reaches the caller.
    upstream
        .send(
            used,
            json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1",
                   "delta": "//////////////////////////8="}),
        )
        .await;
    loop {
        let message = carrier.recv().await;
        if message["event"] == "media" {
            break;
        }
    }
    // The pool replaces what was taken; the other warm session was not touched.
    warm(&upstream, 3).await;
    assert_eq!(kinds(&upstream, other).await, ["session.update"]);
    assert!(
        gw.metric_delta(
            &before,
            "callgate_upstream_pool_takes_total",
            &[("outcome", "warm")]
        )
        .await
            >= 1.0
    );
    carrier.send(stop(SID)).await;
    assert_eq!(upstream.wait_closed(used).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_its_own_settings_reconfigures_the_warm_session() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.upstream.prewarm = 1;
        c.conversation.voices = vec!["cedar".into()];
    })
    .await;
    warm(&upstream, 1).await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier
        .send(twilio_start(SID, json!({"voice": "cedar"})))
        .await;
    carrier.send(media(SID, 1, &"/".repeat(216))).await;
    upstream.wait_appends(0, 1).await;
    let updates = upstream.events_of(0, "session.update").await;
    assert_eq!(updates.len(), 2, "defaults first, then the call's own");
    assert_eq!(updates[0]["session"]["audio"]["output"]["voice"], "marin");
    assert_eq!(updates[1]["session"]["audio"]["output"]["voice"], "cedar");
    // The call's update goes before any of its audio.
    let order = kinds(&upstream, 0).await;
    assert_eq!(order[1], "session.update");
    assert_eq!(order[2], "input_audio_buffer.append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_are_not_admitted_spend_no_warm_session() {
    let upstream = FakeUpstream::start().await;
    let secret = "prewarm-test-secret";
    let gw = Gateway::start(Some(&upstream), |c| {
        c.upstream.prewarm = 1;
        c.security.default_auth = callgate::config::AuthKind::Jwt;
        c.security.jwt.issuer = "callgate".into();
        c.security.jwt.audience = "callgate".into();
        c.security.jwt.keys = vec![hs256_key("k1", secret)];
    })
    .await;
    warm(&upstream, 1).await;
    let before = gw.metrics_baseline().await;

    // No token: refused at the upgrade.
    let refused = Carrier::try_connect(&gw.url("/twilio"), &[]).await;
    assert!(refused.is_err());
    // A token, then a start that is not valid (no streamSid): the socket closes.
    let token = hs256_token(
        &json!({"iss": "callgate", "aud": "callgate", "exp": unix_now() + 60}),
        Some("k1"),
        secret,
    );
    let auth = format!("Bearer {token}");
    let mut carrier = Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &auth)])
        .await
        .expect("admitted");
    for _ in 0..12 {
        carrier
            .send(json!({"event": "start", "start": {"callSid": "CA1"}}))
            .await;
    }
    let (code, _) = carrier.closed().await;
    assert_ne!(code, 1000);

    assert_eq!(upstream.connections(), 1);
    assert_eq!(kinds(&upstream, 0).await, ["session.update"]);
    assert_eq!(
        gw.metric_delta(
            &before,
            "callgate_upstream_pool_takes_total",
            &[("outcome", "warm")]
        )
        .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_old_warm_sessions_are_replaced_and_closed_at_shutdown() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.upstream.prewarm = 1;
        c.upstream.ping_interval_ms = 50;
        c.upstream.prewarm_max_age_s = 1;
    })
    .await;
    warm(&upstream, 1).await;
    // The provider closes an idle session: the next upkeep notices and opens another.
    upstream.close(0, 1001).await;
    warm(&upstream, 2).await;
    // Nothing but its configuration reached the new session while it waited.
    assert_eq!(kinds(&upstream, 1).await, ["session.update"]);
    // One that reaches prewarm_max_age_s is closed with 1000 and replaced.
    assert_eq!(upstream.wait_closed(1).await, 1000);
    warm(&upstream, 3).await;
    // Shutdown closes the warm sessions left.
    gw.shutdown.cancel();
    assert_eq!(upstream.wait_closed(2).await, 1000);
}
