//! The OpenAI GPT-Live adapter (`/v1/live/sessions`; wire types as `openai.types.live` in
//! the `openai` 3.54 package defines them).
//!
//! - The client speaks first: `session.start` (model, instructions, audio format and voice,
//!   the tools as a Responses delegation, and the conversation so far as `input` when this
//!   is not the call's first session); `session.started` makes it ready.
//! - Audio: `session.input_audio.append` up, `session.output_audio.delta` down, in the
//!   session's format (G.711 at 8 kHz passes through; PCM carriers use 24 kHz PCM). There
//!   are no item ids, no "audio done", no speech-started and no truncate: the model owns
//!   turn-taking and stops talking by itself.
//! - Tools exist only through delegation: a call is complete in the nested
//!   `response.output_item.done` of a `response.event`; each is answered with
//!   `response.item.create` (`function_call_output`), then, once none is outstanding, one
//!   `response.create`.
//! - Transcripts are timed fragments with no final event: [`Lines`] groups them into lines
//!   (a line ends when the other side speaks or after a pause).
//! - `session.close`, then the server's `session.closed`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Value};

use super::lines::Lines;
use super::model::{Decoded, ModelEvent};
use super::wire::ErrorBody;
use super::{BridgeConfig, SessionSettings, UpstreamAudio};

/// One call's GPT-Live protocol state.
#[derive(Debug)]
pub struct Live {
    /// `session.start`'s `session`, without `input`.
    session: Value,
    /// What the assistant says first ("" = nothing): asked for in the first session's
    /// instructions (the protocol has no message that makes the model speak).
    greeting: String,
    /// Tool calls not answered yet (`response.create` waits for all of them).
    outstanding: Vec<String>,
    lines: Lines,
}

impl Live {
    /// The adapter for a call with `settings` and `audio` on `config`'s upstream.
    pub fn new(
        config: &BridgeConfig,
        audio: UpstreamAudio,
        settings: &SessionSettings,
        greeting: &str,
    ) -> Self {
        let mut live = Self::with(
            &config.model,
            &config.delegation_model,
            config.tools.declarations(),
            audio,
            settings,
        );
        live.greeting = greeting.to_owned();
        live
    }

    /// The adapter for `model`, its tools run by `delegation_model`.
    pub fn with(
        model: &str,
        delegation_model: &str,
        tools: Vec<Value>,
        audio: UpstreamAudio,
        settings: &SessionSettings,
    ) -> Self {
        let format = match audio {
            UpstreamAudio::Pcmu => json!({"type": "audio/pcmu", "rate": 8000}),
            UpstreamAudio::Pcma => json!({"type": "audio/pcma", "rate": 8000}),
            UpstreamAudio::Pcm24k | UpstreamAudio::Pcm16kIn24kOut => {
                json!({"type": "audio/pcm", "rate": 24000})
            }
        };
        let mut session = json!({
            "model": model,
            "instructions": settings.instructions,
            "audio": {"format": format, "output": {"voice": settings.voice}},
        });
        if !tools.is_empty() {
            session["delegation"] = json!({
                "type": "responses",
                "responses": {"model": delegation_model, "tools": tools},
            });
        }
        Self {
            session,
            greeting: String::new(),
            outstanding: Vec::new(),
            lines: Lines::default(),
        }
    }

