//! `[recording]`: where the calls' stereo recordings go. The mixing (what the caller heard,
//! on one timeline) is `callgate_handlers::recording`; here each call's chunks are written
//! to a WAV file as they come (hound updates the header at every flush, so a crash leaves a
//! playable file up to the last chunk), and the finished file is uploaded to an
//! S3-compatible store (`object_store`) when `recording.url` is set.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use callgate_handlers::bridge::Secret;
use callgate_handlers::call_state::CallState;
use callgate_handlers::recording::{KeypadSilence, Recorder, RecordingSink};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Chunks (a second each) queued for the disk before the recorder drops one and counts it.
const QUEUED_CHUNKS: usize = 8;

/// `[recording]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RecordingConfig {
    /// Record calls (a route's or a profile's `recording` overrides it).
    pub enabled: bool,
    /// Where recordings are written (and kept, unless uploaded).
    pub dir: String,
    /// Upload finished recordings here: `s3://bucket/prefix` ("" = keep them in `dir`).
    pub url: String,
    /// The S3 endpoint for S3-compatible stores, e.g. `http://minio:9000` ("" = AWS).
    pub s3_endpoint: String,
    /// The S3 region.
    pub s3_region: String,
    /// S3 access key id ("" = `AWS_ACCESS_KEY_ID`).
    pub s3_access_key_id: String,
    /// S3 secret access key ("" = `AWS_SECRET_ACCESS_KEY`).
    pub s3_secret_access_key: Secret,
    /// Keep the local file after a successful upload.
    pub keep_local: bool,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: "recordings".into(),
            url: String::new(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: Secret::default(),
            keep_local: false,
        }
    }
}

/// Where a finished recording is, and how long it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingInfo {
    /// A file path, or the object's `s3://` URL.
    pub location: String,
    /// Length of the recording.
    pub duration_ms: u64,
}

/// The recordings of every call.
#[derive(Clone)]
pub struct Recordings {
    dir: PathBuf,
    upload: Option<Arc<Upload>>,
}

