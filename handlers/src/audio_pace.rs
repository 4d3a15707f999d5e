//! Caller audio no faster than the clock: a carrier cannot speak faster than its caller
//! does, so audio arriving faster than real time is a fault or an attack on the paid
//! upstream. A token bucket counted in microseconds of audio: credit grows with wall time
//! up to `burst` (network bunching, a carrier's jitter buffer flushing), each frame spends
//! its duration, and a frame arriving without credit is dropped and counted. A frame that
//! finds credit passes whole even if it is longer than the credit left (the bucket goes
//! into debt), so a message of any allowed size can pass and the audio forwarded never
//! exceeds the wall-clock time plus the burst plus one message.

use std::time::{Duration, Instant};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AudioPace {
    /// Most credit, in µs of audio.
    burst: i64,
    /// µs of audio that may still pass; negative while in debt.
    credit: i64,
    last: Option<Instant>,
}

impl AudioPace {
    /// Audio may run at most `burst` ahead of the clock.
    pub fn new(burst: Duration) -> Self {
        let burst = i64::try_from(burst.as_micros()).unwrap_or(i64::MAX);
        Self {
            burst,
            credit: burst,
            last: None,
        }
    }

    /// Takes `audio` received at `now`; false when the call's audio is already ahead of
    /// the clock by the burst (drop it).
    pub fn admit(&mut self, now: Instant, audio: Duration) -> bool {
        if let Some(last) = self.last {
            let elapsed =
                i64::try_from(now.saturating_duration_since(last).as_micros()).unwrap_or(i64::MAX);
            self.credit = self.credit.saturating_add(elapsed).min(self.burst);
        }
        self.last = Some(now);
        if self.credit <= 0 {
            return false;
        }
        let audio = i64::try_from(audio.as_micros()).unwrap_or(i64::MAX);
        self.credit = self.credit.saturating_sub(audio);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    #[test]
    fn real_time_audio_always_passes() {
        let mut pace = AudioPace::new(Duration::from_secs(2));
        let start = Instant::now();
        for i in 0..10_000u32 {
            assert!(pace.admit(start + FRAME * i, FRAME), "frame {i}");
        }
    }

    #[test]
    fn audio_faster_than_the_clock_is_held_to_the_clock_plus_the_burst() {
        // The attack, within the per-message limit: 500 ms of audio per message, 90
        // messages a second (45× real time), for 10 s.
        let mut pace = AudioPace::new(Duration::from_secs(2));
        let start = Instant::now();
        let message = Duration::from_millis(500);
        let mut admitted = Duration::ZERO;
        for i in 0..900u32 {
            let now = start + Duration::from_millis(1000) * i / 90;
            if pace.admit(now, message) {
                admitted += message;
            }
        }
        // 10 s of wall time, a 2 s burst and one message: never more than 12.5 s of audio.
        assert!(admitted <= Duration::from_millis(12_500), "{admitted:?}");
        assert!(admitted >= Duration::from_secs(9), "{admitted:?}");
    }

    #[test]
    fn a_message_longer_than_the_burst_can_still_pass() {
        let mut pace = AudioPace::new(Duration::from_millis(200));
        let start = Instant::now();
        assert!(pace.admit(start, Duration::from_secs(1)));
        // ... and then the call is a second in debt: nothing until the clock catches up.
        assert!(!pace.admit(start + Duration::from_millis(500), FRAME));
        assert!(pace.admit(start + Duration::from_millis(1001), FRAME));
    }

    #[test]
    fn silence_does_not_bank_more_than_the_burst() {
        let mut pace = AudioPace::new(Duration::from_millis(200));
        let start = Instant::now();
        let later = start + Duration::from_secs(60);
        let admitted = (0..100).filter(|_| pace.admit(later, FRAME)).count();
        assert_eq!(
            admitted, 10,
            "a minute of silence banks only the 200 ms burst"
        );
    }
}
