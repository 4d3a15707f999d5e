//! SECURITY.md's admission table, row by row, against the real server and a fake upstream
//! that counts connections: rejected sockets never cost a model session.

mod common;

use std::time::Duration;

use callgate::config::{AuthKind, Config, RouteConfig};
use callgate_handlers::bridge::Secret;
use callgate_handlers::dialect::Dialect;
use callgate_layers::http::auth::TwilioSignature;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "jwt-test-secret-jwt-test-secret!";
const TWILIO_TOKEN: &str = "twilio-primary-token";

fn claims() -> Value {
    json!({"iss": "callgate", "aud": "carriers", "exp": unix_now() + 300, "sub": "tester", "tenant": "acme"})
}

fn good_token() -> String {
    hs256_token(&claims(), Some("k1"), SECRET)
}

/// A gateway with a JWT route, a token-in-start route, a Twilio-signature route (plain and
/// with a call token), and the given tweaks.
async fn secured(upstream: &FakeUpstream, tweak: impl FnOnce(&mut Config)) -> Gateway {
    Gateway::start(Some(upstream), |c| {
        c.security.default_auth = AuthKind::Jwt;
        c.security.jwt.audience = "carriers".into();
        c.security.jwt.keys = vec![hs256_key("k1", SECRET)];
        c.security.twilio.auth_token = Secret::new(TWILIO_TOKEN);
        c.security.twilio.secondary_auth_token = Secret::new("twilio-secondary-token");
        c.security.twilio.public_base_url = "wss://gw.example.com".into();
        let mut in_start = RouteConfig::new("/in-start", Dialect::Twilio, false);
        in_start.token_in_start = true;
        let mut signed = RouteConfig::new("/signed", Dialect::Twilio, false);
        signed.auth = Some(AuthKind::TwilioSignature);
        let mut signed_token = RouteConfig::new("/signed-token", Dialect::Twilio, false);
        signed_token.auth = Some(AuthKind::TwilioSignature);
        signed_token.require_call_token = true;
        let mut query = RouteConfig::new("/query", Dialect::Twilio, false);
        query.query_token = true;
        c.routes.extend([in_start, signed, signed_token, query]);
        // Generous failure budget unless a test is about it.
        c.security.failed_auth_burst = 1000;
        tweak(c);
    })
    .await
}

