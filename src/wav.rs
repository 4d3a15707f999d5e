//! WAV files for the `call` tool and the fallback audio. Reading walks the RIFF chunks
//! itself, because `hound` does not read G.711 (format tags 6 and 7); writing (16-bit PCM)
//! goes through `hound`.

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
            b"fmt " if len < 16 || end - body < 16 => {
                bail!("{}: truncated fmt chunk", path.display())
            }
            b"fmt " => {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `bytes` to a fresh temporary file and reads it as a WAV file.
    fn read_bytes(name: &str, bytes: &[u8]) -> anyhow::Result<(AudioFormat, Vec<u8>)> {
        let path =
            std::env::temp_dir().join(format!("callgate-wav-{}-{name}.wav", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let read = read(&path);
        let _ = std::fs::remove_file(&path);
        read
    }

    fn riff(chunks: &[u8]) -> Vec<u8> {
        let mut bytes = b"RIFF\0\0\0\0WAVE".to_vec();
        bytes.extend_from_slice(chunks);
        bytes
    }

    #[test]
    fn reads_mulaw_and_refuses_broken_files_without_panicking() {
        let mut fmt = b"fmt \x10\0\0\0".to_vec();
        // tag 7 (μ-law), 1 channel, 8000 Hz, 8000 B/s, align 1, 8 bits.
        fmt.extend_from_slice(&[7, 0, 1, 0, 0x40, 0x1F, 0, 0, 0x40, 0x1F, 0, 0, 1, 0, 8, 0]);
        let data = b"data\x04\0\0\0\xFF\x7F\x00\x80";
        let good = riff(&[fmt.clone(), data.to_vec()].concat());
        assert_eq!(
            read_bytes("good", &good).unwrap(),
            (AudioFormat::Mulaw, vec![0xFF, 0x7F, 0x00, 0x80])
        );
        // A fmt chunk that claims 16 bytes but the file ends after 6 of them.
        let truncated = riff(&fmt[..14]);
        let error = read_bytes("truncated", &truncated).unwrap_err().to_string();
        assert!(error.contains("truncated fmt chunk"), "{error}");
        let no_data = riff(&fmt);
        assert!(read_bytes("no-data", &no_data)
            .unwrap_err()
            .to_string()
            .contains("no data chunk"));
        assert!(read_bytes("not-riff", b"hello")
            .unwrap_err()
            .to_string()
            .contains("not a RIFF/WAVE file"));
    }
}
