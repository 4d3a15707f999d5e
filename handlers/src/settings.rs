//! Reading the settings this crate owns from configuration files: durations written as whole
//! milliseconds or seconds (`*_ms`, `*_s` keys), an empty string meaning "off", a key of the
//! phone keypad. The root crate composes these sections into its `Config`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A [`Duration`] written as whole milliseconds.
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A [`Duration`] written as whole seconds.
pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// A string where `""` means `None`.
pub fn empty_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    Ok((!text.is_empty()).then_some(text))
}

/// One keypad key (`0`–`9`, `*`, `#`, `A`–`D`), or `""` for none.
pub fn keypad_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<char>, D::Error> {
    let text = String::deserialize(d)?;
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (None, _) => Ok(None),
        (Some(c), None) if c.is_ascii_digit() || "*#ABCD".contains(c) => Ok(Some(c)),
        _ => Err(serde::de::Error::custom("one of 0-9, *, #, A-D, or empty")),
    }
}
