//! The finish stage: the delete guard, the deletes, the run's status and its row. The guard and
//! the status are pure functions of what the other stages found, tested on their own.

use super::planning::Planned;
use super::{EngineError, Event, Run, RunReport, Tally};
use crate::manifest::{FailureRow, PlanRow, RunStatus};
use crate::transfer::{error::classify, Op};

/// Why the run must delete nothing, if it must not: deletes follow only a complete listing, an
/// uninterrupted run without failures, and stay within the `max_delete` cap.
fn delete_refusal(p: &Planned, interrupted: bool, failed: u64) -> Option<String> {
    if !p.complete || interrupted {
        Some("the source listing did not complete".to_string())
    } else if p.scope == super::listing::Scope::Series {
        Some("a series run lists only what can be new; deletes follow the next full listing (reconcile, or run --full)".to_string())
    } else if failed > 0 {
        Some(format!("{failed} objects failed in this run"))
    } else if p.gone_count > p.cap {
        Some(format!(
            "{} deletions exceed max_delete ({} of {} objects held)",
            p.gone_count, p.cap, p.held
        ))
    } else {
        None
    }
}

fn run_status(interrupted: bool, listing_failed: bool, failed: u64, over_cap: bool) -> RunStatus {
    if interrupted {
        RunStatus::Interrupted
    } else if listing_failed {
        RunStatus::Failed
    } else if failed > 0 || over_cap {
        RunStatus::Partial
    } else {
        RunStatus::Ok
    }
}

impl Run {
    pub(super) async fn finish(self, planned: Planned) -> Result<RunReport, EngineError> {
        let interrupted = self.stop.stop.is_cancelled() || self.stop.hard_stop.is_cancelled();
        let mut tally = std::mem::take(&mut *self.tally.lock().unwrap());
        let mut sample_deletes = Vec::new();
        let mut delete_refused = None;
        if self.spec.delete && planned.gone_count > 0 {
            match delete_refusal(&planned, interrupted, tally.failed) {
                Some(why) => {
                    tracing::warn!(candidates = planned.gone_count, reason = %why, "deleting nothing");
                    delete_refused = Some(why);
                }
                None if self.opts.dry_run => sample_deletes = planned.gone.iter().take(10).map(|r| r.dest_key.clone()).collect(),
                None => self.delete(&planned.gone, &mut tally).await,
            }
        }
        // Everything recorded so far is committed, or counted as lost.
        let _ = self.engine.writer.flush().await;
        if !self.opts.dry_run {
            tally.series = self.series_totals(planned.scope == super::listing::Scope::Full && planned.complete);
            tally.events_missed = self.events_missed();
        }
        let unrecorded = self.unrecorded();
        tally.requests = self.requests.by_result();
        tally.throttled = self.requests.throttled();
        tally.unsupported = self.transferer.unsupported();
        let wall = self.started.elapsed();
        let cost_usd = self
            .engine
            .config
            .cost
            .estimate(tally.requests_by_class(), tally.bytes_through_host);
        let over_cap = delete_refused.is_some() && planned.gone_count > planned.cap;
        let mut report = RunReport {
            spec: self.spec.name.clone(),
            run_id: self.run_id,
            started_at: self.started_at.clone(),
            status: if unrecorded > 0 {
                RunStatus::Failed
            } else {
                run_status(interrupted, planned.listing_error.is_some(), tally.failed, over_cap)
            },
            tally,
            wall,
            dry_run: self.opts.dry_run,
            sample_deletes,
            deletes_planned: if self.spec.delete { planned.gone_count } else { 0 },
            delete_refused,
            listing_error: planned.listing_error,
            cost_usd,
            unrecorded,
            error: None,
            delivery_failed: None,
        };
        if !report.dry_run {
            self.engine.writer.finish_run(report.row());
            self.engine.writer.checkpoint();
            let flushed = self.engine.writer.flush().await;
            if unrecorded > 0 {
                metrics(&report);
                log_finished(&report);
                super::lake::after_run(&self.engine, &self.spec, &report).await;
                return Err(EngineError::NotRecorded { unrecorded });
            }
            flushed?;
            self.deliver(&mut report).await;
            metrics(&report);
            super::lake::after_run(&self.engine, &self.spec, &report).await;
        }
        self.opts.observer.on(Event::Finished);
        log_finished(&report);
        Ok(report)
    }