    /// `session.start`, with the conversation so far (oldest first) as its `input`.
    pub fn start<'a>(&self, history: impl Iterator<Item = &'a (&'static str, String)>) -> String {
        let mut session = self.session.clone();
        let input: Vec<Value> = history
            .map(|(role, text)| match *role {
                "assistant" => json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}),
                _ => json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}),
            })
            .collect();
        if !input.is_empty() {
            session["input"] = Value::Array(input);
        } else if !self.greeting.is_empty() {
            // The call's first session: the greeting, as an instruction (a new session after
            // a drop goes on from the conversation instead).
            let instructions = session["instructions"].as_str().unwrap_or_default();
            session["instructions"] = json!(format!(
                "{instructions}\n\nThe call has just connected: speak first, greeting the caller with: \"{}\"",
                self.greeting
            ));
        }
        json!({"type": "session.start", "session": session}).to_string()
    }

    /// Decodes one server message.
    pub fn decode<'a>(&mut self, text: &'a str) -> Result<Decoded<'a>, serde_json::Error> {
        let message: Message<'a> = serde_json::from_str(text)?;
        let mut closed_line = None;
        let event = match &*message.kind {
            "session.started" => ModelEvent::SessionReady {
                session: message.session,
            },
            "session.output_audio.delta" => match message.delta {
                Some(delta) => ModelEvent::Audio {
                    delta,
                    item_id: None,
                    response_id: None,
                },
                None => ModelEvent::Other(message.kind),
            },
            kind @ ("session.input_transcript.delta" | "session.output_transcript.delta") => {
                let role = match kind {
                    "session.input_transcript.delta" => "user",
                    _ => "assistant",
                };
                let text = message.delta.unwrap_or_default();
                closed_line = self
                    .lines
                    .fragment(role, &text, message.start_ms, message.end_ms);
                ModelEvent::Transcript {
                    role,
                    text,
                    is_final: false,
                    item_id: None,
                }
            }
            "response.event" => match message.event.and_then(Nested::completed_call) {
                Some((call_id, name, arguments)) => {
                    self.outstanding.push(call_id.clone());
                    ModelEvent::ToolCall {
                        call_id,
                        name,
                        arguments,
                        response_id: None,
                    }
                }
                None => ModelEvent::Other(message.kind),
            },
            "session.closed" => {
                closed_line = self.lines.finish();
                ModelEvent::SessionClosed
            }
            "error" => ModelEvent::Error(message.error.unwrap_or_default()),
            _ => ModelEvent::Other(message.kind),
        };
        Ok(Decoded {
            before: closed_line.into_iter().collect(),
            event,
            after: Vec::new(),
        })
    }

    /// One chunk of caller audio (base64), written into `out`.
    pub fn append_audio(&self, chunk: &str, out: &mut String) {
        super::wire::wrap(
            out,
            r#"{"type":"session.input_audio.append","audio":""#,
            chunk,
            "\"}",
        );
    }

    /// Text the caller typed (the keypad), for the delegated backend: a user message. A
    /// `response.create` must follow ([`Live::request_response`]).
    pub fn user_text(&self, text: &str) -> String {
        json!({"type": "response.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}).to_string()
    }

    /// A tool's result for `call_id`; true when it was the last one outstanding (then ask
    /// for one response).
    pub fn tool_output(&mut self, call_id: &str, output: &str) -> (String, bool) {
        self.outstanding.retain(|id| id != call_id);
        let item = json!({"type": "response.item.create", "item": {"type": "function_call_output", "call_id": call_id, "output": output}});
        (item.to_string(), self.outstanding.is_empty())
    }

    /// Asks the delegated backend to continue.
    pub fn request_response(&self) -> &'static str {
        r#"{"type":"response.create"}"#
    }

    /// Asks the server to end the session (it answers `session.closed`).
    pub fn close(&self) -> &'static str {
        r#"{"type":"session.close"}"#
    }

    /// The line being spoken when the session ends.
    pub fn finish_lines(&mut self) -> Option<ModelEvent<'static>> {
        self.lines.finish()
    }
}

/// A GPT-Live server message: the fields callgate reads.
#[derive(Debug, Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "super::wire::borrowed")]
    delta: Option<Cow<'a, str>>,
    #[serde(default)]
    start_ms: Option<u64>,
    #[serde(default)]
    end_ms: Option<u64>,
    #[serde(default)]
    session: Option<Value>,
    #[serde(default)]
    event: Option<Nested>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

/// The nested Responses event of `response.event`.
#[derive(Debug, Deserialize)]
struct Nested {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    item: Option<super::wire::ItemBody>,
}

impl Nested {
    fn completed_call(self) -> Option<(String, String, String)> {
        (self.kind == "response.output_item.done")
            .then_some(self.item)?
            .and_then(super::wire::ItemBody::completed_call)
    }
}

#[cfg(test)]
mod tests;
