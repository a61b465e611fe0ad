//! One run of one spec, in three stages joined by a bounded channel (as s3sync's pipeline):
//!
//! 1. **plan** (`planning`): list the source in key ranges, merge each page with the manifest,
//!    send copy jobs on, and collect delete candidates;
//! 2. **copy** (`copying`): take the limits, copy each job, record each verified object;
//! 3. **finish** (`finishing`): the delete guard, the deletes, the status and the run row.
//!
//! One [`Tally`] counts everything a run does, and feeds the run row, the summary and the
//! metrics. Progress goes to an [`Observer`]; presentation (bars, log lines) lives above.
//! Shared by `s3syncd run` and the daemon.

mod copying;
mod finishing;
mod lake;
pub mod listing;
mod notify;
mod observe;
mod planning;
pub mod preflight;
mod sidecars;
mod tally;

pub use observe::{Event, Observer, Quiet};
pub use tally::Tally;

use crate::manifest::{self, ManifestError, Reader, RunRow, RunStatus, Target, Writer};
use crate::s3::{self, RequestCounter};
use crate::spec::{Config, ModeChoice, Spec};
use crate::transfer::{self, Transferer};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("staging directory {path}: {source}")]
    Staging { path: PathBuf, source: std::io::Error },
    #[error("spec {0} is already running in another s3syncd process; not starting a second run")]
    Busy(String),
    #[error("lock file {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("{side}: {reason}")]
    Credentials { side: crate::spec::Which, reason: String },
    #[error("destination s3://{bucket}/{prefix} is unusable, so nothing was copied: {reason}")]
    Destination { bucket: String, prefix: String, reason: String },
    #[error("state_dir {path} belongs to {owner}, and this is root: files made now would be root's, and the daemon could not use them; run as that user (sudo -u {owner} s3syncd ...)")]
    ForeignState { path: PathBuf, owner: String },
    #[error("{unrecorded} copied objects could not be recorded in the manifest (it stayed busy or full for longer than shutdown_grace); the next run copies them again")]
    NotRecorded { unrecorded: u64 },
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
    /// `[[notify]]` posts of every run; drained at exit (`Engine::drain`).
    pub notifications: notify::Notifications,
}

impl Engine {
    pub fn new(config: Config) -> Result<Engine, EngineError> {
        check_owner(&config.state_dir)?;
        let writer = Writer::open(&config.manifest_path(), config.shutdown_grace)?;
        Ok(Engine {
            transfers: Arc::new(Semaphore::new(config.max_transfers)),
            buffer: Arc::new(Semaphore::new(Self::buffer_mib(&config) as usize)),
            writer,
            config: Arc::new(config),
            notifications: notify::Notifications::default(),
        })
    }

    /// At exit: commits the writes still queued after the run's own flush (freshness, delivery),
    /// which the process's exit would otherwise drop, and lets the notifications under way
    /// finish, for at most the grace period.
    pub async fn drain(&self) {
        if let Err(e) = self.writer.flush().await {
            tracing::warn!(error = %e, "the manifest's last writes were not committed");
        }
        self.notifications.drain(self.config.shutdown_grace).await;
    }

    fn buffer_mib(config: &Config) -> u32 {
        (config.stream_buffer >> 20) as u32
    }
}

/// The copies a dry run planned: (source key, size).
pub type PlannedCopies = Vec<(String, u64)>;

#[derive(Clone)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Overrides the spec's mode (`--mode`); the spec's fallback list still applies.
    pub mode: Option<ModeChoice>,
    /// A spec with `[series]` lists the whole source, whether its reconcile is due or not.
    pub full: bool,
    /// Only these source keys (`run --keys`: one shard of a plan): the listing covers their
    /// key range, other keys are passed over, nothing is deleted.
    pub keys: Option<Arc<BTreeSet<String>>>,
    /// Only these object keys, each with its sidecar: those a batch of S3 events named
    /// (`[source.events]`). Each is listed on its own; a key whose source is gone is a delete
    /// candidate.
    pub events: Option<Arc<BTreeSet<String>>>,
    /// A dry run hands each planned copy `(source key, size)` here (`s3syncd plan`).
    pub collect: Option<Arc<Mutex<PlannedCopies>>>,
    /// Told of the run's progress (a progress bar, periodic log lines).
    pub observer: Arc<dyn Observer>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dry_run: false,
            mode: None,
            full: false,
            keys: None,
            events: None,
            collect: None,
            observer: Arc::new(Quiet),
        }
    }
}

