//! Scheduling one feed: its cron ticks (UTC) and its batches of S3 events, never two runs at
//! once, a catch-up run at start when a tick was missed while the daemon was down, and spec
//! changes taking effect between runs.

use crate::engine::{self, Engine, Observer, RunOptions, Stop};
use crate::manifest::RunStatus;
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

/// What woke a feed's loop.
enum Wake {
    Tick,
    /// A batch of S3 events is gathered.
    Events,
    /// A new version of the spec.
    Changed,
    /// The feed was removed, or the daemon is stopping.
    End,
}

/// One feed's loop. `spec` delivers new versions (applied after the current run); `removed`
/// ends the loop between runs. A feed with `[source.events]` also runs each batch of events
/// from its queue, between its scheduled runs: never two runs at once.
pub async fn feed(feeds: Feeds, mut spec: watch::Receiver<Arc<Spec>>, removed: CancellationToken) {
    let mut current = spec.borrow_and_update().clone();
    announce(&current);
    let mut inbox = crate::events::Inbox::open(&current).await;
    let last = last_run_start(&feeds.engine, &current.name);
    let mut catch_up = current.schedule.as_ref().is_some_and(|s| s.missed(last, Utc::now()));
    loop {
        let now = Utc::now();
        let next = next_tick(&current, now);
        if let Some(next) = next {
            let interval = next_tick(&current, next).map(|after| (after - next).num_seconds());
            crate::metrics::scheduled(&current.name, next.timestamp(), interval);
        }
        let wake = if catch_up {
            catch_up = false;
            tracing::info!(spec = %current.name, "a scheduled run was missed while the daemon was down: running once now");
            Wake::Tick
        } else {
            let tick = async {
                match next {
                    Some(next) => tokio::time::sleep((next - now).to_std().unwrap_or_default()).await,
                    None => std::future::pending().await,
                }
            };
            let events = async {
                match inbox.as_mut() {
                    Some(i) => i.ready().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tick => Wake::Tick,
                () = events => Wake::Events,
                () = removed.cancelled() => Wake::End,
                () = feeds.stop.stop.cancelled() => Wake::End,
                r = spec.changed() => if r.is_err() { Wake::End } else { Wake::Changed },
            }
        };
        match wake {
            Wake::End => return,
            Wake::Changed => {
                adopt(&mut spec, &mut current, &mut inbox, "spec changed; new version scheduled").await;
                continue;
            }
            Wake::Tick => scheduled_run(&feeds, &current).await,
            Wake::Events => {
                let Some(i) = inbox.as_mut() else { continue };
                events_run(&feeds, &current, i).await;
            }
        }
        if spec.has_changed().unwrap_or(false) {
            adopt(
                &mut spec,
                &mut current,
                &mut inbox,
                "spec changed during the run; new version in effect",
            )
            .await;
        }
    }
}

/// Takes the spec's newest version; its queue is read anew when `[source.events]` changed.
async fn adopt(spec: &mut watch::Receiver<Arc<Spec>>, current: &mut Arc<Spec>, inbox: &mut Option<crate::events::Inbox>, why: &str) {
    let new = spec.borrow_and_update().clone();
    tracing::info!(spec = %new.name, "{why}");
    announce(&new);
    if new.events != current.events {
        *inbox = crate::events::Inbox::open(&new).await;
    }
    *current = new;
}

/// Says what drives a feed: manual runs only, or S3 events from its queue.
fn announce(spec: &Spec) {
    match &spec.events {
        None if spec.schedule.is_none() => tracing::info!(spec = %spec.name, "no schedule: runs only with `s3syncd run`"),
        None => {}
        Some(e) => tracing::info!(spec = %spec.name, queue = %e.queue_url, "following S3 events"),
    }
}

/// A run on the feed's schedule (or its catch-up run). Ticks that fell during the run are
/// skipped, not queued: never two runs at once.
async fn scheduled_run(feeds: &Feeds, spec: &Arc<Spec>) {
    let permit = tokio::select! {
        p = feeds.running.clone().acquire_owned() => p,
        () = feeds.stop.stop.cancelled() => return,
    };
    let Ok(_permit) = permit else { return };
    let started = Utc::now();
    let opts = RunOptions {
        observer: (feeds.observer)(),
        ..RunOptions::default()
    };
    match engine::run(&feeds.engine, spec.clone(), opts, feeds.stop.clone()).await {
        Ok(report) => {
            tracing::info!(spec = %spec.name, run_id = report.run_id, status = %report.status, copied = report.tally.copied, failed = report.tally.failed, "scheduled run done")
        }
        Err(e) => {
            tracing::error!(spec = %spec.name, error = %e, "scheduled run could not start")
        }
    }
    let skipped = spec.schedule.as_ref().map_or(0, |s| s.ticks_between(started, Utc::now()));
    if skipped > 0 {
        crate::metrics::ticks_skipped(&spec.name, skipped as u64);
        tracing::info!(spec = %spec.name, skipped, "ticks skipped because the previous run was still going");
    }
}

/// A run of the keys a batch of events names; then the batch's messages are settled: deleted
/// once the run's rows are committed, unless their key failed or the run did not complete.
async fn events_run(feeds: &Feeds, spec: &Arc<Spec>, inbox: &mut crate::events::Inbox) {
    let batch = inbox.take(spec);
    if batch.is_empty() {
        inbox.settle(spec, batch, None).await;
        return;
    }
    let permit = tokio::select! {
        p = feeds.running.clone().acquire_owned() => p,
        () = feeds.stop.stop.cancelled() => return,
    };
    let Ok(_permit) = permit else { return };
    let opts = RunOptions {
        observer: (feeds.observer)(),
        events: Some(Arc::new(batch.keys.clone())),
        ..RunOptions::default()
    };
    let (keys, messages) = (batch.keys.len(), batch.messages());
    let started = Utc::now();
    let report = engine::run(&feeds.engine, spec.clone(), opts, feeds.stop.clone()).await;
    let completed = match &report {
        Ok(r) => matches!(r.status, RunStatus::Ok | RunStatus::Partial).then_some(r.run_id),
        Err(e) => {
            tracing::error!(spec = %spec.name, error = %e, "the run of a batch of events could not start; its messages come again");
            None
        }
    };
    let results = completed.and_then(|id| crate::events::RunResults::read(feeds.engine.writer.path(), spec, id, started));
    let outcomes = inbox.settle(spec, batch, results).await;
    if let Ok(r) = &report {
        let counts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{} {n}", o.as_str())).collect();
        tracing::info!(spec = %spec.name, run_id = r.run_id, status = %r.status, messages, keys, events = %counts.join(", "), "events run done");
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
