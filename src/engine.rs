//! One run of one spec: list the source page by page, plan each page against the manifest,
//! copy with bounded concurrency, record each verified object, then (guarded) delete, and write
//! the run row. Shared by `s3syncd run` and the daemon.

use crate::manifest::{self, ManifestError, Reader, RunRow, Writer};
use crate::plan::{CopyJob, Planner};
use crate::s3::{self, Listing, RequestCounter};
use crate::spec::{Config, Mode, Spec};
use crate::transfer::{self, Failure, Outcome, Stats, Transferer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("staging directory {path}: {source}")]
    Staging { path: std::path::PathBuf, source: std::io::Error },
    #[error("spec {0} is already running in another s3syncd process; not starting a second run")]
    Busy(String),
    #[error("lock file {path}: {source}")]
    Lock { path: std::path::PathBuf, source: std::io::Error },
}

/// Holds `{state_dir}/locks/{spec}.lock` for a run: one run per spec across processes too (a
/// manual `s3syncd run` beside the daemon), so that cleaning up after crashes never touches a
/// live run's uploads. The OS releases the lock when the process dies.
fn lock_spec(engine: &Engine, spec: &str) -> Result<std::fs::File, EngineError> {
    let dir = engine.config.state_dir.join("locks");
    let path = dir.join(format!("{spec}.lock"));
    let lock_err = |source| EngineError::Lock {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(lock_err)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(EngineError::Busy(spec.to_string())),
        Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
    }
}

/// What all runs of a process share: the manifest writer and the global limits.
#[derive(Clone)]
pub struct Engine {
    pub config: Arc<Config>,
    pub writer: Writer,
    /// `max_transfers`: object transfers at once, all specs together.
    transfers: Arc<Semaphore>,
    /// `stream_buffer`, in MiB.
    buffer: Arc<Semaphore>,
}

impl Engine {
    pub fn new(config: Config) -> Result<Engine, EngineError> {
        let writer = Writer::open(&config.manifest_path())?;
        let buffer_mib = (config.stream_buffer >> 20) as usize;
        Ok(Engine {
            transfers: Arc::new(Semaphore::new(config.max_transfers)),
            buffer: Arc::new(Semaphore::new(buffer_mib)),
            writer,
            config: Arc::new(config),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Overrides the spec's mode (`--mode`); the spec's fallback list still applies.
    pub mode: Option<Mode>,
    /// A progress bar to drive (on a TTY); without one, progress goes to the log every 10 s.
    pub progress: Option<indicatif::ProgressBar>,
}

/// Cancellation for a run: `stop` ends listing and new copies (in-flight ones finish);
/// `hard_stop` aborts in-flight work (multipart uploads are aborted, nothing is recorded).
#[derive(Clone, Default)]
pub struct Stop {
    pub stop: CancellationToken,
    pub hard_stop: CancellationToken,
}

/// Everything a run did, for the summary and the exit code.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub row: RunRow,
    pub stats: Stats,
    pub filtered: u64,
    pub wall: Duration,
    pub dry_run: bool,
    /// Dry run: the first keys that would be copied or deleted.
    pub sample_copies: Vec<String>,
    pub sample_deletes: Vec<String>,
    pub bytes_planned: u64,
    pub deletes_planned: u64,
    pub delete_refused: Option<String>,
    pub listing_error: Option<String>,
    /// Estimated (requests, data) cost in USD, from the config's price table.
    pub cost_usd: (f64, f64),
}

impl RunReport {
    /// Exit code per the contract: 0 when everything listed was handled, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.row.status == "ok" {
            0
        } else {
            1
        }
    }
}

/// Runs a spec once.
pub async fn run(engine: &Engine, spec: Arc<Spec>, opts: RunOptions, stop: Stop) -> Result<RunReport, EngineError> {
    use tracing::Instrument;
    let _lock = if opts.dry_run { None } else { Some(lock_spec(engine, &spec.name)?) };
    let run_id = if opts.dry_run {
        0
    } else {
        engine.writer.start_run(&spec.name).await?
    };
    let span = tracing::info_span!("run", spec = %spec.name, run_id);
    let name = spec.name.clone();
    let dry_run = opts.dry_run;
    if !dry_run {
        crate::metrics::run_started(&name);
    }
    let result = run_inner(engine, spec, opts, stop, run_id).instrument(span).await;
    if let (Err(_), false) = (&result, dry_run) {
        crate::metrics::run_aborted(&name);
    }
    result
}

/// Progress: a bar on a TTY, else a log line every 10 s.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_log: Instant,
}

