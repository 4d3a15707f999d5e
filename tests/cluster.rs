//! Cluster mode: replicas sharing one real `redis-server` (started by each test on a free
//! port). Replica A runs in this process; replica B is the `callgate` binary, so that it can
//! be SIGKILLed. Both authenticate carriers with JWTs and cap the cluster at a few calls.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use callgate::config::{AuthKind, Config, OnRedisError};
use callgate_handlers::bridge::Secret;
use common::test_redis::TestRedis;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "cluster-test-secret";
const ADMIN: &str = "cluster-admin";
const TTL_S: u64 = 3;

fn token(jti: Option<&str>) -> String {
    let mut claims =
        json!({"iss": "callgate", "aud": "carriers", "exp": unix_now() + 300, "tenant": "acme"});
    if let Some(jti) = jti {
        claims["jti"] = jti.into();
    }
    hs256_token(&claims, Some("k1"), SECRET)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Replica A's settings: JWT on every route, the cluster at `redis`, `max_calls` for the
/// whole cluster.
fn clustered(c: &mut Config, redis: &TestRedis, max_calls: usize) {
    c.security.default_auth = AuthKind::Jwt;
    c.security.jwt.audience = "carriers".into();
    c.security.jwt.keys = vec![hs256_key("k1", SECRET)];
    c.security.admin_token = Secret::new(ADMIN);
    c.security.max_calls = max_calls;
    c.security.failed_auth_burst = 1000;
    c.records.enabled = false;
    c.cluster.redis_url = redis.url();
    c.cluster.lease_ttl_s = TTL_S;
}

/// Replica B: the binary, with the same settings as [`clustered`].
struct Replica {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Replica {
    async fn start(upstream: &FakeUpstream, redis: &TestRedis, max_calls: usize) -> Self {
        let addr = free_addr();
        let config = std::env::temp_dir().join(format!("callgate-cluster-{}.toml", addr.port()));
        std::fs::write(
            &config,
            format!(
                r#"listen = "{addr}"
[upstream]
url = "{upstream}"
queue_ms = 10000
[security]
default_auth = "jwt"
admin_token = "{ADMIN}"
max_calls = {max_calls}
failed_auth_burst = 1000
messages_per_second = 1000000
message_burst = 1000000
audio_burst_ms = 1000000000
[security.jwt]
audience = "carriers"
[[security.jwt.keys]]
kid = "k1"
algorithm = "HS256"
secret = "{SECRET}"
[records]
enabled = false
[cluster]
redis_url = "{redis}"
lease_ttl_s = {TTL_S}
"#,
                upstream = upstream.url,
                redis = redis.url(),
            ),
        )
        .unwrap();
        let child = spawn_binary(addr, |command| {
            command.arg("--config").arg(&config);
        })
        .await;
        Self { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stream `n`'s ids.
fn sid(n: u32) -> String {
    format!("MZ{n:032}")
}

fn call_sid(n: u32) -> String {
    format!("CA{n:032}")
}

/// A started call on `url`, its upstream connection `index` of `upstream`.
async fn call(url: &str, n: u32, upstream: &FakeUpstream, index: usize) -> Carrier {
    let mut carrier = Carrier::try_connect(url, &[("authorization", &bearer(&token(None)))])
        .await
        .unwrap_or_else(|(status, _)| panic!("call {n} refused with {status}"));
    carrier.send(twilio_start(&sid(n), json!({}))).await;
    upstream.conn(index).await;
    carrier
}

async fn upgrade_status(url: &str, token: &str) -> (u16, String) {
    match Carrier::try_connect(url, &[("authorization", &bearer(token))]).await {
        Ok(_) => (101, String::new()),
        Err((status, headers)) => (
            status,
            headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
        ),
    }
}

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let auth = bearer(ADMIN);
    let response = http_get_with(addr, path, &[("authorization", &auth)]).await;
    let status = response[9..12].parse().unwrap();
    (
        status,
        serde_json::from_str(http_body(&response)).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_tokens_and_the_call_directory_span_the_replicas() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let (up_a, up_b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let a = Gateway::start(Some(&up_a), |c| clustered(c, &redis, 4)).await;
    let b = Replica::start(&up_b, &redis, 4).await;

    // A single-use token accepted by one replica is refused by the other.
    let once = token(Some("once-1"));
    let first = Carrier::try_connect(&a.url("/twilio"), &[("authorization", &bearer(&once))])
        .await
        .expect("the first use is admitted");
    assert_eq!(upgrade_status(&b.url("/twilio"), &once).await.0, 401);
    drop(first);

    // A cap of 4 admits 4 calls spread over both replicas and refuses a fifth on either.
    // (The call above holds a slot until A has seen its socket close.)
    let mut calls = Vec::new();
    for n in 0..2 {
        let url = a.url("/twilio");
        let carrier = eventually_async(|| async {
            Carrier::try_connect(&url, &[("authorization", &bearer(&token(None)))])
                .await
                .ok()
        })
        .await;
        let mut carrier = carrier;
        carrier.send(twilio_start(&sid(n), json!({}))).await;
        up_a.conn(n as usize).await;
        calls.push(carrier);
    }
    for n in 2..4 {
        calls.push(call(&b.url("/twilio"), n, &up_b, (n - 2) as usize).await);
    }
    for url in [a.url("/twilio"), b.url("/twilio")] {
        let (status, retry_after) = upgrade_status(&url, &token(None)).await;
        assert_eq!(status, 503, "a fifth call on {url}");
        assert_eq!(retry_after, "1");
    }

    // A's admin API lists and shows B's calls.
    let (status, list) = admin_get(a.addr, "/v1/calls").await;
    assert_eq!(status, 200);
    let listed = list["calls"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "{list}");
    let on_b: Vec<_> = listed
        .iter()
        .filter(|c| c["replica_url"] == format!("http://{}", b.addr))
        .collect();
    assert_eq!(on_b.len(), 2, "{list}");
    let (status, shown) = admin_get(a.addr, &format!("/v1/calls/{}", call_sid(2))).await;
    assert_eq!(status, 200);
    assert_eq!(shown["call_sid"], call_sid(2));
    assert_eq!(shown["carrier"], "twilio");
    assert_eq!(admin_get(a.addr, "/v1/calls/CA-nowhere").await.0, 404);

    // A's live feed streams B's call: a transcript line, then the end.
    let mut feed = Carrier::try_connect(
        &a.url(&format!("/v1/calls/{}/events", call_sid(2))),
        &[("authorization", &bearer(ADMIN))],
    )
    .await
    .expect("A serves the feed of B's call");
    let mut client = Carrier::connect(&a.url(&format!("/client?token={ADMIN}"))).await;
    client.send_raw(Message::Text(call_sid(3).into())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    up_b.send(0, json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": "Hello from B."})).await;
    up_b.send(1, json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u2", "transcript": "Second call."})).await;
    let line = next_event(&mut feed).await.expect("a transcript");
    assert_eq!(line["type"], "transcript");
    assert_eq!(line["text"], "Hello from B.");
    let client_line = next_event(&mut client).await.expect("a /client line");
    assert_eq!(
        client_line,
        json!({"call_sid": call_sid(3), "transcript": "Second call.", "is_final": true})
    );
    calls[2].send(stop(&sid(2))).await;
    assert_eq!(calls[2].closed().await.0, 1000);
    let ended = next_event(&mut feed).await.expect("the end");
    assert_eq!(ended["type"], "call_ended");
    assert!(
        next_event(&mut feed).await.is_none(),
        "the feed closes after the end"
    );

    // B's ended call has left the directory and freed its slot, for either replica.
    let addr = a.addr;
    eventually_async(|| async {
        let (_, list) = admin_get(addr, "/v1/calls").await;
        (list["calls"].as_array().map(Vec::len) == Some(3)).then_some(())
    })
    .await;
    assert_eq!(upgrade_status(&a.url("/twilio"), &token(None)).await.0, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_frees_its_slots_within_the_lease_ttl() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let (up_a, up_b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let a = Gateway::start(Some(&up_a), |c| clustered(c, &redis, 2)).await;
    let mut b = Replica::start(&up_b, &redis, 2).await;
    let _calls = [
        call(&b.url("/twilio"), 0, &up_b, 0).await,
        call(&b.url("/twilio"), 1, &up_b, 1).await,
    ];
    assert_eq!(upgrade_status(&a.url("/twilio"), &token(None)).await.0, 503);
    assert_eq!(
        admin_get(a.addr, "/v1/calls").await.1["calls"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    b.kill();
    let killed = Instant::now();
    // Its leases were renewed at most a third of the TTL ago: still counted right after.
    assert_eq!(upgrade_status(&a.url("/twilio"), &token(None)).await.0, 503);
    let url = a.url("/twilio");
    let _freed = eventually_async(|| async {
        Carrier::try_connect(&url, &[("authorization", &bearer(&token(None)))])
            .await
            .ok()
    })
    .await;
    let waited = killed.elapsed();
    assert!(
        waited <= Duration::from_secs(TTL_S) + Duration::from_millis(1500),
        "slots freed after {waited:?}, TTL {TTL_S} s"
    );
    // And its calls leave the directory (renewed in the same step, so they expire with the
    // leases; the new call on A has not started, so it is not listed).
    let addr = a.addr;
    eventually_async(|| async {
        let (_, list) = admin_get(addr, "/v1/calls").await;
        list["calls"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_calls_go_on_and_upgrades_follow_the_policy() {
    let Some(mut redis) = TestRedis::start().await else {
        return;
    };
    let (up_closed, up_local) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let closed = Gateway::start(Some(&up_closed), |c| {
        clustered(c, &redis, 2);
        c.cluster.on_redis_error = OnRedisError::Closed;
    })
    .await;
    let local = Gateway::start(Some(&up_local), |c| clustered(c, &redis, 2)).await;
    let mut on_closed = call(&closed.url("/twilio"), 0, &up_closed, 0).await;
    let mut on_local = call(&local.url("/twilio"), 1, &up_local, 0).await;
    assert_eq!(
        upgrade_status(&closed.url("/twilio"), &token(None)).await.0,
        503
    );
    let before = local.metrics_baseline().await;

    redis.stop();
    // Calls in progress continue: their audio still reaches the model.
    let frame = fixture_frames("caller-booking-8k-mulaw.wav").remove(0);
    for (carrier, n) in [(&mut on_closed, 0), (&mut on_local, 1)] {
        for i in 0..5 {
            carrier.send(media(&sid(n), i, &frame)).await;
        }
    }
    up_closed.wait_appends(0, 1).await;
    up_local.wait_appends(0, 1).await;
    // New upgrades: refused 503 `cluster_unavailable` (closed), admitted on this replica's own
    // caps, counted (local). Readiness is unchanged either way.
    let (status, retry_after) = upgrade_status(&closed.url("/twilio"), &token(None)).await;
    assert_eq!((status, retry_after.as_str()), (503, "1"));
    let fallback = call(&local.url("/twilio"), 2, &up_local, 1).await;
    let fallbacks = local
        .metric_delta(
            &before,
            "callgate_cluster_fallbacks_total",
            &[("policy", "local")],
        )
        .await;
    assert!(fallbacks >= 1.0, "fallbacks counted: {fallbacks}");
    for gw in [&closed, &local] {
        assert!(http_get(gw.addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200"));
    }
    let refused = metric_sum(
        &closed.metrics().await,
        "callgate_upgrades_rejected_total",
        &[("reason", "cluster_unavailable")],
    );
    assert!(refused >= 1.0);

    // Redis back (empty): each replica re-registers its calls and leases; the three live
    // calls count against the cap of 2 again, and every replica lists them.
    redis.resume().await;
    let addr = closed.addr;
    eventually_async(|| async {
        let (status, list) = admin_get(addr, "/v1/calls").await;
        (status == 200 && list["calls"].as_array().map(Vec::len) == Some(3)).then_some(())
    })
    .await;
    assert_eq!(
        metric_sum(&local.metrics().await, "callgate_cluster_redis_up", &[]),
        1.0
    );
    for url in [closed.url("/twilio"), local.url("/twilio")] {
        assert_eq!(upgrade_status(&url, &token(None)).await.0, 503, "{url}");
    }
    drop(fallback);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_rates_and_failed_auth_blocks_span_the_replicas() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let upstream = FakeUpstream::start().await;
    let limited = |c: &mut Config| {
        clustered(c, &redis, 100);
        c.security.upgrades_per_ip_per_second = 1;
        c.security.upgrade_burst_per_ip = 4;
        c.security.failed_auth_per_ip_per_minute = 1;
        c.security.failed_auth_burst = 2;
    };
    let a = Gateway::start(Some(&upstream), limited).await;
    let b = Gateway::start(Some(&upstream), limited).await;
    let (good, bad) = (
        token(None),
        hs256_token(&json!({"iss": "x"}), Some("k1"), "wrong"),
    );

    // One address's upgrade budget (burst 4, one a second) is spent across both replicas.
    assert_eq!(upgrade_status(&a.url("/twilio"), &good).await.0, 101);
    assert_eq!(upgrade_status(&b.url("/twilio"), &good).await.0, 101);
    assert_eq!(upgrade_status(&a.url("/twilio"), &bad).await.0, 401);
    assert_eq!(upgrade_status(&a.url("/twilio"), &good).await.0, 101);
    let (status, retry_after) = upgrade_status(&b.url("/twilio"), &good).await;
    assert_eq!(status, 429, "B refuses the fifth upgrade of the address");
    assert!(!retry_after.is_empty());

    // Failures counted on A block the address on B (quota: 2 failures): a bad token there
    // answers 429 (probation), while a good one still passes (a shared carrier address is
    // throttled, not locked out).
    tokio::time::sleep(Duration::from_secs(4)).await; // the upgrade budget refills
    assert_eq!(upgrade_status(&a.url("/twilio"), &bad).await.0, 401);
    assert_eq!(
        upgrade_status(&a.url("/twilio"), &bad).await.0,
        401,
        "the third failure blocks"
    );
    assert_eq!(upgrade_status(&b.url("/twilio"), &bad).await.0, 429);
    assert_eq!(upgrade_status(&b.url("/twilio"), &good).await.0, 101);
}
