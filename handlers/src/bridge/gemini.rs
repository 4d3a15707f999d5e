//! The Google Gemini Live adapter (BidiGenerateContent over WebSocket; wire types as
//! `google.genai.types` in the `google-genai` 3.3 package defines them, camelCase on the
//! wire).
//!
//! - The client speaks first: `setup` (model, voice, system instruction, tools, input and
//!   output transcription, session resumption with the latest handle, context compression);
//!   `setupComplete` makes it ready.
//! - Audio: `realtimeInput.audio` up, PCM16 at 16 kHz; the model's voice arrives as
//!   `serverContent.modelTurn.parts[].inlineData`, PCM16 at 24 kHz. Several things may come
//!   in one message (audio parts, transcriptions, the end of a turn), so one message may
//!   decode into several events.
//! - `serverContent.interrupted`: the caller spoke over the model (barge-in); there is no
//!   truncate. `turnComplete` ends the model's turn.
//! - `toolCall.functionCalls[]` → `toolResponse.functionResponses[]`; the model goes on by
//!   itself.
//! - `goAway`: the server will close soon; `sessionResumptionUpdate.newHandle` is what a new
//!   connection resumes with (the core rolls over to it, caller audio held meanwhile).
//! - The server may send its JSON in binary frames.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Value};

use super::lines::Lines;
use super::model::{Decoded, ModelEvent};
use super::wire::ErrorBody;
use super::SessionSettings;

/// OpenAI's built-in voices: not Gemini's, so with one of these the server's default voice
/// is used.
const OPENAI_VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "marin", "sage", "shimmer", "verse",
];

/// One call's Gemini Live protocol state.
#[derive(Debug)]
pub struct Gemini {
    /// `setup`, without the resumption handle.
    setup: Value,
    /// The latest handle a new connection resumes with.
    handle: Option<String>,
    /// The model's turn has begun (its first audio) and not yet completed.
    in_turn: bool,
    /// Turns numbered, as response ids for the call core.
    turns: u64,
    lines: Lines,
}

