//! Call control through the carriers' APIs, against fake Twilio, Telnyx and Plivo APIs on
//! loopback that check method, path, auth and body: `end_call` hangs up after the goodbye's
//! end mark, `transfer_call` transfers to a listed target (and refuses others), API failures
//! are retried, and an API that keeps failing becomes a tool error while the call stays up.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use callgate::config::Config;
use callgate_handlers::bridge::Secret;
use common::*;
use serde_json::{json, Value};

/// One request the fake API received.
#[derive(Debug, Clone)]
struct ApiRequest {
    method: String,
    path: String,
    authorization: String,
    body: String,
}

/// A fake carrier REST API: records every request; the first `failures` answer 500.
#[derive(Clone)]
struct FakeApi {
    base: String,
    requests: Arc<Mutex<Vec<ApiRequest>>>,
    failures: Arc<Mutex<usize>>,
}

impl FakeApi {
    async fn start(failures: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = Self {
            base,
            requests: Arc::default(),
            failures: Arc::new(Mutex::new(failures)),
        };
        let state = fake.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let state = state.clone();
            async move {
                use http_body_util::BodyExt;
                let (parts, body) = request.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                state.requests.lock().unwrap().push(ApiRequest {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    authorization: parts
                        .headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let mut failures = state.failures.lock().unwrap();
                if *failures > 0 {
                    *failures -= 1;
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "try later");
                }
                (axum::http::StatusCode::OK, "{}")
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn requests(&self) -> Vec<ApiRequest> {
        self.requests.lock().unwrap().clone()
    }
}

/// Gateway config wired to `api` for all three carriers, with two transfer targets.
fn wire(c: &mut Config, api: &FakeApi) {
    c.carriers.api_deadline_ms = 2_000;
    c.carriers.twilio.account_sid = "AC123".into();
    c.carriers.twilio.api_base = api.base.clone();
    c.security.twilio.auth_token = Secret::new("twilio-token");
    c.carriers.telnyx.api_key = Secret::new("telnyx-key");
    c.carriers.telnyx.api_base = api.base.clone();
    c.carriers.plivo.auth_id = "MA123".into();
    c.carriers.plivo.auth_token = Secret::new("plivo-token");
    c.carriers.plivo.api_base = api.base.clone();
    c.carriers.plivo.public_base_url = "https://gw.example.com".into();
    c.conversation.transfer_targets = [("sales".to_owned(), "+15550100".to_owned())].into();
    c.conversation.send_dtmf = true;
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{user}:{password}")))
}

/// The carriers under test: path, start message, the call id the API is addressed by.
fn start_of(carrier: &str) -> (&'static str, Value, &'static str) {
    let (path, dialect, call) = match carrier {
        "twilio" => (
            "/twilio",
            Dialect::Twilio,
            "CA11111111111111111111111111111111",
        ),
        "telnyx" => ("/telnyx", Dialect::Telnyx, "v2:call-1"),
        _ => ("/plivo", Dialect::Plivo, "uuid-1"),
    };
    let says = CarrierMessages {
        call_sid: call.into(),
        ..CarrierMessages::new(dialect, SID)
    };
    (path, says.start().unwrap(), call)
}

/// The model says a sentence and calls `tool` with `arguments` in the same response.
async fn say_and_call(upstream: &FakeUpstream, n: usize, tool: &str, arguments: Value) {
    upstream
        .send(
            n,
            json!({"type": "response.created", "response": {"id": "r1"}}),
        )
        .await;
    upstream.send(n, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "a1", "delta": B64.encode([0x55u8; 800])})).await;
    upstream
        .send(
            n,
            json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "a1"}),
        )
        .await;
    upstream
        .send_function_call(n, "fc1", tool, &arguments.to_string())
        .await;
    upstream
        .send(
            n,
            json!({"type": "response.done", "response": {"id": "r1", "status": "completed"}}),
        )
        .await;
}