/// Cancellation for a run: `stop` ends listing and new copies (in-flight ones finish);
/// `hard_stop` aborts in-flight work (multipart uploads are aborted, nothing is recorded).
#[derive(Clone, Default)]
pub struct Stop {
    pub stop: CancellationToken,
    pub hard_stop: CancellationToken,
}

/// Everything a run did, for the summary, the run row and the caller's exit code.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub spec: String,
    /// 0 for a dry run, which records nothing.
    pub run_id: i64,
    pub started_at: String,
    pub status: RunStatus,
    pub tally: Tally,
    pub wall: Duration,
    pub dry_run: bool,
    /// Dry run: the first keys that would be deleted.
    pub sample_deletes: Vec<String>,
    pub deletes_planned: u64,
    pub delete_refused: Option<String>,
    pub listing_error: Option<String>,
    /// Estimated (requests, data) cost in USD, from the config's price table.
    pub cost_usd: (f64, f64),
    /// Objects copied whose rows the manifest could not take.
    pub unrecorded: u64,
    /// Why a run that ended before its stages did failed (no destination, no credentials).
    pub error: Option<String>,
    /// The change feed's file that could not be written (this run's or an earlier one's).
    pub delivery_failed: Option<lake::DeliveryFailed>,
}

impl RunReport {
    /// The run's row in the manifest's `runs` table.
    pub fn row(&self) -> RunRow {
        let t = &self.tally;
        RunRow {
            id: self.run_id,
            spec: self.spec.clone(),
            started_at: self.started_at.clone(),
            finished_at: Some(manifest::now()),
            status: self.status,
            objects_listed: t.listed,
            objects_copied: t.copied,
            objects_skipped: t.skipped,
            objects_failed: t.failed,
            objects_deleted: t.deleted,
            bytes_copied: t.bytes_copied,
            bytes_through_host: t.bytes_through_host,
            requests: t.requests_total(),
            details: t.details(self.cost_usd.0 + self.cost_usd.1, self.wall).to_string(),
            error: (self.unrecorded > 0)
                .then(|| {
                    EngineError::NotRecorded {
                        unrecorded: self.unrecorded,
                    }
                    .to_string()
                })
                .or_else(|| self.error.clone())
                .or_else(|| self.listing_error.clone())
                .or_else(|| self.delete_refused.as_ref().map(|w| format!("deleted nothing: {w}"))),
        }
    }
}

/// Runs a spec once. Every run that ends, however early, reaches the same end: its row,
/// metrics, notifications and the feed's freshness.
pub async fn run(engine: &Engine, spec: Arc<Spec>, opts: RunOptions, stop: Stop) -> Result<RunReport, EngineError> {
    use tracing::Instrument;
    let dry_run = opts.dry_run;
    let _lock = if dry_run { None } else { Some(lock_spec(engine, &spec.name)?) };
    if !dry_run {
        // Under the lock, a run still `running` belongs to a process that died.
        engine.writer.close_abandoned(&spec.name);
        engine
            .writer
            .adopt(&Target::of(&spec), &spec.source.endpoint_identity(), &spec.source.bucket);
    }
    let run_id = if dry_run { 0 } else { engine.writer.start_run(&spec.name).await? };
    let span = tracing::info_span!("run", spec = %spec.name, run_id);
    if !dry_run {
        crate::metrics::run_started(&spec.name);
    }
    let (started, started_at) = (Instant::now(), manifest::now());
    let result = async {
        let run = Run::prepare(engine, spec.clone(), opts, stop, run_id).await?;
        run.execute().await
    }
    .instrument(span.clone())
    .await;
    match &result {
        // The finish stage told everything of a run it finished, and of one the manifest lost.
        Ok(_) | Err(EngineError::NotRecorded { .. }) => {}
        Err(_) if dry_run => {}
        Err(e) => {
            let report = RunReport::ended_early(&spec.name, run_id, started_at, started.elapsed(), e);
            engine.writer.finish_run(report.row());
            let _ = engine.writer.flush().await;
            finishing::metrics(&report);
            lake::after_run(engine, &spec, &report).instrument(span).await;
        }
    }
    result
}

