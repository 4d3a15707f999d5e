//! The attacks of the adversarial review, each reproduced against the real server, with the
//! figure that shows the fix (SECURITY.md, one row each). Floods are bounded in time and
//! count and stay on loopback: the attacker binds 127.0.0.2, the victim 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use callgate::config::{AuthKind, RouteConfig};
use callgate_handlers::bridge::Secret;
use callgate_handlers::dialect::Dialect;
use callgate_layers::http::auth::TwilioSignature;
use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "jwt-test-secret-jwt-test-secret!";

/// A Twilio call on `gw` that has sent its `start`.
async fn started_call(gw: &Gateway) -> Carrier {
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    carrier
}

/// A TCP connection to `addr` from the attacker's address, 127.0.0.2.
async fn from_attacker(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Floods `addr` from 127.0.0.2 with pipelined copies of `request` on `connections`
/// connections until `stop`, reading and discarding the answers; counts requests written.
fn flood(
    addr: SocketAddr,
    request: String,
    connections: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..connections)
        .map(|_| {
            let (stop, sent, request) = (stop.clone(), sent.clone(), request.clone());
            tokio::spawn(async move {
                let batch = request.repeat(32);
                while !stop.load(Relaxed) {
                    let stream = from_attacker(addr).await;
                    let (mut read, mut write) = stream.into_split();
                    let drain = tokio::spawn(async move {
                        let mut sink = vec![0u8; 64 * 1024];
                        while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
                    });
                    while !stop.load(Relaxed) {
                        if write.write_all(batch.as_bytes()).await.is_err() {
                            break;
                        }
                        sent.fetch_add(32, Relaxed);
                    }
                    drop(write);
                    drain.abort();
                }
            })
        })
        .collect()
}