impl Progress {
    fn planned(&mut self) {
        if let Some(b) = &self.bar {
            b.inc_length(1);
        }
    }
    fn done(&mut self, row: &RunRow) {
        match &self.bar {
            Some(b) => {
                b.inc(1);
                b.set_message(crate::cli::human_bytes(row.bytes_copied));
            }
            None if self.last_log.elapsed() >= Duration::from_secs(10) => {
                self.last_log = Instant::now();
                tracing::info!(
                    listed = row.objects_listed,
                    copied = row.objects_copied,
                    skipped = row.objects_skipped,
                    failed = row.objects_failed,
                    bytes = row.bytes_copied,
                    "progress"
                );
            }
            None => {}
        }
    }
}

async fn run_inner(engine: &Engine, spec: Arc<Spec>, opts: RunOptions, stop: Stop, run_id: i64) -> Result<RunReport, EngineError> {
    let started = Instant::now();
    let requests = Arc::new(RequestCounter::default());
    let src = s3::client(&spec.source, &spec.transfer, requests.clone()).await;
    let dst = s3::client(&spec.destination, &spec.transfer, requests.clone()).await;
    abort_stale_uploads(engine, &spec, &dst).await?;
    let staging = engine.config.staging_dir().join(&spec.name);
    match transfer::clean_staging(&staging) {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(files = n, dir = %staging.display(), "removed leftover staging files")
        }
        Err(source) => return Err(EngineError::Staging { path: staging, source }),
    }
    let chain = match opts.mode {
        Some(m) => crate::spec::chain(m, &spec.fallback),
        None => spec.mode_chain(),
    };
    let t = Arc::new(Transferer {
        spec: spec.clone(),
        run_id,
        src: src.clone(),
        dst: dst.clone(),
        chain,
        staging,
        buffer: engine.buffer.clone(),
        buffer_mib: (engine.config.stream_buffer >> 20) as u32,
        hard_stop: stop.hard_stop.clone(),
        requests: requests.clone(),
        writer: engine.writer.clone(),
        stats: Default::default(),
        seq: Default::default(),
    });
    let reader = Reader::open(engine.writer.path())?;
    let mut report = RunReport {
        row: RunRow {
            id: run_id,
            spec: spec.name.clone(),
            started_at: manifest::now(),
            ..RunRow::default()
        },
        stats: Stats::default(),
        filtered: 0,
        wall: Duration::ZERO,
        dry_run: opts.dry_run,
        sample_copies: Vec::new(),
        sample_deletes: Vec::new(),
        bytes_planned: 0,
        deletes_planned: 0,
        delete_refused: None,
        listing_error: None,
        cost_usd: (0.0, 0.0),
    };
    tracing::info!(source = %format!("s3://{}/{}", spec.source.bucket, spec.source.prefix), destination = %format!("s3://{}/{}", spec.destination.bucket, spec.destination.prefix), "run started");

    // Deletes are collected up to the cap (plus one, to know the cap was passed).
    let held = reader.count_objects(&spec.name)?;
    let delete_cap = spec.max_delete.limit(held);
    let mut gone = Vec::new();
    let mut gone_count = 0u64;

    let per_spec = Arc::new(Semaphore::new(spec.transfer.concurrency));
    let mut tasks: JoinSet<(CopyJob, Result<Outcome, Failure>)> = JoinSet::new();
    // Key ranges listed at once, cut where the manifest says the keys are (none on a first run).
    // Rows recorded under an earlier source prefix could be out of place: only increasing keys
    // under the current prefix make valid cuts.
    let mut split: Vec<String> = Vec::new();
    for k in reader.split_keys(&spec.name, &spec.destination.prefix, spec.transfer.list_partitions)? {
        if k.starts_with(&spec.source.prefix) && split.last().is_none_or(|l| k > *l) {
            split.push(k);
        }
    }
    let mut lister = Listing::start(&src, &spec.source.bucket, &spec.source.prefix, &split);
    let mut planners: Vec<Planner> = s3::key_ranges(&split)
        .map(|(after, until)| Planner::part(&spec, after, until))
        .collect();
    if planners.len() > 1 {
        tracing::info!(partitions = planners.len(), "listing the source in key ranges at once");
    }
    let mut listing_complete = false;
    let mut progress = Progress {
        bar: opts.progress.clone(),
        last_log: Instant::now(),
    };
    let mut note_gone = |rows: Vec<manifest::ObjectRow>| {
        for r in rows {
            gone_count += 1;
            if gone.len() as u64 <= delete_cap {
                gone.push(r);
            }
        }
    };
    loop {
        let next = tokio::select! {
            biased;
            () = stop.stop.cancelled() => break,
            n = lister.next() => n,
        };
        let (part, page) = match next {
            None => {
                listing_complete = true;
                break;
            }
            Some(Ok((part, Some(page)))) => (part, page),
            Some(Ok((part, None))) => {
                // The part is complete: manifest rows left in its range have no source.
                note_gone(planners[part].finish(&reader)?);
                continue;
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "source listing failed; no deletes this run");
                report.listing_error = Some(e.to_string());
                break;
            }
        };
        let plan = planners[part].plan_page(&reader, page)?;
        report.row.objects_listed += plan.listed;
        report.filtered += plan.filtered;
        report.row.objects_skipped += plan.skipped;
        note_gone(plan.source_gone);
        for job in plan.copies {
            report.bytes_planned += job.source.size;
            if opts.dry_run {
                report.row.objects_copied += 1;
                if report.sample_copies.len() < 10 {
                    report.sample_copies.push(format!("{} ({})", job.dest_key, job.reason.as_str()));
                }
                continue;
            }
            // Both limits are taken before spawning, so the listing waits when transfers are saturated.
            let permits = tokio::select! {
                biased;
                () = stop.stop.cancelled() => None,
                p = async { (per_spec.clone().acquire_owned().await, engine.transfers.clone().acquire_owned().await) } => Some(p),
            };
            let Some((Ok(p1), Ok(p2))) = permits else {
                break;
            };
            let t = t.clone();
            tasks.spawn(async move {
                let r = t.copy(&job).await;
                drop((p1, p2));
                (job, r)
            });
            progress.planned();
            while let Some(done) = tasks.try_join_next() {
                record(engine, &spec, run_id, done, &mut report);
                progress.done(&report.row);
            }
        }
        if stop.stop.is_cancelled() {
            break;
        }
    }
    // In-flight copies finish unless the hard stop fires, which aborts them (nothing recorded).
    loop {
        tokio::select! {
            biased;
            () = stop.hard_stop.cancelled() => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
            next = tasks.join_next() => match next {
                Some(done) => {
                    record(engine, &spec, run_id, done, &mut report);
                    progress.done(&report.row);
                }
                None => break,
            },
        }
    }

    let interrupted = stop.stop.is_cancelled() || stop.hard_stop.is_cancelled();
    if spec.delete && gone_count > 0 {
        report.deletes_planned = gone_count;
        let refuse = if !listing_complete || interrupted {
            Some("the source listing did not complete".to_string())
        } else if report.row.objects_failed > 0 {
            Some(format!("{} objects failed in this run", report.row.objects_failed))
        } else if gone_count > delete_cap {
            Some(format!(
                "{gone_count} deletions exceed max_delete ({delete_cap} of {held} objects held)"
            ))
        } else {
            None
        };
        match refuse {
            Some(why) => {
                tracing::warn!(candidates = gone_count, reason = %why, "deleting nothing");
                report.delete_refused = Some(why);
            }
            None if opts.dry_run => report.sample_deletes = gone.iter().take(10).map(|r| r.dest_key.clone()).collect(),
            None => report.row.objects_deleted = delete(engine, &spec, &dst, run_id, &gone, &mut report).await,
        }
    }

    report.stats = t.stats();
    report.wall = started.elapsed();
    report.cost_usd = engine.config.cost.estimate(&report.stats.requests, report.stats.bytes_through_host);
    let row = &mut report.row;
    row.finished_at = Some(manifest::now());
    row.bytes_through_host = report.stats.bytes_through_host;
    row.requests = requests.total();
    row.status = if interrupted {
        "interrupted"
    } else if report.listing_error.is_some() {
        "failed"
    } else if row.objects_failed > 0 || report.delete_refused.is_some() && gone_count > delete_cap {
        "partial"
    } else {
        "ok"
    }
    .into();
    row.error = report
        .listing_error
        .clone()
        .or_else(|| report.delete_refused.clone().map(|w| format!("deleted nothing: {w}")));
    if !opts.dry_run {
        row.details = serde_json::json!({
            "modes": report.stats.modes,
            "fallbacks": report.stats.fallbacks,
            "disabled_modes": report.stats.disabled_modes,
            "retries": report.stats.retries,
            "requests": report.stats.requests,
            "objects_filtered": report.filtered,
            "estimated_cost_usd": report.cost_usd.0 + report.cost_usd.1,
            "wall_seconds": report.wall.as_secs_f64(),
        })
        .to_string();
        engine.writer.finish_run(row.clone());
        engine.writer.flush().await?;
    }
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
    let row = &report.row;
    let fallbacks: u64 = report.stats.fallbacks.values().sum();
    tracing::info!(
        status = %row.status, listed = row.objects_listed, copied = row.objects_copied, skipped = row.objects_skipped,
        failed = row.objects_failed, deleted = row.objects_deleted, bytes = row.bytes_copied, through_host = row.bytes_through_host,
        fallbacks, requests = row.requests, cost_usd = report.cost_usd.0 + report.cost_usd.1, seconds = report.wall.as_secs_f64(),
        "run finished"
    );
    if !opts.dry_run {
        crate::metrics::run_finished(&report, &requests.by_result());
    }
    Ok(report)
}

