//! Test harness: a real gateway on 127.0.0.1:0, a fake Realtime upstream that records what
//! it receives, and helpers that play carriers over real WebSockets.
#![allow(dead_code)]
// The handshake callback's error type is tungstenite's (large) HTTP response; we never fail.
#![allow(clippy::result_large_err)]

pub mod test_db;
pub mod test_redis;
// Only the record tests use it; the other test binaries would call the import unused.
#[allow(unused_imports)]
pub use test_db::*;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use callgate::config::{Config, JwtKeyConfig};
use callgate::CancellationToken;
use callgate_handlers::bridge::Secret;
pub use callgate_handlers::codec::AudioFormat;
pub use callgate_handlers::dialect::messages::CarrierMessages;
pub use callgate_handlers::dialect::Dialect;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(5);

/// Fixture audio from tests/fixtures/audio (kept in the repository).
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audio")
        .join(name)
}

/// One upstream connection as the fake saw it.
#[derive(Debug, Default)]
pub struct UpstreamConn {
    /// Client events, in order.
    pub events: Vec<Value>,
    /// The close code the gateway sent, if it closed.
    pub close_code: Option<u16>,
    /// Request headers of the handshake.
    pub headers: Vec<(String, String)>,
}

impl UpstreamConn {
    /// The audio (base64) of every `input_audio_buffer.append`, in order.
    pub fn appends(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["type"] == "input_audio_buffer.append")
            .map(|e| e["audio"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A fake Realtime server: answers `session.update`, records everything, and lets the test
/// push server events to a connection.
#[derive(Clone)]
pub struct FakeUpstream {
    pub url: String,
    pub conns: Arc<Mutex<Vec<Arc<Mutex<UpstreamConn>>>>>,
    senders: Arc<Mutex<Vec<mpsc::UnboundedSender<Message>>>>,
    faults: Faults,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

/// Fault modes for chaos tests.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// `session.created` says the session expires this many seconds from now.
    pub expires_in_s: Option<u64>,
    /// Connections after the first N are refused (TCP accepted, then dropped).
    pub refuse_after: Option<usize>,
    /// Connection number N stops reading (and answering pings) once configured.
    pub stall_conn: Option<usize>,
    /// Every `session.updated` is delayed this long.
    pub delay_ms: u64,
    /// Speak OpenAI GPT-Live instead of the Realtime API: no greeting; `session.start` is
    /// answered `session.started`, `session.close` is answered `session.closed`.
    pub live: bool,
    /// Speak Google Gemini Live: `setup` is answered `setupComplete`, in a binary frame (the
    /// server may send JSON that way).
    pub gemini: bool,
}

impl FakeUpstream {
    pub async fn start() -> Self {
        Self::start_with(Faults::default()).await
    }

    /// A fake Gemini Live server.
    pub async fn start_gemini() -> Self {
        Self::start_with(Faults {
            gemini: true,
            ..Faults::default()
        })
        .await
    }

    /// A fake GPT-Live server (`/v1/live/sessions`).
    pub async fn start_live() -> Self {
        Self::start_with(Faults {
            live: true,
            ..Faults::default()
        })
        .await
    }

    pub async fn start_with(faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "ws://{}/v1/realtime?model=fake",
            listener.local_addr().unwrap()
        );
        let fake = Self {
            url,
            conns: Default::default(),
            senders: Default::default(),
            faults,
            accepted: Default::default(),
        };
        let accept = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let fake = accept.clone();
                tokio::spawn(async move { fake.serve(stream).await });
            }
        });
        fake
    }

    async fn serve(self, stream: TcpStream) {
        let conn = Arc::new(Mutex::new(UpstreamConn::default()));
        let record = conn.clone();
        let callback =
            move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                  resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                record.lock().unwrap().headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                Ok(resp)
            };
        let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
            return;
        };
        // Refusals count WebSocket sessions, not TCP connects (the readiness probe connects
        // without a handshake).
        let n = self
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.faults.refuse_after.is_some_and(|limit| n >= limit) {
            drop(ws);
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let index = {
            let mut conns = self.conns.lock().unwrap();
            conns.push(conn.clone());
            self.senders.lock().unwrap().push(tx);
            conns.len() - 1
        };
        let (mut sink, mut stream) = ws.split();
        let expires_at = self.faults.expires_in_s.map_or(0, |s| unix_now() + s);
        let created = json!({"type": "session.created", "event_id": "e0", "session": {"type": "realtime", "expires_at": expires_at}});
        if !(self.faults.live || self.faults.gemini)
            && sink
                .send(Message::Text(created.to_string().into()))
                .await
                .is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                outgoing = rx.recv() => match outgoing {
                    Some(message) => { if sink.send(message).await.is_err() { return } }
                    None => return,
                },
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let event: Value = serde_json::from_str(&text).unwrap();
                        let update = event["type"] == "session.update";
                        let session = event["session"].clone();
                        let kind = event["type"].as_str().unwrap_or_default().to_owned();
                        let setup = event.get("setup").is_some();
                        conn.lock().unwrap().events.push(event);
                        if self.faults.gemini {
                            if setup {
                                let reply = Message::Binary(br#"{"setupComplete":{}}"#.to_vec().into());
                                let _ = sink.send(reply).await;
                            }
                            continue;
                        }
                        if self.faults.live {
                            let reply = match kind.as_str() {
                                "session.start" => {
                                    let mut session = session;
                                    session["id"] = json!(format!("sess_{index}"));
                                    session["status"] = json!("active");
                                    session["expires_at"] = json!(expires_at);
                                    Some(json!({"type": "session.started", "event_id": "e1", "session": session}))
                                }
                                "session.close" => Some(json!({"type": "session.closed", "event_id": "e9", "reason": "close_requested",
                                    "session": {"id": format!("sess_{index}"), "status": "active"}, "usage": {"seconds": 1}})),
                                _ => None,
                            };
                            if let Some(reply) = reply {
                                let _ = sink.send(Message::Text(reply.to_string().into())).await;
                            }
                            continue;
                        }
                        if update {
                            if self.faults.delay_ms > 0 {
                                tokio::time::sleep(Duration::from_millis(self.faults.delay_ms)).await;
                            }
                            let reply = json!({"type": "session.updated", "event_id": "e1", "session": session});
                            let _ = sink.send(Message::Text(reply.to_string().into())).await;
                            if self.faults.stall_conn == Some(index) {
                                // Stop reading for good: no events, no pongs.
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        conn.lock().unwrap().close_code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                        let _ = sink.close().await;
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                }
            }
        }
    }

    /// Connections made so far.
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Connection `i` (waits for it).
    pub async fn conn(&self, i: usize) -> Arc<Mutex<UpstreamConn>> {
        eventually(|| self.conns.lock().unwrap().get(i).cloned()).await
    }

    /// Sends a server event on connection `i`.
    pub async fn send(&self, i: usize, event: Value) {
        self.conn(i).await;
        let tx = self.senders.lock().unwrap()[i].clone();
        tx.send(Message::Text(event.to_string().into())).unwrap();
    }

    /// Sends a raw WebSocket message on connection `i` (binary frames, bad input).
    pub async fn send_message(&self, i: usize, message: Message) {
        self.conn(i).await;
        let tx = self.senders.lock().unwrap()[i].clone();
        tx.send(message).unwrap();
    }

    /// Sends a server event on connection `i` if it is still open.
    pub async fn try_send(&self, i: usize, event: Value) -> bool {
        self.conn(i).await;
        let tx = self.senders.lock().unwrap()[i].clone();
        tx.send(Message::Text(event.to_string().into())).is_ok()
    }

    /// Every append of every connection, in connection order.
    pub fn all_appends(&self) -> Vec<String> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .flat_map(|c| c.lock().unwrap().appends())
            .collect()
    }

    /// Closes connection `i` from the server side.
    pub async fn close(&self, i: usize, code: u16) {
        self.conn(i).await;
        let tx = self.senders.lock().unwrap()[i].clone();
        let _ = tx.send(Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: "test".into(),
        })));
    }

    /// Client messages of connection `i` with a top-level member `key` (Gemini's messages
    /// have no `type`).
    pub async fn messages_with(&self, i: usize, key: &str) -> Vec<Value> {
        let conn = self.conn(i).await;
        let events = conn.lock().unwrap().events.clone();
        events
            .into_iter()
            .filter(|e| e.get(key).is_some())
            .collect()
    }

    /// The events of connection `i` whose type is `kind`.
    pub async fn events_of(&self, i: usize, kind: &str) -> Vec<Value> {
        let conn = self.conn(i).await;
        let events = conn
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect();
        events
    }

    /// How many appends connection `i` has received so far.
    pub async fn appends_len(&self, i: usize) -> usize {
        self.conn(i).await.lock().unwrap().appends().len()
    }

    /// Waits until connection `i` has received at least `n` appends, and returns them.
    pub async fn wait_appends(&self, i: usize, n: usize) -> Vec<String> {
        let conn = self.conn(i).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let appends = conn.lock().unwrap().appends();
            if appends.len() >= n {
                return appends;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} appends arrived",
                appends.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for the gateway to close connection `i`; returns the code.
    pub async fn wait_closed(&self, i: usize) -> u16 {
        let conn = self.conn(i).await;
        eventually(|| conn.lock().unwrap().close_code).await
    }
}

