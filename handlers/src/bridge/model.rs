//! What a speech-to-speech model says, in the bridge's own terms: the call core (the relay)
//! acts on [`ModelEvent`]s and never on a protocol's wire names. Each protocol decodes its
//! server messages into these; [`decode_realtime`] does it for the OpenAI Realtime API (GA
//! and beta names alike). Audio stays borrowed from the message it arrived in: the relay
//! decodes it straight into its own buffer, with no copy in between.

use std::borrow::Cow;

use serde_json::Value;

use super::wire::{ErrorBody, ServerEvent, ServerKind};

/// One thing the model (or its server) said.
#[derive(Debug)]
pub enum ModelEvent<'a> {
    /// A new session greets us (`session.created`): configure it.
    SessionOpened {
        /// The server's session object (`expires_at`, formats).
        session: Option<Value>,
    },
    /// The session is configured: caller audio may flow.
    SessionReady {
        /// The session as configured.
        session: Option<Value>,
    },
    /// A piece of the model's voice, base64 in the session's output format.
    Audio {
        /// The audio.
        delta: Cow<'a, str>,
        /// The item it belongs to (the unit a barge-in truncates), when the protocol says.
        item_id: Option<String>,
        /// The response it belongs to.
        response_id: Option<String>,
    },
    /// The end of one item's audio.
    AudioDone {
        /// The response it belongs to.
        response_id: Option<String>,
    },
    /// The caller started speaking over the model (its voice activity detection).
    SpeechStarted,
    /// The caller stopped speaking: a turn begins.
    SpeechStopped {
        /// The caller's item.
        item_id: Option<String>,
    },
    /// A response began.
    ResponseStarted {
        /// Its id.
        id: Option<String>,
    },
    /// A response ended (any status).
    ResponseDone {
        /// Its id.
        id: Option<String>,
    },
    /// The model called a tool and the call is complete.
    ToolCall {
        /// The call's id, for the result.
        call_id: String,
        /// The tool.
        name: String,
        /// Its arguments, JSON text.
        arguments: String,
        /// The response it belongs to (a call in a response the caller cut off is not run).
        response_id: Option<String>,
    },
    /// Words of the caller (`user`) or the model (`assistant`).
    Transcript {
        /// `user` or `assistant`.
        role: &'static str,
        /// The words: a fragment, or the whole utterance when `is_final`.
        text: Cow<'a, str>,
        /// A whole utterance.
        is_final: bool,
        /// The item it belongs to.
        item_id: Option<String>,
    },
    /// An `error` event (the session may go on).
    Error(ErrorBody),
    /// Anything the call core has no use for.
    Other(Cow<'a, str>),
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
