//! Traces over OTLP/HTTP: a real receiver in the test decodes the protobuf export and checks
//! the span tree, names and attributes, and that no token or DTMF digit is in any of it.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::routing::post;
use callgate::config::AuthKind;
use callgate::telemetry::{self, TelemetryOptions};

/// Log lines as the production formatter writes them.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;

fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            AnyValue::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_one_trace_with_the_documented_spans() {
    // The OTLP/HTTP receiver.
    let received: Arc<Mutex<Vec<ExportTraceServiceRequest>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf"));
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let logs = Captured::default();
    let writer = logs.clone();
    let telemetry = telemetry::init_with_writer(
        TelemetryOptions {
            json: true,
            otlp_traces_endpoint: Some(format!("http://{collector}/v1/traces")),
            filter: Some("info".into()),
        },
        move || writer.clone(),
        false,
    );

    let secret = "otlp-test-secret-otlp-test-secret";
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.default_auth = AuthKind::Jwt;
        c.security.jwt.keys = vec![hs256_key("k", secret)];
        let mut query = callgate::config::RouteConfig::new(
            "/twilio-q",
            callgate_handlers::dialect::Dialect::Twilio,
            false,
        );
        query.query_token = true;
        c.routes.push(query);
    })
    .await;
    let exp = unix_now() + 300;
    let token = hs256_token(
        &json!({"iss": "callgate", "aud": "callgate", "exp": exp, "tenant": "acme", "sub": "trace-test"}),
        Some("k"),
        secret,
    );

    let mut carrier = Carrier::try_connect(&gw.url(&format!("/twilio-q?token={token}")), &[])
        .await
        .unwrap();
    carrier
        .send(twilio_start(SID, json!({"tenant_hint": "x"})))
        .await;
    carrier.send(media(SID, 1, "/w==")).await;
    upstream.wait_appends(0, 1).await;
    carrier.send(json!({"event": "dtmf", "streamSid": SID, "sequenceNumber": "3", "dtmf": {"track": "inbound_track", "digit": "7"}})).await;
    upstream.send(0, json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 300, "item_id": "u1"})).await;
    upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "a1", "delta": "/w=="})).await;
    upstream
        .send(
            0,
            json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "a1"}),
        )
        .await;
    // The media (sent at once, with a mark of its own), then the response's end mark.
    let mark = loop {
        let m = carrier.recv().await;
        if m["mark"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("/end"))
        {
            break m;
        }
    };
    upstream.send(0, json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 500, "item_id": "u2"})).await;
    assert_eq!(carrier.recv().await["event"], "clear");
    // The carrier echoes the pending mark on clear.
    carrier.send(json!({"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": mark["mark"]["name"]}})).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    telemetry.shutdown().await;

    let requests = received.lock().unwrap().clone();
    let spans: Vec<Span> = requests
        .iter()
        .flat_map(|r| r.resource_spans.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter().cloned())
        .collect();
    let service = requests[0].resource_spans[0]
        .resource
        .as_ref()
        .map(|r| attr(&r.attributes, "service.name"));
    assert_eq!(service, Some(Some("callgate".into())));
    let by_name = |name: &str| {
        spans
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let call = by_name("call")
        .into_iter()
        .find(|s| attr(&s.attributes, "stream_sid").as_deref() == Some(SID))
        .expect("a call span");
    let a = |key: &str| attr(&call.attributes, key);
    assert_eq!(a("carrier").as_deref(), Some("twilio"));
    assert_eq!(a("close_code").as_deref(), Some("1000"));
    assert_eq!(a("outcome").as_deref(), Some("completed"));
    assert_eq!(a("tenant").as_deref(), Some("acme"));
    // JSON log lines of the call carry its trace and span ids (`--log-format json`).
    let trace_hex: String = call.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    let span_hex: String = call.span_id.iter().map(|b| format!("{b:02x}")).collect();
    let lines = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let closed: serde_json::Value = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "call closed" && l.to_string().contains(&trace_hex))
        .unwrap_or_else(|| {
            panic!("no JSON 'call closed' line with trace id {trace_hex}:\n{lines}")
        });
    let call_span = closed["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "call")
        .unwrap();
    assert_eq!(call_span["trace_id"], trace_hex.as_str());
    assert_eq!(call_span["span_id"], span_hex.as_str());
    assert_eq!(a("url.path").as_deref(), Some("/twilio-q"));
    assert_eq!(a("frames_in").as_deref(), Some("1"));
    assert!(a("call_sid").is_some());
    // Children in the same trace, parented on the call span.
    for child in ["upstream.connect", "session.update", "turn"] {
        let span = by_name(child)
            .into_iter()
            .find(|s| s.trace_id == call.trace_id)
            .unwrap_or_else(|| panic!("no {child} span in the call's trace"));
        assert_eq!(
            span.parent_span_id, call.span_id,
            "{child} is not a child of the call span"
        );
    }
    let turn = by_name("turn")
        .into_iter()
        .find(|s| s.trace_id == call.trace_id)
        .unwrap();
    assert!(attr(&turn.attributes, "latency_ms").is_some());
    assert!(attr(&by_name("session.update")[0].attributes, "ready_ms").is_some());
    // Span events for the call's moments.
    let events: Vec<(String, Vec<KeyValue>)> = spans
        .iter()
        .filter(|s| s.trace_id == call.trace_id)
        .flat_map(|s| {
            s.events
                .iter()
                .map(|e| (e.name.clone(), e.attributes.clone()))
        })
        .collect();
    for wanted in [
        "call started",
        "dtmf received",
        "mark played",
        "barge-in: clearing the carrier's audio",
        "carrier sent stop",
        "call closed",
    ] {
        assert!(
            events.iter().any(|(name, _)| name == wanted),
            "no {wanted:?} event in {:?}",
            events.iter().map(|e| &e.0).collect::<Vec<_>>()
        );
    }
    let (_, dtmf) = events
        .iter()
        .find(|(name, _)| name == "dtmf received")
        .unwrap();
    assert_eq!(attr(dtmf, "digit").as_deref(), Some("[redacted]"));
    // The upgrade's HTTP span records the path only.
    let http: Vec<Span> = by_name("http");
    assert!(http
        .iter()
        .any(|s| attr(&s.attributes, "path").as_deref() == Some("/twilio-q")));
    // No secret anywhere in the export, and no span per media frame.
    let dump = format!("{requests:?}");
    assert!(
        !dump.contains(&token) && !dump.contains(token.rsplit('.').next().unwrap()),
        "the token leaked into the trace"
    );
    assert!(!dump.contains(secret));
    let counts: HashMap<&str, usize> = spans.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.name.as_str()).or_default() += 1;
        m
    });
    assert!(!counts.contains_key("media"), "{counts:?}");
}
