//! Copying one object: the mode chain (direct, stream, staged), per-object fallback, retries and
//! verification. Each copy reports what it took (a [`Trail`]); the engine does the accounting.

mod direct;
pub mod error;
pub mod headers;
pub(crate) mod sidecar;
mod source;
mod staged;
mod stream;
pub(crate) mod upload;
pub mod verify;

pub use error::{ErrorKind, Op, TransferError};
use sidecar::Sidecar;
pub use staged::clean_staging;

use crate::manifest::Verified;
use crate::plan::{CopyJob, Reason};
use crate::spec::{Mode, Spec};
use crate::speed::Pace;
use aws_sdk_s3::Client;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// An object moved from one mode to the next, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fallback {
    pub from: Mode,
    pub to: Mode,
    /// The S3 error code, or the message when there is none.
    pub reason: String,
}

/// The form stored in the run's `details` and printed in the summary.
impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} ({})", self.from, self.to, self.reason)
    }
}

/// What copying one object took, whether it succeeded or not.
#[derive(Debug, Default)]
pub struct Trail {
    pub fallbacks: Vec<Fallback>,
    /// Modes this object found unusable for the rest of the run, with the error.
    pub disabled: Vec<(Mode, String)>,
    pub retries: u64,
    /// Bytes that passed through this host for this object (its copy and its sidecar).
    pub through_host: u64,
}

/// How an object was copied and checked.
#[derive(Debug)]
pub struct Outcome {
    pub mode: Mode,
    pub copied: Copied,
    /// Where the version this copy replaced was kept (`keep_previous`).
    pub kept: Option<String>,
    pub trail: Trail,
}

/// An object that could not be copied, with the last mode tried.
#[derive(Debug)]
pub struct Failure {
    pub mode: Option<Mode>,
    pub error: TransferError,
    pub trail: Trail,
}

/// What one mode's copy returns before the chain adds the trail.
#[derive(Debug)]
pub struct Copied {
    /// The source ETag: as listed, else as the copy revealed it.
    pub etag: Option<String>,
    pub dest_etag: Option<String>,
    pub verified: Verified,
    /// The checksum that verified the bytes.
    pub checksum: Option<crate::s3::checksum::Checksum>,
    /// The bytes' SHA-256 (hex), when the copy saw them or the server computed it.
    pub sha256: Option<String>,
}

impl Copied {
    /// What a mode returns, from the destination's ETag and what verification proved: every
    /// mode ends here. The source ETag is the listed one, else the content MD5 the copy
    /// computed, else (a listing without ETags) the destination's when it is a single-part
    /// ETag; a multipart one is never the source's.
    fn new(job: &CopyJob, dest_etag: Option<String>, v: verify::Verdict) -> Copied {
        let single_part = dest_etag.clone().filter(|e| crate::s3::is_md5_etag(e));
        Copied {
            etag: job.source.etag.clone().or(v.md5).or(single_part),
            dest_etag,
            verified: v.level,
            checksum: v.checksum,
            sha256: v.sha256,
        }
    }
}

/// Copies the objects of one run of one spec. Built by the engine for each run.
pub struct Transferer {
    spec: Arc<Spec>,
    run_id: i64,
    src: Client,
    dst: Client,
    /// The modes to try, in order.
    chain: Vec<Mode>,
    /// `{state_dir}/staging/{spec}`.
    staging: PathBuf,
    /// Budget for buffered multipart parts, in MiB, shared by all runs of the process.
    buffer: Arc<Semaphore>,
    buffer_mib: u32,
    /// Fired when the run stops: copies waiting for their turn (the pace, a retry's backoff)
    /// give up at once instead of starting an attempt.
    stop: CancellationToken,
    /// Fired when in-flight work must stop now (grace period over): multipart uploads abort.
    hard_stop: CancellationToken,
    writer: crate::manifest::Writer,
    /// Modes found unusable for the whole run, with the reason: later objects skip them.
    disabled: Mutex<BTreeMap<Mode, String>>,
    /// Numbers staging files.
    seq: AtomicU64,
    /// Optional features the destination or source server lacks (`tags`): the copies go on
    /// without them, and the run says so.
    unsupported: Mutex<std::collections::BTreeSet<&'static str>>,
    /// The pace of copy attempts once a server throttles.
    pace: Pace,
    /// Whether the source bucket serves a website (asked once per run, on first need).
    website: tokio::sync::OnceCell<bool>,
}

/// What a run gives its transferer: the spec, both clients, the mode chain, where to stage,
/// the process's buffer budget, the run's stop tokens and the manifest writer.
pub struct Setup {
    pub spec: Arc<Spec>,
    pub run_id: i64,
    pub src: Client,
    pub dst: Client,
    pub chain: Vec<Mode>,
    pub staging: PathBuf,
    pub buffer: Arc<Semaphore>,
    pub buffer_mib: u32,
    pub stop: CancellationToken,
    pub hard_stop: CancellationToken,
    pub writer: crate::manifest::Writer,
}

