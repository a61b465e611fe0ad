//! Copying one object: the mode chain (direct, stream, staged), per-object fallback, retries,
//! verification, and the run's accounting of modes, fallbacks and bytes through the host.

mod direct;
pub mod error;
mod staged;
mod stream;
pub(crate) mod upload;
pub mod verify;

pub use error::{ErrorKind, TransferError};

use crate::plan::CopyJob;
use crate::s3::RequestCounter;
use crate::spec::{Mode, Spec};
use aws_sdk_s3::Client;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How an object was copied and checked.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub mode: Mode,
    /// The source ETag: as listed, else as the copy revealed it.
    pub etag: Option<String>,
    pub dest_etag: Option<String>,
    /// `sha256`, `etag` or `size`: the strongest check the object passed.
    pub verified: &'static str,
}

/// An object that could not be copied, with the last mode tried.
#[derive(Debug)]
pub struct Failure {
    pub mode: Option<Mode>,
    pub error: TransferError,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ModeCount {
    pub objects: u64,
    pub bytes: u64,
}

/// Per-run accounting, stored as the run row's `details` JSON and printed in the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub modes: BTreeMap<String, ModeCount>,
    /// "from -> to (reason)" -> count.
    pub fallbacks: BTreeMap<String, u64>,
    /// Modes found unusable for the whole run, with the reason.
    pub disabled_modes: BTreeMap<String, String>,
    pub bytes_through_host: u64,
    pub retries: u64,
    pub requests: BTreeMap<String, u64>,
}

/// Copies the objects of one run of one spec. Built by the engine for each run.
pub struct Transferer {
    pub spec: Arc<Spec>,
    pub run_id: i64,
    pub src: Client,
    pub dst: Client,
    /// The modes to try, in order.
    pub chain: Vec<Mode>,
    /// `{state_dir}/staging/{spec}`.
    pub staging: PathBuf,
    /// Budget for buffered multipart parts, in MiB, shared by all runs of the process.
    pub buffer: Arc<Semaphore>,
    pub buffer_mib: u32,
    /// Fired when in-flight work must stop now (grace period over): multipart uploads abort.
    pub hard_stop: CancellationToken,
    pub requests: Arc<RequestCounter>,
    pub writer: crate::manifest::Writer,
    pub stats: Mutex<Stats>,
    pub seq: AtomicU64,
}

