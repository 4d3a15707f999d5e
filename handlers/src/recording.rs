//! A call's stereo recording as the caller heard it: the caller on the left, the assistant
//! on the right, on one timeline that starts with the call.
//!
//! The caller's audio is the clock: carriers stream it continuously, so the timeline
//! position is the number of caller samples received. Assistant audio is placed where the
//! carrier starts playing it (when it is sent, or back to back after audio still queued),
//! and a `clear` cuts whatever was scheduled past the moment of the barge-in, exactly as the
//! carrier discards it. Where the carrier marks the audio, its echoes say when each piece
//! really finished playing, in the caller's own time: a piece whose mark comes back later
//! than planned moves, with everything after it, to where the carrier played it.
//! Samples are handed to the sink in chunks once they are at least
//! [`HOLD`] old, so a DTMF event (which carriers send after the tone) can still silence the
//! tone before it is written. Memory per call is bounded by the hold plus one chunk, and by
//! the assistant audio queued ahead of playback.

use std::collections::VecDeque;
use std::time::Duration;

use crate::codec::{AudioFormat, Transcoder};
use callgate_layers::util::lock;

/// Caller audio kept unwritten, so that a key press can silence its tone retroactively.
pub const HOLD: Duration = Duration::from_millis(300);
/// Written in chunks of this much audio (a crash loses at most this plus [`HOLD`]).
pub const CHUNK: Duration = Duration::from_secs(1);

/// Where the recorder's chunks go: interleaved stereo 16-bit little-endian PCM.
pub trait RecordingSink: Send + Sync + std::fmt::Debug {
    /// The next chunk of the file's audio data.
    fn write(&self, interleaved: Vec<u8>);
    /// The recording ended with `frames` stereo frames in all.
    fn finish(&self, frames: u64);
}

/// How the recorder silences key presses (PCI).
#[derive(Debug, Clone, Copy)]
pub struct KeypadSilence {
    /// Silence the caller from the first digit of a sequence until it ends.
    pub enabled: bool,
    /// The key that ends a sequence at once.
    pub terminator: Option<char>,
    /// Silence after a key that ends a sequence.
    pub inter_digit_timeout: Duration,
}

/// One call's recorder; see the module docs.
#[derive(Debug)]
pub struct Recorder {
    track: std::sync::Mutex<Track>,
    sink: Box<dyn RecordingSink>,
}

#[derive(Debug)]
struct Track {
    rate: u32,
    caller_format: AudioFormat,
    /// Assistant audio → PCM16 at `rate`.
    assistant: Transcoder,
    keypad: KeypadSilence,
    /// Timeline samples already handed to the sink.
    written: u64,
    /// Caller samples from `written` on.
    caller: VecDeque<i16>,
    /// Assistant samples from `written` on (zeros where it was silent); may run past the
    /// caller, up to `assistant_end`.
    voice: VecDeque<i16>,
    /// Caller samples to silence: `[from, until)` timeline ranges, in order.
    mutes: VecDeque<(u64, u64)>,
    /// Marks sent and not yet echoed: (name, timeline end of the audio before it).
    marks: VecDeque<(String, u64)>,
    /// Timeline end of the audio before the last echoed mark.
    heard_to: u64,
    samples: Vec<i16>,
    bytes: Vec<u8>,
    finished: bool,
}