impl Transferer {
    pub fn new(s: Setup) -> Transferer {
        Transferer {
            spec: s.spec,
            run_id: s.run_id,
            src: s.src,
            dst: s.dst,
            chain: s.chain,
            staging: s.staging,
            buffer: s.buffer,
            buffer_mib: s.buffer_mib,
            stop: s.stop,
            hard_stop: s.hard_stop,
            writer: s.writer,
            disabled: Mutex::default(),
            seq: AtomicU64::default(),
            unsupported: Mutex::default(),
            pace: Pace::default(),
            website: tokio::sync::OnceCell::new(),
        }
    }

    /// The source's client (listings).
    pub fn src(&self) -> &Client {
        &self.src
    }

    /// The destination's client (checks, deletes, deliveries).
    pub fn dst(&self) -> &Client {
        &self.dst
    }

    /// The pace of this run's attempts.
    pub fn pace(&self) -> &Pace {
        &self.pace
    }

    /// Whether `mode` is in the run's chain.
    pub fn tries(&self, mode: Mode) -> bool {
        self.chain.contains(&mode)
    }
}

impl Transferer {
    /// The optional features a server lacked in this run.
    pub fn unsupported(&self) -> Vec<&'static str> {
        self.unsupported.lock().unwrap().iter().copied().collect()
    }

    /// Notes, once per run, an optional feature a server lacks: copies go on without it.
    pub(super) fn note_unsupported(&self, feature: &'static str) {
        if self.unsupported.lock().unwrap().insert(feature) {
            tracing::warn!(spec = %self.spec.name, feature, "a server does not support this: copying without it");
        }
    }

    fn disabled(&self, mode: Mode) -> bool {
        self.disabled.lock().unwrap().contains_key(&mode)
    }

    /// Copies one object, trying each usable mode of the chain in turn.
    pub async fn copy(&self, job: &CopyJob) -> Result<Outcome, Failure> {
        let sidecar = Sidecar::default();
        let mut trail = Trail::default();
        let mut last: Option<(Mode, TransferError)> = None;
        // An upstream revision: the version it replaces is kept first, or nothing is copied.
        let kept = match (&self.spec.feed.keep_previous, job.reason) {
            (Some(prefix), r) if r != Reason::New => match self.keep_previous(prefix, job).await {
                Ok(k) => k,
                Err(e) => return Err(self.failure(None, e, &sidecar, trail)),
            },
            _ => None,
        };
        for (i, &mode) in self.chain.iter().enumerate() {
            if self.disabled(mode) {
                continue;
            }
            match self.try_mode(mode, job, &sidecar, &mut trail).await {
                Ok(c) => {
                    if mode != Mode::Direct {
                        trail.through_host += job.source.size;
                    }
                    trail.through_host += sidecar.bytes.load(Ordering::Relaxed);
                    return Ok(Outcome {
                        mode,
                        copied: c,
                        kept,
                        trail,
                    });
                }
                Err(e) if matches!(e.kind, ErrorKind::ModeUnusable { .. }) => {
                    self.fall_back(mode, &self.chain[i + 1..], &e, &mut trail);
                    last = Some((mode, e));
                }
                Err(error) => return Err(self.failure(Some(mode), error, &sidecar, trail)),
            }
        }
        let (mode, error) = match last {
            Some((m, e)) => (Some(m), e),
            None => (None, TransferError::fatal(Op::Copy, "no usable transfer mode is left for this run")),
        };
        Err(self.failure(mode, error, &sidecar, trail))
    }

    /// Copies the destination's current object to `{prefix}run-{RUN}/{dest_key}` (server-side):
    /// one name per run and key, so no two kept versions, and no copied object, share a key.
    /// None when there is no object to keep.
    async fn keep_previous(&self, prefix: &str, job: &CopyJob) -> Result<Option<String>, TransferError> {
        let bucket = &self.spec.destination.bucket;
        let kept = format!("{prefix}run-{}/{}", self.run_id, job.dest_key);
        let req = self
            .dst
            .copy_object()
            .bucket(bucket)
            .key(&kept)
            .copy_source(crate::s3::copy_source(bucket, &job.dest_key))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Copy)
            .tagging_directive(aws_sdk_s3::types::TaggingDirective::Copy);
        match headers::copy_with(&self.spec.destination.write, req).send().await {
            Ok(_) => Ok(Some(kept)),
            Err(e) => {
                let e = error::classify(Op::CopyObject, e);
                if e.code.as_ref().is_some_and(error::Code::is_not_found) {
                    return Ok(None);
                }
                Err(TransferError {
                    message: format!("keeping the previous version as {kept:?}: {}", e.message),
                    kind: if e.kind == ErrorKind::Retryable {
                        ErrorKind::Retryable
                    } else {
                        ErrorKind::Fatal
                    },
                    ..e
                })
            }
        }
    }

    fn failure(&self, mode: Option<Mode>, error: TransferError, sidecar: &Sidecar, mut trail: Trail) -> Failure {
        trail.through_host += sidecar.bytes.load(Ordering::Relaxed);
        Failure { mode, error, trail }
    }

    /// Notes the move to the next usable mode, and disables `mode` for the run when the error
    /// says no object can use it.
    fn fall_back(&self, mode: Mode, rest: &[Mode], e: &TransferError, trail: &mut Trail) {
        if let Some(&to) = rest.iter().find(|m| !self.disabled(**m)) {
            let reason = e.code.as_ref().map_or_else(|| e.message.clone(), ToString::to_string);
            trail.fallbacks.push(Fallback { from: mode, to, reason });
        }
        if e.kind == (ErrorKind::ModeUnusable { for_run: true }) {
            if let std::collections::btree_map::Entry::Vacant(v) = self.disabled.lock().unwrap().entry(mode) {
                tracing::warn!(spec = %self.spec.name, run_id = self.run_id, %mode, reason = %e, "mode unusable for the rest of this run");
                v.insert(e.to_string());
                trail.disabled.push((mode, e.to_string()));
            }
        }
    }

    /// One mode, retried with exponential backoff and jitter on transient errors, each attempt
    /// in its turn under the run's [`Pace`]. Here, not in the SDK, so that every attempt is
    /// paced (a single CopyObject is sent without SDK retries) and a consumed stream can be
    /// read again. A throttled attempt (SlowDown) spends a budget of its own, four times
    /// `retries`: slowing down is what cures it, and the pace does.
    async fn try_mode(&self, mode: Mode, job: &CopyJob, sidecar: &Sidecar, trail: &mut Trail) -> Result<Copied, TransferError> {
        let (mut attempt, mut throttled) = (0, 0);
        loop {
            self.until_stopped(self.pace.wait()).await?;
            let r = match mode {
                Mode::Direct => direct::copy(self, job, sidecar).await,
                Mode::Stream => stream::copy(self, job, sidecar.get(self, &job.source.key).await?).await,
                Mode::Staged => staged::copy(self, job, sidecar.get(self, &job.source.key).await?).await,
            };
            let throttle = r.as_ref().is_err_and(TransferError::is_throttle);
            self.pace.attempted(throttle);
            let budget_left = if throttle {
                throttled < 4 * self.spec.transfer.retries
            } else {
                attempt < self.spec.transfer.retries
            };
            match r {
                Err(e) if e.kind == ErrorKind::Retryable && budget_left && !self.hard_stop.is_cancelled() => {
                    if throttle {
                        throttled += 1;
                    } else {
                        attempt += 1;
                    }
                    trail.retries += 1;
                    tracing::debug!(key = %job.source.key, %mode, attempt, error = %e, "retrying");
                    // After a SlowDown the pace spaces the next attempt: a sleep of its own would
                    // only hold a slot and leave the admitted rate unused (most of a run's time
                    // under a fixed share of SlowDowns). Before the pace engages, one short
                    // backoff.
                    let wait = match (throttle, self.pace.rate()) {
                        (true, Some(_)) => Duration::ZERO,
                        (true, None) => backoff(1),
                        (false, _) => backoff(attempt),
                    };
                    self.until_stopped(tokio::time::sleep(wait)).await?;
                }
                other => return other,
            }
        }
    }

    /// Waits for `wait` unless the run stops first: a copy between attempts holds nothing
    /// that a stop must wait for.
    async fn until_stopped(&self, wait: impl std::future::Future<Output = ()>) -> Result<(), TransferError> {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Err(TransferError::stopped()),
            () = wait => Ok(()),
        }
    }

    /// Whether the spec verifies this key against a checksum sidecar.
    fn wants_sidecar(&self, key: &str) -> bool {
        self.spec.verify.sidecar_of(key).is_some()
    }

    fn staging_file(&self) -> PathBuf {
        // Never derived from the key: keys may hold "../" or absolute paths.
        self.staging
            .join(format!("{}-{}.part", self.run_id, self.seq.fetch_add(1, Ordering::Relaxed)))
    }
}

/// Exponential backoff with jitter: 50-100% of 100 ms x 2^attempt, capped at 10 s.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(7)).min(10_000);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let (b1, b3, b20) = (backoff(1), backoff(3), backoff(20));
            assert!((Duration::from_millis(100)..=Duration::from_millis(200)).contains(&b1), "{b1:?}");
            assert!((Duration::from_millis(400)..=Duration::from_millis(800)).contains(&b3), "{b3:?}");
            assert!((Duration::from_secs(5)..=Duration::from_secs(10)).contains(&b20), "{b20:?}");
        }
    }

    #[test]
    fn fallbacks_read_as_documented() {
        let f = Fallback {
            from: Mode::Direct,
            to: Mode::Stream,
            reason: "AccessDenied".into(),
        };
        assert_eq!(f.to_string(), "direct -> stream (AccessDenied)");
    }
}