/// Aborts the multipart uploads an earlier run of this spec started and never ended (it was
/// killed). The spec lock guarantees none of them belongs to a live run.
async fn abort_stale_uploads(engine: &Engine, spec: &Spec, dst: &aws_sdk_s3::Client) -> Result<(), EngineError> {
    let stale = Reader::open(engine.writer.path())?.open_uploads(&spec.name)?;
    for (bucket, key, id) in &stale {
        let gone = if id.starts_with(transfer::upload::PENDING_PREFIX) {
            // Tried once: on a server without ListMultipartUploads it would never succeed.
            transfer::upload::abort_uploads_on_key(dst, bucket, key).await;
            true
        } else {
            transfer::upload::abort_upload(dst, bucket, key, id).await
        };
        if gone {
            engine.writer.upload_ended(id);
        }
    }
    if !stale.is_empty() {
        tracing::info!(uploads = stale.len(), "aborted multipart uploads left by an interrupted run");
    }
    Ok(())
}

/// Records one finished copy: a manifest row only for a verified success; a failure row otherwise.
fn record(
    engine: &Engine,
    spec: &Spec,
    run_id: i64,
    done: Result<(CopyJob, Result<Outcome, Failure>), tokio::task::JoinError>,
    report: &mut RunReport,
) {
    let (job, result) = match done {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "copy task panicked");
            report.row.objects_failed += 1;
            return;
        }
    };
    match result {
        Ok(o) => {
            crate::metrics::object_copied(&spec.name, o.mode.as_str(), job.source.size);
            report.row.objects_copied += 1;
            report.row.bytes_copied += job.source.size;
            tracing::debug!(key = %job.source.key, mode = %o.mode, reason = job.reason.as_str(), "copied");
            engine.writer.upsert(manifest::ObjectRow {
                spec: spec.name.clone(),
                dest_key: job.dest_key,
                source_key: job.source.key,
                size: job.source.size,
                etag: o.etag,
                source_last_modified: job.source.last_modified,
                copied_at: manifest::now(),
                mode: o.mode.as_str().into(),
                run_id,
                dest_etag: o.dest_etag,
                verified: o.verified.into(),
            });
        }
        Err(f) => {
            crate::metrics::object_failed(&spec.name);
            report.row.objects_failed += 1;
            let mode = f.mode.map(|m| m.as_str());
            tracing::warn!(key = %job.source.key, mode = mode.unwrap_or("-"), kind = f.error.kind.as_str(), error = %f.error, "object failed");
            // A failed overwrite may have replaced what the manifest vouched for.
            if f.error.op == "verify" {
                engine.writer.forget(&spec.name, &job.dest_key);
            }
            engine.writer.failure(
                run_id,
                &spec.name,
                &job.source.key,
                mode,
                f.error.kind.as_str(),
                &f.error.to_string(),
            );
        }
    }
}

