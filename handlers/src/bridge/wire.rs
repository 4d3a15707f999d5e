//! OpenAI Realtime wire types, GA and beta (PROTOCOLS.md §7).
//!
//! Client events are built here, as JSON text; server events are parsed into one tolerant
//! struct whose `type` is mapped to [`ServerKind`], accepting both dialects' names.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{RealtimeDialect, SessionSettings, UpstreamAudio};

/// `session.update` for this dialect and audio format.
pub fn session_update(
    dialect: RealtimeDialect,
    audio: UpstreamAudio,
    s: &SessionSettings,
    tools: &[Value],
) -> String {
    let turn_detection = json!({
        "type": "server_vad",
        "threshold": s.vad_threshold,
        "prefix_padding_ms": s.prefix_padding_ms,
        "silence_duration_ms": s.silence_duration_ms,
        "create_response": true,
        "interrupt_response": true,
    });
    let transcription = s
        .transcription_model
        .as_ref()
        .map(|model| match &s.language {
            Some(language) => json!({ "model": model, "language": language }),
            None => json!({ "model": model }),
        });
    let session = match dialect {
        RealtimeDialect::Ga => {
            let format = ga_format(audio);
            json!({
                "type": "realtime",
                "output_modalities": ["audio"],
                "instructions": s.instructions,
                "audio": {
                    "input": {
                        "format": format,
                        "transcription": transcription,
                        "turn_detection": turn_detection,
                    },
                    "output": {"format": format, "voice": s.voice},
                },
            })
        }
        RealtimeDialect::Beta => {
            let format = match audio {
                UpstreamAudio::Pcmu => "g711_ulaw",
                UpstreamAudio::Pcma => "g711_alaw",
                UpstreamAudio::Pcm24k | UpstreamAudio::Pcm16kIn24kOut => "pcm16",
            };
            json!({
                "modalities": ["text", "audio"],
                "instructions": s.instructions,
                "voice": s.voice,
                "input_audio_format": format,
                "output_audio_format": format,
                "input_audio_transcription": transcription,
                "turn_detection": turn_detection,
            })
        }
    };
    let mut session = session;
    if !tools.is_empty() {
        session["tools"] = Value::Array(tools.to_vec());
        session["tool_choice"] = json!("auto");
    }
    json!({"type": "session.update", "event_id": "callgate_session_1", "session": session})
        .to_string()
}

/// The GA `audio.{input,output}.format` object for `audio`.
pub fn ga_format(audio: UpstreamAudio) -> Value {
    match audio {
        UpstreamAudio::Pcmu => json!({"type": "audio/pcmu"}),
        UpstreamAudio::Pcma => json!({"type": "audio/pcma"}),
        UpstreamAudio::Pcm24k | UpstreamAudio::Pcm16kIn24kOut => {
            json!({"type": "audio/pcm", "rate": 24000})
        }
    }
}

/// The audio a GA format type (`audio/pcmu`) or a beta format name (`g711_ulaw`) names.
pub fn audio_named(name: &str) -> Option<UpstreamAudio> {
    match name {
        "audio/pcmu" | "g711_ulaw" => Some(UpstreamAudio::Pcmu),
        "audio/pcma" | "g711_alaw" => Some(UpstreamAudio::Pcma),
        "audio/pcm" | "pcm16" => Some(UpstreamAudio::Pcm24k),
        _ => None,
    }
}

/// `response.create` with the session's settings.
pub const RESPONSE_CREATE: &str = r#"{"type":"response.create"}"#;

/// A response whose first words are `greeting` (the assistant speaks first).
pub fn greeting(greeting: &str) -> String {
    json!({"type": "response.create", "response": {"instructions": format!("Greet the caller by saying exactly: {greeting}")}})
        .to_string()
}

/// A text message added to the conversation; `role` is `user` or `assistant`.
pub fn text_item(dialect: RealtimeDialect, role: &str, text: &str) -> String {
    let part = match (role, dialect) {
        ("user", _) => "input_text",
        (_, RealtimeDialect::Ga) => "output_text",
        (_, RealtimeDialect::Beta) => "text",
    };
    json!({"type": "conversation.item.create", "item": {"type": "message", "role": role, "content": [{"type": part, "text": text}]}})
        .to_string()
}

/// The output of function call `call_id`.
pub fn function_output(call_id: &str, output: &str) -> String {
    json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call_id, "output": output}})
        .to_string()
}

/// Cuts item `item_id`'s audio at `audio_end_ms`: what the caller heard before barging in.
pub fn truncate(item_id: &str, audio_end_ms: u64) -> String {
    json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms})
        .to_string()
}

/// `input_audio_buffer.append` around base64 text that was already checked to be base64
/// (so it needs no JSON escaping). Built by hand: this runs 50 times a second per call.
pub fn append(audio: &str, out: &mut String) {
    wrap(
        out,
        r#"{"type":"input_audio_buffer.append","audio":""#,
        audio,
        "\"}",
    );
}

