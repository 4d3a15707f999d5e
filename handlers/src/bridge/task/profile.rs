//! The per-call session settings: a profile, then allowlisted voice and language.

use super::*;

/// The session settings and greeting of one call: a profile chosen by a custom parameter
/// (or named like the tenant), then `voice` / `language` parameters from the allowlists.
pub(super) fn per_call(
    base: &crate::bridge::SessionSettings,
    conversation: &crate::bridge::ConversationSettings,
    session: &CallState,
) -> (crate::bridge::SessionSettings, String) {
    let params = &session.custom_parameters;
    let mut settings = base.clone();
    let mut greeting = conversation.greeting.clone();
    let mut language = String::new();
    let profile = conversation.profile_of(session);
    if let Some(profile) = profile {
        if !profile.instructions.is_empty() {
            settings.instructions = profile.instructions.clone();
        }
        if !profile.voice.is_empty() {
            settings.voice = profile.voice.clone();
        }
        language = profile.language.clone();
        if !profile.greeting.is_empty() {
            greeting = profile.greeting.clone();
        }
    }
    if let Some(voice) = params
        .get("voice")
        .filter(|v| conversation.voices.contains(v))
    {
        settings.voice = voice.clone();
    }
    if let Some(chosen) = params
        .get("language")
        .filter(|l| conversation.languages.contains(l))
    {
        language = chosen.clone();
    }
    if !language.is_empty() {
        settings.instructions.push_str(&format!(
            "\n\nSpeak in the language with code {language} unless the caller asks otherwise."
        ));
        settings.language = Some(language);
    }
    (settings, greeting)
}