async fn status(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> u16 {
    match Carrier::try_connect(&gw.url(path), headers).await {
        Ok(_) => 101,
        Err((status, _)) => status,
    }
}

/// A full, admitted call on `carrier` ends normally.
async fn completes(mut carrier: Carrier, params: Value) {
    carrier.send(twilio_start(SID, params)).await;
    carrier.send(media(SID, 1, "/w==")).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_jwts_are_refused_and_never_reach_upstream() {
    let upstream = FakeUpstream::start().await;
    let gw = secured(&upstream, |_| {}).await;
    let mut expired = claims();
    expired["exp"] = json!(unix_now() - 120);
    let mut wrong_aud = claims();
    wrong_aud["aud"] = json!("someone-else");
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_iss = claims();
    no_iss.as_object_mut().unwrap().remove("iss");
    let mut not_yet = claims();
    not_yet["nbf"] = json!(unix_now() + 300);
    let alg_none = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
            b64.encode(claims().to_string())
        )
    };
    // An RS256 header on an HS256 key: refused, whatever the signature.
    let alg_switch = {
        let mut header = Header::new(Algorithm::HS512);
        header.kid = Some("k1".into());
        encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let cases = [
        (
            "forged (wrong key)",
            hs256_token(&claims(), Some("k1"), "another-secret-another-secret!!"),
        ),
        ("expired", hs256_token(&expired, Some("k1"), SECRET)),
        ("alg none", alg_none),
        ("alg switched", alg_switch),
        (
            "wrong audience",
            hs256_token(&wrong_aud, Some("k1"), SECRET),
        ),
        ("missing exp", hs256_token(&no_exp, Some("k1"), SECRET)),
        ("missing iss", hs256_token(&no_iss, Some("k1"), SECRET)),
        (
            "not yet valid (nbf)",
            hs256_token(&not_yet, Some("k1"), SECRET),
        ),
        ("unknown kid", hs256_token(&claims(), Some("k9"), SECRET)),
    ];
    for (name, bad) in &cases {
        let bearer = format!("Bearer {bad}");
        assert_eq!(
            status(&gw, "/twilio", &[("authorization", &bearer)]).await,
            401,
            "{name}"
        );
    }
    assert_eq!(status(&gw, "/twilio", &[]).await, 401, "no token");
    // Query tokens are opt-in per route.
    let q = format!("/twilio?token={}", good_token());
    assert_eq!(
        status(&gw, &q, &[]).await,
        401,
        "query token on a route without query_token"
    );

    // The good token works from every source.
    let bearer = format!("Bearer {}", good_token());
    completes(
        Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &bearer)])
            .await
            .unwrap(),
        json!({}),
    )
    .await;
    let protocol = format!("callgate, {}", good_token());
    completes(
        Carrier::try_connect(&gw.url("/twilio"), &[("sec-websocket-protocol", &protocol)])
            .await
            .unwrap(),
        json!({}),
    )
    .await;
    let q = format!("/query?token={}", good_token());
    completes(
        Carrier::try_connect(&gw.url(&q), &[]).await.unwrap(),
        json!({}),
    )
    .await;
    assert_eq!(
        upstream.connections(),
        3,
        "only the three admitted calls reached upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_signatures_over_the_configured_url_only() {
    let upstream = FakeUpstream::start().await;
    let gw = secured(&upstream, |_| {}).await;
    let sig = |token: &str, url: &str| TwilioSignature::sign(token, url);
    for url in [
        "wss://gw.example.com/signed",
        "wss://gw.example.com:443/signed",
        "wss://gw.example.com/signed/",
    ] {
        let s = sig(TWILIO_TOKEN, url);
        completes(
            Carrier::try_connect(&gw.url("/signed"), &[("x-twilio-signature", &s)])
                .await
                .unwrap(),
            json!({}),
        )
        .await;
    }
    let rotated = sig("twilio-secondary-token", "wss://gw.example.com/signed");
    completes(
        Carrier::try_connect(&gw.url("/signed"), &[("x-twilio-signature", &rotated)])
            .await
            .unwrap(),
        json!({}),
    )
    .await;
    let local = format!("wss://{}/signed", gw.addr);
    for (name, s) in [
        (
            "wrong key",
            sig("not-the-token", "wss://gw.example.com/signed"),
        ),
        (
            "https URL",
            sig(TWILIO_TOKEN, "https://gw.example.com/signed"),
        ),
        ("Host-derived URL", sig(TWILIO_TOKEN, &local)),
        (
            "another path",
            sig(TWILIO_TOKEN, "wss://gw.example.com/twilio"),
        ),
    ] {
        assert_eq!(
            status(&gw, "/signed", &[("x-twilio-signature", &s)]).await,
            401,
            "{name}"
        );
    }
    // A forged Host / X-Forwarded-Host changes nothing: the URL comes from configuration.
    let s = sig(TWILIO_TOKEN, "wss://evil.example/signed");
    assert_eq!(
        status(
            &gw,
            "/signed",
            &[
                ("x-twilio-signature", &s),
                ("x-forwarded-host", "evil.example")
            ]
        )
        .await,
        401
    );
    assert_eq!(upstream.connections(), 4);

    // A signature is constant per URL: on /signed-token a replayed header alone is refused at
    // `start` (1008) without an upstream; with a per-call token bound to the call it works.
    let replay = sig(TWILIO_TOKEN, "wss://gw.example.com/signed-token");
    let mut carrier =
        Carrier::try_connect(&gw.url("/signed-token"), &[("x-twilio-signature", &replay)])
            .await
            .unwrap();
    carrier.send(twilio_start(SID, json!({}))).await;
    assert_eq!(carrier.closed().await, (1008, "unauthorized".to_owned()));
    assert_eq!(upstream.connections(), 4);
    let mut bound = claims();
    bound["call_sid"] = json!(format!("CA{}", &SID[2..]));
    bound["jti"] = json!("call-1");
    let call_token = hs256_token(&bound, Some("k1"), SECRET);
    let carrier =
        Carrier::try_connect(&gw.url("/signed-token"), &[("x-twilio-signature", &replay)])
            .await
            .unwrap();
    completes(carrier, json!({"token": call_token})).await;
    assert_eq!(upstream.connections(), 5);
    // Single use: the same token again is refused.
    let mut again =
        Carrier::try_connect(&gw.url("/signed-token"), &[("x-twilio-signature", &replay)])
            .await
            .unwrap();
    again
        .send(twilio_start(SID, json!({"token": call_token})))
        .await;
    assert_eq!(again.closed().await.0, 1008);
    assert_eq!(upstream.connections(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_start_within_and_past_the_deadline() {
    let upstream = FakeUpstream::start().await;
    let gw = secured(&upstream, |c| c.security.start_token_deadline_ms = 300).await;
    // Within the deadline: admitted, and the token never reaches the upstream.
    let carrier = Carrier::connect(&gw.url("/in-start")).await;
    let good = good_token();
    completes(carrier, json!({"token": good, "tenant_hint": "x"})).await;
    let events = upstream.conn(0).await.lock().unwrap().events.clone();
    assert!(!serde_json::to_string(&events).unwrap().contains(&good));
    // Invalid token in start: 1008, no upstream.
    let mut bad = Carrier::connect(&gw.url("/in-start")).await;
    bad.send(twilio_start(
        SID,
        json!({"token": hs256_token(&claims(), Some("k1"), "wrong-wrong-wrong-wrong-wrong!!")}),
    ))
    .await;
    assert_eq!(bad.closed().await, (1008, "unauthorized".to_owned()));
    // No start at all: closed at the deadline.
    let started = std::time::Instant::now();
    let mut idle = Carrier::connect(&gw.url("/in-start")).await;
    assert_eq!(
        idle.closed().await,
        (1008, "authentication timeout".to_owned())
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // Media before start cannot sneak audio upstream either.
    let mut sneaky = Carrier::connect(&gw.url("/in-start")).await;
    for n in 0..3 {
        sneaky.send(media(SID, n, "/w==")).await;
    }
    assert_eq!(sneaky.closed().await.0, 1008);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_throttle_the_ip_but_valid_credentials_pass() {
    let upstream = FakeUpstream::start().await;
    let gw = secured(&upstream, |c| {
        c.security.failed_auth_per_ip_per_minute = 1;
        c.security.failed_auth_burst = 3;
        c.security.failed_auth_block_s = 30;
        c.security.blocked_attempts_per_minute = 24; // burst 2
    })
    .await;
    let before = gw.metrics_baseline().await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(status(&gw, "/twilio", &[("authorization", "Bearer nope")]).await);
    }
    assert_eq!(statuses, [401, 401, 401, 401], "the fourth failure blocks");
    // Blocked: a failure answers 429 and says when to retry ...
    let (code, headers) =
        Carrier::try_connect(&gw.url("/twilio"), &[("authorization", "Bearer nope")])
            .await
            .err()
            .unwrap();
    assert_eq!(code, 429);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // ... while a valid credential from the same (possibly shared) address still passes ...
    let bearer = format!("Bearer {}", good_token());
    completes(
        Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &bearer)])
            .await
            .unwrap(),
        json!({}),
    )
    .await;
    // ... and past the probation attempts nothing is even checked.
    assert_eq!(
        status(&gw, "/twilio", &[("authorization", &bearer)]).await,
        429
    );
    assert_eq!(upstream.connections(), 1);
    assert!(
        gw.metric_delta(
            &before,
            "callgate_upgrades_rejected_total",
            &[("reason", "blocked")]
        )
        .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let upstream = FakeUpstream::start().await;
    let limited = |c: &mut Config| {
        c.security.default_auth = AuthKind::None;
        c.security.upgrades_per_ip_per_second = 1;
        c.security.upgrade_burst_per_ip = 3;
    };
    let gw = Gateway::start(Some(&upstream), limited).await;
    // Ten different X-Forwarded-For values from one untrusted peer: still one key, so the
    // per-IP limit bites after the burst.
    let mut statuses = Vec::new();
    for i in 0..10 {
        let xff = format!("198.51.100.{i}");
        statuses.push(status(&gw, "/twilio", &[("x-forwarded-for", &xff)]).await);
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 101).count(),
        3,
        "{statuses:?}"
    );
    assert!(statuses[3..].iter().all(|&s| s == 429), "{statuses:?}");
    // Behind a trusted proxy, each forwarded client has its own budget.
    let upstream2 = FakeUpstream::start().await;
    let gw2 = Gateway::start(Some(&upstream2), |c| {
        limited(c);
        c.security.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    for i in 0..10 {
        let xff = format!("6.6.6.6, 198.51.100.{i}");
        assert_eq!(
            status(&gw2, "/twilio", &[("x-forwarded-for", &xff)]).await,
            101
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origin_gets_403() {
    let upstream = FakeUpstream::start().await;
    let gw = secured(&upstream, |c| {
        c.security.allowed_origins = vec!["https://console.example.com".into()]
    })
    .await;
    let bearer = format!("Bearer {}", good_token());
    assert_eq!(
        status(
            &gw,
            "/twilio",
            &[
                ("origin", "https://evil.example"),
                ("authorization", &bearer)
            ]
        )
        .await,
        403
    );
    assert_eq!(
        status(
            &gw,
            "/twilio",
            &[
                ("origin", "https://console.example.com"),
                ("authorization", &bearer)
            ]
        )
        .await,
        101
    );
    assert_eq!(
        status(&gw, "/twilio", &[("authorization", &bearer)]).await,
        101,
        "carriers send no Origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_caps_global_and_per_tenant() {
    let upstream = FakeUpstream::start().await;
    let gw = secured(&upstream, |c| {
        c.security.max_calls = 3;
        c.security.tenants.insert(
            "acme".into(),
            callgate::config::TenantConfig { max_calls: 1 },
        );
    })
    .await;
    let bearer = |tenant: &str| {
        let mut c = claims();
        c["tenant"] = json!(tenant);
        format!("Bearer {}", hs256_token(&c, Some("k1"), SECRET))
    };
    let acme = Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &bearer("acme"))])
        .await
        .unwrap();
    let (code, headers) =
        Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &bearer("acme"))])
            .await
            .err()
            .unwrap();
    assert_eq!(code, 503, "tenant cap");
    assert!(headers.contains_key("retry-after"));
    let _b = Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &bearer("beta"))])
        .await
        .unwrap();
    let _c = Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &bearer("gamma"))])
        .await
        .unwrap();
    assert_eq!(
        status(&gw, "/twilio", &[("authorization", &bearer("delta"))]).await,
        503,
        "global cap"
    );
    // Token-in-start calls take their permit at start: over the cap they close 1013.
    let mut deferred = Carrier::connect(&gw.url("/in-start")).await;
    let mut c = claims();
    c["tenant"] = json!("acme");
    deferred
        .send(twilio_start(
            SID,
            json!({"token": hs256_token(&c, Some("k1"), SECRET)}),
        ))
        .await;
    assert_eq!(
        deferred.closed().await,
        (1013, "try again later".to_owned())
    );
    // A call that ends frees its slot.
    completes(acme, json!({})).await;
    let again =
        Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &bearer("acme"))]).await;
    assert!(again.is_ok(), "slot freed at call end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flood_closes_1008_while_other_calls_carry_on() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.messages_per_second = 100;
        c.security.message_burst = 200;
    })
    .await;
    let mut healthy = Carrier::connect(&gw.url("/twilio")).await;
    healthy.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    let mut flood = Carrier::connect(&gw.url("/smartflo")).await;
    flood
        .send(smartflo_start("MZ33333333333333333333333333333333"))
        .await;
    for _ in 0..1000 {
        let frame = json!({"event": "media", "streamSid": "MZ33333333333333333333333333333333", "media": {"payload": "/w=="}});
        if flood
            .ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                frame.to_string().into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        flood.closed().await,
        (1008, "message rate exceeded".to_owned())
    );
    healthy.send(media(SID, 1, "/w==")).await;
    upstream.wait_appends(0, 1).await;
    healthy.send(stop(SID)).await;
    assert_eq!(healthy.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_time_out_and_the_connection_cap_answers_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.header_read_timeout_ms = 300;
        c.security.max_connections = 2;
    })
    .await;
    // Slowloris: a request that never finishes its headers is dropped in time.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /twilio HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let started = std::time::Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf))
        .await
        .expect("slow client not dropped");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Two idle connections fill the cap; the third is refused with 503.
    let mut a = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    a.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), third.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response:?}");
    assert!(response.contains("Retry-After"));
}

