//! The OpenAI Realtime API adapter (GA and beta dialects, OpenAI and Azure): the protocol's
//! side of a session. It decodes server messages into [`ModelEvent`]s and writes what the
//! call core asks for (configure, caller audio, what was heard, text, tool results,
//! responses) in this protocol's words; the core (`task/`) never names a wire event.

use std::borrow::Cow;

use super::model::ModelEvent;
use super::wire::{self, ServerEvent, ServerKind};
use super::{BridgeConfig, RealtimeDialect, SessionSettings, UpstreamAudio};

/// One call's Realtime protocol state: its dialect and its `session.update`.
#[derive(Debug)]
pub struct Realtime {
    dialect: RealtimeDialect,
    session_update: String,
}

impl Realtime {
    /// The adapter for a call with `settings` and `audio` on `config`'s upstream.
    pub fn new(config: &BridgeConfig, audio: UpstreamAudio, settings: &SessionSettings) -> Self {
        Self {
            dialect: config.dialect,
            session_update: wire::session_update(
                config.dialect,
                audio,
                settings,
                &config.tools.declarations(),
            ),
        }
    }

    /// Decodes one server message.
    pub fn decode<'a>(&self, text: &'a str) -> Result<ModelEvent<'a>, serde_json::Error> {
        decode_realtime(text)
    }

    /// The call's `session.update` (sent when the server greets a session).
    pub fn configure(&self) -> &str {
        &self.session_update
    }

    /// One chunk of caller audio (base64), written into `out`.
    pub fn append_audio(&self, chunk: &str, out: &mut String) {
        wire::append(chunk, out);
    }

    /// Tells the model the caller heard `heard_ms` of item `item` (barge-in).
    pub fn truncate(&self, item: &str, heard_ms: u64) -> String {
        wire::truncate(item, heard_ms)
    }

    /// A line of the conversation as a text item of `role` (`user` text the caller typed
    /// on the keypad, or history given to a new session).
    pub fn text(&self, role: &str, text: &str) -> String {
        wire::text_item(self.dialect, role, text)
    }

    /// Asks the model to say `greeting` first.
    pub fn greeting(&self, greeting: &str) -> String {
        wire::greeting(greeting)
    }

    /// A tool's result for call `call_id`.
    pub fn tool_output(&self, call_id: &str, output: &str) -> String {
        wire::function_output(call_id, output)
    }

    /// Asks for a response.
    pub fn request_response(&self) -> &'static str {
        wire::RESPONSE_CREATE
    }
}

/// Decodes one Realtime server message (`Err`: not JSON of the expected shape).
pub fn decode_realtime(text: &str) -> Result<ModelEvent<'_>, serde_json::Error> {
    let event: ServerEvent<'_> = serde_json::from_str(text)?;
    Ok(match ServerKind::of(&event.kind) {
        ServerKind::SessionCreated => ModelEvent::SessionOpened {
            session: event.session,
        },
        ServerKind::SessionUpdated => ModelEvent::SessionReady {
            session: event.session,
        },
        ServerKind::AudioDelta => match event.delta {
            Some(delta) => ModelEvent::Audio {
                delta,
                item_id: event.item_id,
                response_id: event.response_id,
            },
            None => ModelEvent::Other(event.kind),
        },
        ServerKind::AudioDone => ModelEvent::AudioDone {
            response_id: event.response_id,
        },
        ServerKind::SpeechStarted => ModelEvent::SpeechStarted,
        ServerKind::SpeechStopped => ModelEvent::SpeechStopped {
            item_id: event.item_id,
        },
        ServerKind::ResponseCreated => ModelEvent::ResponseStarted {
            id: event.response.and_then(|r| r.id),
        },
        ServerKind::ResponseDone => ModelEvent::ResponseDone {
            id: event.response.and_then(|r| r.id),
        },
        ServerKind::OutputItemDone => {
            match event.item.and_then(super::wire::ItemBody::completed_call) {
                Some((call_id, name, arguments)) => ModelEvent::ToolCall {
                    call_id,
                    name,
                    arguments,
                    response_id: event.response_id,
                },
                None => ModelEvent::Other(event.kind),
            }
        }
        ServerKind::CallerTranscriptDelta => transcript("user", false, event.delta, event.item_id),
        ServerKind::AssistantTranscriptDelta => {
            transcript("assistant", false, event.delta, event.item_id)
        }
        ServerKind::CallerTranscript => transcript(
            "user",
            true,
            event.transcript.map(Cow::Owned),
            event.item_id,
        ),
        ServerKind::AssistantTranscript => transcript(
            "assistant",
            true,
            event.transcript.map(Cow::Owned),
            event.item_id,
        ),
        ServerKind::Error => ModelEvent::Error(event.error.unwrap_or_default()),
        ServerKind::Other => ModelEvent::Other(event.kind),
    })
}