impl RunReport {
    /// A run that ended before its stages did (no destination, no credentials, no staging).
    fn ended_early(spec: &str, run_id: i64, started_at: String, wall: Duration, e: &EngineError) -> RunReport {
        RunReport {
            spec: spec.to_string(),
            run_id,
            started_at,
            status: RunStatus::Failed,
            tally: Tally::default(),
            wall,
            dry_run: false,
            sample_deletes: Vec::new(),
            deletes_planned: 0,
            delete_refused: None,
            listing_error: None,
            cost_usd: (0.0, 0.0),
            unrecorded: 0,
            error: Some(e.to_string()),
            delivery_failed: None,
        }
    }
}

/// Closes the runs that processes which died left `running`, for every spec not running now
/// (its lock is free): the daemon does this at start.
pub fn close_abandoned_runs(engine: &Engine) -> Result<(), EngineError> {
    for spec in Reader::open(engine.writer.path())?.running_specs()? {
        if let Ok(_lock) = lock_spec(engine, &spec) {
            engine.writer.close_abandoned(&spec);
        }
    }
    Ok(())
}

/// Holds `{state_dir}/locks/{spec}.lock` for a run: one run per spec across processes too (a
/// manual `s3syncd run` beside the daemon), so that cleaning up after crashes never touches a
/// live run's uploads. The OS releases the lock when the process dies.
fn lock_spec(engine: &Engine, spec: &str) -> Result<std::fs::File, EngineError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = engine.config.locks_dir();
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
        .mode(0o600)
        .open(&path)
        .map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(EngineError::Busy(spec.to_string())),
        Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
    }
}

/// Run as root on a state directory another user owns (`sudo s3syncd run`), s3syncd would
/// leave root-owned locks, staging files and manifest files that the daemon's user cannot use.
fn check_owner(state_dir: &std::path::Path) -> Result<(), EngineError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    match std::fs::metadata(state_dir) {
        Ok(m) if m.uid() != 0 => Err(EngineError::ForeignState {
            path: state_dir.to_path_buf(),
            owner: user_name(m.uid()),
        }),
        _ => Ok(()),
    }
}

/// The name of a user id, from /etc/passwd; the number when it has none.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Fails the run at once when the destination can take no object (no such bucket, rejected
/// credentials, no server answering), rather than fail every object after reading it from the
/// source. A refusal to list (AccessDenied) proves nothing: a write-only role goes on.
async fn check_destination(spec: &Spec, dst: &aws_sdk_s3::Client) -> Result<(), EngineError> {
    use crate::transfer::{error::classify, ErrorKind, Op};
    let side = &spec.destination;
    let Err(e) = s3::list_one(dst, side).await else { return Ok(()) };
    let e = classify(Op::ListObjectsV2, e);
    let unusable = match &e.code {
        Some(code) => code.is_unusable_side(),
        None => e.kind == ErrorKind::Retryable, // no answer at all, after the SDK's retries
    };
    if unusable {
        return Err(EngineError::Destination {
            bucket: side.bucket.clone(),
            prefix: side.prefix.clone(),
            reason: e.explained(crate::spec::Which::Destination, side),
        });
    }
    tracing::warn!(error = %e, "cannot list the destination; going on (a write-only destination cannot be listed)");
    Ok(())
}

