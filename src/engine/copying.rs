//! The copy stage: take the spec's and the process's transfer limits, copy each job (the
//! transfer module's mode chain), and record each result: a manifest row only for a verified
//! object, a failure row otherwise.

use super::{Event, Run};
use crate::manifest::{FailureRow, ObjectRow};
use crate::plan::CopyJob;
use crate::speed::Limit;
use crate::transfer::{ErrorKind, Failure, Outcome};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};

type Done = Result<(CopyJob, Result<Outcome, Failure>), JoinError>;

/// How long copies get after a hard stop to abort their multipart uploads.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Run {
    /// Copies the jobs; `rtt` is one round trip to the destination, measured before.
    pub(super) async fn copy(&self, jobs: mpsc::Receiver<CopyJob>, rtt: std::time::Duration) {
        let limit = match self.spec.transfer.concurrency {
            Some(n) => Limit::fixed(n),
            None => Limit::adaptive(self.engine.config.max_transfers, rtt),
        };
        self.copy_within(jobs, &limit).await;
        if let Some(rate) = self.transferer.pace().rate() {
            tracing::info!(attempts_per_second = rate as u64, "the server throttled: copies were paced");
        }
        self.tally(|t| {
            t.concurrency = limit.peak();
            t.adaptive = self.spec.transfer.concurrency.is_none();
        });
    }

    async fn copy_within(&self, mut jobs: mpsc::Receiver<CopyJob>, limit: &Arc<Limit>) {
        let mut tasks: JoinSet<(CopyJob, Result<Outcome, Failure>)> = JoinSet::new();
        loop {
            let job = tokio::select! {
                biased;
                () = self.stop.stop.cancelled() => break,
                j = jobs.recv() => match j {
                    Some(j) => j,
                    None => break,
                },
            };
            if self.opts.dry_run {
                if let Some(plan) = &self.opts.collect {
                    plan.lock()
                        .expect("the plan's keys")
                        .push((job.source.key.clone(), job.source.size));
                }
                self.tally(|t| t.would_copy(&job));
                continue;
            }
            if self.unrecorded() > 0 {
                tracing::error!("the manifest cannot record copies: starting no more");
                break;
            }
            // Both limits are taken before spawning, so planning waits when transfers are saturated.
            let permits = tokio::select! {
                biased;
                () = self.stop.stop.cancelled() => None,
                p = async { (limit.acquire().await, self.engine.transfers.clone().acquire_owned().await) } => Some(p),
            };
            let Some((p1, Ok(p2))) = permits else {
                break;
            };
            let t = self.transferer.clone();
            let (limit, requests) = (limit.clone(), self.requests.clone());
            // One request copies it: its time is a latency sample for the limit.
            let single = job.source.size <= self.spec.transfer.multipart_threshold.min(self.spec.transfer.copy_threshold);
            tasks.spawn(async move {
                let began = std::time::Instant::now();
                let r = t.copy(&job).await;
                // A sample is a copy's own time: not one that waited for retries, and none
                // once the pace spaces the attempts (then it governs, and the wait is its).
                let clean = r.as_ref().is_ok_and(|o| o.trail.retries == 0);
                if t.pace().rate().is_none() {
                    limit.sample((single && clean).then(|| began.elapsed()), requests.throttled());
                }
                drop((p1, p2));
                (job, r)
            });
            self.opts.observer.on(Event::Queued);
            while let Some(done) = tasks.try_join_next() {
                self.record(done);
            }
        }
        // Closing the queue stops the plan stage when this one stopped first.
        drop(jobs);
        // In-flight copies finish unless the hard stop fires. Then each copy aborts its own
        // multipart upload (it watches the same token); copies still going after ABORT_WAIT are
        // dropped. Whatever ends now is recorded as it ended: nothing unverified becomes a row.
        loop {
            tokio::select! {
                biased;
                () = self.stop.hard_stop.cancelled() => break,
                next = tasks.join_next() => match next {
                    Some(done) => self.record(done),
                    None => return,
                },
            }
        }
        let drained = tokio::time::timeout(ABORT_WAIT, async {
            while let Some(done) = tasks.join_next().await {
                self.record(done);
            }
        });
        if drained.await.is_err() {
            tracing::warn!(copies = tasks.len(), "copies still running after the hard stop: dropping them");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Records one finished copy.
    fn record(&self, done: Done) {
        let spec = &self.spec.name;
        let (job, result) = match done {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "copy task panicked");
                crate::metrics::object_failed(spec);
                return self.count(|t| t.failed(None, None));
            }
        };
        match result {
            Ok(o) => {
                crate::metrics::object_copied(spec, o.mode.as_str(), job.source.size);
                tracing::debug!(key = %job.source.key, mode = %o.mode, reason = job.reason.as_str(), "copied");
                self.count(|t| t.copied(&job, &o));
                self.note_sidecar(&job.source.key);
                self.engine.writer.upsert(ObjectRow {
                    spec: spec.clone(),
                    dest_endpoint: self.target.endpoint.clone(),
                    dest_bucket: self.target.bucket.clone(),
                    source_endpoint: self.source_endpoint.clone(),
                    source_bucket: self.spec.source.bucket.clone(),
                    dest_key: job.dest_key,
                    source_key: job.source.key,
                    size: job.source.size,
                    etag: o.copied.etag,
                    source_last_modified: job.source.last_modified,
                    copied_at: crate::manifest::now(),
                    mode: o.mode,
                    run_id: self.run_id,
                    dest_etag: o.copied.dest_etag,
                    verified: o.copied.verified,
                    checksum: o.copied.checksum.as_ref().map(ToString::to_string),
                    sha256: o.copied.sha256,
                    sidecar_mismatch: None,
                    kept_previous: o.kept,
                });
            }
            // Not attempted (the run stopped): not a failure, and new again to the next run.
            Err(f) if f.error.kind == ErrorKind::Stopped => self.count(|t| t.stopped += 1),
            Err(f) => {
                crate::metrics::object_failed(spec);
                let mode = f.mode.map_or("-", |m| m.as_str());
                let cause = f.error.cause(&self.spec);
                tracing::warn!(key = %job.source.key, mode, kind = f.error.kind.as_str(), error = %f.error, cause = cause.as_deref().unwrap_or("-"), "object failed");
                self.count(|t| t.failed(Some(&f.trail), cause.as_deref()));
                // A failed overwrite may have replaced what the manifest vouched for.
                if f.error.is_verify() {
                    self.engine.writer.forget(&self.target, &job.dest_key);
                }
                let message = match &cause {
                    Some(c) => format!("{}. Likely cause: {c}", f.error),
                    None => f.error.to_string(),
                };
                self.engine.writer.failure(FailureRow {
                    run_id: self.run_id,
                    spec: spec.clone(),
                    source_key: job.source.key.clone(),
                    mode: f.mode,
                    kind: f.error.kind.as_str(),
                    code: f.error.code_str(),
                    message,
                });
            }
        }
    }

    /// Updates the tally and tells the observer.
    fn count(&self, f: impl FnOnce(&mut super::Tally)) {
        self.tally(|t| {
            f(t);
            self.opts.observer.on(Event::Done(t));
        });
    }
}
