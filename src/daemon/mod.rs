//! The long-running service: loads the spec directory, runs one scheduler task per feed,
//! reloads on file changes and on the caller's reload requests (SIGHUP) through one path,
//! tells systemd what it is doing, and shuts down gracefully when the caller says so.
//!
//! Signals and exit codes stay at the edge (`cli`), as in mini-redis's `server::run`: the caller
//! hands in [`Controls`]. Shutdown: `stop` ends scheduling and listing; in-flight transfers get
//! `shutdown_grace` to finish, then `hard_stop` aborts them (multipart uploads are aborted);
//! run rows say `interrupted`. The caller may fire `hard_stop` early (a second signal).

mod http;
mod progress;
mod systemd;
pub mod watcher;

pub use progress::LogProgress;

use crate::engine::{Engine, EngineError, Observer, Stop};
use crate::manifest::ManifestError;
use crate::scheduler::Feeds;
use crate::spec::{self, Config, Spec, SpecError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The spec directory cannot be used at all (missing, or writable by others).
    #[error(transparent)]
    SpecDir(SpecError),
    #[error("{0}")]
    Metrics(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Why the spec directory is loaded again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// SIGHUP, or `systemctl reload`.
    Signal,
    /// The watcher saw files change.
    FileChange,
}

/// How the caller steers the daemon: its shutdown tokens, and a channel of reload requests
/// that the spec directory's watcher feeds too.
pub struct Controls {
    pub stop: Stop,
    reload_tx: mpsc::Sender<Reload>,
    reload_rx: mpsc::Receiver<Reload>,
}

impl Default for Controls {
    fn default() -> Self {
        let (reload_tx, reload_rx) = mpsc::channel(4);
        Controls {
            stop: Stop::default(),
            reload_tx,
            reload_rx,
        }
    }
}

impl Controls {
    /// Sends reload requests.
    pub fn reloader(&self) -> mpsc::Sender<Reload> {
        self.reload_tx.clone()
    }
}

/// A scheduled feed: the channel that hands it new spec versions, and its removal token.
struct Feed {
    spec: Arc<Spec>,
    updates: watch::Sender<Arc<Spec>>,
    removed: CancellationToken,
}

struct Daemon {
    spec_dir: PathBuf,
    shared: Feeds,
    feeds: BTreeMap<String, Feed>,
    tracker: TaskTracker,
    /// The spec directory's watcher; made anew at each reload, since a directory that was
    /// deleted and created again is another inode that the old watch no longer sees.
    watcher: Option<notify::RecommendedWatcher>,
    reload_tx: mpsc::Sender<Reload>,
    /// The feeds running now, for the status page.
    live: watch::Sender<Vec<Arc<Spec>>>,
}

fn log_progress() -> Arc<dyn Observer> {
    Arc::new(LogProgress::default())
}

/// `s3syncd daemon`: runs until `controls.stop` fires, then drains.
pub async fn run(config: Config, controls: Controls) -> Result<(), DaemonError> {
    let (live, feeds) = watch::channel(Vec::new());
    if let Some(addr) = config.metrics_listen {
        let metrics = crate::metrics::install().map_err(DaemonError::Metrics)?;
        let manifest = config.manifest_path();
        http::serve(addr, http::Pages { metrics, manifest, feeds })
            .await
            .map_err(DaemonError::Metrics)?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics and the status page at /");
    }
    // The first load decides whether the daemon can start at all: `validate` gives the same verdict.
    let first = spec::load_dir(&config.spec_dir).map_err(DaemonError::SpecDir)?;
    let grace = config.shutdown_grace;
    let spec_dir = config.spec_dir.clone();
    let running = Arc::new(Semaphore::new(config.max_running_specs));
    let engine = Engine::new(config)?;
    crate::engine::close_abandoned_runs(&engine)?;
    let Controls {
        stop,
        reload_tx,
        mut reload_rx,
    } = controls;
    let mut d = Daemon {
        spec_dir,
        shared: Feeds {
            engine,
            running,
            stop: stop.clone(),
            observer: log_progress,
        },
        feeds: BTreeMap::new(),
        tracker: TaskTracker::new(),
        watcher: None,
        reload_tx,
        live,
    };
    d.rewatch();
    d.apply(first);
    systemd::ready();
    systemd::spawn_watchdog();
    tracing::info!(spec_dir = %d.spec_dir.display(), feeds = d.feeds.len(), "daemon started");
    let mut rewatch = tokio::time::interval(REWATCH);
    loop {
        tokio::select! {
            () = stop.stop.cancelled() => break,
            Some(cause) = reload_rx.recv() => {
                match cause {
                    Reload::Signal => tracing::info!("SIGHUP: reloading specs"),
                    Reload::FileChange => tracing::info!("spec directory changed: reloading"),
                }
                systemd::reloading();
                let began = std::time::Instant::now();
                d.rewatch();
                d.reload();
                tracing::info!(feeds = d.feeds.len(), ms = began.elapsed().as_millis() as u64, "specs reloaded");
                systemd::ready();
            }
            // A spec directory that was gone: watch it again once it is back, and load it.
            _ = rewatch.tick(), if d.watcher.is_none() => {
                d.rewatch();
                if d.watcher.is_some() {
                    d.reload();
                }
            }
        }
    }
    d.shut_down(grace).await
}

/// How often the daemon tries to watch a spec directory it could not watch.
const REWATCH: Duration = Duration::from_secs(5);

impl Daemon {
    fn rewatch(&mut self) {
        self.watcher = None; // drop the old watch first: one event source at a time
        self.watcher = watcher::watch(&self.spec_dir, self.reload_tx.clone())
            .inspect_err(|e| tracing::warn!(error = %e, dir = %self.spec_dir.display(), "cannot watch the spec directory; trying again every 5 s, or reload with SIGHUP"))
            .ok();
    }

    /// Loads the spec directory again; a directory that cannot be read keeps every feed as it is.
    fn reload(&mut self) {
        match spec::load_dir(&self.spec_dir) {
            Ok(set) => self.apply(set),
            Err(e) => {
                for d in e.diagnostics() {
                    tracing::error!(diagnostic = %d, "cannot load spec directory; keeping the feeds as they are");
                }
            }
        }
    }

    /// Applies a loaded directory: new feeds start, removed ones stop being scheduled (a run in
    /// flight finishes), changed ones take effect after their current run, and a file that
    /// fails keeps its feed's last good version.
    fn apply(&mut self, set: spec::SpecSet) {
        for d in &set.errors {
            tracing::error!("{d}");
        }
        let running: BTreeMap<String, Arc<Spec>> = self.feeds.iter().map(|(n, f)| (n.clone(), f.spec.clone())).collect();
        let diff = spec::diff(&running, set);
        for name in &diff.disabled {
            tracing::info!(spec = %name, "disabled: not scheduled");
        }
        for (name, file) in &diff.kept {
            tracing::warn!(spec = %name, file = %file.display(), "keeping the last good version of this spec");
        }
        for (name, refused, owner) in &diff.shadowed {
            tracing::error!(spec = %name, file = %refused.display(), running_from = %owner.display(), "not loaded: the running feed of that name comes from another file, kept at its last good version; rename one of them");
        }
        for name in diff.removed {
            if let Some(feed) = self.feeds.remove(&name) {
                tracing::info!(spec = %name, "spec removed: no longer scheduled");
                feed.removed.cancel();
            }
        }
        for s in diff.changed {
            if let Some(feed) = self.feeds.get_mut(&s.name) {
                tracing::info!(spec = %s.name, "spec changed");
                feed.spec = s.clone();
                let _ = feed.updates.send(s);
            }
        }
        for s in diff.added {
            tracing::info!(spec = %s.name, schedule = s.schedule.as_ref().map_or("none", |x| x.expr.as_str()), "spec added");
            let (updates, rx) = watch::channel(s.clone());
            let removed = CancellationToken::new();
            self.tracker.spawn(crate::scheduler::feed(self.shared.clone(), rx, removed.clone()));
            self.feeds.insert(s.name.clone(), Feed { spec: s, updates, removed });
        }
        self.live.send_replace(self.feeds.values().map(|f| f.spec.clone()).collect());
        systemd::status(&format!("{} feeds scheduled", self.feeds.len()));
        self.abort_orphan_uploads();
    }

    /// In the background: uploads that removed feeds left open are aborted (see
    /// `engine::abort_orphan_uploads`); a feed's own runs clean up its other uploads.
    fn abort_orphan_uploads(&self) {
        let engine = self.shared.engine.clone();
        let live = self.feeds.keys().cloned().collect();
        self.tracker.spawn(async move {
            if let Err(e) = crate::engine::abort_orphan_uploads(&engine, &live).await {
                tracing::warn!(error = %e, "could not look for uploads of removed feeds");
            }
        });
    }

    /// Waits for runs in flight: up to `grace`, or until the caller's hard stop; then aborts them.
    async fn shut_down(self, grace: Duration) -> Result<(), DaemonError> {
        let stop = &self.shared.stop;
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "stopping: no new runs; in-flight transfers may finish"
        );
        systemd::stopping();
        let started = std::time::Instant::now();
        self.tracker.close();
        tokio::select! {
            () = self.tracker.wait() => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!("grace period over: aborting in-flight transfers");
                stop.hard_stop.cancel();
            }
            () = stop.hard_stop.cancelled() => tracing::warn!("second signal: aborting in-flight transfers now"),
        }
        // Aborted tasks record their run rows before they end; bound the wait anyway.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tracker.wait()).await;
        // Notifications of the last runs get what is left of the grace period, no more.
        let left = grace.saturating_sub(started.elapsed());
        self.shared.engine.notifications.drain(left).await;
        self.shared.engine.writer.checkpoint();
        self.shared.engine.writer.flush().await?;
        tracing::info!("stopped");
        Ok(())
    }
}
