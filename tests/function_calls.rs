//! When a model's function call runs: once, from the completed output item (which carries
//! the name on both dialects), and never when the caller cut its response off.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use callgate_handlers::bridge::RealtimeDialect;
use common::*;
use serde_json::{json, Value};

async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    recording_webhook(json!({"ok": true})).await
}

async fn outputs(upstream: &FakeUpstream) -> Vec<Value> {
    upstream
        .events_of(0, "conversation.item.create")
        .await
        .into_iter()
        .filter(|e| e["item"]["type"] == "function_call_output")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beta_tool_calls_take_their_name_from_the_output_item_and_run_once() {
    let (url, seen) = webhook().await;
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.upstream.dialect = RealtimeDialect::Beta;
        c.tools = vec![webhook_tool("lookup", url, 2000)];
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    // The beta server's arguments event has no `name`; the item that follows does.
    let [mut arguments_done, item_done] =
        function_call_events("r1", "c1", "lookup", "{\"order\":\"A1\"}", "completed");
    arguments_done.as_object_mut().unwrap().remove("name");
    upstream.send(0, arguments_done).await;
    upstream.send(0, item_done).await;
    let sent = loop {
        let sent = outputs(&upstream).await;
        if !sent.is_empty() {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(sent[0]["item"]["call_id"], "c1");
    assert_eq!(seen.lock().unwrap()[0]["arguments"]["order"], "A1");
    // Once: neither event is acted on twice.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(outputs(&upstream).await.len(), 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_call_whose_response_was_cut_off_never_runs() {
    let (url, seen) = webhook().await;
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(Some(&upstream), |c| {
        c.tools = vec![webhook_tool("lookup", url, 2000)]
    })
    .await;
    let mut carrier = Carrier::connect(&gw.url("/twilio")).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;

    // The model speaks (r1), the caller barges in, and only then does r1's call complete.
    upstream
        .send(
            0,
            json!({"type": "response.created", "response": {"id": "r1"}}),
        )
        .await;
    let audio = base64::engine::general_purpose::STANDARD.encode(vec![0x55u8; 1600]);
    upstream.send(0, json!({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "m1", "delta": audio})).await;
    loop {
        if carrier.recv().await["event"] == "media" {
            break;
        }
    }
    upstream
        .send(0, json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": "u1"}))
        .await;
    loop {
        if carrier.recv().await["event"] == "clear" {
            break;
        }
    }
    for event in function_call_events("r1", "c1", "lookup", "{}", "completed") {
        upstream.send(0, event).await;
    }
    // A call the server itself marks incomplete (its response cancelled) does not run either.
    for event in function_call_events("r2", "c2", "lookup", "{}", "incomplete") {
        upstream.send(0, event).await;
    }
    // A completed call of a response that was not interrupted does.
    for event in function_call_events("r3", "c3", "lookup", "{\"n\":3}", "completed") {
        upstream.send(0, event).await;
    }
    let sent = loop {
        let sent = outputs(&upstream).await;
        if !sent.is_empty() {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent_ids: Vec<_> = outputs(&upstream)
        .await
        .iter()
        .map(|o| o["item"]["call_id"].clone())
        .collect();
    assert_eq!(sent_ids, [json!("c3")], "first seen: {sent:?}");
    let hooks = seen.lock().unwrap().clone();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["arguments"]["n"], 3);
    carrier.send(stop(SID)).await;
    assert_eq!(carrier.closed().await.0, 1000);
}
