//! Audio codecs: G.711 μ-law and A-law, PCM16 little-endian, resampling, base64.
//!
//! Everything here is pure and synchronous. [`Transcoder`] turns one direction of a call's
//! audio from one [`AudioFormat`] into another, keeping per-call state (the resampler) so
//! chunk boundaries are seamless; when both formats are equal it is never built and the
//! base64 text passes through untouched.

pub mod g711;
pub mod resample;

use base64::Engine as _;

pub use resample::{ResampleSetupError, StreamResampler};

/// The base64 engine every carrier and the Realtime API use: standard alphabet, padded.
pub const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An audio encoding with its sample rate (always mono).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// G.711 μ-law at 8 kHz.
    Mulaw,
    /// G.711 A-law at 8 kHz.
    Alaw,
    /// 16-bit signed little-endian PCM at the given rate.
    Pcm16 {
        /// Samples per second.
        rate: u32,
    },
}

impl AudioFormat {
    /// Samples per second.
    pub fn sample_rate(self) -> u32 {
        match self {
            Self::Mulaw | Self::Alaw => 8000,
            Self::Pcm16 { rate } => rate,
        }
    }

    /// Bytes per sample.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Self::Mulaw | Self::Alaw => 1,
            Self::Pcm16 { .. } => 2,
        }
    }

    /// Bytes per millisecond of audio.
    pub fn bytes_per_ms(self) -> usize {
        self.sample_rate() as usize / 1000 * self.bytes_per_sample()
    }

    /// Milliseconds of audio in `bytes`.
    pub fn duration_ms(self, bytes: usize) -> u64 {
        (bytes / self.bytes_per_ms().max(1)) as u64
    }

    /// The byte that encodes silence.
    pub fn silence_byte(self) -> u8 {
        match self {
            Self::Mulaw => g711::MULAW_SILENCE,
            Self::Alaw => 0xD5,
            Self::Pcm16 { .. } => 0,
        }
    }

    /// Decodes raw bytes of this format into linear samples, appending to `out`.
    pub fn decode(self, bytes: &[u8], out: &mut Vec<i16>) {
        match self {
            Self::Mulaw => out.extend(bytes.iter().map(|&b| g711::mulaw_decode(b))),
            Self::Alaw => out.extend(bytes.iter().map(|&b| g711::alaw_decode(b))),
            Self::Pcm16 { .. } => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|pair| i16::from_le_bytes([pair[0], pair[1]])),
            ),
        }
    }

    /// Encodes linear samples into raw bytes of this format, appending to `out`.
    pub fn encode(self, samples: &[i16], out: &mut Vec<u8>) {
        match self {
            Self::Mulaw => out.extend(samples.iter().map(|&s| g711::mulaw_encode(s))),
            Self::Alaw => out.extend(samples.iter().map(|&s| g711::alaw_encode(s))),
            Self::Pcm16 { .. } => {
                out.reserve(samples.len() * 2);
                for s in samples {
                    out.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
    }
}

/// One direction of a call's audio conversion (decode → resample → encode), with its state.
#[derive(Debug)]
pub struct Transcoder {
    from: AudioFormat,
    to: AudioFormat,
    resampler: Option<StreamResampler>,
    samples: Vec<i16>,
    resampled: Vec<i16>,
}

impl Transcoder {
    /// A transcoder from `from` to `to`.
    pub fn new(from: AudioFormat, to: AudioFormat) -> Result<Self, ResampleSetupError> {
        let resampler = if from.sample_rate() != to.sample_rate() {
            Some(StreamResampler::new(from.sample_rate(), to.sample_rate())?)
        } else {
            None
        };
        Ok(Self {
            from,
            to,
            resampler,
            samples: Vec::new(),
            resampled: Vec::new(),
        })
    }

    /// The input format.
    pub fn from_format(&self) -> AudioFormat {
        self.from
    }

    /// The output format.
    pub fn to_format(&self) -> AudioFormat {
        self.to
    }

    /// Converts `input` and appends the result to `out`. With a resampler, output lags the
    /// input by the filter delay; [`Transcoder::flush`] pushes the tail out.
    pub fn transcode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.samples.clear();
        self.from.decode(input, &mut self.samples);
        match &mut self.resampler {
            None => self.to.encode(&self.samples, out),
            Some(resampler) => {
                self.resampled.clear();
                resampler.process(&self.samples, &mut self.resampled);
                self.to.encode(&self.resampled, out);
            }
        }
    }

    /// Emits whatever the resampler still holds.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if let Some(resampler) = &mut self.resampler {
            self.resampled.clear();
            resampler.flush(&mut self.resampled);
            self.to.encode(&self.resampled, out);
        }
    }
}

