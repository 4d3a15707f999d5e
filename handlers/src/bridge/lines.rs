//! Transcript fragments grouped into lines, for protocols that send only fragments and no
//! final event (GPT-Live, Gemini Live): what the records, the live feed and a new session's
//! history take as one line of the conversation.

use std::borrow::Cow;

use super::model::ModelEvent;

/// A pause longer than this between fragments of one side ends its line.
const LINE_PAUSE_MS: u64 = 1500;

/// Transcript fragments grouped into lines: a line is one side's words until the other
/// side speaks or it pauses for more than 1.5 s.
#[derive(Debug, Default)]
pub struct Lines {
    role: Option<&'static str>,
    text: String,
    end_ms: u64,
}

impl Lines {
    /// A fragment of `role`'s words over `start_ms..end_ms`; returns the line it closed.
    pub fn fragment(
        &mut self,
        role: &'static str,
        text: &str,
        start_ms: Option<u64>,
        end_ms: Option<u64>,
    ) -> Option<ModelEvent<'static>> {
        let paused = start_ms.is_some_and(|start| start > self.end_ms + LINE_PAUSE_MS);
        let closed = match self.role {
            Some(current) if current != role || paused => self.finish(),
            _ => None,
        };
        self.role = Some(role);
        self.text.push_str(text);
        self.end_ms = end_ms.or(start_ms).unwrap_or(self.end_ms).max(self.end_ms);
        closed
    }

    /// The line in progress, as a final transcript (none when blank).
    pub fn finish(&mut self) -> Option<ModelEvent<'static>> {
        let role = self.role.take()?;
        let text = std::mem::take(&mut self.text);
        let text = text.trim();
        (!text.is_empty()).then(|| ModelEvent::Transcript {
            role,
            text: Cow::Owned(text.to_owned()),
            is_final: true,
            item_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(event: Option<ModelEvent<'static>>) -> Option<(&'static str, String)> {
        match event? {
            ModelEvent::Transcript {
                role,
                text,
                is_final: true,
                ..
            } => Some((role, text.into_owned())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_line_ends_when_the_other_side_speaks_or_after_a_pause() {
        let mut lines = Lines::default();
        assert_eq!(
            text_of(lines.fragment("user", "A table ", Some(0), Some(400))),
            None
        );
        assert_eq!(
            text_of(lines.fragment("user", "for two.", Some(400), Some(900))),
            None
        );
        let closed = lines.fragment("assistant", "At what time?", Some(1000), Some(1600));
        assert_eq!(text_of(closed), Some(("user", "A table for two.".into())));
        // A pause over 1.5 s on the same side.
        let closed = lines.fragment("assistant", "Hello?", Some(3200), Some(3500));
        assert_eq!(text_of(closed), Some(("assistant", "At what time?".into())));
        // Without timings only the other side ends a line.
        assert_eq!(
            text_of(lines.fragment("assistant", " Still there?", None, None)),
            None
        );
        assert_eq!(
            text_of(lines.finish()),
            Some(("assistant", "Hello? Still there?".into()))
        );
        assert_eq!(text_of(lines.finish()), None, "nothing open");
    }

    #[test]
    fn blank_lines_are_not_lines() {
        let mut lines = Lines::default();
        assert_eq!(
            text_of(lines.fragment("user", "  ", Some(0), Some(100))),
            None
        );
        assert_eq!(
            text_of(lines.fragment("assistant", "Hi.", Some(200), Some(300))),
            None
        );
        assert_eq!(text_of(lines.finish()), Some(("assistant", "Hi.".into())));
    }
}
