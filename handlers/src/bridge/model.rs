//! What a speech-to-speech model says, in the bridge's own terms: the call core (the relay)
//! acts on [`ModelEvent`]s and never on a protocol's wire names. Each protocol's adapter
//! decodes its server messages into these (the Realtime API's: [`super::realtime`]). Audio
//! stays borrowed from the message it arrived in: the relay decodes it straight into its
//! own buffer, with no copy in between.

use std::borrow::Cow;

use serde_json::Value;

use super::wire::ErrorBody;

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
    /// The server ended the session (GPT-Live `session.closed`): the answer to our close,
    /// or its own end (expired, content), after which the socket closes.
    SessionClosed,
    /// The server will close this connection soon (Gemini `goAway`): move to a new one.
    Expiring {
        /// How long it says is left (a protobuf duration, `"9.5s"`; empty when not said).
        time_left: String,
    },
    /// An `error` event (the session may go on).
    Error(ErrorBody),
    /// Anything the call core has no use for.
    Other(Cow<'a, str>),
}

/// What one server message said, in order: events before its main one (a transcript line
/// it closed, a turn it opened), the main event (audio stays borrowed from the message),
/// and events after it (more parts of the same message). The lists are empty, and so do
/// not allocate, for protocols with one event per message.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// What comes first.
    pub before: Vec<ModelEvent<'static>>,
    /// The message's main event.
    pub event: ModelEvent<'a>,
    /// What comes after.
    pub after: Vec<ModelEvent<'static>>,
}

impl<'a> Decoded<'a> {
    /// A message that said one thing.
    pub fn one(event: ModelEvent<'a>) -> Self {
        Self {
            before: Vec::new(),
            event,
            after: Vec::new(),
        }
    }
}
