//! Secrets never reach logs or spans: capture everything at TRACE, through exactly the
//! subscriber production installs (its filter, its formatter, its bridge for dependencies'
//! `log` records), during authenticated and refused calls, then grep for every token,
//! signature, key and digit used.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use callgate::config::{AuthKind, RouteConfig};
use callgate_handlers::bridge::Secret;
use callgate_handlers::dialect::Dialect;
use callgate_layers::http::auth::TwilioSignature;
use common::*;
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_signature_in_logs_or_spans() {
    let captured = Captured::default();
    let writer = captured.clone();
    let _telemetry = callgate::telemetry::init_with_writer(
        callgate::telemetry::TelemetryOptions {
            filter: Some("trace".into()),
            ..Default::default()
        },
        move || writer.clone(),
        false,
    );

    let secret = "log-test-secret-log-test-secret!";
    let twilio_token = "twilio-token-for-log-test";
    let upstream = FakeUpstream::start().await;
    let records_path = Mutex::new(String::new());
    let gw = Gateway::start(Some(&upstream), |c| {
        c.security.default_auth = AuthKind::Jwt;
        c.security.jwt.keys = vec![hs256_key("k1", secret)];
        c.security.twilio.auth_token = Secret::new(twilio_token);
        c.security.twilio.public_base_url = "wss://gw.example.com".into();
        let mut signed = RouteConfig::new("/signed", Dialect::Twilio, false);
        signed.auth = Some(AuthKind::TwilioSignature);
        signed.require_call_token = true;
        let mut query = RouteConfig::new("/query", Dialect::Twilio, false);
        query.query_token = true;
        c.routes.extend([signed, query]);
        c.upstream.openai_api_key = Secret::new("sk-upstream-key-for-log-test");
        *records_path.lock().unwrap() = c.records.path.clone();
    })
    .await;
    let gw_records_path = records_path.lock().unwrap().clone();
    let exp = unix_now() + 300;
    let mint = |jti: &str| {
        let claims = json!({"iss": "callgate", "aud": "callgate", "exp": exp, "tenant": "acme", "sub": "log-test", "jti": jti});
        hs256_token(&claims, Some("k1"), secret)
    };
    let header_token = mint("a");
    let query_token = mint("b");
    let start_token = mint("c");
    let signature = TwilioSignature::sign(twilio_token, "wss://gw.example.com/signed");

    let upstream_ref = &upstream;
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let calls = &calls;
    let run_call = |mut carrier: Carrier, params: serde_json::Value| async move {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        carrier.send(twilio_start(SID, params)).await;
        carrier.send(media(SID, 1, "/w==")).await;
        // The caller says a card number, and the model reads it back: PCI mode redacts
        // digit runs in both transcripts, in logs, feed and records alike.
        upstream_ref.wait_appends(n, 1).await;
        upstream_ref.send(n, json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "content_index": 0, "transcript": "my card is 5500 0000 0000 0004"})).await;
        upstream_ref.send(n, json!({"type": "response.output_audio_transcript.delta", "response_id": "r1", "item_id": "a1", "delta": "You said 5500"})).await;
        upstream_ref.send(n, json!({"type": "response.output_audio_transcript.done", "response_id": "r1", "item_id": "a1", "transcript": "You said 5500 0000 0000 0004, expiry 12/29."})).await;
        // A card-number-like DTMF sequence: PCI mode keeps it out of every log line.
        // (Letters and stars, so no timestamp or id can match the sequence by chance.)
        for digit in ["*", "9", "A", "7", "#"] {
            carrier.send(json!({"event": "dtmf", "streamSid": SID, "sequenceNumber": "3", "dtmf": {"track": "inbound_track", "digit": digit}})).await;
        }
        // A carrier field with a line break in it must not forge a log line.
        carrier
            .send(json!({"event": "x\r\n2026-01-01T00:00:00Z  INFO forged line", "streamSid": SID}))
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        carrier.send(stop(SID)).await;
        assert_eq!(carrier.closed().await.0, 1000);
    };
    let bearer = format!("Bearer {header_token}");
    run_call(
        Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &bearer)])
            .await
            .unwrap(),
        json!({}),
    )
    .await;
    let q = format!("/query?token={query_token}");
    run_call(
        Carrier::try_connect(&gw.url(&q), &[]).await.unwrap(),
        json!({}),
    )
    .await;
    let signed = Carrier::try_connect(&gw.url("/signed"), &[("x-twilio-signature", &signature)])
        .await
        .unwrap();
    run_call(signed, json!({"token": start_token})).await;
    // And refusals, which log their reasons.
    let bad = format!("Bearer {header_token}x");
    assert!(
        Carrier::try_connect(&gw.url("/twilio"), &[("authorization", &bad)])
            .await
            .is_err()
    );
    let bad_q = format!("/twilio?token={query_token}");
    assert!(Carrier::try_connect(&gw.url(&bad_q), &[]).await.is_err());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("call started") && logs.contains("upgrade refused"),
        "capture did not work:\n{logs}"
    );
    assert!(
        logs.contains("dtmf sequence sent to the model"),
        "the DTMF path ran"
    );
    assert!(
        logs.contains("tenant=\"acme\"") || logs.contains("tenant=acme"),
        "identity not on the call span"
    );
    for (name, secret) in [
        ("header token", header_token.as_str()),
        ("query token", query_token.as_str()),
        ("start token", start_token.as_str()),
        ("twilio signature", signature.as_str()),
        ("jwt secret", secret),
        ("twilio auth token", twilio_token),
        ("upstream key", "sk-upstream-key-for-log-test"),
        ("dtmf digits", "*9A7"),
        // Not the bare "5500": ephemeral ports (55001, ...) and random hex ids contain it.
        ("card number", "5500 0000"),
        ("card number read back", "said 5500"),
        ("expiry read back", "12/29"),
    ] {
        assert_eq!(
            logs.matches(secret).count(),
            0,
            "{name} leaked into the logs"
        );
    }
    // Positive control: a `log` record (as dependencies write them) reaches the capture ...
    log::trace!(target: "some_dependency", "log bridge control line");
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("log bridge control line"),
        "log records are not captured"
    );
    // ... but tungstenite's, which print every message at trace, do not: production caps
    // them, and the subscriber under test is the real one.
    assert!(
        !logs.contains("Received message"),
        "a dependency's trace record got through"
    );
    // The forged line stayed inside its own event's line.
    assert!(logs.contains("forged line"), "the unknown event was logged");
    assert!(
        !logs.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a carrier's CR/LF started a log line of its own"
    );
    // The record of each call holds the redacted lines only.
    let db = gw_records_path;
    let reader = callgate::records::RecordReader::open(std::path::Path::new(&db)).unwrap();
    let records = reader.list(10).unwrap();
    assert_eq!(records.len(), 3, "three calls recorded");
    for record in &records {
        let texts: Vec<&str> = record.transcript.iter().map(|l| l.text.as_str()).collect();
        assert!(
            texts.contains(&"my card is [redacted]")
                && texts.contains(&"You said [redacted], expiry [redacted]."),
            "{texts:?}"
        );
    }
    // Token signatures alone (the last JWT segment) must not appear either.
    for token in [&header_token, &query_token, &start_token] {
        let sig = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(sig), "a token signature leaked");
    }
}
