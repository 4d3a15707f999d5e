//! Transcripts, the live feed (`/v1/calls/{call_sid}/events` and `/client`) and call records
//! in SQLite, including a crash in the middle of a call.

mod common;

use std::time::Duration;

use callgate_handlers::bridge::Secret;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn next_json(ws: &mut Carrier) -> Value {
    next_event(ws).await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feed_and_records_follow_the_call() {
    live_feed_and_records(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feed_and_records_follow_the_call_in_postgres() {
    if let Some(db) = postgres_db() {
        live_feed_and_records(Some(db.url.clone())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_lost_postgres_connection() {
    let Some(db) = postgres_db() else { return };
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| c.records.url = db.url.clone()).await;
    let location = callgate::records::Location::of("", &db.url);
    // The server drops the gateway's connection (a restart, a failover) between two calls.
    for (n, sid) in [
        "MZ00000000000000000000000000000001",
        "MZ00000000000000000000000000000002",
    ]
    .into_iter()
    .enumerate()
    {
        if n == 1 {
            db.cut_connections();
        }
        let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
        carrier.send(twilio_start(sid, json!({}))).await;
        upstream.conn(n).await;
        upstream.send(n, json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": "Hello there."})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        carrier.send(stop(sid)).await;
        assert_eq!(carrier.closed().await.0, 1000);
    }
    // The record after the cut was written on a new connection: row, line and outcome.
    let call_sid = "CA00000000000000000000000000000002".to_owned();
    let mut record = None;
    for _ in 0..100 {
        record = read_record(location.clone(), call_sid.clone()).await;
        if record.as_ref().is_some_and(|r| r.outcome == "completed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = record.expect("the second call's record");
    assert_eq!(record.outcome, "completed");
    assert_eq!(record.transcript.len(), 1);
}

/// A call with transcripts and DTMF: the live feeds, then the record in SQLite (`None`) or
/// in the PostgreSQL database at `postgres`.
async fn live_feed_and_records(postgres: Option<String>) {
    let upstream = FakeUpstream::start().await;
    let mut db = String::new();
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.admin_token = Secret::new("feed-token");
        db = c.records.path.clone();
        c.records.url = postgres.clone().unwrap_or_default();
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    let call_sid = format!("CA{}", &SID[2..]);
    // Subscribers: the JSON feed (header token) and the original /client protocol (?token=).
    assert_eq!(
        Carrier::try_connect(&gw.url(&format!("/v1/calls/{call_sid}/events")), &[])
            .await
            .err()
            .unwrap()
            .0,
        401
    );
    let mut feed = Carrier::try_connect(
        &gw.url(&format!("/v1/calls/{call_sid}/events")),
        &[("authorization", "Bearer feed-token")],
    )
    .await
    .unwrap();
    let mut client = Carrier::connect(&gw.url("/client?token=feed-token")).await;
    client
        .send_raw(Message::Text(call_sid.clone().into()))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    upstream.send(0, json!({"type": "conversation.item.input_audio_transcription.delta", "item_id": "u1", "delta": "I'd like"})).await;
    upstream.send(0, json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": "I'd like a table."})).await;
    upstream.send(0, json!({"type": "response.output_audio_transcript.done", "response_id": "r1", "item_id": "a1", "transcript": "For how many?"})).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    for d in ["4", "2", "#"] {
        carrier.send(json!({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": d}})).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);

    let mut events = Vec::new();
    loop {
        let event = next_json(&mut feed).await;
        if event.is_null() {
            break;
        }
        events.push(event);
    }
    let kinds: Vec<(String, bool)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["is_final"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("transcript".to_owned(), false),
            ("transcript".to_owned(), true),
            ("transcript".to_owned(), true),
            ("dtmf".to_owned(), false),
            ("transcript".to_owned(), true),
            ("call_ended".to_owned(), false),
        ],
        "{events:#?}"
    );
    assert_eq!(events[1]["role"], "user");
    assert_eq!(events[2]["role"], "assistant");
    assert_eq!(
        events[3]["digits"], "[redacted]",
        "PCI mode keeps digits out of the feed"
    );
    assert_eq!(events[5]["close_code"], 1000);

    let mut lines = Vec::new();
    loop {
        let m = next_json(&mut client).await;
        if m.is_null() {
            break;
        }
        lines.push(m);
    }
    assert_eq!(
        lines[0],
        json!({"call_sid": call_sid, "transcript": "I'd like", "is_final": false})
    );
    assert_eq!(
        lines[1],
        json!({"call_sid": call_sid, "transcript": "I'd like a table.", "is_final": true})
    );
    assert_eq!(lines[2]["transcript"], "For how many?");

    // The record: transcript in order, digits redacted, the outcome.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if postgres.is_none() {
        // Transcripts are private: the database and its WAL are the owner's alone.
        for file in [db.clone(), format!("{db}-wal")] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file} is {mode:o}");
        }
    }
    let location = callgate::records::Location::of(&db, postgres.as_deref().unwrap_or(""));
    let record = read_record(location, call_sid.clone())
        .await
        .expect("a record");
    assert_eq!(record.outcome, "completed");
    assert_eq!(record.close_code, 1000);
    assert_eq!(record.carrier, "twilio");
    let texts: Vec<(&str, &str)> = record
        .transcript
        .iter()
        .map(|l| (l.role.as_str(), l.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            ("user", "I'd like a table."),
            ("assistant", "For how many?"),
            ("user", "[DTMF [redacted]]")
        ]
    );
    assert_eq!(record.dtmf, 3);
    assert!(!format!("{record:?}").contains("42#"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_call_keeps_the_transcript_so_far() {
    crash_mid_call(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_call_keeps_the_transcript_so_far_in_postgres() {
    if let Some(db) = postgres_db() {
        crash_mid_call(Some(db.url.clone())).await;
    }
}

/// SIGKILL mid-call, restart: the record holds every line said, in SQLite (`None`) or in
/// the PostgreSQL database at `postgres`, and `callgate calls show` prints it.
async fn crash_mid_call(postgres: Option<String>) {
    use std::process::{Command, Stdio};
    let upstream = FakeUpstream::start().await;
    let db = std::env::temp_dir().join(format!(
        "callgate-crash-{}-{}.db",
        std::process::id(),
        postgres.is_some()
    ));
    let _ = std::fs::remove_file(&db);
    let location = callgate::records::Location::of(
        &db.display().to_string(),
        postgres.as_deref().unwrap_or(""),
    );
    let store_env = match &postgres {
        Some(url) => ("CALLGATE_RECORDS__URL", url.clone()),
        None => ("CALLGATE_RECORDS__PATH", db.display().to_string()),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_callgate"))
            .env("CALLGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("CALLGATE_UPSTREAM_URL", &upstream.url)
            .env(store_env.0, &store_env.1)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = start();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut carrier = Carrier::connect(&format!("ws://{addr}/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    upstream.send(0, json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": "My account number is on the letter."})).await;
    upstream.send(0, json!({"type": "response.output_audio_transcript.done", "response_id": "r1", "item_id": "a1", "transcript": "Please read it to me."})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Crash: SIGKILL, no chance to flush anything.
    child.kill().unwrap();
    child.wait().unwrap();
    // After a restart the database holds what was said.
    let mut restarted = start();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let record = read_record(location, format!("CA{}", &SID[2..]))
        .await
        .expect("the call's row");
    let texts: Vec<&str> = record.transcript.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "My account number is on the letter.",
            "Please read it to me."
        ]
    );
    assert_eq!(record.outcome, "in progress or interrupted");
    let output = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .env(store_env.0, &store_env.1)
        .args(["calls", "show", &format!("CA{}", &SID[2..])])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("Please read it to me."));
    let _ = restarted.kill();
    let _ = restarted.wait();
    let _ = std::fs::remove_file(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_records_are_posted_to_the_webhook_with_retries() {
    use axum::routing::post;
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let received: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let (h, r) = (hits.clone(), received.clone());
    let app = axum::Router::new().route(
        "/records",
        post(move |body: axum::Json<Value>| {
            let (h, r) = (h.clone(), r.clone());
            async move {
                // The first delivery fails: the gateway must retry.
                if h.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                r.lock().unwrap().push(body.0);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.records.webhook_url = format!("http://{hook}/records")
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    upstream.send(0, json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": "Hello there."})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
    eventually(|| (!received.lock().unwrap().is_empty()).then_some(())).await;
    let record = received.lock().unwrap()[0].clone();
    assert_eq!(record["stream_sid"], SID);
    assert_eq!(record["outcome"], "completed");
    assert_eq!(record["transcript"][0]["text"], "Hello there.");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one failure, one retry"
    );
}