/// A run under way: what its stages share.
struct Run {
    engine: Engine,
    spec: Arc<Spec>,
    run_id: i64,
    opts: RunOptions,
    stop: Stop,
    started: Instant,
    started_at: String,
    requests: Arc<RequestCounter>,
    transferer: Arc<Transferer>,
    /// Where the spec's rows are (its destination).
    target: Target,
    /// The source's endpoint identity, as rows record it (computed once, not per object).
    source_endpoint: String,
    tally: Mutex<Tally>,
    /// The writer's lost rows when the run started: more at the end means rows of this run.
    lost_at_start: u64,
    /// Objects whose checksum sidecar this run copied (source keys): checked after the copies.
    late_sidecars: Mutex<Vec<String>>,
}

impl Run {
    /// Builds the clients, aborts what a killed run left, and clears the staging directory.
    async fn prepare(engine: &Engine, spec: Arc<Spec>, opts: RunOptions, stop: Stop, run_id: i64) -> Result<Run, EngineError> {
        for (side, s) in spec.sides() {
            if let Some(reason) = s3::missing_profile(s) {
                return Err(EngineError::Credentials { side, reason });
            }
        }
        let requests = Arc::new(RequestCounter::default());
        // Both at once: each may first ask for its bucket's region (one round trip).
        let (src, dst) = tokio::join!(
            s3::client(&spec.source, crate::spec::Which::Source, &spec.transfer, requests.clone()),
            s3::client(&spec.destination, crate::spec::Which::Destination, &spec.transfer, requests.clone())
        );
        abort_stale_uploads(engine, &spec, &dst).await?;
        if !opts.dry_run {
            // The files of runs killed outright, before this run adds its own; what fails here
            // is tried again, and reported, when this run ends.
            if let Err(e) = lake::deliver_pending(engine, &spec, &dst).await {
                tracing::warn!(error = %e, "earlier delivery files not written yet");
            }
        }
        let staging = engine.config.staging_dir().join(&spec.name);
        match transfer::clean_staging(&staging) {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, dir = %staging.display(), "removed leftover staging files"),
            Err(source) => return Err(EngineError::Staging { path: staging, source }),
        }
        // Across two endpoints no server can copy server-side: `direct` leaves a chain that has
        // another mode at once (expected, so not a warning on every run), and the run says so.
        let (mut chain, mut tally) = (spec.mode_chain(opts.mode), Tally::default());
        if chain.len() > 1 && !spec.source.same_endpoint(&spec.destination) {
            chain.retain(|m| *m != crate::spec::Mode::Direct);
            let why = "source and destination are on different endpoints".to_string();
            tally.disabled_modes.insert(crate::spec::Mode::Direct, why);
        }
        let transferer = Transferer::new(crate::transfer::Setup {
            spec: spec.clone(),
            run_id,
            src,
            dst,
            chain,
            staging,
            buffer: engine.buffer.clone(),
            buffer_mib: Engine::buffer_mib(&engine.config),
            stop: stop.stop.clone(),
            hard_stop: stop.hard_stop.clone(),
            writer: engine.writer.clone(),
        });
        Ok(Run {
            engine: engine.clone(),
            target: Target::of(&spec),
            source_endpoint: spec.source.endpoint_identity(),
            spec,
            run_id,
            opts,
            stop,
            started: Instant::now(),
            started_at: manifest::now(),
            requests,
            transferer: Arc::new(transferer),
            tally: Mutex::new(tally),
            lost_at_start: engine.writer.lost(),
            late_sidecars: Mutex::default(),
        })
    }

    /// Plan and copy run at once (the channel bounds how far planning runs ahead), then finish.
    /// The destination check runs beside the first listing (a round trip saved across a WAN);
    /// no copy starts before it passes, and when it fails the closed queue stops the planner.
    async fn execute(self) -> Result<RunReport, EngineError> {
        let spec = &self.spec;
        tracing::info!(source = %format!("s3://{}/{}", spec.source.bucket, spec.source.prefix), destination = %format!("s3://{}/{}", spec.destination.bucket, spec.destination.prefix), "run started");
        let reader = Reader::open(self.engine.writer.path())?;
        let (jobs, queue) = tokio::sync::mpsc::channel(planning::QUEUE);
        let copy = async {
            // Beside the destination check, whether `direct` will need each object's redirect
            // (one GetBucketWebsite), so that the first copies do not wait a round trip for it.
            let t = &self.transferer;
            let asked = Instant::now();
            let website = async {
                if t.tries(crate::spec::Mode::Direct) {
                    t.source_serves_website().await;
                    return asked.elapsed();
                }
                Duration::MAX
            };
            let check = async { (check_destination(spec, t.dst()).await, asked.elapsed()) };
            let ((checked, check_rtt), website_rtt) = tokio::join!(check, website);
            checked?;
            // Those round trips also tell how far the server is: where to start the limit. The
            // shorter one, as a listing may cost the server time of its own.
            self.copy(queue, check_rtt.min(website_rtt)).await;
            Ok::<_, EngineError>(())
        };
        let (planned, checked) = tokio::join!(self.plan(reader, jobs), copy);
        checked?;
        self.check_late_sidecars().await?;
        self.finish(planned?).await
    }

    /// Copied objects whose rows the manifest gave up on during this run.
    fn unrecorded(&self) -> u64 {
        self.engine.writer.lost() - self.lost_at_start
    }

    /// Updates the tally; `f` runs under its lock, so keep it short.
    fn tally<T>(&self, f: impl FnOnce(&mut Tally) -> T) -> T {
        f(&mut self.tally.lock().unwrap())
    }
}

