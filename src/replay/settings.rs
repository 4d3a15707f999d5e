//! What a replay needs to behave like the gateway that made the tape: the sections that
//! shape a conversation, written into the tape's header in the configuration file's own
//! keys, and read back over a fresh configuration.

use serde_json::{json, Value};

use crate::config::{Config, ConfigErrors};

/// The header's `settings`: `[upstream]` (protocol, audio, reconnects), `[session]`,
/// `[conversation]` (without profiles), `[dtmf]` and `[[tools]]` (without their URLs).
pub fn of(config: &Config) -> Value {
    let up = &config.upstream;
    let session = &config.session;
    let conversation = &config.conversation;
    let dtmf = &config.dtmf;
    json!({
        "upstream": {
            "dialect": serde_json::to_value(up.dialect).unwrap_or_default(),
            "audio": serde_json::to_value(up.audio).unwrap_or_default(),
            "reconnect_attempts": up.reconnect_attempts,
            "reconnect_budget_ms": up.reconnect_budget_ms,
            "reconnect_base_delay_ms": up.reconnect_base_delay_ms,
        },
        "session": {
            "instructions": session.instructions,
            "voice": session.voice,
            "transcription_model": session.transcription_model.clone().unwrap_or_default(),
            "vad_threshold": session.vad_threshold,
            "prefix_padding_ms": session.prefix_padding_ms,
            "silence_duration_ms": session.silence_duration_ms,
        },
        "conversation": {
            "greeting": conversation.greeting,
            "end_call": conversation.end_call,
            "send_dtmf": conversation.send_dtmf,
            "transfer_targets": conversation.transfer_targets,
        },
        "dtmf": {
            "terminator": dtmf.terminator.map(String::from).unwrap_or_default(),
            "inter_digit_timeout_ms": dtmf.inter_digit_timeout.as_millis() as u64,
            "pci": dtmf.pci,
        },
        "tools": config.tools.iter().map(|t| json!({
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters,
            "timeout_ms": t.timeout.as_millis() as u64,
        })).collect::<Vec<_>>(),
    })
}

/// A configuration with `settings` over the defaults; every tool's URL is `tool_url`.
pub fn config(settings: &Value, tool_url: &str) -> Result<Config, ConfigErrors> {
    let mut settings = settings.clone();
    if let Some(tools) = settings.get_mut("tools").and_then(Value::as_array_mut) {
        for tool in tools {
            tool["url"] = tool_url.into();
        }
    }
    let table = match toml::Value::try_from(&settings) {
        Ok(toml::Value::Table(table)) => table,
        _ => return Err(ConfigErrors(vec!["tape: settings are not a table".into()])),
    };
    Config::from_table(table)
}