struct Upload {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`
    base: String,
    /// Key prefix, without slashes at either end.
    prefix: String,
    keep_local: bool,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings")
            .field("dir", &self.dir)
            .field("upload", &self.upload.as_ref().map(|u| &u.base))
            .finish()
    }
}

impl Recordings {
    /// Checks the configuration and creates `dir` (0700).
    pub fn new(config: &RecordingConfig) -> anyhow::Result<Self> {
        let dir = PathBuf::from(&config.dir);
        create_private_dir(&dir)?;
        let upload = match config.url.as_str() {
            "" => None,
            url => Some(Arc::new(upload(config, url)?)),
        };
        Ok(Self { dir, upload })
    }

    /// Starts recording `call` into `<dir>/<key>.wav`; the receiver gets where it went once
    /// the call has ended and the file is complete (and uploaded).
    pub fn start(
        &self,
        call: &CallState,
        key: &str,
        keypad: KeypadSilence,
    ) -> Option<oneshot::Receiver<RecordingInfo>> {
        let (chunks, rx) = mpsc::channel(QUEUED_CHUNKS);
        let sink = ChunkSink(chunks);
        let recorder = match Recorder::new(
            call.media_format,
            call.outbound_format,
            keypad,
            Box::new(sink),
        ) {
            Ok(recorder) => recorder,
            Err(error) => {
                tracing::warn!(%error, "recording not started");
                return None;
            }
        };
        let rate = recorder.rate();
        if call.recorder.set(recorder).is_err() {
            return None;
        }
        let (done, info) = oneshot::channel();
        let path = self.dir.join(format!("{key}.wav"));
        let upload = self.upload.clone();
        tokio::spawn(async move {
            match write(path, rate, rx, upload).await {
                Ok(recorded) => {
                    let _ = done.send(recorded);
                }
                Err(error) => {
                    metrics::counter!("callgate_recordings_total", "outcome" => "failed")
                        .increment(1);
                    tracing::error!(error = format!("{error:#}"), "recording failed");
                }
            }
        });
        Some(info)
    }
}

fn upload(config: &RecordingConfig, url: &str) -> anyhow::Result<Upload> {
    let rest = url
        .strip_prefix("s3://")
        .context("recording.url: must be s3://bucket[/prefix]")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    anyhow::ensure!(!bucket.is_empty(), "recording.url: no bucket");
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&config.s3_region);
    if !config.s3_endpoint.is_empty() {
        builder = builder
            .with_endpoint(&config.s3_endpoint)
            .with_allow_http(config.s3_endpoint.starts_with("http://"));
    }
    if !config.s3_access_key_id.is_empty() {
        builder = builder.with_access_key_id(&config.s3_access_key_id);
    }
    if !config.s3_secret_access_key.is_empty() {
        builder = builder.with_secret_access_key(config.s3_secret_access_key.expose());
    }
    let store = builder.build().context("recording.url: the S3 store")?;
    Ok(Upload {
        store: Arc::new(store),
        base: format!("s3://{bucket}"),
        prefix: prefix.trim_matches('/').to_owned(),
        keep_local: config.keep_local,
    })
}

/// What the recorder hands over: a chunk of samples, or the end.
enum Chunk {
    Audio(Vec<u8>),
    End(u64),
}

/// The recorder's sink: a bounded queue to the call's writer task. A disk that cannot keep
/// up loses a chunk (counted), never the call's memory.
#[derive(Debug)]
struct ChunkSink(mpsc::Sender<Chunk>);

impl RecordingSink for ChunkSink {
    fn write(&self, interleaved: Vec<u8>) {
        if self.0.try_send(Chunk::Audio(interleaved)).is_err() {
            metrics::counter!("callgate_recording_chunks_dropped_total").increment(1);
        }
    }

    fn finish(&self, frames: u64) {
        // The end must arrive even behind a full queue.
        let chunks = self.0.clone();
        tokio::spawn(async move {
            let _ = chunks.send(Chunk::End(frames)).await;
        });
    }
}

type Wav = hound::WavWriter<std::io::BufWriter<std::fs::File>>;

/// Writes one call's chunks as they come, then uploads the file when configured.
async fn write(
    path: PathBuf,
    rate: u32,
    mut chunks: mpsc::Receiver<Chunk>,
    upload: Option<Arc<Upload>>,
) -> anyhow::Result<RecordingInfo> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let created = path.clone();
    let mut wav: Wav = tokio::task::spawn_blocking(move || -> anyhow::Result<Wav> {
        let file = create_private_file(&created)?;
        Ok(hound::WavWriter::new(std::io::BufWriter::new(file), spec)?)
    })
    .await??;
    let mut frames = 0;
    while let Some(chunk) = chunks.recv().await {
        match chunk {
            Chunk::Audio(bytes) => {
                wav = tokio::task::spawn_blocking(move || -> anyhow::Result<Wav> {
                    for pair in bytes.chunks_exact(2) {
                        wav.write_sample(i16::from_le_bytes([pair[0], pair[1]]))?;
                    }
                    // The header is rewritten: the file plays up to here even after a crash.
                    wav.flush()?;
                    Ok(wav)
                })
                .await??;
            }
            Chunk::End(total) => {
                frames = total;
                break;
            }
        }
    }
    tokio::task::spawn_blocking(move || wav.finalize()).await??;
    let duration_ms = frames * 1000 / u64::from(rate.max(1));
    let Some(upload) = upload else {
        metrics::counter!("callgate_recordings_total", "outcome" => "written").increment(1);
        return Ok(RecordingInfo {
            location: path.display().to_string(),
            duration_ms,
        });
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let key = match upload.prefix.as_str() {
        "" => name,
        prefix => format!("{prefix}/{name}"),
    };
    let bytes = tokio::fs::read(&path).await?;
    let object = object_store::path::Path::from(key.as_str());
    tokio::time::timeout(
        Duration::from_secs(120),
        upload.store.put(&object, bytes.into()),
    )
    .await
    .context("upload timed out")?
    .context("upload failed (the file stays in recording.dir)")?;
    if !upload.keep_local {
        let _ = tokio::fs::remove_file(&path).await;
    }
    metrics::counter!("callgate_recordings_total", "outcome" => "uploaded").increment(1);
    Ok(RecordingInfo {
        location: format!("{}/{key}", upload.base),
        duration_ms,
    })
}

/// Creates `dir` (and its parents) readable by the owner alone (0700).
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Recordings are the callers' voices: the owner's alone (0600).
fn create_private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_url_that_is_not_s3_is_refused_at_startup() {
        let dir = std::env::temp_dir().join(format!("callgate-rec-config-{}", std::process::id()));
        let config = |url: &str| RecordingConfig {
            dir: dir.display().to_string(),
            url: url.into(),
            ..RecordingConfig::default()
        };
        let error = Recordings::new(&config("https://bucket.example/x")).unwrap_err();
        assert!(
            format!("{error:#}").contains("must be s3://bucket"),
            "{error:#}"
        );
        assert!(
            Recordings::new(&config("s3:///prefix")).is_err(),
            "no bucket"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
