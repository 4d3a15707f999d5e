//! WAV files for the `call` tool: PCM16 through `hound`, G.711 (format tags 6 and 7, which
//! `hound` does not read) through a small RIFF walk.

use std::path::Path;

use anyhow::{bail, Context};
use callgate_handlers::codec::{AudioFormat, Transcoder};

/// Reads a mono WAV file: its format and raw audio bytes.
pub fn read(path: &Path) -> anyhow::Result<(AudioFormat, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        bail!("{}: not a RIFF/WAVE file", path.display());
    }
    let mut offset = 12;
    let mut format = None;
    while offset + 8 <= bytes.len() {
        let id = &bytes[offset..offset + 4];
        let len =
            u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().expect("4 bytes")) as usize;
        let body = offset + 8;
        let end = (body + len).min(bytes.len());
        match id {
            b"fmt " if len >= 16 => {
                let tag = u16::from_le_bytes([bytes[body], bytes[body + 1]]);
                let channels = u16::from_le_bytes([bytes[body + 2], bytes[body + 3]]);
                let rate =
                    u32::from_le_bytes(bytes[body + 4..body + 8].try_into().expect("4 bytes"));
                let bits = u16::from_le_bytes([bytes[body + 14], bytes[body + 15]]);
                if channels != 1 {
                    bail!(
                        "{}: {channels} channels; only mono is supported",
                        path.display()
                    );
                }
                format = Some(match (tag, bits, rate) {
                    (7, 8, 8000) => AudioFormat::Mulaw,
                    (6, 8, 8000) => AudioFormat::Alaw,
                    (1, 16, 8000 | 16000 | 24000) => AudioFormat::Pcm16 { rate },
                    _ => bail!(
                        "{}: unsupported WAV format (tag {tag}, {bits} bits, {rate} Hz)",
                        path.display()
                    ),
                });
            }
            b"data" => {
                let format =
                    format.with_context(|| format!("{}: data before fmt", path.display()))?;
                return Ok((format, bytes[body..end].to_vec()));
            }
            _ => {}
        }
        offset = body + len + (len & 1);
    }
    bail!("{}: no data chunk", path.display())
}

/// Converts raw audio to μ-law 8 kHz (what Twilio and Smartflo carry).
pub fn to_mulaw(format: AudioFormat, audio: &[u8]) -> anyhow::Result<Vec<u8>> {
    convert(format, audio, AudioFormat::Mulaw)
}

/// Converts raw audio from one format to another (resampling as needed).
pub fn convert(from: AudioFormat, audio: &[u8], to: AudioFormat) -> anyhow::Result<Vec<u8>> {
    if from == to {
        return Ok(audio.to_vec());
    }
    let mut transcoder = Transcoder::new(from, to)?;
    let mut out = Vec::with_capacity(audio.len());
    transcoder.transcode(audio, &mut out);
    transcoder.flush(&mut out);
    Ok(out)
}

/// Writes μ-law 8 kHz audio as a PCM16 WAV file.
pub fn write_mulaw_as_pcm(path: &Path, mulaw: &[u8]) -> anyhow::Result<()> {
    write_as_pcm(path, AudioFormat::Mulaw, mulaw)
}

/// Writes audio of any format as a 16-bit PCM WAV file at its own rate.
pub fn write_as_pcm(path: &Path, format: AudioFormat, audio: &[u8]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: format.sample_rate(),
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut samples = Vec::with_capacity(audio.len());
    format.decode(audio, &mut samples);
    for s in samples {
        writer.write_sample(s)?;
    }
    writer.finalize()?;
    Ok(())
}
