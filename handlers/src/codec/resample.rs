//! Streaming, band-limited resampling between the telephony and model rates.
//!
//! A thin wrapper over rubato's synchronous FFT resampler: state lives for the whole call, so
//! chunk edges do not click, and input of any length is accepted (whole FFT chunks are
//! processed as they fill up; the remainder waits for the next call or for [`flush`]).
//!
//! [`flush`]: StreamResampler::flush

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

/// Resampler construction failed (an unsupported pair of rates).
#[derive(Debug, thiserror::Error)]
#[error("cannot resample {from} Hz to {to} Hz: {reason}")]
pub struct ResampleSetupError {
    from: u32,
    to: u32,
    reason: String,
}

/// A per-call, per-direction resampler for mono 16-bit audio.
pub struct StreamResampler {
    inner: Fft<f32>,
    pending: Vec<f32>,
    out_scratch: Vec<f32>,
    chunk: usize,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("chunk", &self.chunk)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz working in 10 ms input chunks.
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleSetupError> {
        let chunk = (from / 100) as usize;
        let inner = Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
            .map_err(|e| ResampleSetupError {
                from,
                to,
                reason: e.to_string(),
            })?;
        let out_scratch = vec![0.0; inner.output_frames_max()];
        Ok(Self {
            inner,
            pending: Vec::with_capacity(chunk * 2),
            out_scratch,
            chunk,
        })
    }

    /// Samples of delay the filter adds to the output.
    pub fn output_delay(&self) -> usize {
        self.inner.output_delay()
    }

    /// Feeds `input` and appends every sample that is ready to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        self.pending
            .extend(input.iter().map(|&s| s as f32 / 32768.0));
        let mut offset = 0;
        while self.pending.len() - offset >= self.chunk {
            self.run(offset, None, out);
            offset += self.chunk;
        }
        self.pending.drain(..offset);
    }

    /// Pushes any partial chunk through (padded with silence), so the end of an utterance is
    /// not held back.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        if self.pending.is_empty() {
            return;
        }
        let len = self.pending.len();
        self.pending.resize(self.chunk, 0.0);
        self.run(0, Some(len), out);
        self.pending.clear();
    }

    fn run(&mut self, offset: usize, partial: Option<usize>, out: &mut Vec<i16>) {
        let frames_in = self.pending.len();
        let frames_out = self.out_scratch.len();
        let input = InterleavedSlice::new(&self.pending[..], 1, frames_in)
            .expect("buffer sized from its own length");
        let mut output = InterleavedSlice::new_mut(&mut self.out_scratch[..], 1, frames_out)
            .expect("buffer sized from its own length");
        let indexing = Indexing {
            input_offset: offset,
            partial_len: partial,
            ..Indexing::default()
        };
        // Sizes come from the resampler itself, so this cannot fail; if a future rubato
        // disagrees we emit silence rather than panic on the hot path.
        let produced = match self
            .inner
            .process_into_buffer(&input, &mut output, Some(&indexing))
        {
            Ok((_, produced)) => produced,
            Err(error) => {
                tracing::warn!(%error, "resampler refused a chunk");
                0
            }
        };
        out.extend(
            self.out_scratch[..produced]
                .iter()
                .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
        );
    }
}
