//! The model's responses as the call core tracks them ([`Responses`]): the one in progress
//! (only one may run at a time), one asked for while it runs, and the last few a barge-in
//! cut off (their late audio and tool calls are dropped).

use std::collections::VecDeque;

/// Responses cut off by a barge-in whose late events are still recognised; a handful is
/// plenty.
const CUT_OFF_MEMORY: usize = 8;

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Responses {
    current: Option<String>,
    wanted: bool,
    cut_off: VecDeque<String>,
}

impl Responses {
    /// Response `id` began.
    pub(super) fn started(&mut self, id: Option<String>) {
        self.current = id;
    }

    /// Response `id` ended; true when one was asked for meanwhile and none runs now (ask
    /// for it now).
    pub(super) fn done(&mut self, id: Option<String>) -> bool {
        if id.is_some() && id == self.current {
            self.current = None;
        }
        if self.current.is_some() {
            return false;
        }
        std::mem::take(&mut self.wanted)
    }

    /// A response is running.
    pub(super) fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// A response is wanted: true when one may be asked for now; otherwise it is asked for
    /// when the current one is done.
    pub(super) fn want(&mut self) -> bool {
        if self.current.is_none() {
            return true;
        }
        self.wanted = true;
        false
    }

    /// The caller barged in: the response in progress is cut off.
    pub(super) fn cut_off_current(&mut self) {
        if let Some(response) = self.current.take() {
            if self.cut_off.len() == CUT_OFF_MEMORY {
                self.cut_off.pop_front();
            }
            self.cut_off.push_back(response);
        }
    }

    /// `id` belongs to a response a barge-in cut off.
    pub(super) fn is_cut_off(&self, id: Option<&str>) -> bool {
        id.is_some_and(|id| self.cut_off.iter().any(|c| c == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_response_at_a_time_and_one_waits() {
        let mut responses = Responses::default();
        assert!(responses.want(), "nothing running: ask now");
        responses.started(Some("r1".into()));
        assert!(responses.in_progress());
        assert!(!responses.want(), "r1 runs: wait");
        assert!(
            !responses.done(Some("r0".into())),
            "another id does not end r1"
        );
        assert!(responses.in_progress());
        assert!(
            responses.done(Some("r1".into())),
            "r1 done: ask for the waiting one"
        );
        assert!(!responses.in_progress());
        assert!(!responses.done(Some("r1".into())), "asked once");
    }

    #[test]
    fn a_barge_in_cuts_off_the_current_response_only() {
        let mut responses = Responses::default();
        responses.cut_off_current();
        assert!(!responses.is_cut_off(None));
        responses.started(Some("r1".into()));
        responses.cut_off_current();
        assert!(!responses.in_progress());
        assert!(responses.is_cut_off(Some("r1")));
        assert!(!responses.is_cut_off(Some("r2")));
        for n in 2..=CUT_OFF_MEMORY + 1 {
            responses.started(Some(format!("r{n}")));
            responses.cut_off_current();
        }
        assert!(!responses.is_cut_off(Some("r1")), "the oldest is forgotten");
        assert!(responses.is_cut_off(Some("r2")));
    }
}