/// `out` = `head` + `body` + `tail`, in one allocation at most: the caller-audio message of
/// every protocol is a fixed head and tail around base64, written per frame without a
/// JSON serializer.
pub(crate) fn wrap(out: &mut String, head: &str, body: &str, tail: &str) {
    out.clear();
    out.reserve(head.len() + body.len() + tail.len());
    out.push_str(head);
    out.push_str(body);
    out.push_str(tail);
}

/// What the bridge does with a server event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// `session.created`: send `session.update`.
    SessionCreated,
    /// `session.updated`: the session is configured; caller audio may flow.
    SessionUpdated,
    /// A chunk of the model's voice.
    AudioDelta,
    /// The end of one item's audio.
    AudioDone,
    /// The caller started speaking (server VAD): barge-in.
    SpeechStarted,
    /// The caller stopped speaking.
    SpeechStopped,
    /// The model's words for what it said.
    AssistantTranscript,
    /// The caller's words (input transcription).
    CallerTranscript,
    /// Part of the caller's words, as they are transcribed.
    CallerTranscriptDelta,
    /// Part of the model's words, as it speaks.
    AssistantTranscriptDelta,
    /// A response started.
    ResponseCreated,
    /// A response ended (any status).
    ResponseDone,
    /// An output item is complete; a `function_call` item is a tool to run. (Acting on the
    /// item, not on `response.function_call_arguments.done`: the beta dialect leaves `name`
    /// out of that event, and only the item says whether the call completed or was cut off
    /// by a barge-in.)
    OutputItemDone,
    /// An `error` event.
    Error,
    /// Anything else: ignored and counted.
    Other,
}

impl ServerKind {
    /// Maps GA and beta names alike.
    pub fn of(name: &str) -> Self {
        match name {
            "session.created" => Self::SessionCreated,
            "session.updated" => Self::SessionUpdated,
            "response.output_audio.delta" | "response.audio.delta" => Self::AudioDelta,
            "response.output_audio.done" | "response.audio.done" => Self::AudioDone,
            "input_audio_buffer.speech_started" => Self::SpeechStarted,
            "input_audio_buffer.speech_stopped" => Self::SpeechStopped,
            "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
                Self::AssistantTranscript
            }
            "conversation.item.input_audio_transcription.completed" => Self::CallerTranscript,
            "conversation.item.input_audio_transcription.delta" => Self::CallerTranscriptDelta,
            "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
                Self::AssistantTranscriptDelta
            }
            "response.created" => Self::ResponseCreated,
            "response.done" => Self::ResponseDone,
            "response.output_item.done" => Self::OutputItemDone,
            "error" => Self::Error,
            _ => Self::Other,
        }
    }
}

/// One server event, with only the fields the bridge reads.
#[derive(Debug, Deserialize)]
pub struct ServerEvent<'a> {
    /// The event name.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Audio (base64) or transcript delta, borrowed from the message when it has no
    /// escapes (serde's own `Option<Cow<str>>` always copies).
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub delta: Option<Cow<'a, str>>,
    /// The item the event belongs to.
    #[serde(default)]
    pub item_id: Option<String>,
    /// The response the event belongs to.
    #[serde(default)]
    pub response_id: Option<String>,
    /// A finished transcript.
    #[serde(default)]
    pub transcript: Option<String>,
    /// The body of `error`.
    #[serde(default)]
    pub error: Option<ErrorBody>,
    /// The body of `response.created` / `response.done`.
    #[serde(default)]
    pub response: Option<ResponseBody>,
    /// The body of `session.created` / `session.updated`.
    #[serde(default)]
    pub session: Option<Value>,
    /// The item of `response.output_item.done`.
    #[serde(default)]
    pub item: Option<ItemBody>,
}

/// An output item (`response.output_item.done`'s `item`): a message or a function call.
#[derive(Debug, Default, Deserialize)]
pub struct ItemBody {
    /// `message`, `function_call`, ...
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `completed`, or `incomplete` when its response was cancelled or cut short.
    #[serde(default)]
    pub status: Option<String>,
    /// A function call's id.
    #[serde(default)]
    pub call_id: Option<String>,
    /// A function call's name.
    #[serde(default)]
    pub name: Option<String>,
    /// A function call's arguments (JSON text).
    #[serde(default)]
    pub arguments: Option<String>,
}

impl ItemBody {
    /// A function call the model finished: `(call_id, name, arguments)`. `None` for other
    /// items and for calls whose response was cancelled (status other than `completed`).
    pub fn completed_call(self) -> Option<(String, String, String)> {
        if self.kind.as_deref() != Some("function_call") {
            return None;
        }
        if self.status.as_deref().is_some_and(|s| s != "completed") {
            tracing::info!(
                name = self.name.as_deref(),
                status = self.status.as_deref(),
                "function call not completed (its response was cancelled): not run"
            );
            return None;
        }
        Some((
            self.call_id?,
            self.name?,
            self.arguments.unwrap_or_default(),
        ))
    }
}