/// What a Realtime server sends when the model calls a tool, in order: the arguments'
/// `.done` (with `name` on GA; the beta dialect leaves it out) and the completed output item
/// (`status` `completed`, or `incomplete` when its response was cancelled).
pub fn function_call_events(
    response_id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> [Value; 2] {
    [
        json!({"type": "response.function_call_arguments.done", "response_id": response_id, "item_id": format!("fc_{call_id}"),
            "output_index": 0, "call_id": call_id, "name": name, "arguments": arguments}),
        json!({"type": "response.output_item.done", "response_id": response_id, "output_index": 0,
            "item": {"id": format!("fc_{call_id}"), "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments}}),
    ]
}

impl FakeUpstream {
    /// Sends the events of a completed function call (see [`function_call_events`]).
    pub async fn send_function_call(&self, i: usize, call_id: &str, name: &str, arguments: &str) {
        for event in function_call_events("r1", call_id, name, arguments, "completed") {
            self.send(i, event).await;
        }
    }
}

/// The next JSON message of a feed socket, or `None` once it closes (panics after [`WAIT`]
/// without either).
pub async fn next_event(feed: &mut Carrier) -> Option<Value> {
    loop {
        match tokio::time::timeout(WAIT, feed.ws.next())
            .await
            .expect("no feed event in time")
        {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None => return None,
            _ => continue,
        }
    }
}

/// A `[[tools]]` entry run as a webhook at `url`, answered within `timeout_ms`.
pub fn webhook_tool(
    name: &str,
    url: String,
    timeout_ms: u64,
) -> callgate_handlers::bridge::tools::ToolSpec {
    callgate_handlers::bridge::tools::ToolSpec {
        name: name.into(),
        description: format!("{name} tool"),
        parameters: json!({"type": "object"}),
        url,
        timeout: Duration::from_millis(timeout_ms),
    }
}

/// Reads the carrier's messages until the gateway's end mark of an item (a mark, or a Plivo
/// checkpoint); returns every mark name sent, in order (none of them echoed).
pub async fn marks_until_end(carrier: &mut Carrier) -> Vec<String> {
    let mut marks = Vec::new();
    while marks.last().is_none_or(|m: &String| !m.ends_with("/end")) {
        let m = carrier.recv().await;
        let name = m["mark"]["name"].as_str().or(m["name"].as_str());
        if m["event"] == "mark" || m["event"] == "checkpoint" {
            marks.push(name.unwrap().to_owned());
        }
    }
    marks
}

/// A webhook on loopback that records each request body and answers `answer`: its URL and
/// what it received.
pub async fn recording_webhook(answer: Value) -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::Json<Value>| {
            let (record, answer) = (record.clone(), answer.clone());
            async move {
                record.lock().unwrap().push(body.0);
                axum::Json(answer)
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

/// A free loopback address for a gateway process (the port is free when this returns).
pub fn free_addr() -> std::net::SocketAddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Runs the `callgate` binary with `configure`'s arguments and environment (its output
/// discarded) and waits until it listens on `addr`.
pub async fn spawn_binary(
    addr: std::net::SocketAddr,
    configure: impl FnOnce(&mut std::process::Command),
) -> std::process::Child {
    use std::process::{Command, Stdio};
    let mut command = Command::new(env!("CARGO_BIN_EXE_callgate"));
    command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    configure(&mut command);
    let child = command.spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the binary did not start listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

/// Polls the async `f` until it returns `Some`, for at most [`WAIT`].
pub async fn eventually_async<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
pub async fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A gateway serving on 127.0.0.1:0.
pub struct Gateway {
    pub addr: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    /// Starts a gateway whose upstream is `upstream` (None: the embedded loopback).
    pub async fn start(upstream: Option<&FakeUpstream>, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::load(None, Vec::new()).unwrap();
        config.listen = "127.0.0.1:0".into();
        if let Some(upstream) = upstream {
            config.upstream.url = upstream.url.clone();
        }
        // Tests play audio far faster than real time: lift the per-socket message rate
        // (the flood test sets its own).
        config.security.messages_per_second = 1_000_000;
        config.security.message_burst = 1_000_000;
        // ... and the audio clock (tests of it set their own).
        config.security.audio_burst_ms = 1_000_000_000;
        // ... and hold more audio: at 200× real time the default 1 s queue is 5 ms of wall
        // time, which a loaded test machine can outrun (tests of the drop policy set it).
        config.upstream.queue_ms = 10_000;
        // Each gateway writes its records to a file of its own.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        config.records.path = std::env::temp_dir()
            .join(format!("callgate-test-{}-{n}.db", std::process::id()))
            .to_string_lossy()
            .into_owned();
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(callgate::run(listener, config, shutdown.clone()));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The `/metrics` body.
    pub async fn metrics(&self) -> String {
        http_body(&http_get(self.addr, "/metrics").await).to_owned()
    }

    /// `/metrics` now, to assert later on what the test itself added: the recorder is one per
    /// process and the tests of a binary run in parallel, so absolute values prove nothing.
    pub async fn metrics_baseline(&self) -> MetricsBaseline {
        MetricsBaseline(self.metrics().await)
    }

    /// How much `metric` (summed over series matching `labels`) grew since `before`.
    pub async fn metric_delta(
        &self,
        before: &MetricsBaseline,
        metric: &str,
        labels: &[(&str, &str)],
    ) -> f64 {
        metric_sum(&self.metrics().await, metric, labels) - metric_sum(&before.0, metric, labels)
    }
}

/// A snapshot of `/metrics`; see [`Gateway::metrics_baseline`].
pub struct MetricsBaseline(String);

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The body of a raw HTTP/1.1 response.
pub fn http_body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// A plain HTTP/1.1 GET over a raw socket; returns the whole response (status line,
/// headers and body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    http_get_with(addr, path, &[]).await
}

/// `/healthz` as JSON.
pub async fn health(addr: std::net::SocketAddr) -> Value {
    serde_json::from_str(http_body(&http_get(addr, "/healthz").await)).expect("healthz JSON")
}

/// [`http_get`] with extra request headers.
pub async fn http_get_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// Sum of every sample of `metric` carrying all of `labels`, in a `/metrics` body (a
/// histogram's `_count` series is named as such).
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::{Scrape, Value as Sample};
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            Sample::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Sample::Summary(_) => 0.0,
        })
        .sum()
}

/// A carrier's socket.
pub struct Carrier {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Carrier {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self { ws }
    }

    /// Upgrades with extra headers; on refusal returns the HTTP status and headers.
    pub async fn try_connect(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, (u16, http::HeaderMap)> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Self { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err((response.status().as_u16(), response.headers().clone()))
            }
            Err(e) => panic!("upgrade failed oddly: {e}"),
        }
    }

    pub async fn send(&mut self, event: Value) {
        self.ws
            .send(Message::Text(event.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// The next JSON message (panics on close or timeout).
    pub async fn recv(&mut self) -> Value {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no message in time")
            {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Waits for the close frame, skipping other messages; returns (code, reason).
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("not closed in time")
            {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before close: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }
}

pub const SID: &str = "MZ11111111111111111111111111111111";
pub const CALL: &str = "CA11111111111111111111111111111111";

/// Twilio's messages on stream `sid` (the one set of carrier-message builders,
/// `callgate_handlers::dialect::messages`).
pub fn twilio(sid: &str) -> CarrierMessages {
    CarrierMessages::new(Dialect::Twilio, sid)
}

pub fn twilio_start(sid: &str, params: Value) -> Value {
    twilio(sid).with_parameters(params).start().unwrap()
}

pub fn smartflo_start(sid: &str) -> Value {
    CarrierMessages::new(Dialect::Smartflo, sid)
        .with_parameters(json!({"FirstName": "Jane"}))
        .start()
        .unwrap()
}

/// Twilio media frame `n` (0-based) with a base64 `payload`.
pub fn media(sid: &str, n: u64, payload: &str) -> Value {
    twilio(sid).media_base64(n + 1, n, payload).unwrap()
}

pub fn stop(sid: &str) -> Value {
    twilio(sid).stop(999).unwrap()
}

/// 20 ms μ-law frames of a fixture file, as base64.
pub fn fixture_frames(name: &str) -> Vec<String> {
    use base64::Engine as _;
    let (format, audio) = callgate::wav::read(&fixture(name)).unwrap();
    let mulaw = callgate::wav::convert(format, &audio, AudioFormat::Mulaw).unwrap();
    mulaw
        .chunks(160)
        .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
        .collect()
}

/// Plays frames about 200 times faster than real time: fast, yet within what the gateway's
/// bounded hold queue is built for (10 s of audio in tests; a burst of a whole file in a
/// millisecond is not a carrier's behaviour, and the queue would rightly drop the oldest).
pub async fn pace(frame_index: usize) {
    if frame_index % 10 == 9 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Seconds since the Unix epoch (token and session expiries).
pub fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An HS256 key `kid` for `[[security.jwt.keys]]`.
pub fn hs256_key(kid: &str, secret: &str) -> JwtKeyConfig {
    JwtKeyConfig {
        kid: kid.into(),
        algorithm: "HS256".into(),
        secret: Secret::new(secret),
        secret_env: String::new(),
        public_key_file: String::new(),
        private_key_file: String::new(),
    }
}

/// An HS256 token over `claims`, naming `kid` in its header when given.
pub fn hs256_token(claims: &Value, kid: Option<&str>, secret: &str) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// `ms` of a `freq` Hz tone at a fixed level, encoded in `format`.
pub fn tone(format: AudioFormat, freq: f64, ms: usize) -> Vec<u8> {
    let rate = format.sample_rate() as usize;
    let samples: Vec<i16> = (0..ms * rate / 1000)
        .map(|i| {
            (8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as i16
        })
        .collect();
    let mut out = Vec::new();
    format.encode(&samples, &mut out);
    out
}

/// A tone's frequency, from its rising zero crossings.
pub fn hz(samples: &[i16], rate: u32) -> f64 {
    samples.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count() as f64 * rate as f64
        / samples.len() as f64
}

/// Root mean square level.
pub fn rms(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len().max(1) as f64).sqrt()
}

/// The record of `call_sid` in the SQLite file at `path`, once it has its outcome.
pub async fn finished_record(path: &str, call_sid: &str) -> callgate::records::CallRecord {
    let location = callgate::records::Location::of(path, "");
    for _ in 0..200 {
        if let Some(record) = read_record(location.clone(), call_sid.to_owned()).await {
            if !record.outcome.is_empty() {
                return record;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no finished record of {call_sid}");
}