    /// Writes this run's delivery file, after those of earlier runs still waiting. A file that
    /// cannot be written makes an `ok` run `partial` (exit 1): its objects are in the
    /// destination and the manifest, but not yet in the change feed the lakehouse reads.
    async fn deliver(&self, report: &mut RunReport) {
        let Err(failed) = super::lake::deliver_pending(&self.engine, &self.spec, self.transferer.dst()).await else {
            crate::metrics::undelivered(&self.spec.name, 0);
            return;
        };
        tracing::error!(run_id = failed.run_id, error = %failed.reason, waiting = failed.waiting, "delivery file not written; the next run tries again");
        crate::metrics::delivery_failed(&self.spec.name, failed.waiting);
        self.engine.writer.delivery_failed(self.run_id, failed.to_string());
        if report.status == RunStatus::Ok {
            report.status = RunStatus::Partial;
        }
        report.delivery_failed = Some(failed);
        if let Err(e) = self.engine.writer.flush().await {
            tracing::warn!(error = %e, "could not record the failed delivery");
        }
    }

    /// The spec's series as the manifest now holds them, for the run row, the gauges and the
    /// `gap` notification; `None` without `[series]`. The state is kept for the next run: read
    /// whole after a full listing, else brought up to date with this run's keys.
    fn series_totals(&self, full: bool) -> Option<crate::spec::series::Totals> {
        let opts = self.spec.series.as_ref()?;
        let read = crate::manifest::Reader::open(self.engine.writer.path()).and_then(|r| r.series(&self.spec, full));
        match read {
            Ok(kept) => kept.map(|kept| {
                self.engine.writer.series_state(&self.spec.name, &kept);
                crate::spec::series::Totals::of(kept.gaps.report(opts, chrono::Utc::now()))
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the series' completeness");
                None
            }
        }
    }

    /// A listing run of a feed driven by events: the objects it copied that changed at the
    /// source more than `missed_after` before it started, which their events should have
    /// brought. `None` for runs of the events themselves and feeds without them.
    fn events_missed(&self) -> Option<u64> {
        let events = self.spec.events.as_ref().filter(|_| self.opts.events.is_none())?;
        let started = chrono::DateTime::parse_from_rfc3339(&self.started_at).ok()?;
        let before = (started - chrono::TimeDelta::from_std(events.missed_after).ok()?)
            .to_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let read = crate::manifest::Reader::open(self.engine.writer.path())
            .and_then(|r| r.copied_changed_before(&self.spec.name, self.run_id, &before));
        match read {
            Ok(n) => {
                if n > 0 {
                    tracing::warn!(
                        objects = n,
                        "objects copied by this listing that no event had brought: is the queue losing events?"
                    );
                }
                crate::metrics::events_missed(&self.spec.name, n);
                Some(n)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the objects events missed");
                None
            }
        }
    }

    /// Deletes destination objects whose source is gone, 1,000 keys per DeleteObjects request.
    async fn delete(&self, gone: &[PlanRow], tally: &mut Tally) {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let writer = &self.engine.writer;
        let spec = &self.spec.name;
        for chunk in gone.chunks(1000) {
            let ids: Vec<_> = chunk
                .iter()
                .filter_map(|r| ObjectIdentifier::builder().key(&r.dest_key).build().ok())
                .collect();
            let Ok(del) = Delete::builder().set_objects(Some(ids)).quiet(true).build() else {
                continue;
            };
            let sent = self
                .transferer
                .dst()
                .delete_objects()
                .bucket(&self.spec.destination.bucket)
                .delete(del)
                .send()
                .await;
            match sent {
                Ok(out) => {
                    let refused: std::collections::HashMap<&str, &aws_sdk_s3::types::Error> =
                        out.errors().iter().filter_map(|e| Some((e.key()?, e))).collect();
                    for r in chunk {
                        if let Some(e) = refused.get(r.dest_key.as_str()) {
                            tally.failed += 1;
                            writer.failure(FailureRow {
                                run_id: self.run_id,
                                spec: spec.clone(),
                                source_key: r.source_key.clone(),
                                mode: None,
                                kind: "delete",
                                code: e.code().map(str::to_string),
                                message: format!("DeleteObjects refused this key: {}", e.message().unwrap_or("no reason given")),
                            });
                        } else {
                            writer.deleted(self.run_id, &self.target, &r.dest_key);
                            tally.deleted += 1;
                        }
                    }
                }
                Err(e) => {
                    let e = classify(Op::DeleteObjects, e);
                    tracing::warn!(error = %e, keys = chunk.len(), "delete failed");
                    tally.failed += chunk.len() as u64;
                }
            }
        }
    }
}

pub(super) fn metrics(r: &RunReport) {
    let t = &r.tally;
    crate::metrics::run_finished(crate::metrics::RunFinished {
        spec: &r.spec,
        status: r.status.as_str(),
        ok: r.status == RunStatus::Ok,
        failed: r.status == RunStatus::Failed,
        skipped: t.skipped,
        through_host: t.bytes_through_host,
        seconds: r.wall.as_secs_f64(),
        fallbacks: t.fallbacks.iter().map(|(f, n)| (f.from.as_str(), f.to.as_str(), *n)).collect(),
        requests: t
            .requests
            .iter()
            .map(|((op, answer), n)| (op.as_str(), answer.as_str(), *n))
            .collect(),
        concurrency: t.concurrency,
        throttled: t.throttled,
    });
}

fn log_finished(r: &RunReport) {
    let t = &r.tally;
    tracing::info!(
        status = %r.status, listed = t.listed, copied = t.copied, skipped = t.skipped, failed = t.failed, deleted = t.deleted,
        bytes = t.bytes_copied, through_host = t.bytes_through_host, fallbacks = t.fallback_count(), requests = t.requests_total(),
        cost_usd = r.cost_usd.0 + r.cost_usd.1, seconds = r.wall.as_secs_f64(),
        "run finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(complete: bool, gone: u64, cap: u64) -> Planned {
        Planned {
            complete,
            gone_count: gone,
            cap,
            held: 100,
            ..Planned::default()
        }
    }

    #[test]
    fn deletes_only_after_a_complete_clean_run_within_the_cap() {
        assert_eq!(delete_refusal(&planned(true, 3, 10), false, 0), None);
        assert!(delete_refusal(&planned(false, 3, 10), false, 0)
            .unwrap()
            .contains("did not complete"));
        assert!(delete_refusal(&planned(true, 3, 10), true, 0).unwrap().contains("did not complete"));
        assert!(delete_refusal(&planned(true, 3, 10), false, 1)
            .unwrap()
            .contains("1 objects failed"));
        assert!(delete_refusal(&planned(true, 11, 10), false, 0)
            .unwrap()
            .contains("exceed max_delete (10 of 100"));
    }

    #[test]
    fn status_orders_interrupted_failed_partial_ok() {
        assert_eq!(run_status(true, true, 1, true), RunStatus::Interrupted);
        assert_eq!(run_status(false, true, 1, true), RunStatus::Failed);
        assert_eq!(run_status(false, false, 1, false), RunStatus::Partial);
        assert_eq!(run_status(false, false, 0, true), RunStatus::Partial);
        assert_eq!(run_status(false, false, 0, false), RunStatus::Ok);
    }
}
