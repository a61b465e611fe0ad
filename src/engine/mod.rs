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
mod observe;
mod planning;
mod tally;

pub use observe::{Event, Observer, Quiet};
pub use tally::{ModeCount, Tally};

use crate::manifest::{self, ManifestError, Reader, RunRow, RunStatus, Writer};
use crate::s3::{self, RequestCounter};
use crate::spec::{Config, ModeChoice, Spec};
use crate::transfer::{self, Transferer};
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
        Ok(Engine {
            transfers: Arc::new(Semaphore::new(config.max_transfers)),
            buffer: Arc::new(Semaphore::new(Self::buffer_mib(&config) as usize)),
            writer,
            config: Arc::new(config),
        })
    }

    fn buffer_mib(config: &Config) -> u32 {
        (config.stream_buffer >> 20) as u32
    }
}

#[derive(Clone)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Overrides the spec's mode (`--mode`); the spec's fallback list still applies.
    pub mode: Option<ModeChoice>,
    /// Told of the run's progress (a progress bar, periodic log lines).
    pub observer: Arc<dyn Observer>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dry_run: false,
            mode: None,
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
            error: self
                .listing_error
                .clone()
                .or_else(|| self.delete_refused.as_ref().map(|w| format!("deleted nothing: {w}"))),
        }
    }
}

/// Runs a spec once.
pub async fn run(engine: &Engine, spec: Arc<Spec>, opts: RunOptions, stop: Stop) -> Result<RunReport, EngineError> {
    use tracing::Instrument;
    let dry_run = opts.dry_run;
    let _lock = if dry_run { None } else { Some(lock_spec(engine, &spec.name)?) };
    let run_id = if dry_run { 0 } else { engine.writer.start_run(&spec.name).await? };
    let span = tracing::info_span!("run", spec = %spec.name, run_id);
    let name = spec.name.clone();
    if !dry_run {
        crate::metrics::run_started(&name);
    }
    let result = async {
        let run = Run::prepare(engine, spec, opts, stop, run_id).await?;
        run.execute().await
    }
    .instrument(span)
    .await;
    if let (Err(_), false) = (&result, dry_run) {
        crate::metrics::run_aborted(&name);
    }
    result
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
    tally: Mutex<Tally>,
}

impl Run {
    /// Builds the clients, aborts what a killed run left, and clears the staging directory.
    async fn prepare(engine: &Engine, spec: Arc<Spec>, opts: RunOptions, stop: Stop, run_id: i64) -> Result<Run, EngineError> {
        let requests = Arc::new(RequestCounter::default());
        let src = s3::client(&spec.source, &spec.transfer, requests.clone()).await;
        let dst = s3::client(&spec.destination, &spec.transfer, requests.clone()).await;
        abort_stale_uploads(engine, &spec, &dst).await?;
        let staging = engine.config.staging_dir().join(&spec.name);
        match transfer::clean_staging(&staging) {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, dir = %staging.display(), "removed leftover staging files"),
            Err(source) => return Err(EngineError::Staging { path: staging, source }),
        }
        let transferer = Transferer {
            spec: spec.clone(),
            run_id,
            src,
            dst,
            chain: spec.mode_chain(opts.mode),
            staging,
            buffer: engine.buffer.clone(),
            buffer_mib: Engine::buffer_mib(&engine.config),
            hard_stop: stop.hard_stop.clone(),
            writer: engine.writer.clone(),
            disabled: Default::default(),
            seq: Default::default(),
        };
        Ok(Run {
            engine: engine.clone(),
            spec,
            run_id,
            opts,
            stop,
            started: Instant::now(),
            started_at: manifest::now(),
            requests,
            transferer: Arc::new(transferer),
            tally: Mutex::default(),
        })
    }

    /// Plan and copy run at once (the channel bounds how far planning runs ahead), then finish.
    async fn execute(self) -> Result<RunReport, EngineError> {
        let spec = &self.spec;
        tracing::info!(source = %format!("s3://{}/{}", spec.source.bucket, spec.source.prefix), destination = %format!("s3://{}/{}", spec.destination.bucket, spec.destination.prefix), "run started");
        let reader = Reader::open(self.engine.writer.path())?;
        let (jobs, queue) = tokio::sync::mpsc::channel(planning::QUEUE);
        let (planned, ()) = tokio::join!(self.plan(reader, jobs), self.copy(queue));
        self.finish(planned?).await
    }

    /// Updates the tally; `f` runs under its lock, so keep it short.
    fn tally<T>(&self, f: impl FnOnce(&mut Tally) -> T) -> T {
        f(&mut self.tally.lock().unwrap())
    }
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
