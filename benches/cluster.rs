//! What cluster mode adds per call: the same gateway (JWT on every route, the embedded
//! loopback upstream) without and with `[cluster]` on a local `redis-server`, measured
//! side by side in one run:
//!
//! - `upgrade`: connect, authenticate, 101, close (the admission stack: with Redis, the
//!   per-IP rate, failed-auth standing, global budget and cap lease are round trips);
//! - `call`: upgrade, `start`, `stop`, the gateway's close frame (adds the directory entry,
//!   the feed's `call_ended` and the releases, which run beside the call);
//! - `single_use`: `upgrade` with a `jti` (one more round trip).
//!
//! Then prints Redis's own count of commands per call (`INFO commandstats`). Needs
//! `redis-server` on the PATH: `cargo bench --bench cluster`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use callgate::config::{AuthKind, Config, JwtKeyConfig};
use callgate_handlers::bridge::Secret;
use callgate_handlers::dialect::messages::CarrierMessages;
use callgate_handlers::dialect::Dialect;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::{SinkExt, StreamExt};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "bench-secret-bench-secret-bench!";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn token(jti: Option<u64>) -> String {
    let mut claims = serde_json::json!({"iss": "callgate", "aud": "callgate", "exp": jsonwebtoken::get_current_timestamp() + 600, "tenant": "bench"});
    if let Some(jti) = jti {
        claims["jti"] = format!("bench-{jti}").into();
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A gateway on a free port (`redis`: in cluster mode), limits out of the way.
fn gateway(rt: &Runtime, redis: Option<&str>) -> String {
    let mut config = Config::load(None, Vec::new()).unwrap();
    config.security.default_auth = AuthKind::Jwt;
    config.security.jwt.keys = vec![JwtKeyConfig {
        kid: "k1".into(),
        algorithm: "HS256".into(),
        secret: Secret::new(SECRET),
        secret_env: String::new(),
        public_key_file: String::new(),
        private_key_file: String::new(),
    }];
    config.security.upgrades_per_ip_per_second = 1_000_000;
    config.security.upgrade_burst_per_ip = 1_000_000;
    config.security.upgrades_per_second = 1_000_000;
    config.security.upgrade_burst = 1_000_000;
    config.records.enabled = false;
    if let Some(url) = redis {
        config.cluster.redis_url = url.to_owned();
    }
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(callgate::run(
        listener,
        config,
        callgate::CancellationToken::new(),
    ));
    format!("ws://{addr}/twilio")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn upgrade(url: &str, token: &str) -> Socket {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Upgrade, start, stop, and the gateway's close frame.
async fn call(url: &str, token: &str, n: u64) {
    let mut ws = upgrade(url, token).await;
    let messages = CarrierMessages::new(Dialect::Twilio, &format!("MZ{n:032}"));
    let start = messages.start().unwrap().to_string();
    ws.send(Message::Text(start.into())).await.unwrap();
    let stop = messages.stop(2).unwrap().to_string();
    ws.send(Message::Text(stop.into())).await.unwrap();
    while let Some(Ok(message)) = ws.next().await {
        if message.is_close() {
            break;
        }
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Commands Redis ran, by name, from `INFO commandstats`.
fn commands(port: u16) -> Vec<(String, u64)> {
    redis_cli(port, &["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
        })
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "config" | "ping"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let port = free_port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on the PATH");
    std::thread::sleep(Duration::from_millis(300));
    let rt = Runtime::new().unwrap();
    let local = gateway(&rt, None);
    let shared = gateway(&rt, Some(&format!("redis://127.0.0.1:{port}")));
    std::thread::sleep(Duration::from_millis(500));
    let plain = token(None);
    let next = AtomicU64::new(0);

    let mut group = c.benchmark_group("cluster");
    group.measurement_time(Duration::from_secs(5));
    for (name, url) in [("local", &local), ("redis", &shared)] {
        group.bench_function(format!("upgrade/{name}"), |b| {
            b.iter(|| rt.block_on(async { drop(upgrade(url, &plain).await) }))
        });
        group.bench_function(format!("single_use/{name}"), |b| {
            b.iter(|| {
                let jti = next.fetch_add(1, Relaxed);
                rt.block_on(async { drop(upgrade(url, &token(Some(jti))).await) })
            })
        });
        group.bench_function(format!("call/{name}"), |b| {
            b.iter(|| rt.block_on(call(url, &plain, next.fetch_add(1, Relaxed))))
        });
    }
    group.finish();

    // Commands per call, counted by Redis: 100 calls (upgrade, start, stop), settled.
    std::thread::sleep(Duration::from_secs(3));
    redis_cli(port, &["CONFIG", "RESETSTAT"]);
    let calls = 100;
    rt.block_on(async {
        for n in 0..calls {
            call(&shared, &plain, 1_000_000 + n).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let counted = commands(port);
    let total: u64 = counted.iter().map(|(_, n)| n).sum();
    println!(
        "\nRedis commands for {calls} calls (upgrade + start + stop), renewals included: {total} ({:.2} per call)",
        total as f64 / calls as f64
    );
    for (name, n) in counted {
        println!("  {name}: {n} ({:.2} per call)", n as f64 / calls as f64);
    }
    let _ = server.kill();
    let _ = server.wait();
}

criterion_group!(benches, bench);
criterion_main!(benches);
