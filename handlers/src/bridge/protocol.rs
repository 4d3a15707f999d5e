//! The adapter of the call's provider, chosen per call (`upstream.provider`): the call core
//! asks it for every message it sends and hands it every message it receives. Where a
//! protocol lacks something (GPT-Live: truncate, greeting, history after start), the
//! adapter says so with `None` and the core does without.

use super::gemini::Gemini;
use super::live::Live;
use super::model::{Decoded, ModelEvent};
use super::realtime::Realtime;
use super::{BridgeConfig, Provider, SessionSettings, UpstreamAudio};

/// One call's protocol adapter.
#[derive(Debug)]
pub enum Protocol {
    /// The OpenAI Realtime API.
    Realtime(Realtime),
    /// OpenAI GPT-Live.
    Live(Live),
    /// Google Gemini Live.
    Gemini(Gemini),
}

impl Protocol {
    /// The adapter of `config.provider` for a call with `settings`, `audio` and `greeting`.
    pub fn for_call(
        config: &BridgeConfig,
        audio: UpstreamAudio,
        settings: &SessionSettings,
        greeting: &str,
    ) -> Self {
        match config.provider {
            Provider::OpenaiRealtime => Self::Realtime(Realtime::new(config, audio, settings)),
            Provider::OpenaiLive => Self::Live(Live::new(config, audio, settings, greeting)),
            Provider::GeminiLive => Self::Gemini(Gemini::new(
                &config.model,
                &config.tools.declarations(),
                settings,
            )),
        }
    }

    /// Decodes one server message.
    pub fn decode<'a>(&mut self, text: &'a str) -> Result<Decoded<'a>, serde_json::Error> {
        match self {
            Self::Realtime(realtime) => Ok(Decoded::one(realtime.decode(text)?)),
            Self::Live(live) => live.decode(text),
            Self::Gemini(gemini) => gemini.decode(text),
        }
    }

    /// What to send as soon as the socket is open (GPT-Live's `session.start`, with the
    /// conversation so far); the Realtime API waits for the server's greeting instead.
    pub fn opening<'a>(
        &self,
        history: impl Iterator<Item = &'a (&'static str, String)>,
    ) -> Option<String> {
        match self {
            Self::Realtime(_) => None,
            Self::Live(live) => Some(live.start(history)),
            Self::Gemini(gemini) => Some(gemini.start()),
        }
    }

    /// The configuration sent when the server greets a session (Realtime `session.update`).
    pub fn configure(&self) -> Option<&str> {
        match self {
            Self::Realtime(realtime) => Some(realtime.configure()),
            Self::Live(_) | Self::Gemini(_) => None,
        }
    }

    /// One chunk of caller audio (base64), written into `out`.
    pub fn append_audio(&self, chunk: &str, out: &mut String) {
        match self {
            Self::Realtime(realtime) => realtime.append_audio(chunk, out),
            Self::Live(live) => live.append_audio(chunk, out),
            Self::Gemini(gemini) => gemini.append_audio(chunk, out),
        }
    }

    /// Tells the model what the caller heard of `item` (none where the protocol cannot).
    pub fn truncate(&self, item: &str, heard_ms: u64) -> Option<String> {
        match self {
            Self::Realtime(realtime) => Some(realtime.truncate(item, heard_ms)),
            Self::Live(_) | Self::Gemini(_) => None,
        }
    }

    /// Text the caller typed on the keypad.
    pub fn user_text(&self, text: &str) -> String {
        match self {
            Self::Realtime(realtime) => realtime.text("user", text),
            Self::Live(live) => live.user_text(text),
            Self::Gemini(gemini) => gemini.user_text(text),
        }
    }

    /// A line of history for a new session, when the protocol takes it after the start
    /// (GPT-Live takes it in `session.start` only: [`Protocol::opening`]; a resumed Gemini
    /// session has it already).
    pub fn history_text(&self, role: &str, text: &str) -> Option<String> {
        match self {
            Self::Realtime(realtime) => Some(realtime.text(role, text)),
            Self::Live(_) => None,
            Self::Gemini(gemini) if gemini.resumes() => None,
            Self::Gemini(gemini) => Some(gemini.history(role, text)),
        }
    }

    /// Asks the model to say `greeting` first, as a message once the session is ready
    /// (GPT-Live has none: its adapter asks in the first session's instructions).
    pub fn greeting(&self, greeting: &str) -> Option<String> {
        match self {
            Self::Realtime(realtime) => Some(realtime.greeting(greeting)),
            Self::Live(_) => None,
            Self::Gemini(gemini) => Some(gemini.user_text(&format!(
                "(The call has just connected. Greet the caller by saying: \"{greeting}\")"
            ))),
        }
    }

    /// Tool `name`'s result for call `call_id`; true when a response should be asked for
    /// now.
    pub fn tool_output(&mut self, call_id: &str, name: &str, output: &str) -> (String, bool) {
        match self {
            Self::Realtime(realtime) => (realtime.tool_output(call_id, output), true),
            Self::Live(live) => live.tool_output(call_id, output),
            // The model goes on by itself.
            Self::Gemini(gemini) => (gemini.tool_output(call_id, name, output), false),
        }
    }

    /// Asks for a response (Gemini answers a complete user turn by itself: nothing to send).
    pub fn request_response(&self) -> Option<&'static str> {
        match self {
            Self::Realtime(realtime) => Some(realtime.request_response()),
            Self::Live(live) => Some(live.request_response()),
            Self::Gemini(_) => None,
        }
    }

    /// The message that ends a session before its socket closes (GPT-Live `session.close`,
    /// answered by `session.closed`: [`ModelEvent::SessionClosed`]).
    pub fn closing(&self) -> Option<&'static str> {
        match self {
            Self::Realtime(_) | Self::Gemini(_) => None,
            Self::Live(live) => Some(live.close()),
        }
    }

    /// The transcript line still open when a session ends.
    pub fn finish_lines(&mut self) -> Option<ModelEvent<'static>> {
        match self {
            Self::Realtime(_) => None,
            Self::Live(live) => live.finish_lines(),
            Self::Gemini(gemini) => gemini.finish_lines(),
        }
    }

    /// Whether the model wants caller audio without gaps (GPT-Live), silence included.
    pub fn wants_continuous_input(&self) -> bool {
        matches!(self, Self::Live(_))
    }

    /// Whether the protocol says where each item's audio ends, and when responses start
    /// and end (the Realtime API); without that, the core ends an utterance on a pause in
    /// the model's audio.
    pub fn reports_turns(&self) -> bool {
        !matches!(self, Self::Live(_))
    }

    /// Whether the server may send its JSON in binary frames (Gemini).
    pub fn binary_json(&self) -> bool {
        matches!(self, Self::Gemini(_))
    }
}
