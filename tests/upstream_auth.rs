//! Azure Entra ID tokens expire: a token from a file is read at every upstream connect, so
//! a reconnect (or the next call) an hour later carries the fresh one.

mod common;

use common::*;
use serde_json::json;

fn bearer_of(conn: &std::sync::Mutex<UpstreamConn>) -> Option<String> {
    conn.lock()
        .unwrap()
        .headers
        .iter()
        .find(|(name, _)| name == "authorization")
        .map(|(_, value)| value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_is_read_at_every_connect() {
    let path = std::env::temp_dir().join(format!("callgate-entra-{}", std::process::id()));
    std::fs::write(&path, "entra-token-1\n").unwrap();
    let upstream = FakeUpstream::start().await;
    let file = path.to_string_lossy().into_owned();
    let gw = Gateway::start(Some(&upstream), |c| {
        c.upstream.azure_token_file = file;
        // A static key is not what goes out when a token source is set.
        c.upstream.azure_api_key = callgate_handlers::bridge::Secret::new("static-key");
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    let first = upstream.conn(0).await;
    assert_eq!(bearer_of(&first).as_deref(), Some("Bearer entra-token-1"));
    assert!(!first
        .lock()
        .unwrap()
        .headers
        .iter()
        .any(|(n, _)| n == "api-key"));

    // The platform refreshes the file; the upstream drops the session; the reconnect
    // authenticates with the new token.
    std::fs::write(&path, "entra-token-2\n").unwrap();
    upstream.close(0, 1011).await;
    let second = upstream.conn(1).await;
    assert_eq!(bearer_of(&second).as_deref(), Some("Bearer entra-token-2"));
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    let _ = std::fs::remove_file(&path);
}
