//! After a run, for the lakehouse: its change feed file (`[deliveries]`), its notifications
//! (`[[notify]]`) and the feed's freshness (`stale_after`). The file of a run killed outright
//! is written when a later run of its spec starts: no recorded object is ever missing from
//! the feed.

use super::{Engine, RunReport};
use crate::manifest::{ChangeAction, Reader, RunStatus, Undelivered};
use crate::spec::{Deliveries, NotifyEvent, Spec};
use aws_sdk_s3::Client;
use std::io::Write;
use std::path::Path;

/// The delivery file format's version, in each summary line (docs/lakehouse.md). Version 2
/// names files by the run's start, its id and the manifest's identity, so that no file is
/// ever overwritten and names sort in the order the files land.
pub const FORMAT: u32 = 2;

/// A delivery file that could not be written: the run's, or an earlier run's that holds it back.
#[derive(Debug, Clone)]
pub struct DeliveryFailed {
    /// The run whose file failed.
    pub run_id: i64,
    pub reason: String,
    /// Runs still waiting for their file (the failed one and every later one).
    pub waiting: usize,
}

impl std::fmt::Display for DeliveryFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delivery file of run {} not written ({}); {} runs' files wait for it, in order",
            self.run_id, self.reason, self.waiting
        )
    }
}

/// Writes the delivery files of the finished runs of `spec` that have none yet, oldest first,
/// and marks each run delivered. Stops at the first file that cannot be written: a later run's
/// file never lands before an earlier one's, so a consumer that loads files in name order
/// misses none. Runs that changed nothing, or specs without `[deliveries]`, need no file.
pub(super) async fn deliver_pending(engine: &Engine, spec: &Spec, dst: &Client) -> Result<(), DeliveryFailed> {
    let failed = |run_id, reason: String, waiting| DeliveryFailed { run_id, reason, waiting };
    let read = || {
        let reader = Reader::open(engine.writer.path())?;
        Ok::<_, crate::manifest::ManifestError>((reader.undelivered(&spec.name)?, reader.manifest_id()?))
    };
    let (pending, manifest_id) = read().map_err(|e| failed(0, e.to_string(), 0))?;
    let Some(to) = &spec.feed.deliveries else {
        pending.iter().for_each(|p| engine.writer.delivered(p.run_id));
        return Ok(());
    };
    for (i, run) in pending.iter().enumerate() {
        match write_delivery(engine, spec, dst, to, run, &manifest_id).await {
            Ok(Some(place)) => tracing::info!(run_id = run.run_id, delivery = %place, "delivery written"),
            Ok(None) => {}
            Err(e) => return Err(failed(run.run_id, e, pending.len() - i)),
        }
        engine.writer.delivered(run.run_id);
    }
    Ok(())
}

/// A delivery file's name: the run's start (UTC, to the millisecond), its id and the manifest's
/// identity. Names sort as the runs started, across a wiped or rebuilt manifest too, and no two
/// manifests make the same name.
fn file_name(started_at: &str, run_id: i64, manifest_id: &str) -> String {
    let stamp: String = started_at.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("{stamp}-{run_id:010}-{manifest_id}.jsonl")
}

/// The file: one JSON line per object the run copied (new, changed) or deleted, then the
/// summary line. None when the run changed nothing.
async fn write_delivery(
    engine: &Engine,
    spec: &Spec,
    dst: &Client,
    to: &Deliveries,
    run: &Undelivered,
    manifest_id: &str,
) -> Result<Option<String>, String> {
    let name = file_name(&run.started_at, run.run_id, manifest_id);
    // Built on disk, not in memory: a first run may copy millions of objects.
    let tmp_dir = match to {
        Deliveries::Dir(d) => d.join(&spec.name),
        Deliveries::Prefix(_) => engine.config.state_dir.join("deliveries"),
    };
    std::fs::create_dir_all(&tmp_dir).map_err(|e| format!("{}: {e}", tmp_dir.display()))?;
    let tmp = tmp_dir.join(format!(".{}-{name}.tmp", spec.name));
    let counts = Reader::open(engine.writer.path())
        .map_err(std::io::Error::other)
        .and_then(|reader| write_lines(&reader, spec, run, manifest_id, &tmp))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    if counts == 0 {
        let _ = std::fs::remove_file(&tmp);
        return Ok(None);
    }
    match to {
        Deliveries::Dir(d) => {
            let path = d.join(&spec.name).join(&name);
            // A rename in one directory: a reader sees the whole file or none.
            std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Some(path.display().to_string()))
        }
        Deliveries::Prefix(p) => {
            let key = format!("{p}{}/{name}", spec.name);
            let body = aws_sdk_s3::primitives::ByteStream::from_path(&tmp)
                .await
                .map_err(|e| e.to_string())?;
            let put = dst
                .put_object()
                .bucket(&spec.destination.bucket)
                .key(&key)
                .content_type("application/x-ndjson")
                .body(body);
            // A PutObject is atomic: readers see the whole file or none.
            let sent = crate::transfer::headers::put_with(&spec.destination.write, put).send().await;
            let _ = std::fs::remove_file(&tmp);
            sent.map_err(|e| {
                crate::transfer::error::classify(crate::transfer::Op::PutObject, e)
                    .explained(crate::spec::Which::Destination, &spec.destination)
            })?;
            Ok(Some(format!("s3://{}/{key}", spec.destination.bucket)))
        }
    }
}

