use super::*;

fn gemini(voice: &str) -> Gemini {
    let settings = SessionSettings {
        instructions: "Be brief.".into(),
        voice: voice.into(),
        ..SessionSettings::default()
    };
    let tools = vec![
        json!({"type": "function", "name": "lookup", "description": "Looks up", "parameters": {"type": "object", "additionalProperties": false}}),
    ];
    Gemini::new("gemini-3.1-flash-live-preview", &tools, &settings)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn setup_carries_model_voice_instruction_tools_transcription_and_resumption() {
    let adapter = gemini("Kore");
    let setup = json_of(&adapter.start())["setup"].clone();
    assert_eq!(setup["model"], "models/gemini-3.1-flash-live-preview");
    assert_eq!(
        setup["generationConfig"]["responseModalities"],
        json!(["AUDIO"])
    );
    assert_eq!(
        setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]
            ["voiceName"],
        "Kore"
    );
    assert_eq!(setup["systemInstruction"]["parts"][0]["text"], "Be brief.");
    let declaration = &setup["tools"][0]["functionDeclarations"][0];
    assert_eq!(declaration["name"], "lookup");
    assert_eq!(
        declaration["parametersJsonSchema"]["additionalProperties"],
        false
    );
    assert_eq!(setup["inputAudioTranscription"], json!({}));
    assert_eq!(setup["outputAudioTranscription"], json!({}));
    assert_eq!(setup["sessionResumption"], json!({}));
    // An OpenAI voice name means nothing to Gemini: its default voice is used.
    let default_voice = json_of(&gemini("marin").start());
    assert!(default_voice["setup"]["generationConfig"]
        .get("speechConfig")
        .is_none());
}

#[test]
fn a_message_may_say_several_things_in_order() {
    let mut adapter = gemini("Kore");
    assert!(matches!(
        adapter.decode(r#"{"setupComplete":{}}"#).unwrap().event,
        ModelEvent::SessionReady { .. }
    ));
    let text = json!({"serverContent": {"modelTurn": {"parts": [
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AAAA"}},
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "BBBB"}}]},
        "outputTranscription": {"text": "Hello"}}})
    .to_string();
    let decoded = adapter.decode(&text).unwrap();
    assert!(
        matches!(&decoded.before[..], [ModelEvent::ResponseStarted { id: Some(id) }] if id == "turn_1")
    );
    match decoded.event {
        ModelEvent::Audio { delta, item_id, .. } => {
            assert!(matches!(delta, Cow::Borrowed("AAAA")), "borrowed");
            assert_eq!(item_id.as_deref(), Some("turn_1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &decoded.after[0],
        ModelEvent::Transcript {
            role: "assistant",
            is_final: false,
            ..
        }
    ));
    assert!(matches!(&decoded.after[1], ModelEvent::Audio { delta, .. } if delta == "BBBB"));
    let end = json!({"serverContent": {"outputTranscription": {"text": " there."}, "turnComplete": true}}).to_string();
    let done = adapter.decode(&end).unwrap();
    let kinds: Vec<String> = done.after.iter().map(|e| format!("{e:?}")).collect();
    assert!(
        kinds[0].starts_with("Transcript") && kinds[0].contains("is_final: false"),
        "{kinds:?}"
    );
    assert!(kinds[1].starts_with("AudioDone"), "{kinds:?}");
    assert!(
        kinds[2].starts_with("ResponseDone") && kinds[2].contains("turn_1"),
        "{kinds:?}"
    );
    assert!(
        kinds[3].contains("Hello there.") && kinds[3].contains("is_final: true"),
        "{kinds:?}"
    );
}

#[test]
fn interruptions_tools_go_away_and_resumption() {
    let mut adapter = gemini("Kore");
    let audio = json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AAAA"}}]}}}).to_string();
    adapter.decode(&audio).unwrap();
    let interrupted = adapter
        .decode(r#"{"serverContent":{"interrupted":true}}"#)
        .unwrap();
    assert!(matches!(
        &interrupted.before[..],
        [ModelEvent::SpeechStarted]
    ));
    // The next audio is a new turn.
    let next = adapter.decode(&audio).unwrap();
    assert!(
        matches!(&next.before[..], [ModelEvent::ResponseStarted { id: Some(id) }] if id == "turn_2")
    );
    let call = json!({"toolCall": {"functionCalls": [{"id": "f1", "name": "lookup", "args": {"order": "A1"}}, {"id": "f2", "name": "lookup", "args": {}}]}}).to_string();
    let calls = adapter.decode(&call).unwrap();
    assert_eq!(calls.after.len(), 2);
    assert!(
        matches!(&calls.after[0], ModelEvent::ToolCall { call_id, arguments, .. } if call_id == "f1" && arguments == r#"{"order":"A1"}"#)
    );
    assert_eq!(
        json_of(&adapter.tool_output("f1", "lookup", r#"{"status":"shipped"}"#)),
        json!({"toolResponse": {"functionResponses": [{"id": "f1", "name": "lookup", "response": {"status": "shipped"}}]}})
    );
    assert_eq!(
        json_of(&adapter.tool_output("f2", "lookup", "not json"))["toolResponse"]
            ["functionResponses"][0]["response"],
        json!({"output": "not json"})
    );
    assert!(!adapter.resumes());
    adapter
        .decode(r#"{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}"#)
        .unwrap();
    adapter
        .decode(r#"{"sessionResumptionUpdate":{"resumable":false}}"#)
        .unwrap();
    assert!(adapter.resumes());
    assert_eq!(
        json_of(&adapter.start())["setup"]["sessionResumption"],
        json!({"handle": "h1"})
    );
    let away = adapter.decode(r#"{"goAway":{"timeLeft":"9.5s"}}"#).unwrap();
    assert!(matches!(away.event, ModelEvent::Expiring { time_left } if time_left == "9.5s"));
}

#[test]
fn caller_audio_and_text() {
    let adapter = gemini("Kore");
    let mut out = String::new();
    adapter.append_audio("AAAA", &mut out);
    assert_eq!(
        json_of(&out),
        json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": "AAAA"}}})
    );
    assert_eq!(
        json_of(&adapter.user_text("Caller entered digits: 42#")),
        json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "Caller entered digits: 42#"}]}], "turnComplete": true}})
    );
    assert_eq!(
        json_of(&adapter.history("assistant", "Hi."))["clientContent"]["turns"][0]["role"],
        "model"
    );
}

#[test]
fn bad_input_is_an_error_or_says_nothing() {
    let mut adapter = gemini("Kore");
    assert!(adapter.decode("not json").is_err());
    assert!(adapter.decode(r#"{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm"}}]}}}"#).is_err(), "audio without data");
    // An unknown member, or audio in another format, is nothing to act on.
    let unknown = adapter
        .decode(r#"{"usageMetadata":{"totalTokenCount":9}}"#)
        .unwrap();
    assert!(
        matches!(unknown.event, ModelEvent::Other(_))
            && unknown.before.is_empty()
            && unknown.after.is_empty()
    );
    let video = adapter
        .decode(r#"{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]}}}"#)
        .unwrap();
    assert!(matches!(video.event, ModelEvent::Other(_)) && video.before.is_empty());
}
