use super::*;
use crate::bridge::tools::Tools;

fn live(audio: UpstreamAudio) -> Live {
    let settings = SessionSettings {
        instructions: "Be brief.".into(),
        voice: "marin".into(),
        ..SessionSettings::default()
    };
    let tools = Tools::new(Vec::new(), true).declarations();
    Live::with("gpt-live-1", "gpt-5-mini", tools, audio, &settings)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn session_start_carries_the_model_format_voice_tools_and_history() {
    let adapter = live(UpstreamAudio::Pcmu);
    let start = json_of(&adapter.start(std::iter::empty()));
    assert_eq!(start["type"], "session.start");
    let session = &start["session"];
    assert_eq!(session["model"], "gpt-live-1");
    assert_eq!(session["instructions"], "Be brief.");
    assert_eq!(
        session["audio"]["format"],
        json!({"type": "audio/pcmu", "rate": 8000})
    );
    assert_eq!(session["audio"]["output"]["voice"], "marin");
    assert_eq!(session["delegation"]["type"], "responses");
    assert_eq!(session["delegation"]["responses"]["model"], "gpt-5-mini");
    assert_eq!(
        session["delegation"]["responses"]["tools"][0]["name"],
        "end_call"
    );
    assert!(
        session.get("input").is_none(),
        "no history on a first session"
    );
    let history = [
        ("user", "A table for two.".to_owned()),
        ("assistant", "At what time?".to_owned()),
    ];
    let again = json_of(&adapter.start(history.iter()));
    assert_eq!(
        again["session"]["input"],
        json!([
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "A table for two."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "At what time?"}]},
        ])
    );
    let pcm = json_of(&live(UpstreamAudio::Pcm24k).start(std::iter::empty()));
    assert_eq!(
        pcm["session"]["audio"]["format"],
        json!({"type": "audio/pcm", "rate": 24000})
    );
    let alaw = json_of(&live(UpstreamAudio::Pcma).start(std::iter::empty()));
    assert_eq!(alaw["session"]["audio"]["format"]["type"], "audio/pcma");
}