impl Recorder {
    /// A recorder at the caller's rate; the assistant's audio (in `assistant_format`) is
    /// converted to it.
    pub fn new(
        caller_format: AudioFormat,
        assistant_format: AudioFormat,
        keypad: KeypadSilence,
        sink: Box<dyn RecordingSink>,
    ) -> Result<Self, String> {
        let rate = caller_format.sample_rate();
        let assistant = Transcoder::new(assistant_format, AudioFormat::Pcm16 { rate })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            track: std::sync::Mutex::new(Track {
                rate,
                caller_format,
                assistant,
                keypad,
                written: 0,
                caller: VecDeque::new(),
                voice: VecDeque::new(),
                mutes: VecDeque::new(),
                marks: VecDeque::new(),
                heard_to: 0,
                samples: Vec::new(),
                bytes: Vec::new(),
                finished: false,
            }),
            sink,
        })
    }

    /// The recording's sample rate.
    pub fn rate(&self) -> u32 {
        lock(&self.track).rate
    }

    /// Caller audio as received (in the caller's format).
    pub fn caller(&self, audio: &[u8]) {
        let mut track = lock(&self.track);
        if track.finished {
            return;
        }
        let mut samples = std::mem::take(&mut track.samples);
        samples.clear();
        track.caller_format.decode(audio, &mut samples);
        track.caller.extend(&samples);
        track.samples = samples;
        if let Some(chunk) = track.ready(false) {
            drop(track);
            self.sink.write(chunk);
        }
    }

    /// Assistant audio sent to the carrier (in the carrier's outbound format): it plays from
    /// now, or after what is still queued.
    pub fn assistant(&self, audio: &[u8]) {
        let mut track = lock(&self.track);
        if track.finished {
            return;
        }
        let track = &mut *track;
        track.bytes.clear();
        track.assistant.transcode(audio, &mut track.bytes);
        let now = track.caller.len();
        if track.voice.len() < now {
            track.voice.resize(now, 0);
        }
        let pcm = AudioFormat::Pcm16 { rate: track.rate };
        track.samples.clear();
        pcm.decode(&track.bytes, &mut track.samples);
        track.voice.extend(&track.samples);
    }

    /// The carrier discarded what it had not played yet (barge-in).
    pub fn clear(&self) {
        let mut track = lock(&self.track);
        let now = track.caller.len();
        track.voice.truncate(now);
        track.marks.clear();
    }

    /// Mark `name` went to the carrier after the assistant audio recorded so far.
    pub fn mark_sent(&self, name: &str) {
        let mut track = lock(&self.track);
        let end = track.written + track.voice.len() as u64;
        track.marks.push_back((name.to_owned(), end));
    }

    /// The carrier echoed mark `name`: the audio before it finished playing now. If that is
    /// later than planned, the piece before the mark, and everything after it, moves later
    /// (what is already written stays).
    pub fn mark_played(&self, name: &str) {
        let mut track = lock(&self.track);
        let Some(index) = track.marks.iter().position(|(mark, _)| mark == name) else {
            return;
        };
        let (_, end) = track
            .marks
            .drain(..=index)
            .next_back()
            .expect("found above");
        let now = track.written + track.caller.len() as u64;
        let frame = u64::from(track.rate) / 50;
        if now > end + frame {
            let lag = now - end;
            let from = track.heard_to.max(track.written);
            let at = (from - track.written) as usize;
            if at <= track.voice.len() {
                let tail = track.voice.split_off(at);
                track.voice.extend(std::iter::repeat_n(0, lag as usize));
                track.voice.extend(tail);
                for mark in &mut track.marks {
                    mark.1 += lag;
                }
            }
            track.heard_to = now;
        } else {
            track.heard_to = end;
        }
    }

    /// The caller pressed `digit` (PCI: silence the caller while the sequence lasts).
    pub fn digit(&self, digit: char) {
        let mut track = lock(&self.track);
        if !track.keypad.enabled {
            return;
        }
        let rate = u64::from(track.rate);
        let at = track.written + track.caller.len() as u64;
        let hold = HOLD.as_millis() as u64 * rate / 1000;
        let tail = match Some(digit) == track.keypad.terminator {
            true => hold,
            false => track.keypad.inter_digit_timeout.as_millis() as u64 * rate / 1000,
        };
        let from = at.saturating_sub(hold).max(track.written);
        let until = at + tail;
        let ends = Some(digit) == track.keypad.terminator;
        match track.mutes.back_mut() {
            // Within the same sequence: the terminator ends it, another key extends it.
            Some(last) if last.1 >= from && ends => last.1 = until,
            Some(last) if last.1 >= from => last.1 = last.1.max(until),
            _ => track.mutes.push_back((from, until)),
        }
    }

    /// The call ended: everything still held is written and the sink told the length.
    pub fn finish(&self) {
        let mut track = lock(&self.track);
        if track.finished {
            return;
        }
        let chunk = track.ready(true);
        track.finished = true;
        let frames = track.written;
        drop(track);
        if let Some(chunk) = chunk {
            self.sink.write(chunk);
        }
        self.sink.finish(frames);
    }
}

