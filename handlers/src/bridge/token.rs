//! Bearer tokens that expire (Azure Entra ID: about an hour), read when a connection opens
//! rather than once at startup, so a long-running replica keeps connecting.
//!
//! - a file (`upstream.azure_token_file`): read at every connect (a few microseconds), for a
//!   token a sidecar or the platform keeps fresh (e.g. a workload identity);
//! - a command (`upstream.azure_token_command`, run with `sh -c`): its trimmed standard
//!   output, kept for `azure_token_cache_s` (an `az account get-access-token` takes about a
//!   second: running it for every call would add that second to every call).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use callgate_layers::util::lock;

use super::Secret;

/// Where a bearer token comes from.
#[derive(Debug)]
pub enum TokenSource {
    /// Read this file at every connect.
    File(PathBuf),
    /// Run this shell command; its output is kept for `cache`.
    Command {
        /// The command line (`sh -c`).
        command: String,
        /// How long a token it printed is used.
        cache: Duration,
        /// The last token and when it was fetched.
        last: Mutex<Option<(Secret, Instant)>>,
    },
}

impl PartialEq for TokenSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::File(a), Self::File(b)) => a == b,
            (
                Self::Command {
                    command: a,
                    cache: x,
                    ..
                },
                Self::Command {
                    command: b,
                    cache: y,
                    ..
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

impl TokenSource {
    /// A command source whose tokens are kept for `cache`.
    pub fn command(command: impl Into<String>, cache: Duration) -> Self {
        Self::Command {
            command: command.into(),
            cache,
            last: Mutex::new(None),
        }
    }

    /// The current token, within `deadline`; the error says what failed (never the token).
    pub async fn token(&self, deadline: Duration) -> Result<Secret, String> {
        match self {
            Self::File(path) => {
                let text = tokio::time::timeout(deadline, tokio::fs::read_to_string(path))
                    .await
                    .map_err(|_| format!("reading token file {}: timed out", path.display()))?
                    .map_err(|e| format!("reading token file {}: {e}", path.display()))?;
                non_empty(text, || format!("token file {} is empty", path.display()))
            }
            Self::Command {
                command,
                cache,
                last,
            } => {
                if let Some((token, at)) = lock(last).as_ref() {
                    if at.elapsed() < *cache {
                        return Ok(token.clone());
                    }
                }
                let token = run(command, deadline).await?;
                *lock(last) = Some((token.clone(), Instant::now()));
                Ok(token)
            }
        }
    }
}

/// Runs `command` and takes its standard output as the token.
async fn run(command: &str, deadline: Duration) -> Result<Secret, String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(deadline, child)
        .await
        .map_err(|_| format!("token command timed out after {} ms", deadline.as_millis()))?
        .map_err(|e| format!("token command could not run: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "token command failed ({}): {}",
            output.status,
            stderr.trim().chars().take(200).collect::<String>()
        ));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| "token command printed non-UTF-8".to_owned())?;
    non_empty(text, || "token command printed nothing".to_owned())
}

fn non_empty(text: String, empty: impl FnOnce() -> String) -> Result<Secret, String> {
    match text.trim() {
        "" => Err(empty()),
        token => Ok(Secret::new(token)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_file_is_read_at_every_connect() {
        let path = std::env::temp_dir().join(format!("callgate-token-{}", std::process::id()));
        let source = TokenSource::File(path.clone());
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(source.token(WAIT).await.unwrap().expose(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(source.token(WAIT).await.unwrap().expose(), "second");
        std::fs::write(&path, "  \n").unwrap();
        assert!(source.token(WAIT).await.unwrap_err().contains("empty"));
        std::fs::remove_file(&path).unwrap();
        assert!(source
            .token(WAIT)
            .await
            .unwrap_err()
            .contains("reading token file"));
    }

    #[tokio::test]
    async fn a_command_is_run_and_its_token_kept_for_the_cache_time() {
        let counter =
            std::env::temp_dir().join(format!("callgate-token-runs-{}", std::process::id()));
        let _ = std::fs::remove_file(&counter);
        let command = format!(
            "echo run >> {0}; printf 'tok-%s' $(wc -l < {0})",
            counter.display()
        );
        let kept = TokenSource::command(&command, Duration::from_secs(60));
        assert_eq!(kept.token(WAIT).await.unwrap().expose(), "tok-1");
        assert_eq!(kept.token(WAIT).await.unwrap().expose(), "tok-1", "cached");
        let fresh = TokenSource::command(&command, Duration::ZERO);
        assert_eq!(fresh.token(WAIT).await.unwrap().expose(), "tok-2");
        assert_eq!(fresh.token(WAIT).await.unwrap().expose(), "tok-3");
        let _ = std::fs::remove_file(&counter);
    }

    #[tokio::test]
    async fn command_failures_say_why() {
        let failing = TokenSource::command("echo nope >&2; exit 3", Duration::ZERO);
        let error = failing.token(WAIT).await.unwrap_err();
        assert!(
            error.contains("failed") && error.contains("nope"),
            "{error}"
        );
        let silent = TokenSource::command("true", Duration::ZERO);
        assert!(silent.token(WAIT).await.unwrap_err().contains("nothing"));
        let slow = TokenSource::command("sleep 5", Duration::ZERO);
        let error = slow.token(Duration::from_millis(100)).await.unwrap_err();
        assert!(error.contains("timed out"), "{error}");
    }
}