/// Echoes the marks as the carrier would once the audio has played.
async fn echo(carrier: &mut Carrier, path: &str, marks: &[String]) {
    for name in marks {
        let echo = match path {
            "/plivo" => json!({"event": "playedStream", "streamId": SID, "name": name}),
            "/telnyx" => json!({"event": "mark", "stream_id": SID, "mark": {"name": name}}),
            _ => {
                json!({"event": "mark", "streamSid": SID, "sequenceNumber": "9", "mark": {"name": name}})
            }
        };
        carrier.send(echo).await;
    }
}

/// The `function_call_output` the model received for `fc1`, once it has.
async fn tool_output(upstream: &FakeUpstream) -> String {
    for _ in 0..500 {
        let items = upstream.events_of(0, "conversation.item.create").await;
        if let Some(item) = items
            .iter()
            .find(|e| e["item"]["type"] == "function_call_output")
        {
            return item["item"]["output"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no function_call_output")
}

/// One call on `carrier`, started, against a fake API whose first `failures` requests fail.
struct Scene {
    api: FakeApi,
    upstream: FakeUpstream,
    gw: Gateway,
    carrier: Carrier,
    path: &'static str,
}

impl Scene {
    async fn start(carrier: &str, failures: usize, tweak: impl FnOnce(&mut Config)) -> Self {
        let api = FakeApi::start(failures).await;
        let upstream = FakeUpstream::start().await;
        let gw = Gateway::start(Some(&upstream), |c| {
            wire(c, &api);
            tweak(c);
        })
        .await;
        let (path, start, _) = start_of(carrier);
        let mut carrier = Carrier::connect(&gw.url(path)).await;
        carrier.send(start).await;
        upstream.conn(0).await;
        Self {
            api,
            upstream,
            gw,
            carrier,
            path,
        }
    }

    /// The model says its sentence and calls `tool`; the carrier plays it (marks echoed).
    async fn play_tool_call(&mut self, tool: &str, arguments: Value) {
        say_and_call(&self.upstream, 0, tool, arguments).await;
        let marks = marks_until_end(&mut self.carrier).await;
        echo(&mut self.carrier, self.path, &marks).await;
    }

    /// As [`Scene::play_tool_call`], checking that the carrier's API heard nothing while the
    /// sentence's marks were still out.
    async fn play_tool_call_checking_the_wait(&mut self, tool: &str, arguments: Value) {
        say_and_call(&self.upstream, 0, tool, arguments).await;
        let marks = marks_until_end(&mut self.carrier).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let early = self.api.requests();
        assert!(
            early.is_empty(),
            "{}: acted before the sentence played: {early:?}",
            self.path
        );
        echo(&mut self.carrier, self.path, &marks).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_call_hangs_up_through_each_carriers_api_after_the_goodbye() {
    for carrier_name in ["twilio", "telnyx", "plivo"] {
        let (_, _, call_id) = start_of(carrier_name);
        let mut scene = Scene::start(carrier_name, 0, |_| {}).await;
        scene
            .play_tool_call_checking_the_wait("end_call", json!({}))
            .await;
        assert_eq!(scene.carrier.closed().await.0, 1000, "{carrier_name}");
        let api = &scene.api;
        let requests = api.requests();
        assert_eq!(requests.len(), 1, "{carrier_name}: {requests:?}");
        let r = &requests[0];
        match carrier_name {
            "twilio" => {
                assert_eq!(
                    (r.method.as_str(), r.path.as_str()),
                    (
                        "POST",
                        format!("/2010-04-01/Accounts/AC123/Calls/{call_id}.json").as_str()
                    )
                );
                assert_eq!(r.authorization, basic("AC123", "twilio-token"));
                assert_eq!(r.body, "Status=completed");
            }
            "telnyx" => {
                assert_eq!(
                    (r.method.as_str(), r.path.as_str()),
                    ("POST", "/v2/calls/v2:call-1/actions/hangup")
                );
                assert_eq!(r.authorization, "Bearer telnyx-key");
            }
            _ => {
                assert_eq!(
                    (r.method.as_str(), r.path.as_str()),
                    ("DELETE", "/v1/Account/MA123/Call/uuid-1/")
                );
                assert_eq!(r.authorization, basic("MA123", "plivo-token"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_call_to_a_listed_target_after_the_handoff_sentence() {
    let mut db = String::new();
    let mut scene = Scene::start("twilio", 0, |c| db = c.records.path.clone()).await;
    scene
        .play_tool_call_checking_the_wait("transfer_call", json!({"target": "sales"}))
        .await;
    assert_eq!(
        scene.carrier.closed().await,
        (1000, "call transferred".to_owned())
    );
    let update = scene.upstream.events_of(0, "session.update").await;
    // The model was offered the tool with the names only, never the numbers.
    let declared = update[0]["session"]["tools"].to_string();
    assert!(declared.contains("transfer_call") && declared.contains("sales"));
    assert!(
        !declared.contains("15550100"),
        "a number was shown to the model"
    );
    let requests = scene.api.requests();
    assert_eq!(requests.len(), 1);
    let twiml: String = form_urlencoded::parse(requests[0].body.as_bytes())
        .find(|(k, _)| k == "Twiml")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(twiml, "<Response><Dial>+15550100</Dial></Response>");
    assert_eq!(
        scene.upstream.wait_closed(0).await,
        1000,
        "the model session closed"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let record = callgate::records::RecordReader::open(std::path::Path::new(&db))
        .unwrap()
        .show("CA11111111111111111111111111111111")
        .unwrap()
        .unwrap();
    assert_eq!(record.outcome, "transferred:sales");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plivo_transfers_the_a_leg_to_a_dial_document_we_serve() {
    let mut scene = Scene::start("plivo", 0, |_| {}).await;
    scene
        .play_tool_call("transfer_call", json!({"target": "sales"}))
        .await;
    assert_eq!(scene.carrier.closed().await.0, 1000);
    let (api, gw) = (&scene.api, &scene.gw);
    let request = &api.requests()[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/Account/MA123/Call/uuid-1/")
    );
    let body: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body["legs"], "aleg");
    let url = body["aleg_url"].as_str().unwrap();
    let document_path = url.strip_prefix("https://gw.example.com").unwrap();
    let token = document_path.rsplit('/').next().unwrap();
    assert!(token.len() >= 32, "an unguessable token: {token}");
    let xml = http_get(gw.addr, document_path).await;
    assert!(xml.starts_with("HTTP/1.1 200"), "{xml}");
    assert!(
        http_body(&xml).contains("<Dial><Number>+15550100</Number></Dial>"),
        "{xml}"
    );
    let guessed = http_get(gw.addr, "/carriers/plivo/transfer/guess").await;
    assert!(guessed.starts_with("HTTP/1.1 404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_target_is_refused_to_the_model() {
    let api = FakeApi::start(0).await;
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| wire(c, &api)).await;
    let (path, start, _) = start_of("twilio");
    let mut carrier = Carrier::connect(&gw.url(path)).await;
    carrier.send(start).await;
    upstream.conn(0).await;
    say_and_call(
        &upstream,
        0,
        "transfer_call",
        json!({"target": "+19005551234"}),
    )
    .await;
    let output = tool_output(&upstream).await;
    assert!(output.contains("unknown transfer target"), "{output}");
    assert!(api.requests().is_empty(), "nothing was dialled");
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_fails_twice_then_succeeds_still_transfers() {
    let mut scene = Scene::start("telnyx", 2, |_| {}).await;
    scene
        .play_tool_call("transfer_call", json!({"target": "sales"}))
        .await;
    let api = &scene.api;
    assert_eq!(
        scene.carrier.closed().await,
        (1000, "call transferred".to_owned())
    );
    let requests = api.requests();
    assert_eq!(
        requests.len(),
        3,
        "two failures and a success: {requests:?}"
    );
    assert!(requests
        .iter()
        .all(|r| r.path == "/v2/calls/v2:call-1/actions/transfer"));
    assert_eq!(
        serde_json::from_str::<Value>(&requests[2].body).unwrap(),
        json!({"to": "+15550100"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_keeps_failing_is_a_tool_error_and_the_call_stays_up() {
    let mut scene = Scene::start("twilio", usize::MAX, |c| c.carriers.api_deadline_ms = 600).await;
    scene
        .play_tool_call("transfer_call", json!({"target": "sales"}))
        .await;
    let output = tool_output(&scene.upstream).await;
    assert!(
        output.contains("error") && output.contains("HTTP 500"),
        "{output}"
    );
    assert!(scene.api.requests().len() >= 2, "retried");
    // The call goes on: the caller's audio still reaches the model, and it ends normally.
    let before = scene.upstream.conn(0).await.lock().unwrap().appends().len();
    scene
        .carrier
        .send(media(SID, 50, "/////////////////////w=="))
        .await;
    scene.upstream.wait_appends(0, before + 1).await;
    scene.carrier.send(stop(SID)).await;
    assert_eq!(scene.carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_dtmf_by_api_by_stream_or_refused() {
    // Telnyx: through its API; Plivo: `sendDTMF` on the stream; Twilio: cannot.
    for carrier_name in ["telnyx", "plivo", "twilio"] {
        let Scene {
            api,
            upstream,
            mut carrier,
            gw: _gw,
            ..
        } = Scene::start(carrier_name, 0, |_| {}).await;
        upstream
            .send_function_call(0, "fc1", "send_dtmf", &json!({"digits": "12#"}).to_string())
            .await;
        let output = tool_output(&upstream).await;
        match carrier_name {
            "telnyx" => {
                assert_eq!(output, r#"{"sent":true}"#);
                let r = &api.requests()[0];
                assert_eq!(r.path, "/v2/calls/v2:call-1/actions/send_dtmf");
                assert_eq!(
                    serde_json::from_str::<Value>(&r.body).unwrap(),
                    json!({"digits": "12#"})
                );
            }
            "plivo" => {
                assert_eq!(output, r#"{"sent":true}"#);
                let m = carrier.recv().await;
                assert_eq!(m, json!({"event": "sendDTMF", "dtmf": "12#"}));
            }
            _ => {
                assert!(output.contains("cannot send DTMF"), "{output}");
                assert!(api.requests().is_empty());
            }
        }
        carrier.send(stop(SID)).await;
        let _ = carrier.closed().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voximplant_and_exotel_transfer_through_their_own_flows() {
    // No API here: Voximplant's scenario dials the number it is sent; Exotel's flow moves to
    // its next applet (a Connect) when the stream closes.
    for path in ["/voximplant", "/exotel"] {
        let api = FakeApi::start(0).await;
        let upstream = FakeUpstream::start().await;
        let gw = Gateway::start(Some(&upstream), |c| wire(c, &api)).await;
        let mut carrier = Carrier::connect(&gw.url(path)).await;
        let start = match path {
            "/voximplant" => {
                json!({"event": "start", "sequenceNumber": 0, "start": {"tag": "caller", "customParameters": {"callId": "vox-1"},
                "mediaFormat": {"encoding": "ULAW", "sampleRate": 8000}}})
            }
            _ => {
                json!({"event": "start", "stream_sid": "s1", "start": {"call_sid": "c1", "media_format": {"encoding": "audio/x-raw", "sample_rate": 8000}}})
            }
        };
        carrier.send(start).await;
        upstream.conn(0).await;
        say_and_call(&upstream, 0, "transfer_call", json!({"target": "sales"})).await;
        if path == "/exotel" {
            // Exotel's marks come back as it plays; echo every one.
            let marks = marks_until_end(&mut carrier).await;
            for name in &marks {
                carrier
                    .send(json!({"event": "mark", "stream_sid": "s1", "mark": {"name": name}}))
                    .await;
            }
        }
        let mut transfer = None;
        let code = loop {
            use futures_util::StreamExt;
            match tokio::time::timeout(WAIT, carrier.ws.next()).await.unwrap() {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                    let m: Value = serde_json::from_str(&text).unwrap();
                    if m["event"] == "gw.transfer" {
                        transfer = Some(m);
                    }
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    break frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                other => panic!("{path}: {other:?}"),
            }
        };
        assert_eq!(code, Some((1000, "call transferred".to_owned())), "{path}");
        match path {
            "/voximplant" => assert_eq!(
                transfer,
                Some(json!({"event": "gw.transfer", "number": "+15550100"}))
            ),
            _ => assert_eq!(transfer, None),
        }
        assert!(api.requests().is_empty(), "{path}: no REST API involved");
    }
}