impl Track {
    /// The next chunk to write: audio older than [`HOLD`] once a [`CHUNK`] has gathered, or
    /// everything the caller sent when `all`.
    fn ready(&mut self, all: bool) -> Option<Vec<u8>> {
        let rate = self.rate as usize;
        let hold = HOLD.as_millis() as usize * rate / 1000;
        let chunk = CHUNK.as_millis() as usize * rate / 1000;
        let n = match all {
            true => self.caller.len(),
            false if self.caller.len() >= hold + chunk => self.caller.len() - hold,
            false => return None,
        };
        if n == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(n * 4);
        for i in 0..n {
            let at = self.written + i as u64;
            while self.mutes.front().is_some_and(|m| m.1 <= at) {
                self.mutes.pop_front();
            }
            let muted = self.mutes.front().is_some_and(|m| m.0 <= at);
            let left = if muted { 0 } else { self.caller[i] };
            let right = self.voice.get(i).copied().unwrap_or(0);
            out.extend_from_slice(&left.to_le_bytes());
            out.extend_from_slice(&right.to_le_bytes());
        }
        self.caller.drain(..n);
        let voiced = n.min(self.voice.len());
        self.voice.drain(..voiced);
        self.written += n as u64;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Default, Clone)]
    struct Memory(Arc<Mutex<(Vec<u8>, Option<u64>)>>);

    impl RecordingSink for Memory {
        fn write(&self, interleaved: Vec<u8>) {
            self.0.lock().unwrap().0.extend(interleaved);
        }
        fn finish(&self, frames: u64) {
            self.0.lock().unwrap().1 = Some(frames);
        }
    }

    impl Memory {
        fn channels(&self) -> (Vec<i16>, Vec<i16>) {
            let data = self.0.lock().unwrap();
            let samples: Vec<i16> = data
                .0
                .chunks(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            let left = samples.iter().step_by(2).copied().collect();
            let right = samples.iter().skip(1).step_by(2).copied().collect();
            (left, right)
        }
    }

    const PCM8K: AudioFormat = AudioFormat::Pcm16 { rate: 8000 };

    fn pcm(value: i16, ms: usize) -> Vec<u8> {
        let mut out = Vec::new();
        PCM8K.encode(&vec![value; ms * 8], &mut out);
        out
    }

    fn recorder(memory: &Memory, pci: bool) -> Recorder {
        let keypad = KeypadSilence {
            enabled: pci,
            terminator: Some('#'),
            inter_digit_timeout: Duration::from_millis(500),
        };
        Recorder::new(PCM8K, PCM8K, keypad, Box::new(memory.clone())).unwrap()
    }

    #[test]
    fn the_assistant_plays_when_sent_and_a_clear_cuts_it() {
        let memory = Memory::default();
        let rec = recorder(&memory, false);
        rec.caller(&pcm(1, 100));
        // 300 ms of reply sent at 100 ms: it plays 100..400 ms.
        rec.assistant(&pcm(7, 300));
        rec.caller(&pcm(1, 200));
        // Barge-in at 300 ms: the last 100 ms never played.
        rec.clear();
        rec.caller(&pcm(1, 1500));
        rec.finish();
        let (left, right) = memory.channels();
        assert_eq!(left.len(), 1800 * 8, "as long as the caller's audio");
        assert!(left.iter().all(|&s| s == 1), "caller sample-exact");
        assert!(right[..800].iter().all(|&s| s == 0));
        assert!(right[800..2400].iter().all(|&s| s == 7));
        assert!(
            right[2400..].iter().all(|&s| s == 0),
            "nothing after the clear"
        );
        assert_eq!(memory.0.lock().unwrap().1, Some(1800 * 8));
    }

    #[test]
    fn a_late_mark_moves_the_piece_to_where_it_played() {
        let memory = Memory::default();
        let rec = recorder(&memory, false);
        rec.caller(&pcm(1, 100));
        // Two 100 ms pieces sent at 100 ms, each followed by its mark.
        rec.assistant(&pcm(5, 100));
        rec.mark_sent("a");
        rec.assistant(&pcm(6, 100));
        rec.mark_sent("b");
        // The first piece's mark comes back at 250 ms, not 200: it played 150..250.
        rec.caller(&pcm(1, 150));
        rec.mark_played("a");
        // The second follows it back to back and is echoed on time (350 ms).
        rec.caller(&pcm(1, 100));
        rec.mark_played("b");
        rec.caller(&pcm(1, 150));
        rec.finish();
        let (_, right) = memory.channels();
        let ms = |t: usize| t * 8;
        assert!(right[..ms(150)].iter().all(|&s| s == 0));
        assert!(
            right[ms(150)..ms(250)].iter().all(|&s| s == 5),
            "moved by the late mark"
        );
        assert!(right[ms(250)..ms(350)].iter().all(|&s| s == 6));
        assert!(right[ms(350)..].iter().all(|&s| s == 0));
    }

    #[test]
    fn replies_sent_ahead_queue_back_to_back() {
        let memory = Memory::default();
        let rec = recorder(&memory, false);
        rec.assistant(&pcm(3, 100));
        rec.assistant(&pcm(4, 100));
        rec.caller(&pcm(1, 300));
        rec.finish();
        let (_, right) = memory.channels();
        assert!(right[..800].iter().all(|&s| s == 3));
        assert!(right[800..1600].iter().all(|&s| s == 4));
        assert!(right[1600..].iter().all(|&s| s == 0));
    }

    #[test]
    fn key_presses_silence_the_caller_while_the_sequence_lasts() {
        let memory = Memory::default();
        let rec = recorder(&memory, true);
        rec.caller(&pcm(1, 1000));
        rec.digit('4'); // at 1000 ms: silent from 700 ms
        rec.caller(&pcm(1, 200));
        rec.digit('2'); // at 1200 ms
        rec.caller(&pcm(1, 200));
        rec.digit('#'); // at 1400 ms: ends 300 ms later
        rec.caller(&pcm(1, 1600));
        rec.finish();
        let (left, _) = memory.channels();
        let ms = |i: usize| i * 8;
        assert!(left[..ms(700)].iter().all(|&s| s == 1));
        assert!(
            left[ms(700)..ms(1700)].iter().all(|&s| s == 0),
            "the whole sequence"
        );
        assert!(left[ms(1700)..].iter().all(|&s| s == 1));
        let plain = Memory::default();
        let rec = recorder(&plain, false);
        rec.caller(&pcm(1, 500));
        rec.digit('4');
        rec.caller(&pcm(1, 500));
        rec.finish();
        assert!(plain.channels().0.iter().all(|&s| s == 1), "PCI off: kept");
    }

    #[test]
    fn chunks_are_written_as_the_call_goes() {
        let memory = Memory::default();
        let rec = recorder(&memory, false);
        rec.caller(&pcm(1, 1200));
        assert!(
            memory.0.lock().unwrap().0.is_empty(),
            "under a chunk plus the hold"
        );
        rec.caller(&pcm(1, 200));
        assert_eq!(
            memory.0.lock().unwrap().0.len(),
            1100 * 8 * 4,
            "all but the hold"
        );
    }
}
