//! The adapter of the call's provider, chosen per call (`upstream.provider`): the call core
//! asks it for every message it sends and hands it every message it receives. Where a
//! protocol lacks something (GPT-Live: truncate, greeting, history after start), the
//! adapter says so with `None` and the core does without.

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
}

impl Protocol {
    /// The adapter of `config.provider` for a call with `settings` and `audio`.
    pub fn for_call(
        config: &BridgeConfig,
        audio: UpstreamAudio,
        settings: &SessionSettings,
    ) -> Self {
        match config.provider {
            Provider::OpenaiRealtime => Self::Realtime(Realtime::new(config, audio, settings)),
            Provider::OpenaiLive => Self::Live(Live::new(config, audio, settings)),
        }
    }

    /// Decodes one server message.
    pub fn decode<'a>(&mut self, text: &'a str) -> Result<Decoded<'a>, serde_json::Error> {
        match self {
            Self::Realtime(realtime) => Ok(Decoded {
                closed_line: None,
                event: realtime.decode(text)?,
            }),
            Self::Live(live) => live.decode(text),
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
        }
    }

    /// The configuration sent when the server greets a session (Realtime `session.update`).
    pub fn configure(&self) -> Option<&str> {
        match self {
            Self::Realtime(realtime) => Some(realtime.configure()),
            Self::Live(_) => None,
        }
    }

    /// One chunk of caller audio (base64), written into `out`.
    pub fn append_audio(&self, chunk: &str, out: &mut String) {
        match self {
            Self::Realtime(realtime) => realtime.append_audio(chunk, out),
            Self::Live(live) => live.append_audio(chunk, out),
        }
    }

    /// Tells the model what the caller heard of `item` (none where the protocol cannot).
    pub fn truncate(&self, item: &str, heard_ms: u64) -> Option<String> {
        match self {
            Self::Realtime(realtime) => Some(realtime.truncate(item, heard_ms)),
            Self::Live(_) => None,
        }
    }

    /// Text the caller typed on the keypad.
    pub fn user_text(&self, text: &str) -> String {
        match self {
            Self::Realtime(realtime) => realtime.text("user", text),
            Self::Live(live) => live.user_text(text),
        }
    }

    /// A line of history for a new session, when the protocol takes it after the start
    /// (GPT-Live takes it in `session.start` only: [`Protocol::opening`]).
    pub fn history_text(&self, role: &str, text: &str) -> Option<String> {
        match self {
            Self::Realtime(realtime) => Some(realtime.text(role, text)),
            Self::Live(_) => None,
        }
    }

    /// Asks the model to say `greeting` first, where the protocol has a way.
    pub fn greeting(&self, greeting: &str) -> Option<String> {
        match self {
            Self::Realtime(realtime) => Some(realtime.greeting(greeting)),
            Self::Live(_) => None,
        }
    }

    /// A tool's result; true when a response should be asked for now.
    pub fn tool_output(&mut self, call_id: &str, output: &str) -> (String, bool) {
        match self {
            Self::Realtime(realtime) => (realtime.tool_output(call_id, output), true),
            Self::Live(live) => live.tool_output(call_id, output),
        }
    }

    /// Asks for a response.
    pub fn request_response(&self) -> &'static str {
        match self {
            Self::Realtime(realtime) => realtime.request_response(),
            Self::Live(live) => live.request_response(),
        }
    }

    /// The message that ends a session before its socket closes (GPT-Live `session.close`,
    /// answered by `session.closed`).
    pub fn closing(&self) -> Option<&'static str> {
        match self {
            Self::Realtime(_) => None,
            Self::Live(live) => Some(live.close()),
        }
    }

    /// The server's answer to [`Protocol::closing`].
    pub fn is_closed(&self, text: &str) -> bool {
        matches!(self, Self::Live(_)) && text.contains(r#""type":"session.closed""#)
    }

    /// The transcript line still open when a session ends.
    pub fn finish_lines(&mut self) -> Option<ModelEvent<'static>> {
        match self {
            Self::Realtime(_) => None,
            Self::Live(live) => live.finish_lines(),
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
        matches!(self, Self::Realtime(_))
    }
}