/// A gateway with a JWT route (`/twilio`) and a route that passes upgrades without
/// credentials (`/voximplant`, token in `start`), and a small gateway-wide budget that a
/// flood of refused requests would drain at once if it could.
async fn exposed(upstream: &FakeUpstream) -> Gateway {
    Gateway::start(Some(upstream), |c| {
        c.security.default_auth = AuthKind::Jwt;
        c.security.jwt.audience = "carriers".into();
        c.security.jwt.keys = vec![hs256_key("k1", SECRET)];
        let mut open = RouteConfig::new("/voximplant", Dialect::Voximplant, false);
        open.token_in_start = true;
        c.routes.push(open);
        c.security.upgrades_per_second = 20;
        c.security.upgrade_burst = 20;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_does_not_refuse_another_address() {
    let upstream = FakeUpstream::start().await;
    let gw = exposed(&upstream).await;
    let before = gw.metrics_baseline().await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // Plain GETs (no Upgrade header) on the credential-free route, and upgrades without
    // credentials on the JWT route, as fast as the attacker can write them.
    let plain = "GET /voximplant HTTP/1.1\r\nHost: gw\r\n\r\n".to_owned();
    let unauthenticated = "GET /twilio HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\n\
        Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_owned();
    let mut attackers = flood(gw.addr, plain, 2, stop.clone(), sent.clone());
    attackers.extend(flood(
        gw.addr,
        unauthenticated,
        1,
        stop.clone(),
        sent.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The victim: one valid upgrade every 200 ms from 127.0.0.1.
    let bearer = format!(
        "Bearer {}",
        hs256_token(
            &json!({"iss": "callgate", "aud": "carriers", "exp": unix_now() + 300}),
            Some("k1"),
            SECRET
        )
    );
    let mut admitted = 0;
    let tries = 25;
    for _ in 0..tries {
        if let Ok(mut carrier) =
            Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &bearer)]).await
        {
            admitted += 1;
            let _ = carrier.ws.close(None).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Relaxed);
    for attacker in attackers {
        let _ = tokio::time::timeout(WAIT, attacker).await;
    }
    let flooded = sent.load(Relaxed);
    eprintln!("victim admitted {admitted}/{tries} while the attacker sent {flooded} requests");
    assert!(flooded > 5_000, "the flood ran ({flooded} requests)");
    assert_eq!(
        admitted, tries,
        "every valid upgrade from the other address passed"
    );
    assert!(
        gw.metric_delta(
            &before,
            "callgate_upgrades_rejected_total",
            &[("reason", "not_upgrade")]
        )
        .await
            > 1000.0
    );
    assert_eq!(
        gw.metric_delta(
            &before,
            "callgate_upgrades_rejected_total",
            &[("reason", "overloaded")]
        )
        .await,
        0.0,
        "refused requests never spent the gateway-wide budget"
    );
    assert_eq!(
        upstream.connections(),
        0,
        "no call started, no model session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_is_refused_before_any_limiter() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.upgrades_per_ip_per_second = 1;
        c.security.upgrade_burst_per_ip = 1;
    })
    .await;
    for _ in 0..20 {
        let response = http_get(gw.addr, "/twilio").await;
        assert!(response.starts_with("HTTP/1.1 426"), "{response}");
        assert!(response.to_ascii_lowercase().contains("upgrade: websocket"));
    }
    // The per-IP budget (one upgrade) is untouched by the twenty refusals.
    Carrier::connect(&gw.url("/twilio")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_bad_signatures_do_not_block_a_shared_carrier_address() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.default_auth = AuthKind::TwilioSignature;
        c.security.twilio.auth_token = Secret::new("our-auth-token");
        c.security.twilio.public_base_url = "wss://gw.example.com".into();
    })
    .await;
    // Another Twilio account points its <Stream> at us: every call fails our signature.
    let theirs = TwilioSignature::sign("their-auth-token", "wss://gw.example.com/twilio");
    let mut statuses = Vec::new();
    for _ in 0..22 {
        let status = match Carrier::try_connect(
            &gw.url("/twilio"),
            &[("x-twilio-signature", &theirs)],
        )
        .await
        {
            Ok(_) => 101,
            Err((status, _)) => status,
        };
        statuses.push(status);
    }
    assert!(
        statuses.iter().all(|&s| s == 401 || s == 429),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "the address is blocked by now");
    // Our own correctly signed call from the same address.
    let ours = TwilioSignature::sign("our-auth-token", "wss://gw.example.com/twilio");
    let mut carrier = Carrier::try_connect(&gw.url("/twilio"), &[("x-twilio-signature", &ours)])
        .await
        .expect("a correctly signed call passes the block: 101");
    carrier.send(twilio_start(SID, json!({}))).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

/// A gateway whose sockets may read 100 frames a second (burst 200), as in production.
async fn metered(upstream: &FakeUpstream) -> Gateway {
    Gateway::start(Some(upstream), |c| {
        c.security.messages_per_second = 100;
        c.security.message_burst = 200;
    })
    .await
}

/// Sends `frames` as fast as the socket takes them (errors ignored: the gateway may have
/// closed already), then returns the close code the gateway sent.
async fn flood_then_close_code(
    carrier: &mut Carrier,
    frames: impl Iterator<Item = Message>,
) -> u16 {
    let started = std::time::Instant::now();
    let mut sent = 0;
    for frame in frames {
        if carrier.ws.feed(frame).await.is_err() {
            break;
        }
        sent += 1;
    }
    let _ = carrier.ws.flush().await;
    let code = carrier.closed().await.0;
    eprintln!(
        "{sent} frames written; close {code} read after {:?}",
        started.elapsed()
    );
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_closes_1008() {
    let upstream = FakeUpstream::start().await;
    let gw = metered(&upstream).await;
    let before = gw.metrics_baseline().await;
    let mut carrier = started_call(&gw).await;
    let pings = (0..20_000).map(|_| Message::Ping(Default::default()));
    assert_eq!(flood_then_close_code(&mut carrier, pings).await, 1008);
    assert!(
        gw.metric_delta(&before, "callgate_bad_frames_total", &[("reason", "flood")])
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_frame_flood_closes_1008() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let upstream = FakeUpstream::start().await;
    let gw = metered(&upstream).await;
    let mut carrier = started_call(&gw).await;
    // A text message that never ends: one opening fragment, then empty continuations.
    // tungstenite gathers them without ever handing a message up.
    let opening = Message::Frame(Frame::message("{", OpCode::Data(Data::Text), false));
    let continuations = (0..50_000)
        .map(|_| Message::Frame(Frame::message("", OpCode::Data(Data::Continue), false)));
    let frames = std::iter::once(opening).chain(continuations);
    assert_eq!(flood_then_close_code(&mut carrier, frames).await, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_start_lose_their_call_slots() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.max_calls = 2;
        c.calls.start_deadline = Duration::from_millis(400);
    })
    .await;
    // Two sockets take both slots and chatter `connected` (and garbage) without a start.
    let mut holders = Vec::new();
    for _ in 0..2 {
        holders.push(Carrier::connect(&gw.url("/twilio")).await);
    }
    let refused = Carrier::try_connect(&gw.url("/twilio"), &[]).await;
    assert_eq!(
        refused.err().map(|(status, _)| status),
        Some(503),
        "both slots held"
    );
    let chatter = async {
        for _ in 0..10 {
            for holder in &mut holders {
                let _ = holder
                    .ws
                    .send(Message::Text(
                        r#"{"event":"connected","protocol":"Call"}"#.into(),
                    ))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    chatter.await;
    for holder in &mut holders {
        assert_eq!(holder.closed().await, (1008, "no start".to_owned()));
    }
    // The slots are free again: a real call gets in and completes.
    let mut call = Carrier::connect(&gw.url("/twilio")).await;
    call.send(twilio_start(SID, json!({}))).await;
    call.send(stop(SID)).await;
    assert_eq!(call.closed().await.0, 1000);
    assert_eq!(
        upstream.connections(),
        1,
        "no model session for the holders"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_closes_first_gets_its_close_echoed() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let mut carrier = Carrier::connect(&gw.url("/plivo")).await;
    carrier
        .send(CarrierMessages::new(Dialect::Plivo, "s-1").start().unwrap())
        .await;
    // Plivo ends every call by closing the socket, without a stop event.
    carrier
        .ws
        .send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
    assert_eq!(
        carrier.closed().await.0,
        1000,
        "the close frame came back, not 1006"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_1007_and_is_counted() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |_| {}).await;
    let before = gw.metrics_baseline().await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    carrier.send_raw(Message::Frame(bad)).await;
    assert_eq!(carrier.closed().await.0, 1007);
    assert!(
        gw.metric_delta(
            &before,
            "callgate_bad_frames_total",
            &[("reason", "invalid_utf8")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_events_do_not_reset_the_run_of_bad_frames() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| c.calls.max_consecutive_bad_frames = 10).await;
    let mut carrier = started_call(&gw).await;
    // Nine bad frames, one unknown event, nine more: the run is 18, past the limit.
    for round in 0..2 {
        for _ in 0..9 {
            carrier.send_raw(Message::Text("not json".into())).await;
        }
        if round == 0 {
            carrier
                .send(json!({"event": "made-up", "streamSid": SID}))
                .await;
        }
    }
    assert_eq!(carrier.closed().await.0, 1007);
}

/// Seconds of μ-law audio in the upstream's appends so far.
fn upstream_audio_s(upstream: &FakeUpstream) -> f64 {
    use base64::Engine as _;
    let conns = upstream.conns.lock().unwrap();
    let bytes: usize = conns
        .iter()
        .flat_map(|c| c.lock().unwrap().appends())
        .map(|a| {
            base64::engine::general_purpose::STANDARD
                .decode(a)
                .unwrap()
                .len()
        })
        .sum();
    bytes as f64 / 8000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_faster_than_the_clock_never_reaches_the_upstream() {
    use base64::Engine as _;
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.messages_per_second = 100;
        c.security.message_burst = 200;
        c.security.audio_burst_ms = 500;
    })
    .await;
    let before = gw.metrics_baseline().await;
    let mut carrier = started_call(&gw).await;
    // One second of audio per message (the most a message may carry), 90 messages a second:
    // under the message-rate limit, 90× faster than anyone can speak.
    let second = base64::engine::general_purpose::STANDARD.encode([0x7fu8; 8000]);
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(2) {
        n += 1;
        carrier.send(media(SID, n, &second)).await;
        tokio::time::sleep(Duration::from_millis(11)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    let heard = upstream_audio_s(&upstream);
    eprintln!("{n} s of audio offered in {wall:.2} s; the upstream received {heard:.2} s");
    assert!(n > 100, "the attack ran ({n} messages)");
    // The clock plus the burst, and one message of slack for the edges.
    assert!(heard <= wall + 0.5 + 1.0, "{heard} s of audio in {wall} s");
    assert!(heard >= 1.0, "real-time audio still flows ({heard} s)");
    assert!(
        gw.metric_delta(
            &before,
            "callgate_audio_dropped_total",
            &[("reason", "too_fast")]
        )
        .await
            > 50.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_message_longer_than_the_limit_is_refused() {
    use base64::Engine as _;
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.calls.max_consecutive_bad_frames = 3;
    })
    .await;
    let before = gw.metrics_baseline().await;
    let mut carrier = started_call(&gw).await;
    // 45 KB of μ-law: 5.6 s in one message (the default limit is 1 s).
    let huge = base64::engine::general_purpose::STANDARD.encode(vec![0x7fu8; 45_000]);
    for n in 1..=3 {
        carrier.send(media(SID, n, &huge)).await;
    }
    assert_eq!(carrier.closed().await.0, 1007);
    assert_eq!(
        upstream_audio_s(&upstream),
        0.0,
        "none of it reached the upstream"
    );
    assert!(
        gw.metric_delta(
            &before,
            "callgate_bad_frames_total",
            &[("reason", "media_too_long")]
        )
        .await
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_sessions_expire_at_once_cannot_loop_rollovers() {
    // Every session says it expires in 5 s; the rollover margin is 60 s. Rolling over would
    // only open another such session (the review saw 3,015 sessions in 15 s).
    let upstream = FakeUpstream::start_with(Faults {
        expires_in_s: Some(5),
        ..Default::default()
    })
    .await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.upstream.reconnect_attempts = 3;
        c.upstream.reconnect_base_delay_ms = 50;
    })
    .await;
    let mut carrier = started_call(&gw).await;
    let started = std::time::Instant::now();
    // Treated as an upstream fault: backoff, the reconnect budget, then the call ends.
    assert_eq!(carrier.closed().await.0, 1011);
    let sessions = upstream.connections();
    eprintln!(
        "{sessions} upstream sessions, call ended after {:?}",
        started.elapsed()
    );
    assert!(
        sessions <= 4,
        "one session and three reconnects at most, not {sessions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollovers_per_call_are_capped() {
    let upstream = FakeUpstream::start_with(Faults {
        expires_in_s: Some(2),
        ..Default::default()
    })
    .await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.upstream.rollover_margin_s = 1;
        c.upstream.max_rollovers = 1;
    })
    .await;
    let mut carrier = started_call(&gw).await;
    // One rollover at about 1 s, then the cap ends the call at the next one.
    assert_eq!(carrier.closed().await.0, 1011);
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_the_admin_token_is_throttled() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.admin_token = Secret::new("the-admin-token");
    })
    .await;
    // The review sent 2,000 wrong tokens in 0.06 s. With the default failure quota (burst
    // 20) and probation (burst 5), the guesser is cut off after a few dozen tries.
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..200 {
        let auth = format!("Bearer guess-{i}");
        let response = http_get_with(gw.addr, "/v1/calls", &[("authorization", &auth)]).await;
        let status: u16 = response[9..12].parse().unwrap();
        *statuses.entry(status).or_insert(0) += 1;
    }
    eprintln!("200 guesses answered {statuses:?}");
    assert!(statuses[&401] <= 21, "{statuses:?}");
    assert!(statuses[&429] >= 170, "{statuses:?}");
    // The right token still works from another address (the block is per address) ...
    let ok = {
        let mut stream = from_attacker(gw.addr).await;
        stream
            .write_all(b"GET /v1/calls HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nAuthorization: Bearer the-admin-token\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_fill_the_connection_cap_with_silent_sockets() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.max_connections = 20;
        c.security.max_connections_per_ip = 5;
    })
    .await;
    let before = gw.metrics_baseline().await;
    // The attacker opens silent sockets, waiting out the header timeout ...
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(from_attacker(gw.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut sixth = from_attacker(gw.addr).await;
    let mut response = String::new();
    let _ = tokio::time::timeout(WAIT, sixth.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response:?}");
    // ... and a carrier on another address still connects.
    let mut carrier = started_call(&gw).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    assert!(
        gw.metric_delta(
            &before,
            "callgate_upgrades_rejected_total",
            &[("reason", "connection_cap_per_ip")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pythons_websockets_flooding_one_socket_sees_1008() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python_flood.py");
    let available = std::process::Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        eprintln!("SKIPPED: python3 with `websockets` is missing (.ci/run installs it)");
        return;
    }
    let upstream = FakeUpstream::start().await;
    let gw = metered(&upstream).await;
    let url = gw.url("/twilio");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        printed.trim(),
        "1008",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
