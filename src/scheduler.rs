//! Scheduling one feed: its cron ticks (UTC), never two runs at once, a catch-up run at start
//! when a tick was missed while the daemon was down, and spec changes taking effect between runs.

use crate::engine::{self, Engine, Observer, RunOptions, Stop};
use crate::spec::Spec;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

/// The next tick strictly after `after`, if the spec has a schedule.
fn next_tick(spec: &Spec, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    spec.schedule.as_ref()?.next_after(after)
}

fn last_run_start(engine: &Engine, spec: &str) -> Option<DateTime<Utc>> {
    let reader = crate::manifest::Reader::open(engine.writer.path()).ok()?;
    let runs = reader.runs(Some(spec), 1).ok()?;
    runs.first()
        .and_then(|r| DateTime::parse_from_rfc3339(&r.started_at).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What every feed's loop shares: the engine, the `max_running_specs` limit, the daemon's
/// shutdown (passed to runs) and the observer of runs.
#[derive(Clone)]
pub struct Feeds {
    pub engine: Engine,
    pub running: Arc<Semaphore>,
    pub stop: Stop,
    /// Makes the observer of each run.
    pub observer: fn() -> Arc<dyn Observer>,
}

/// One feed's loop. `spec` delivers new versions (applied after the current run); `removed`
/// ends the loop between runs.
pub async fn feed(feeds: Feeds, mut spec: watch::Receiver<Arc<Spec>>, removed: CancellationToken) {
    let Feeds {
        engine,
        running,
        stop,
        observer,
    } = feeds;
    let mut current = spec.borrow_and_update().clone();
    let last = last_run_start(&engine, &current.name);
    let mut catch_up = current.schedule.as_ref().is_some_and(|s| s.missed(last, Utc::now()));
    loop {
        let now = Utc::now();
        let Some(next) = next_tick(&current, now) else {
            tracing::info!(spec = %current.name, "no schedule: runs only with `s3syncd run`");
            tokio::select! {
                () = removed.cancelled() => return,
                () = stop.stop.cancelled() => return,
                r = spec.changed() => { if r.is_err() { return } current = spec.borrow_and_update().clone(); continue }
            }
        };
        let interval = next_tick(&current, next).map(|after| (after - next).num_seconds());
        crate::metrics::scheduled(&current.name, next.timestamp(), interval);
        if catch_up {
            catch_up = false;
            tracing::info!(spec = %current.name, "a scheduled run was missed while the daemon was down: running once now");
        } else {
            let wait = (next - now).to_std().unwrap_or_default();
            tracing::debug!(spec = %current.name, next = %next.to_rfc3339(), "next run");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = removed.cancelled() => return,
                () = stop.stop.cancelled() => return,
                r = spec.changed() => {
                    if r.is_err() { return }
                    current = spec.borrow_and_update().clone();
                    tracing::info!(spec = %current.name, "spec changed; new version scheduled");
                    continue;
                }
            }
        }
        let permit = tokio::select! {
            p = running.clone().acquire_owned() => p,
            () = stop.stop.cancelled() => return,
        };
        let Ok(_permit) = permit else { return };
        let started = Utc::now();
        let opts = RunOptions {
            observer: observer(),
            ..RunOptions::default()
        };
        match engine::run(&engine, current.clone(), opts, stop.clone()).await {
            Ok(report) => {
                tracing::info!(spec = %current.name, run_id = report.run_id, status = %report.status, copied = report.tally.copied, failed = report.tally.failed, "scheduled run done")
            }
            Err(e) => {
                tracing::error!(spec = %current.name, error = %e, "scheduled run could not start")
            }
        }
        // Ticks that fell during the run are skipped, not queued: never two runs at once.
        let skipped = current.schedule.as_ref().map_or(0, |s| s.ticks_between(started, Utc::now()));
        if skipped > 0 {
            crate::metrics::ticks_skipped(&current.name, skipped as u64);
            tracing::info!(spec = %current.name, skipped, "ticks skipped because the previous run was still going");
        }
        if spec.has_changed().unwrap_or(false) {
            current = spec.borrow_and_update().clone();
            tracing::info!(spec = %current.name, "spec changed during the run; new version in effect");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: &str) -> Spec {
        let text = format!("schedule = \"{schedule}\"\n[source]\nbucket = \"src-bucket\"\n[destination]\nbucket = \"dst-bucket\"\n");
        Spec::parse(std::path::Path::new("s.toml"), text.as_bytes()).unwrap()
    }

    #[test]
    fn catch_up_only_when_a_tick_was_missed() {
        let s = spec("0 30 8 * * *");
        let t = |x: &str| DateTime::parse_from_rfc3339(x).unwrap().with_timezone(&Utc);
        let sched = s.schedule.as_ref().unwrap();
        assert!(sched.missed(Some(t("2026-11-20T08:30:00Z")), t("2026-11-24T09:00:00Z")));
        assert!(!sched.missed(Some(t("2026-11-24T08:30:00Z")), t("2026-11-24T09:00:00Z")));
        assert!(!sched.missed(None, t("2026-11-24T09:00:00Z")));
        assert_eq!(next_tick(&s, t("2026-11-24T09:00:00Z")), Some(t("2026-11-25T08:30:00Z")));
        assert_eq!(sched.ticks_between(t("2026-11-20T09:00:00Z"), t("2026-11-24T09:00:00Z")), 4);
    }
}