use futures_util::SinkExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callgate_token_mints_what_the_gateway_accepts() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("layers/src/http/testdata");
    let dir = std::env::temp_dir().join(format!("callgate-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("callgate.toml");
    std::fs::write(
        &config_path,
        format!(
            "[security]\ndefault_auth = \"jwt\"\n[[security.jwt.keys]]\nkid = \"ec1\"\nalgorithm = \"ES256\"\npublic_key_file = {:?}\nprivate_key_file = {:?}\n",
            data.join("ec_public.pem"),
            data.join("ec_private.pem")
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "--config",
            config_path.to_str().unwrap(),
            "token",
            "--tenant",
            "acme",
            "--single-use",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let minted = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    let upstream = FakeUpstream::start().await;
    let mut config = Config::load(Some(&config_path), Vec::new()).unwrap();
    config.upstream.url = upstream.url.clone();
    config.records.enabled = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = callgate::CancellationToken::new();
    tokio::spawn(callgate::run(listener, config, shutdown.clone()));
    let url = format!("ws://{addr}/twilio");
    let bearer = format!("Bearer {minted}");
    completes(
        Carrier::try_connect(&url, &[("authorization", &bearer)])
            .await
            .unwrap(),
        json!({}),
    )
    .await;
    // Single use.
    assert_eq!(
        Carrier::try_connect(&url, &[("authorization", &bearer)])
            .await
            .err()
            .unwrap()
            .0,
        401
    );
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
}