/// An optional string, borrowed from the input where it can be.
pub(crate) fn borrowed<'de: 'a, 'a, D>(deserializer: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(deserializer)?.map(|b| b.0))
}

/// `error.error`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    /// `invalid_request_error`, `server_error`, ...
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// A machine code, when sent.
    #[serde(default)]
    pub code: Option<String>,
    /// Human text.
    #[serde(default)]
    pub message: Option<String>,
}

impl ErrorBody {
    /// Errors after which the session cannot go on.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "session_expired"
                    | "invalid_api_key"
                    | "beta_api_shape_disabled"
                    | "insufficient_quota"
                    | "model_not_found"
            )
        )
    }

    /// The harmless error of a truncate past the end of an item (PROTOCOLS.md §7.6).
    pub fn is_already_shorter(&self) -> bool {
        self.message
            .as_deref()
            .is_some_and(|m| m.contains("already shorter than"))
    }
}

/// `response` inside `response.created` / `response.done`.
#[derive(Debug, Deserialize)]
pub struct ResponseBody {
    /// `resp_…`.
    #[serde(default)]
    pub id: Option<String>,
}

/// Time left until the session's `expires_at` (Unix seconds; zero when already past), or
/// `None` when the session does not say (absent or 0).
pub fn expires_in(session: &Value) -> Option<std::time::Duration> {
    let expires = session
        .get("expires_at")
        .and_then(Value::as_u64)
        .filter(|&e| e > 0)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Some(std::time::Duration::from_secs(expires.saturating_sub(now)))
}

/// The audio format a `session.updated` reports for output, as our enum (None if absent or
/// unknown).
pub fn session_output_audio(session: &Value) -> Option<UpstreamAudio> {
    let ga = session
        .pointer("/audio/output/format/type")
        .and_then(Value::as_str);
    let beta = session.get("output_audio_format").and_then(Value::as_str);
    audio_named(ga.or(beta)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SessionSettings {
        SessionSettings {
            instructions: "Be brief.".into(),
            ..SessionSettings::default()
        }
    }

    #[test]
    fn ga_session_update_matches_the_reference() {
        let v: Value = serde_json::from_str(&session_update(
            RealtimeDialect::Ga,
            UpstreamAudio::Pcmu,
            &settings(),
            &[],
        ))
        .unwrap();
        assert_eq!(v["type"], "session.update");
        assert_eq!(v["session"]["type"], "realtime");
        assert_eq!(
            v["session"]["audio"]["input"]["format"],
            json!({"type": "audio/pcmu"})
        );
        assert_eq!(
            v["session"]["audio"]["output"]["format"],
            json!({"type": "audio/pcmu"})
        );
        assert_eq!(v["session"]["audio"]["output"]["voice"], "marin");
        assert_eq!(
            v["session"]["audio"]["input"]["turn_detection"]["type"],
            "server_vad"
        );
        assert_eq!(
            v["session"]["audio"]["input"]["transcription"]["model"],
            "gpt-4o-mini-transcribe"
        );
        assert!(v["session"].get("temperature").is_none());
        let pcm: Value = serde_json::from_str(&session_update(
            RealtimeDialect::Ga,
            UpstreamAudio::Pcm24k,
            &settings(),
            &[],
        ))
        .unwrap();
        assert_eq!(
            pcm["session"]["audio"]["input"]["format"],
            json!({"type": "audio/pcm", "rate": 24000})
        );
    }

    #[test]
    fn beta_session_update_uses_beta_names() {
        let v: Value = serde_json::from_str(&session_update(
            RealtimeDialect::Beta,
            UpstreamAudio::Pcmu,
            &settings(),
            &[],
        ))
        .unwrap();
        assert_eq!(v["session"]["input_audio_format"], "g711_ulaw");
        assert_eq!(v["session"]["voice"], "marin");
        assert!(v["session"].get("type").is_none());
    }

    #[test]
    fn append_is_valid_json() {
        let mut out = String::new();
        append("/w==", &mut out);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!({"type": "input_audio_buffer.append", "audio": "/w=="})
        );
    }

    #[test]
    fn both_dialect_names_map() {
        assert_eq!(
            ServerKind::of("response.audio.delta"),
            ServerKind::AudioDelta
        );
        assert_eq!(
            ServerKind::of("response.output_audio.delta"),
            ServerKind::AudioDelta
        );
        assert_eq!(
            ServerKind::of("response.output_audio_transcript.done"),
            ServerKind::AssistantTranscript
        );
        assert_eq!(ServerKind::of("mcp.something.new"), ServerKind::Other);
    }
}