/// Decodes base64 into `out` (cleared first), reusing its allocation.
pub fn decode_base64_into(text: &str, out: &mut Vec<u8>) -> Result<(), base64::DecodeError> {
    out.clear();
    BASE64.decode_vec(text, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, ms: u32, amplitude: f64) -> Vec<i16> {
        let n = (rate * ms / 1000) as usize;
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin())
                    as i16
            })
            .collect()
    }

    fn rms(samples: &[i16]) -> f64 {
        (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
    }

    /// Frequency from the count of rising zero crossings.
    fn frequency(samples: &[i16], rate: u32) -> f64 {
        let crossings = samples.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        crossings as f64 * rate as f64 / samples.len() as f64
    }

    /// Energy at `freq` relative to the whole signal, in dB (Goertzel).
    fn level_db_at(samples: &[i16], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / rate as f64;
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in samples {
            let s = x as f64 + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        let amplitude = 2.0 * power.sqrt() / samples.len() as f64;
        20.0 * (amplitude / (rms(samples) * 2f64.sqrt())).log10()
    }

    fn run_chunked(t: &mut Transcoder, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            t.transcode(piece, &mut out);
        }
        t.flush(&mut out);
        out
    }

    /// Resamples PCM16 samples from `from` Hz to `to` Hz in 20 ms chunks, as a call would.
    fn resample(samples: &[i16], from: u32, to: u32) -> Vec<i16> {
        let (src, dst) = (
            AudioFormat::Pcm16 { rate: from },
            AudioFormat::Pcm16 { rate: to },
        );
        let mut bytes = Vec::new();
        src.encode(samples, &mut bytes);
        let chunk = src.bytes_per_ms() * 20;
        let out = run_chunked(&mut Transcoder::new(src, dst).unwrap(), &bytes, chunk);
        let mut back = Vec::new();
        dst.decode(&out, &mut back);
        back
    }

    #[test]
    fn tone_keeps_frequency_and_level_through_8k_24k_8k() {
        let input = tone(1000.0, 8000, 1000, 8000.0);
        let back = resample(&resample(&input, 8000, 24000), 24000, 8000);
        // Compare the steady state, away from the filter's start-up and tail.
        let steady = &back[1600..back.len().min(input.len()) - 800];
        let f = frequency(steady, 8000);
        assert!((f - 1000.0).abs() < 5.0, "frequency {f}");
        let level = 20.0 * (rms(steady) / rms(&input)).log10();
        assert!(level.abs() < 0.5, "level changed by {level} dB");
    }

    #[test]
    fn upsampling_rejects_images() {
        let samples = resample(&tone(1000.0, 8000, 500, 8000.0), 8000, 24000);
        let steady = &samples[2400..samples.len() - 2400];
        for image in [7000.0, 9000.0] {
            let db = level_db_at(steady, 24000, image);
            assert!(db < -50.0, "image at {image} Hz is {db} dBc");
        }
    }

    #[test]
    fn downsampling_filters_aliases() {
        let input = tone(5000.0, 24000, 500, 8000.0);
        let samples = resample(&input, 24000, 8000);
        let energy = rms(&samples[800..samples.len() - 800]);
        let alias_db = 20.0 * (energy.max(1e-9) / rms(&input)).log10();
        assert!(
            alias_db < -50.0,
            "5 kHz leaked into 8 kHz output at {alias_db} dB"
        );
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let input = tone(1000.0, 8000, 300, 8000.0);
        let mut mulaw = Vec::new();
        AudioFormat::Mulaw.encode(&input, &mut mulaw);
        let target = AudioFormat::Pcm16 { rate: 24000 };
        let whole = run_chunked(
            &mut Transcoder::new(AudioFormat::Mulaw, target).unwrap(),
            &mulaw,
            mulaw.len(),
        );
        let pieces = run_chunked(
            &mut Transcoder::new(AudioFormat::Mulaw, target).unwrap(),
            &mulaw,
            160,
        );
        let odd = run_chunked(
            &mut Transcoder::new(AudioFormat::Mulaw, target).unwrap(),
            &mulaw,
            37,
        );
        assert_eq!(whole, pieces);
        assert_eq!(whole, odd);
    }

    #[test]
    fn same_rate_transcode_is_exact() {
        let mut t = Transcoder::new(AudioFormat::Mulaw, AudioFormat::Pcm16 { rate: 8000 }).unwrap();
        let mut out = Vec::new();
        t.transcode(&[0xFF, 0x80, 0x00], &mut out);
        assert_eq!(out, [0, 0, 0x7C, 0x7D, 0x84, 0x82]);
    }

    #[test]
    fn base64_silence_frame_matches_reference() {
        let text = BASE64.encode([0xFFu8; 160]);
        assert_eq!(text.len(), 216);
        assert!(text.ends_with("/w=="));
        let mut back = Vec::new();
        decode_base64_into(&text, &mut back).unwrap();
        assert_eq!(back, [0xFF; 160]);
        assert!(decode_base64_into("not base64!", &mut back).is_err());
    }
}