impl Gemini {
    /// The adapter for `model` (`models/…` added when missing) with `tools` (Realtime-style
    /// function declarations).
    pub fn new(model: &str, tools: &[Value], settings: &SessionSettings) -> Self {
        let model = match model.starts_with("models/") {
            true => model.to_owned(),
            false => format!("models/{model}"),
        };
        let mut generation = json!({"responseModalities": ["AUDIO"]});
        if !settings.voice.is_empty() && !OPENAI_VOICES.contains(&settings.voice.as_str()) {
            generation["speechConfig"] =
                json!({"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": settings.voice}}});
        }
        let mut setup = json!({
            "model": model,
            "generationConfig": generation,
            "systemInstruction": {"parts": [{"text": settings.instructions}]},
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "contextWindowCompression": {"slidingWindow": {}},
        });
        if !tools.is_empty() {
            // The declarations are JSON Schema: `parametersJsonSchema` takes them as they are.
            let declarations: Vec<Value> = tools
                .iter()
                .map(|t| json!({"name": t["name"], "description": t["description"], "parametersJsonSchema": t["parameters"]}))
                .collect();
            setup["tools"] = json!([{"functionDeclarations": declarations}]);
        }
        Self {
            setup,
            handle: None,
            in_turn: false,
            turns: 0,
            lines: Lines::default(),
        }
    }

    /// `setup`, resuming the session of the latest handle when there is one.
    pub fn start(&self) -> String {
        let mut setup = self.setup.clone();
        setup["sessionResumption"] = match &self.handle {
            Some(handle) => json!({"handle": handle}),
            None => json!({}),
        };
        json!({"setup": setup}).to_string()
    }

    /// Whether a new connection resumes the session (so it needs no history).
    pub fn resumes(&self) -> bool {
        self.handle.is_some()
    }

    /// Decodes one server message (text or binary frame).
    pub fn decode<'a>(&mut self, text: &'a str) -> Result<Decoded<'a>, serde_json::Error> {
        let message: Message<'a> = serde_json::from_str(text)?;
        let mut decoded = Decoded::one(ModelEvent::Other(Cow::Borrowed("gemini")));
        if message.setup_complete.is_some() {
            decoded.event = ModelEvent::SessionReady { session: None };
        }
        if let Some(update) = message.session_resumption_update {
            if update.resumable != Some(false) {
                if let Some(handle) = update.new_handle.filter(|h| !h.is_empty()) {
                    self.handle = Some(handle);
                }
            }
        }
        if let Some(go_away) = message.go_away {
            decoded.event = ModelEvent::Expiring {
                time_left: go_away.time_left.unwrap_or_default(),
            };
        }
        if let Some(call) = message.tool_call {
            for function in call.function_calls {
                decoded.after.push(ModelEvent::ToolCall {
                    call_id: function.id.unwrap_or_default(),
                    name: function.name.unwrap_or_default(),
                    arguments: function.args.map_or_else(|| "{}".into(), |a| a.to_string()),
                    response_id: None,
                });
            }
        }
        if let Some(error) = message.error {
            decoded.event = ModelEvent::Error(error);
        }
        if let Some(content) = message.server_content {
            self.content(content, &mut decoded);
        }
        Ok(decoded)
    }

    fn content<'a>(&mut self, content: ServerContent<'a>, decoded: &mut Decoded<'a>) {
        if content.interrupted == Some(true) {
            decoded.before.push(ModelEvent::SpeechStarted);
            self.in_turn = false;
        }
        for (role, transcription) in [
            ("user", content.input_transcription),
            ("assistant", content.output_transcription),
        ] {
            let Some(transcription) = transcription else {
                continue;
            };
            let text = transcription.text.unwrap_or_default();
            if let Some(line) = self.lines.fragment(role, &text, None, None) {
                decoded.before.push(line);
            }
            if !text.is_empty() {
                decoded.after.push(ModelEvent::Transcript {
                    role,
                    text: Cow::Owned(text),
                    is_final: false,
                    item_id: None,
                });
            }
            if transcription.finished == Some(true) {
                decoded.after.extend(self.lines.finish());
            }
        }
        let mut audio = content
            .model_turn
            .map(|turn| turn.parts)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|part| part.inline_data)
            .filter(|data| data.mime_type.starts_with("audio/pcm"))
            .map(|data| data.data)
            .peekable();
        if audio.peek().is_some() && !self.in_turn {
            self.in_turn = true;
            self.turns += 1;
            decoded.before.push(ModelEvent::ResponseStarted {
                id: Some(self.turn_id()),
            });
        }
        let response_id = self.in_turn.then(|| self.turn_id());
        if let Some(first) = audio.next() {
            decoded.event = ModelEvent::Audio {
                delta: first,
                item_id: response_id.clone(),
                response_id: response_id.clone(),
            };
            for more in audio {
                decoded.after.push(ModelEvent::Audio {
                    delta: Cow::Owned(more.into_owned()),
                    item_id: response_id.clone(),
                    response_id: response_id.clone(),
                });
            }
        }
        if content.turn_complete == Some(true) && self.in_turn {
            self.in_turn = false;
            decoded.after.push(ModelEvent::AudioDone {
                response_id: response_id.clone(),
            });
            decoded
                .after
                .push(ModelEvent::ResponseDone { id: response_id });
            decoded.after.extend(self.lines.finish());
        }
    }

    fn turn_id(&self) -> String {
        format!("turn_{}", self.turns)
    }

    /// One chunk of caller audio (base64 PCM16 at 16 kHz), written into `out`.
    pub fn append_audio(&self, chunk: &str, out: &mut String) {
        const HEAD: &str =
            r#"{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":""#;
        super::wire::wrap(out, HEAD, chunk, "\"}}}");
    }

    /// Text from the caller (the keypad) or for the model to act on (a greeting to say):
    /// a complete user turn, which the model answers.
    pub fn user_text(&self, text: &str) -> String {
        json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}}).to_string()
    }

    /// A line of history for a new session that could not resume: a turn of context,
    /// not answered.
    pub fn history(&self, role: &str, text: &str) -> String {
        let role = if role == "assistant" { "model" } else { "user" };
        json!({"clientContent": {"turns": [{"role": role, "parts": [{"text": text}]}], "turnComplete": false}}).to_string()
    }

    /// A tool's result for call `id` (`name`): an object as the model reads it.
    pub fn tool_output(&self, id: &str, name: &str, output: &str) -> String {
        let response = match serde_json::from_str::<Value>(output) {
            Ok(value @ Value::Object(_)) => value,
            Ok(other) => json!({"output": other}),
            Err(_) => json!({"output": output}),
        };
        json!({"toolResponse": {"functionResponses": [{"id": id, "name": name, "response": response}]}}).to_string()
    }

    /// The transcript line still open when a session ends.
    pub fn finish_lines(&mut self) -> Option<ModelEvent<'static>> {
        self.lines.finish()
    }
}

/// A server message: the members callgate reads (exactly one is set).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    #[serde(default)]
    setup_complete: Option<Value>,
    #[serde(default, borrow)]
    server_content: Option<ServerContent<'a>>,
    #[serde(default)]
    tool_call: Option<ToolCall>,
    #[serde(default)]
    go_away: Option<GoAway>,
    #[serde(default)]
    session_resumption_update: Option<ResumptionUpdate>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerContent<'a> {
    #[serde(default, borrow)]
    model_turn: Option<Turn<'a>>,
    #[serde(default)]
    turn_complete: Option<bool>,
    #[serde(default)]
    interrupted: Option<bool>,
    #[serde(default)]
    input_transcription: Option<Transcription>,
    #[serde(default)]
    output_transcription: Option<Transcription>,
}

#[derive(Debug, Deserialize)]
struct Turn<'a> {
    #[serde(default, borrow)]
    parts: Vec<Part<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(default, borrow)]
    inline_data: Option<InlineData<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InlineData<'a> {
    #[serde(default)]
    mime_type: String,
    #[serde(borrow)]
    data: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
struct Transcription {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finished: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolCall {
    #[serde(default)]
    function_calls: Vec<FunctionCall>,
}

#[derive(Debug, Deserialize)]
struct FunctionCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoAway {
    #[serde(default)]
    time_left: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResumptionUpdate {
    #[serde(default)]
    new_handle: Option<String>,
    #[serde(default)]
    resumable: Option<bool>,
}

#[cfg(test)]
mod tests;