impl Transferer {
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.lock().unwrap().clone();
        s.requests = self.requests.snapshot();
        s
    }

    fn disabled(&self, mode: Mode) -> bool {
        self.stats.lock().unwrap().disabled_modes.contains_key(mode.as_str())
    }

    /// Copies one object, trying each usable mode of the chain in turn.
    pub async fn copy(&self, job: &CopyJob) -> Result<Outcome, Failure> {
        let sidecar = Sidecar::default();
        let mut last: Option<Failure> = None;
        for (i, &mode) in self.chain.iter().enumerate() {
            if self.disabled(mode) {
                continue;
            }
            match self.try_mode(mode, job, &sidecar).await {
                Ok(o) => {
                    let mut s = self.stats.lock().unwrap();
                    let c = s.modes.entry(mode.as_str().into()).or_default();
                    c.objects += 1;
                    c.bytes += job.source.size;
                    if mode != Mode::Direct {
                        s.bytes_through_host += job.source.size;
                    }
                    return Ok(o);
                }
                Err(e) if e.kind == ErrorKind::CantUseMode => {
                    let next = self.chain[i + 1..].iter().find(|m| !self.disabled(**m));
                    let reason = e.code.clone().unwrap_or_else(|| e.message.clone());
                    let mut s = self.stats.lock().unwrap();
                    if let Some(next) = next {
                        *s.fallbacks.entry(format!("{mode} -> {next} ({reason})")).or_default() += 1;
                    }
                    if e.sticky && !s.disabled_modes.contains_key(mode.as_str()) {
                        tracing::warn!(spec = %self.spec.name, run_id = self.run_id, %mode, reason = %e, "mode unusable for the rest of this run");
                        s.disabled_modes.insert(mode.as_str().into(), e.to_string());
                    }
                    last = Some(Failure {
                        mode: Some(mode),
                        error: e,
                    });
                }
                Err(error) => return Err(Failure { mode: Some(mode), error }),
            }
        }
        Err(last.unwrap_or_else(|| Failure {
            mode: None,
            error: TransferError::fatal("copy", "no usable transfer mode is left for this run"),
        }))
    }

    /// One mode, retried with exponential backoff and jitter on transient errors. Direct copies
    /// are retried inside the SDK (they are idempotent requests); streams are retried here
    /// because a consumed body cannot be replayed by the SDK.
    async fn try_mode(&self, mode: Mode, job: &CopyJob, sidecar: &Sidecar) -> Result<Outcome, TransferError> {
        let mut attempt = 0;
        loop {
            let r = match mode {
                Mode::Direct | Mode::Auto => return direct::copy(self, job, sidecar).await,
                Mode::Stream => stream::copy(self, job, sidecar.get(self, &job.source.key).await?).await,
                Mode::Staged => staged::copy(self, job, sidecar.get(self, &job.source.key).await?).await,
            };
            match r {
                Err(e) if e.kind == ErrorKind::Retryable && attempt < self.spec.transfer.retries && !self.hard_stop.is_cancelled() => {
                    attempt += 1;
                    self.stats.lock().unwrap().retries += 1;
                    tracing::debug!(key = %job.source.key, %mode, attempt, error = %e, "retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Whether the spec verifies this key against a checksum sidecar.
    fn wants_sidecar(&self, key: &str) -> bool {
        self.spec
            .verify
            .checksum_sidecar
            .as_ref()
            .is_some_and(|s| !key.ends_with(s.as_str()))
    }

    /// The SHA-256 from the object's checksum sidecar, when the spec names one and it exists.
    async fn sidecar_sha256(&self, key: &str) -> Result<Option<String>, TransferError> {
        let Some(suffix) = &self.spec.verify.checksum_sidecar else {
            return Ok(None);
        };
        if key.ends_with(suffix.as_str()) {
            return Ok(None);
        }
        let got = self
            .src
            .get_object()
            .bucket(&self.spec.source.bucket)
            .key(format!("{key}{suffix}"))
            .send()
            .await;
        let out = match got {
            Ok(o) => o,
            Err(e) => {
                let e = error::classify("GetObject", e);
                return match e.code.as_deref() {
                    Some("NoSuchKey" | "HTTP 404") => Ok(None),
                    _ => Err(e),
                };
            }
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| TransferError::new(ErrorKind::Retryable, "GetObject", e.to_string()))?
            .into_bytes();
        self.stats.lock().unwrap().bytes_through_host += bytes.len() as u64;
        match verify::parse_sidecar(&String::from_utf8_lossy(&bytes)) {
            Some(h) => Ok(Some(h)),
            None => Err(TransferError::verify(format!("checksum sidecar {key}{suffix} holds no sha256"))),
        }
    }

    fn staging_file(&self) -> PathBuf {
        // Never derived from the key: keys may hold "../" or absolute paths.
        self.staging
            .join(format!("{}-{}.part", self.run_id, self.seq.fetch_add(1, Ordering::Relaxed)))
    }
}

/// The object's sidecar checksum, fetched at most once per object and only by a mode that can use it.
#[derive(Default)]
pub(crate) struct Sidecar(tokio::sync::OnceCell<Option<String>>);

impl Sidecar {
    pub(crate) async fn get(&self, t: &Transferer, key: &str) -> Result<Option<&str>, TransferError> {
        self.0.get_or_try_init(|| t.sidecar_sha256(key)).await.map(|o| o.as_deref())
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(7)).min(10_000);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

/// Part size for an object: the configured one, grown so that there are at most 10,000 parts.
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    configured.max(size.div_ceil(10_000))
}

/// Removes whatever a previous run left in a staging directory (a crash, a kill).
pub fn clean_staging(dir: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = 0;
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    Ok(removed)
}

/// Multipart upload ranges: (part number, offset, length).
pub fn parts(size: u64, part: u64) -> impl Iterator<Item = (i32, u64, u64)> {
    let n = size.div_ceil(part).max(1);
    (0..n).map(move |i| ((i + 1) as i32, i * part, part.min(size - i * part)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_ranges_cover_the_object_exactly() {
        let p: Vec<_> = parts(12 << 20, 5 << 20).collect();
        assert_eq!(p, vec![(1, 0, 5 << 20), (2, 5 << 20, 5 << 20), (3, 10 << 20, 2 << 20)]);
        assert_eq!(parts(0, 5).count(), 1);
        assert_eq!(part_size_for(100 << 30, 5 << 20), (100u64 << 30).div_ceil(10_000));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(200));
        assert!(backoff(20) <= Duration::from_secs(10));
    }
}
