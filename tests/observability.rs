//! Metrics after a call (parsed as Prometheus text), readiness, and the admin call listing.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_for_a_call() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let before = gw.metrics().await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    for n in 1..=20 {
        carrier.send(media(SID, n, "/w==")).await;
    }
    upstream.wait_appends(0, 20).await;
    // A turn: the caller stops, the model answers, the mark comes back, the caller barges in.
    upstream.send(0, json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 400, "item_id": "u1"})).await;
    let delta = base64::engine::general_purpose::STANDARD.encode([0x55u8; 800]);
    upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "a1", "delta": delta})).await;
    upstream
        .send(
            0,
            json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "a1"}),
        )
        .await;
    assert_eq!(carrier.recv().await["event"], "media");
    let mark = carrier.recv().await;
    assert!(carrier.recv().await["mark"]["name"]
        .as_str()
        .unwrap()
        .ends_with("/end"));
    // The first piece played; the end mark has not come back, so the assistant is speaking.
    carrier.send(json!({"event": "mark", "sequenceNumber": "30", "streamSid": SID, "mark": {"name": mark["mark"]["name"]}})).await;
    upstream.send(0, json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 900, "item_id": "u2"})).await;
    assert_eq!(carrier.recv().await["event"], "clear");
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let after = gw.metrics().await;
    let grew = |name: &str, labels: &[(&str, &str)]| {
        let (b, a) = (
            metric_sum(&before, name, labels),
            metric_sum(&after, name, labels),
        );
        assert!(a > b, "{name}{labels:?} did not move: {b} → {a}");
    };
    grew(
        "callgate_calls_total",
        &[("carrier", "twilio"), ("outcome", "completed")],
    );
    grew(
        "callgate_frames_total",
        &[("carrier", "twilio"), ("direction", "inbound")],
    );
    grew(
        "callgate_frames_total",
        &[("carrier", "twilio"), ("direction", "outbound")],
    );
    grew("callgate_barge_ins_total", &[]);
    // Histograms: their _count series.
    grew(
        "callgate_gateway_latency_seconds_count",
        &[("direction", "inbound")],
    );
    grew(
        "callgate_gateway_latency_seconds_count",
        &[("direction", "outbound")],
    );
    grew("callgate_model_first_audio_seconds_count", &[]);
    grew("callgate_mark_round_trip_seconds_count", &[]);
    grew("callgate_barge_in_clear_seconds_count", &[]);
    grew("callgate_upstream_connect_seconds_count", &[]);
    // Bounded labels only: no call or stream ids anywhere.
    let text = gw.metrics().await;
    assert!(
        !text.contains(SID) && !text.contains(&SID[2..]),
        "an id leaked into a label"
    );
    assert!(text.contains("# TYPE callgate_gateway_latency_seconds histogram"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_the_upstream_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/v1/realtime", closed.local_addr().unwrap());
    drop(closed);
    let gw = Gateway::start(None, |c| c.upstream.url = url).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = http_get(gw.addr, "/readyz").await;
        if response.starts_with("HTTP/1.1 503") {
            assert!(
                response.contains("\"upstream_reachable\":false"),
                "{response}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness never failed: {response}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Liveness is unaffected.
    assert!(http_get(gw.addr, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    // With a reachable upstream, ready.
    let upstream = FakeUpstream::start().await;
    let ok = Gateway::start(Some(&upstream), |_| {}).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(http_get(ok.addr, "/readyz")
        .await
        .starts_with("HTTP/1.1 200"));
}

/// GET `path` with `token` as the admin bearer token, when given.
async fn get_with(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> String {
    match token {
        Some(token) => {
            let bearer = format!("Bearer {token}");
            http_get_with(addr, path, &[("Authorization", &bearer)]).await
        }
        None => http_get(addr, path).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_live_calls_behind_its_token() {
    let upstream = FakeUpstream::start().await;
    let disabled = Gateway::start(Some(&upstream), |_| {}).await;
    assert!(get_with(disabled.addr, "/v1/calls", Some("x"))
        .await
        .starts_with("HTTP/1.1 404"));
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.admin_token = callgate_handlers::bridge::Secret::new("admin-secret")
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    carrier.send(media(SID, 1, "/w==")).await;
    eventually(|| (!upstream.all_appends().is_empty()).then_some(())).await;
    assert!(get_with(gw.addr, "/v1/calls", None)
        .await
        .starts_with("HTTP/1.1 401"));
    assert!(get_with(gw.addr, "/v1/calls", Some("wrong"))
        .await
        .starts_with("HTTP/1.1 401"));
    let listing = get_with(gw.addr, "/v1/calls", Some("admin-secret")).await;
    assert!(listing.starts_with("HTTP/1.1 200"), "{listing}");
    let calls: serde_json::Value = serde_json::from_str(http_body(&listing)).unwrap();
    assert_eq!(calls["calls"][0]["stream_sid"], SID);
    assert_eq!(calls["calls"][0]["frames_in"], 1);
    let call_sid = calls["calls"][0]["call_sid"].as_str().unwrap().to_owned();
    let one = get_with(
        gw.addr,
        &format!("/v1/calls/{call_sid}"),
        Some("admin-secret"),
    )
    .await;
    assert!(one.starts_with("HTTP/1.1 200") && one.contains(SID));
    assert!(get_with(gw.addr, "/v1/calls/CAnope", Some("admin-secret"))
        .await
        .starts_with("HTTP/1.1 404"));
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_family_is_exported_from_startup_and_documented() {
    use std::collections::BTreeSet;
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    // Before any call.
    let exported: BTreeSet<String> = gw
        .metrics()
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("callgate_"))
        .map(str::to_owned)
        .collect();
    let catalogue: BTreeSet<String> = callgate::metric_families::FAMILIES
        .iter()
        .map(|f| f.name.to_owned())
        .collect();
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let documented: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `callgate_"))
        .filter_map(|l| l.split('`').next())
        .map(|rest| format!("callgate_{rest}"))
        .collect();
    assert_eq!(
        exported, catalogue,
        "/metrics on a fresh gateway vs src/metric_families.rs"
    );
    assert_eq!(
        documented, catalogue,
        "README's metrics table vs src/metric_families.rs"
    );
    // And the code records nothing outside the catalogue.
    let mut recorded = BTreeSet::new();
    for dir in ["src", "handlers/src", "layers/src"] {
        let mut stack = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("!(").skip(1) {
                    let piece = piece.trim_start();
                    if let Some(name) = piece.strip_prefix("\"callgate_") {
                        let name = name.split('"').next().unwrap();
                        recorded.insert(format!("callgate_{name}"));
                    }
                }
            }
        }
    }
    let unknown: Vec<_> = recorded.difference(&catalogue).collect();
    assert!(
        unknown.is_empty(),
        "recorded but not in the catalogue: {unknown:?}"
    );
}