/// The last line of a delivery file: what the run did, in counts. Fields in name order, as
/// format 1 wrote them.
#[derive(Debug, serde::Serialize)]
struct Summary<'a> {
    changed: u64,
    /// Whether the run finished its listing (`ok` or `partial`): a file of an `interrupted`
    /// or `failed` run holds what it copied before it stopped.
    complete: bool,
    deleted: u64,
    format: u32,
    manifest_id: &'a str,
    new: u64,
    objects: u64,
    run_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    series_missing: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series_overdue: Option<u64>,
    spec: &'a str,
    started_at: &'a str,
    status: &'static str,
    summary: bool,
}

/// Writes the object lines and the summary to `path`; returns the number of object lines.
fn write_lines(reader: &Reader, spec: &Spec, run: &Undelivered, manifest_id: &str, path: &Path) -> std::io::Result<u64> {
    let run_id = run.run_id;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let (mut new, mut changed, mut deleted) = (0u64, 0u64, 0u64);
    let mut failed: Option<std::io::Error> = None;
    let listed = reader.changes(&spec.name, run_id - 1, Some(run_id), |c| {
        match c.action {
            ChangeAction::New => new += 1,
            ChangeAction::Changed => changed += 1,
            ChangeAction::Deleted => deleted += 1,
        }
        let line = serde_json::to_string(&c).expect("a change serializes");
        match writeln!(out, "{line}") {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    });
    listed.map_err(std::io::Error::other)?;
    if let Some(e) = failed {
        return Err(e);
    }
    let total = new + changed + deleted;
    if total > 0 {
        let summary = Summary {
            changed,
            complete: matches!(run.status, RunStatus::Ok | RunStatus::Partial),
            deleted,
            format: FORMAT,
            manifest_id,
            new,
            objects: total,
            run_id,
            series_missing: run.series.map(|(missing, _)| missing),
            series_overdue: run.series.map(|(_, overdue)| overdue),
            spec: &spec.name,
            started_at: &run.started_at,
            status: run.status.as_str(),
            summary: true,
        };
        writeln!(out, "{}", serde_json::to_string(&summary).expect("a summary serializes"))?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(total)
}

/// Notifications and freshness after a recorded run.
pub(super) async fn after_run(engine: &Engine, spec: &Spec, report: &RunReport) {
    let notifiers: Vec<_> = engine.config.notify.iter().chain(&spec.feed.notify).cloned().collect();
    let reader = match Reader::open(engine.writer.path()) {
        Ok(r) => r,
        Err(e) => return tracing::warn!(error = %e, "cannot read the manifest after the run"),
    };
    let body = |event: NotifyEvent, text: &str| Webhook::of(spec, report, event, text);
    if !notifiers.is_empty() {
        tell_run(engine, spec, report, &reader, &notifiers, body);
    }
    if let Some(totals) = &report.tally.series {
        crate::metrics::series(&spec.name, totals.missing, totals.overdue);
        gap(engine, spec, &reader, report.run_id, totals, &notifiers, |line| {
            body(NotifyEvent::Gap, line)
        });
    }
    if let Some(window) = spec.feed.stale_after {
        freshness(engine, spec, &reader, window, &notifiers, |line| body(NotifyEvent::Stale, line));
    }
}

/// A notification's JSON body (docs/lakehouse.md): the event, a line for people and the run's
/// counts in every one; what its event adds, only in its own.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Webhook {
    event: &'static str,
    text: String,
    spec: String,
    run_id: i64,
    status: &'static str,
    listed: u64,
    copied: u64,
    skipped: u64,
    failed: u64,
    deleted: u64,
    bytes_copied: u64,
    wall_seconds: f64,
    error: Option<String>,
    host: String,
    /// `failed`, `partial`: the run's first failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<Vec<KeyMessage>>,
    /// `delivery_failed`
    #[serde(skip_serializing_if = "Option::is_none")]
    undelivered_run_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runs_waiting: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// `revised`: up to 100 of them, and how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    revised: Option<Vec<Revised>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revised_count: Option<usize>,
    /// `stale`
    #[serde(skip_serializing_if = "Option::is_none")]
    last_new_object_at: Option<String>,
    /// `gap`: the counts and up to 100 series with their gaps.
    #[serde(skip_serializing_if = "Option::is_none")]
    series_missing: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series_overdue: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series: Option<Vec<crate::spec::series::SeriesGaps>>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct KeyMessage {
    key: String,
    message: String,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Revised {
    dest_key: String,
    kept_key: Option<String>,
}

impl Webhook {
    fn of(spec: &Spec, report: &RunReport, event: NotifyEvent, text: &str) -> Webhook {
        let t = &report.tally;
        Webhook {
            event: event.as_str(),
            text: text.to_string(),
            spec: spec.name.clone(),
            run_id: report.run_id,
            status: report.status.as_str(),
            listed: t.listed,
            copied: t.copied,
            skipped: t.skipped,
            failed: t.failed,
            deleted: t.deleted,
            bytes_copied: t.bytes_copied,
            wall_seconds: report.wall.as_secs_f64(),
            error: report.error.clone(),
            host: hostname(),
            ..Webhook::default()
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a webhook body serializes")
    }
}

/// How the run ended (`ok`, `partial`, `interrupted`, `failed`, with its first failures), a
/// change file it could not write (`delivery_failed`), and objects republished upstream
/// (`revised`).
fn tell_run(
    engine: &Engine,
    spec: &Spec,
    report: &RunReport,
    reader: &Reader,
    notifiers: &[crate::spec::Notifier],
    body: impl Fn(NotifyEvent, &str) -> Webhook,
) {
    let (t, status) = (&report.tally, report.status.as_str());
    let text = match &report.error {
        Some(e) => format!("s3syncd: feed {} run {} {status}: {e}", spec.name, report.run_id),
        None => format!(
            "s3syncd: feed {} run {} {status}: {} copied, {} failed, {} deleted, {} unchanged in {:.1} s",
            spec.name,
            report.run_id,
            t.copied,
            t.failed,
            t.deleted,
            t.skipped,
            report.wall.as_secs_f64()
        ),
    };
    let event = match report.status {
        RunStatus::Ok => NotifyEvent::Ok,
        RunStatus::Partial => NotifyEvent::Partial,
        RunStatus::Interrupted => NotifyEvent::Interrupted,
        RunStatus::Failed | RunStatus::Running => NotifyEvent::Failed,
    };
    let mut b = body(event, &text);
    if t.failed > 0 {
        let failures = reader.failures(report.run_id, 10).unwrap_or_default();
        b.failures = Some(failures.into_iter().map(|(key, message)| KeyMessage { key, message }).collect());
    }
    engine.notifications.send(notifiers, event, &b.json());
    if let Some(f) = &report.delivery_failed {
        let line = format!("s3syncd: feed {}: {f}", spec.name);
        let b = Webhook {
            undelivered_run_id: Some(f.run_id),
            runs_waiting: Some(f.waiting),
            reason: Some(f.reason.clone()),
            ..body(NotifyEvent::DeliveryFailed, &line)
        };
        engine.notifications.send(notifiers, NotifyEvent::DeliveryFailed, &b.json());
    }
    let revised = reader.revised(&spec.name, report.run_id).unwrap_or_default();
    if !revised.is_empty() {
        let line = format!(
            "s3syncd: feed {}: {} objects were republished upstream (run {}); earlier versions in the manifest's history",
            spec.name,
            revised.len(),
            report.run_id
        );
        let b = Webhook {
            revised_count: Some(revised.len()),
            revised: Some(
                revised
                    .into_iter()
                    .take(100)
                    .map(|(dest_key, kept_key)| Revised { dest_key, kept_key })
                    .collect(),
            ),
            ..body(NotifyEvent::Revised, &line)
        };
        engine.notifications.send(notifiers, NotifyEvent::Revised, &b.json());
    }
}

/// Whether the feed got nothing new within `window`: turns stale once per stale period (one
/// log warning, one `stale` notification), and fresh again when something arrives. The clock
/// is the manifest's, so a restart changes nothing.
fn freshness(
    engine: &Engine,
    spec: &Spec,
    reader: &Reader,
    window: std::time::Duration,
    notifiers: &[crate::spec::Notifier],
    body: impl Fn(&str) -> Webhook,
) {
    let Ok((Some(last_new), stale_since)) = reader.freshness(&spec.name) else {
        return;
    };
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(&last_new) else {
        return;
    };
    let age = chrono::Utc::now().signed_duration_since(at).to_std().unwrap_or_default();
    let stale = age > window;
    crate::metrics::freshness(&spec.name, stale, at.timestamp_millis() as f64 / 1000.0);
    match (stale, stale_since) {
        (true, None) => {
            let line = format!(
                "s3syncd: feed {} is stale: nothing new from the source since {last_new} (stale_after {})",
                spec.name,
                humanize(window)
            );
            tracing::warn!(last_new_object = %last_new, "{line}");
            engine.writer.set_stale(&spec.name, Some(crate::manifest::now()));
            let b = Webhook {
                last_new_object_at: Some(last_new),
                ..body(&line)
            };
            engine.notifications.send(notifiers, NotifyEvent::Stale, &b.json());
        }
        (false, Some(_)) => {
            tracing::info!(last_new_object = %last_new, "feed is fresh again");
            engine.writer.set_stale(&spec.name, None);
        }
        _ => {}
    }
}

/// A `gap` notification when a run finds more periods missing, or more series overdue, than
/// the run before it recorded: a new hole or a newly overdue series is told once, not after
/// every run while it lasts. The body names up to 100 series.
fn gap(
    engine: &Engine,
    spec: &Spec,
    reader: &Reader,
    run_id: i64,
    totals: &crate::spec::series::Totals,
    notifiers: &[crate::spec::Notifier],
    body: impl Fn(&str) -> Webhook,
) {
    let (missing, overdue) = reader.series_before(&spec.name, run_id).unwrap_or_default();
    if totals.missing <= missing && totals.overdue <= overdue {
        return;
    }
    let line = format!(
        "s3syncd: feed {}: {} periods missing inside its series (was {missing}), {} series overdue (was {overdue})",
        spec.name, totals.missing, totals.overdue
    );
    tracing::warn!("{line}");
    let b = Webhook {
        series_missing: Some(totals.missing),
        series_overdue: Some(totals.overdue),
        series: Some(totals.gapped.clone()),
        ..body(&line)
    };
    engine.notifications.send(notifiers, NotifyEvent::Gap, &b.json());
}

fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Change;

    /// The notification body (docs/lakehouse.md), byte for byte: receivers parse it; what an
    /// event adds is absent from the others.
    #[test]
    fn the_webhook_body_is_pinned() {
        let b = Webhook {
            event: NotifyEvent::Partial.as_str(),
            text: "s3syncd: feed f run 4 partial".into(),
            spec: "f".into(),
            run_id: 4,
            status: RunStatus::Partial.as_str(),
            listed: 5,
            copied: 3,
            skipped: 1,
            failed: 1,
            bytes_copied: 30,
            wall_seconds: 0.5,
            host: "vm1".into(),
            failures: Some(vec![KeyMessage {
                key: "data/x".into(),
                message: "AccessDenied".into(),
            }]),
            ..Webhook::default()
        };
        assert_eq!(
            b.json().to_string(),
            r#"{"bytes_copied":30,"copied":3,"deleted":0,"error":null,"event":"partial","failed":1,"failures":[{"key":"data/x","message":"AccessDenied"}],"host":"vm1","listed":5,"run_id":4,"skipped":1,"spec":"f","status":"partial","text":"s3syncd: feed f run 4 partial","wall_seconds":0.5}"#
        );
    }

    /// The delivery format (docs/lakehouse.md), byte for byte: a consumer parses these lines.
    #[test]
    fn the_delivery_lines_of_format_2_are_pinned() {
        let change = Change {
            dest_key: "bronze/a b.zip".into(),
            source_key: "data/a b.zip".into(),
            size: 7,
            etag: Some("e".into()),
            checksum: Some("sha256:ab".into()),
            source_last_modified: Some("2026-11-27T00:00:00.000Z".into()),
            action: ChangeAction::Changed,
            mode: "direct".into(),
            run_id: 3,
        };
        assert_eq!(
            serde_json::to_string(&change).unwrap(),
            r#"{"dest_key":"bronze/a b.zip","source_key":"data/a b.zip","size":7,"etag":"e","checksum":"sha256:ab","source_last_modified":"2026-11-27T00:00:00.000Z","action":"changed","mode":"direct","run_id":3}"#
        );
        let summary = Summary {
            changed: 1,
            complete: true,
            deleted: 0,
            format: FORMAT,
            manifest_id: "m1",
            new: 2,
            objects: 3,
            run_id: 3,
            series_missing: Some(4),
            series_overdue: Some(0),
            spec: "klines",
            started_at: "2026-11-27T00:00:00.000Z",
            status: RunStatus::Partial.as_str(),
            summary: true,
        };
        assert_eq!(
            serde_json::to_string(&summary).unwrap(),
            r#"{"changed":1,"complete":true,"deleted":0,"format":2,"manifest_id":"m1","new":2,"objects":3,"run_id":3,"series_missing":4,"series_overdue":0,"spec":"klines","started_at":"2026-11-27T00:00:00.000Z","status":"partial","summary":true}"#
        );
        let without_series = Summary {
            series_missing: None,
            series_overdue: None,
            ..summary
        };
        assert!(!serde_json::to_string(&without_series).unwrap().contains("series"));
    }
}
