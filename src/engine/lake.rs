//! After a run, for the lakehouse: its change feed file (`[deliveries]`), its notifications
//! (`[[notify]]`) and the feed's freshness (`stale_after`). The file of a run killed outright
//! is written when a later run of its spec starts: no recorded object is ever missing from
//! the feed.

use super::{Engine, RunReport};
use crate::manifest::{Reader, RunStatus};
use crate::spec::{Deliveries, Spec};
use aws_sdk_s3::Client;
use std::io::Write;
use std::path::Path;

/// The delivery file format's version, in each summary line (docs/lakehouse.md).
pub const FORMAT: u32 = 1;

/// Writes the delivery file of run `run_id` (status `status`), if it changed anything; marks
/// the run delivered unless writing failed (a later run tries again).
pub(super) async fn deliver(engine: &Engine, spec: &Spec, dst: &Client, run_id: i64, status: &str) {
    let Some(to) = &spec.feed.deliveries else {
        engine.writer.delivered(run_id);
        return;
    };
    match write_delivery(engine, spec, dst, to, run_id, status).await {
        Ok(Some(place)) => {
            tracing::info!(run_id, delivery = %place, "delivery written");
            engine.writer.delivered(run_id);
        }
        Ok(None) => engine.writer.delivered(run_id),
        Err(e) => tracing::warn!(run_id, error = %e, "delivery not written; the next run tries again"),
    }
}

/// Writes the files that earlier runs of `spec` left unwritten (their process died, or the
/// write failed), marked incomplete when the run did not finish its plan.
pub(super) async fn deliver_pending(engine: &Engine, spec: &Spec, dst: &Client) {
    let pending = match Reader::open(engine.writer.path()).and_then(|r| r.undelivered(&spec.name)) {
        Ok(p) => p,
        Err(e) => return tracing::warn!(error = %e, "cannot read pending deliveries"),
    };
    for (run_id, status) in pending {
        deliver(engine, spec, dst, run_id, &status).await;
    }
}

/// The file: one JSON line per object the run copied (new, changed) or deleted, then the
/// summary line. None when the run changed nothing.
async fn write_delivery(
    engine: &Engine,
    spec: &Spec,
    dst: &Client,
    to: &Deliveries,
    run_id: i64,
    status: &str,
) -> Result<Option<String>, String> {
    let reader = Reader::open(engine.writer.path()).map_err(|e| e.to_string())?;
    let name = format!("{run_id:010}.jsonl");
    // Built on disk, not in memory: a first run may copy millions of objects.
    let tmp_dir = match to {
        Deliveries::Dir(d) => d.join(&spec.name),
        Deliveries::Prefix(_) => engine.config.state_dir.join("deliveries"),
    };
    std::fs::create_dir_all(&tmp_dir).map_err(|e| format!("{}: {e}", tmp_dir.display()))?;
    let tmp = tmp_dir.join(format!(".{}-{name}.tmp", spec.name));
    let counts = write_lines(&reader, spec, run_id, status, &tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
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
            sent.map_err(|e| aws_smithy_types::error::display::DisplayErrorContext(e).to_string())?;
            Ok(Some(format!("s3://{}/{key}", spec.destination.bucket)))
        }
    }
}

/// Writes the object lines and the summary to `path`; returns the number of object lines.
fn write_lines(reader: &Reader, spec: &Spec, run_id: i64, status: &str, path: &Path) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let (mut new, mut changed, mut deleted) = (0u64, 0u64, 0u64);
    let mut failed: Option<std::io::Error> = None;
    let listed = reader.changes(&spec.name, run_id - 1, Some(run_id), |c| {
        match c.action.as_str() {
            "new" => new += 1,
            "changed" => changed += 1,
            _ => deleted += 1,
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
        let summary = serde_json::json!({
            "summary": true,
            "format": FORMAT,
            "complete": matches!(status, "ok" | "partial"),
            "status": status,
            "spec": spec.name,
            "run_id": run_id,
            "new": new,
            "changed": changed,
            "deleted": deleted,
            "objects": total,
        });
        writeln!(out, "{summary}")?;
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
    let t = &report.tally;
    let status = report.status.as_str();
    let text = format!(
        "s3syncd: feed {} run {} {status}: {} copied, {} failed, {} deleted, {} unchanged in {:.1} s",
        spec.name,
        report.run_id,
        t.copied,
        t.failed,
        t.deleted,
        t.skipped,
        report.wall.as_secs_f64()
    );
    let body = |event: &str, text: &str| {
        serde_json::json!({
            "event": event,
            "text": text,
            "spec": spec.name,
            "run_id": report.run_id,
            "status": status,
            "listed": t.listed,
            "copied": t.copied,
            "skipped": t.skipped,
            "failed": t.failed,
            "deleted": t.deleted,
            "bytes_copied": t.bytes_copied,
            "wall_seconds": report.wall.as_secs_f64(),
            "host": hostname(),
        })
    };
    if !notifiers.is_empty() {
        let event = match report.status {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Interrupted => "interrupted",
            _ => "failed",
        };
        engine.notifications.send(&notifiers, event, &body(event, &text));
        let revised = reader.revised(&spec.name, report.run_id).unwrap_or_default();
        if !revised.is_empty() {
            let line = format!(
                "s3syncd: feed {}: {} objects were republished upstream (run {}); earlier versions in the manifest's history",
                spec.name,
                revised.len(),
                report.run_id
            );
            let mut b = body("revised", &line);
            b["revised"] = revised
                .iter()
                .take(100)
                .map(|(k, kept)| serde_json::json!({ "dest_key": k, "kept_key": kept }))
                .collect();
            b["revised_count"] = revised.len().into();
            engine.notifications.send(&notifiers, "revised", &b);
        }
    }
    if let Some(window) = spec.feed.stale_after {
        freshness(engine, spec, &reader, window, &notifiers, |line| body("stale", line));
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
    body: impl Fn(&str) -> serde_json::Value,
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
            let mut b = body(&line);
            b["last_new_object_at"] = last_new.into();
            engine.notifications.send(notifiers, "stale", &b);
        }
        (false, Some(_)) => {
            tracing::info!(last_new_object = %last_new, "feed is fresh again");
            engine.writer.set_stale(&spec.name, None);
        }
        _ => {}
    }
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