/// Words of `role`, or nothing to act on when the event carried none.
fn transcript<'a>(
    role: &'static str,
    is_final: bool,
    text: Option<Cow<'a, str>>,
    item_id: Option<String>,
) -> ModelEvent<'a> {
    match text {
        Some(text) => ModelEvent::Transcript {
            role,
            text,
            is_final,
            item_id,
        },
        None => ModelEvent::Other(Cow::Borrowed("transcript without text")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(value: serde_json::Value) -> String {
        format!("{:?}", decode_realtime(&value.to_string()).unwrap())
    }

    #[test]
    fn ga_and_beta_names_decode_alike() {
        for kind in ["response.output_audio.delta", "response.audio.delta"] {
            let text = serde_json::json!({"type": kind, "delta": "AAAA", "item_id": "i1", "response_id": "r1"}).to_string();
            match decode_realtime(&text).unwrap() {
                ModelEvent::Audio {
                    delta,
                    item_id,
                    response_id,
                } => {
                    assert!(
                        matches!(delta, Cow::Borrowed("AAAA")),
                        "borrowed, not copied"
                    );
                    assert_eq!(
                        (item_id.as_deref(), response_id.as_deref()),
                        (Some("i1"), Some("r1"))
                    );
                }
                other => panic!("{kind}: {other:?}"),
            }
        }
        for kind in [
            "response.output_audio_transcript.done",
            "response.audio_transcript.done",
        ] {
            let event =
                decode(serde_json::json!({"type": kind, "transcript": "Hello.", "item_id": "a1"}));
            assert!(
                event.contains("role: \"assistant\"")
                    && event.contains("is_final: true")
                    && event.contains("Hello."),
                "{event}"
            );
        }
    }

    #[test]
    fn the_call_core_events() {
        let event =
            decode(serde_json::json!({"type": "session.created", "session": {"expires_at": 1}}));
        assert!(event.starts_with("SessionOpened"), "{event}");
        assert!(decode(serde_json::json!({"type": "session.updated"})).starts_with("SessionReady"));
        assert!(
            decode(serde_json::json!({"type": "input_audio_buffer.speech_started"}))
                .starts_with("SpeechStarted")
        );
        let started =
            decode(serde_json::json!({"type": "response.created", "response": {"id": "r9"}}));
        assert!(
            started.contains("ResponseStarted") && started.contains("r9"),
            "{started}"
        );
        let caller = decode(
            serde_json::json!({"type": "conversation.item.input_audio_transcription.delta", "delta": "I'd"}),
        );
        assert!(
            caller.contains("role: \"user\"") && caller.contains("is_final: false"),
            "{caller}"
        );
        let error = decode(
            serde_json::json!({"type": "error", "error": {"type": "server_error", "code": "x"}}),
        );
        assert!(error.starts_with("Error"), "{error}");
        assert!(decode(serde_json::json!({"type": "rate_limits.updated"})).starts_with("Other"));
        assert!(decode_realtime("not json").is_err());
    }

    #[test]
    fn only_completed_function_calls_are_tool_calls() {
        let call = |status: &str| {
            serde_json::json!({"type": "response.output_item.done", "response_id": "r1",
                "item": {"type": "function_call", "status": status, "call_id": "c1", "name": "lookup", "arguments": "{}"}})
        };
        let done = decode(call("completed"));
        assert!(
            done.starts_with("ToolCall") && done.contains("lookup") && done.contains("r1"),
            "{done}"
        );
        assert!(decode(call("incomplete")).starts_with("Other"));
        let message = decode(
            serde_json::json!({"type": "response.output_item.done", "item": {"type": "message", "status": "completed"}}),
        );
        assert!(message.starts_with("Other"), "{message}");
        // The arguments event alone (no name on beta) is not a call.
        let arguments = decode(
            serde_json::json!({"type": "response.function_call_arguments.done", "call_id": "c1", "arguments": "{}"}),
        );
        assert!(arguments.starts_with("Other"), "{arguments}");
    }
}