#[test]
fn audio_both_ways() {
    let mut adapter = live(UpstreamAudio::Pcmu);
    let mut out = String::new();
    adapter.append_audio("//8=", &mut out);
    assert_eq!(
        json_of(&out),
        json!({"type": "session.input_audio.append", "audio": "//8="})
    );
    let text = r#"{"type":"session.output_audio.delta","delta":"VVVV"}"#;
    match adapter.decode(text).unwrap().event {
        ModelEvent::Audio {
            delta,
            item_id: None,
            response_id: None,
        } => {
            assert!(matches!(delta, Cow::Borrowed("VVVV")))
        }
        other => panic!("{other:?}"),
    }
    let started = adapter
        .decode(r#"{"type":"session.started","event_id":"e1","session":{"id":"s1","expires_at":1,"model":"gpt-live-1","status":"active"}}"#)
        .unwrap();
    assert!(matches!(
        started.event,
        ModelEvent::SessionReady { session: Some(_) }
    ));
}

#[test]
fn tool_calls_come_from_completed_delegated_items_and_one_response_follows_all_outputs() {
    let mut adapter = live(UpstreamAudio::Pcmu);
    let call = |id: &str, status: &str| {
        json!({"type": "response.event", "event_id": "e", "delegation_id": "d1", "event": {
            "type": "response.output_item.done", "output_index": 0,
            "item": {"type": "function_call", "id": format!("fc_{id}"), "call_id": id, "name": "lookup", "arguments": "{}", "status": status}}})
        .to_string()
    };
    let (a, b) = (call("c1", "completed"), call("c2", "completed"));
    for text in [&a, &b] {
        assert!(matches!(
            adapter.decode(text).unwrap().event,
            ModelEvent::ToolCall { .. }
        ));
    }
    let cut = call("c3", "incomplete");
    assert!(matches!(
        adapter.decode(&cut).unwrap().event,
        ModelEvent::Other(_)
    ));
    let arguments = json!({"type": "response.event", "event": {"type": "response.function_call_arguments.done", "call_id": "c4", "arguments": "{}"}}).to_string();
    assert!(matches!(
        adapter.decode(&arguments).unwrap().event,
        ModelEvent::Other(_)
    ));
    let (item, last) = adapter.tool_output("c1", "{\"ok\":true}");
    assert_eq!(
        json_of(&item),
        json!({"type": "response.item.create", "item": {"type": "function_call_output", "call_id": "c1", "output": "{\"ok\":true}"}})
    );
    assert!(!last, "c2 is still outstanding");
    assert!(adapter.tool_output("c2", "{}").1, "now one response.create");
    assert_eq!(
        json_of(adapter.request_response()),
        json!({"type": "response.create"})
    );
}

#[test]
fn transcript_fragments_become_lines() {
    let mut adapter = live(UpstreamAudio::Pcmu);
    let fragment = |kind: &str, delta: &str, start: u64, end: u64| {
        json!({"type": kind, "event_id": "e", "delta": delta, "start_ms": start, "end_ms": end})
            .to_string()
    };
    let caller = "session.input_transcript.delta";
    let model = "session.output_transcript.delta";
    let texts = [
        fragment(caller, "A table ", 0, 400),
        fragment(caller, "for two.", 400, 900),
        fragment(model, "At what ", 1000, 1300),
        fragment(model, "time?", 1300, 1600),
        fragment(model, "Take your time.", 5000, 5600),
    ];
    let mut lines = Vec::new();
    for text in &texts {
        let decoded = adapter.decode(text).unwrap();
        assert!(matches!(
            decoded.event,
            ModelEvent::Transcript {
                is_final: false,
                ..
            }
        ));
        if let Some(ModelEvent::Transcript {
            role,
            text,
            is_final: true,
            ..
        }) = decoded.before.into_iter().next()
        {
            lines.push((role, text.into_owned()));
        }
    }
    if let Some(ModelEvent::Transcript { role, text, .. }) = adapter.finish_lines() {
        lines.push((role, text.into_owned()));
    }
    assert_eq!(
        lines,
        [
            ("user", "A table for two.".to_owned()),
            ("assistant", "At what time?".to_owned()),
            ("assistant", "Take your time.".to_owned()),
        ]
    );
    assert!(adapter.finish_lines().is_none());
}

#[test]
fn close_and_errors() {
    let mut adapter = live(UpstreamAudio::Pcmu);
    assert_eq!(json_of(adapter.close()), json!({"type": "session.close"}));
    let error = adapter
        .decode(r#"{"type":"error","event_id":"e","error":{"type":"invalid_request_error","code":"unknown_parameter","message":"no","param":"session.x"}}"#)
        .unwrap();
    assert!(matches!(error.event, ModelEvent::Error(_)));
    let typed = json_of(&adapter.user_text("Caller entered digits: 42#"));
    assert_eq!(typed["type"], "response.item.create");
    assert_eq!(
        typed["item"]["content"][0]["text"],
        "Caller entered digits: 42#"
    );
    // The server's answer to the close ends the session, closing the open line first.
    adapter.decode(r#"{"type":"session.output_transcript.delta","event_id":"e","delta":"Bye.","start_ms":0,"end_ms":300}"#).unwrap();
    let closed = adapter
        .decode(r#"{"type":"session.closed","event_id":"e","reason":"close_requested","session":{},"usage":{"seconds":3}}"#)
        .unwrap();
    assert!(matches!(closed.event, ModelEvent::SessionClosed));
    assert!(
        matches!(&closed.before[..], [ModelEvent::Transcript { is_final: true, text, .. }] if text == "Bye.")
    );
    // Bad input: not JSON, or without a type, is an error the core counts and ignores.
    assert!(adapter.decode("not json").is_err());
    assert!(adapter.decode(r#"{"delta":"AAAA"}"#).is_err());
}

#[test]
fn the_greeting_is_asked_for_in_the_first_sessions_instructions_only() {
    let mut adapter = live(UpstreamAudio::Pcmu);
    adapter.greeting = "Welcome to Acme.".into();
    let first = json_of(&adapter.start(std::iter::empty()));
    let instructions = first["session"]["instructions"].as_str().unwrap();
    assert!(instructions.starts_with("Be brief."), "{instructions}");
    assert!(
        instructions.contains("\"Welcome to Acme.\""),
        "{instructions}"
    );
    // A new session after a drop goes on from the conversation: no second greeting.
    let history = [("assistant", "Welcome to Acme.".to_owned())];
    let again = json_of(&adapter.start(history.iter()));
    assert_eq!(again["session"]["instructions"], "Be brief.");
}