/// Aborts the recorded multipart uploads of specs that are not among `live` (their feed was
/// removed, so no run of theirs will clean up), at the destination recorded with each upload.
/// A spec whose lock is held (a run still going) is left alone.
pub async fn abort_orphan_uploads(engine: &Engine, live: &std::collections::BTreeSet<String>) -> Result<(), EngineError> {
    let uploads = Reader::open(engine.writer.path())?.all_uploads()?;
    let mut aborted = 0;
    for (spec, side, key, id) in uploads.into_iter().filter(|(spec, ..)| !live.contains(spec)) {
        let Ok(_lock) = lock_spec(engine, &spec) else { continue };
        let dst = s3::client(
            &side,
            crate::spec::Which::Destination,
            &crate::spec::TransferOpts::default(),
            Arc::new(RequestCounter::default()),
        )
        .await;
        if abort_recorded(&dst, &side.bucket, &key, &id).await {
            engine.writer.upload_ended(&id);
            aborted += 1;
        }
    }
    if aborted > 0 {
        tracing::info!(uploads = aborted, "aborted multipart uploads of removed feeds");
    }
    Ok(())
}

/// Aborts one recorded upload; true when it is gone. A pending row (killed between creating
/// the upload and recording its id) is tried once: a server without ListMultipartUploads can
/// never answer it.
async fn abort_recorded(dst: &aws_sdk_s3::Client, bucket: &str, key: &str, id: &str) -> bool {
    if id.starts_with(transfer::upload::PENDING_PREFIX) {
        transfer::upload::abort_uploads_on_key(dst, bucket, key).await;
        true
    } else {
        transfer::upload::abort_upload(dst, bucket, key, id).await
    }
}

/// Aborts the multipart uploads an earlier run of this spec started and never ended (it was
/// killed). The spec lock guarantees none of them belongs to a live run.
async fn abort_stale_uploads(engine: &Engine, spec: &Spec, dst: &aws_sdk_s3::Client) -> Result<(), EngineError> {
    let stale = Reader::open(engine.writer.path())?.open_uploads(&spec.name)?;
    for (bucket, key, id) in &stale {
        if abort_recorded(dst, bucket, key, id).await {
            engine.writer.upload_ended(id);
        }
    }
    if !stale.is_empty() {
        tracing::info!(uploads = stale.len(), "aborted multipart uploads left by an interrupted run");
    }
    Ok(())
}
