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
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &str = "jwt-test-secret-jwt-test-secret!";

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
    let metrics = gw.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "callgate_upgrades_rejected_total",
            &[("reason", "not_upgrade")]
        ) > 1000.0
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "callgate_upgrades_rejected_total",
            &[("reason", "overloaded")]
        ),
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