/// Deletes destination objects whose source is gone, 1,000 keys per DeleteObjects request.
async fn delete(
    engine: &Engine,
    spec: &Spec,
    dst: &aws_sdk_s3::Client,
    run_id: i64,
    gone: &[manifest::ObjectRow],
    report: &mut RunReport,
) -> u64 {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let mut deleted = 0;
    for chunk in gone.chunks(1000) {
        let ids: Vec<_> = chunk
            .iter()
            .filter_map(|r| ObjectIdentifier::builder().key(&r.dest_key).build().ok())
            .collect();
        let Ok(del) = Delete::builder().set_objects(Some(ids)).quiet(true).build() else {
            continue;
        };
        match dst.delete_objects().bucket(&spec.destination.bucket).delete(del).send().await {
            Ok(out) => {
                let failed: std::collections::HashSet<&str> = out.errors().iter().filter_map(|e| e.key()).collect();
                for r in chunk {
                    if failed.contains(r.dest_key.as_str()) {
                        report.row.objects_failed += 1;
                        engine
                            .writer
                            .failure(run_id, &spec.name, &r.source_key, None, "delete", "DeleteObjects refused this key");
                    } else {
                        engine.writer.deleted(run_id, &spec.name, &r.dest_key);
                        deleted += 1;
                    }
                }
            }
            Err(e) => {
                let e = transfer::error::classify("DeleteObjects", e);
                tracing::warn!(error = %e, keys = chunk.len(), "delete failed");
                report.row.objects_failed += chunk.len() as u64;
            }
        }
    }
    deleted
}
