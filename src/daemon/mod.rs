//! The long-running service: loads the spec directory, runs one scheduler task per feed, reloads
//! on file changes and SIGHUP through one path, tells systemd what it is doing, and shuts down
//! gracefully on SIGTERM.
//!
//! Shutdown: the first SIGTERM/SIGINT stops scheduling and listing; in-flight transfers get
//! `shutdown_grace` to finish, then multipart uploads are aborted; run rows say `interrupted`;
//! exit 0. A second signal skips the grace period.

pub mod signals;
mod systemd;

use crate::cli::{ConfigArg, EXIT_INVALID};
use crate::engine::{Engine, Stop};
use crate::spec::{self, Spec};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A scheduled feed: the channel that hands it new spec versions, and its removal token.
struct Feed {
    spec: Arc<Spec>,
    updates: watch::Sender<Arc<Spec>>,
    removed: CancellationToken,
}

/// Like sshd's StrictModes: the spec directory decides what gets copied where with which
/// credentials, so group- or world-writable files and directories are refused.
pub fn unsafe_permissions(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode();
    (mode & 0o022 != 0).then(|| {
        format!(
            "{} is writable by group or others (mode {:o}); refusing it: run `chmod go-w {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

struct Daemon {
    engine: Engine,
    spec_dir: PathBuf,
    feeds: BTreeMap<String, Feed>,
    running: Arc<Semaphore>,
    stop: Stop,
    tracker: TaskTracker,
}

impl Daemon {
    /// Loads the spec directory and applies the difference: new feeds start, removed ones stop
    /// being scheduled (a run in flight finishes), changed ones take effect after their current
    /// run. A file that fails keeps its feed's last good version.
    fn reload(&mut self) {
        if let Some(why) = unsafe_permissions(&self.spec_dir) {
            tracing::error!("{why}; keeping the feeds as they are");
            return;
        }
        let set = match spec::load_dir(&self.spec_dir) {
            Ok(s) => s,
            Err(e) => {
                for d in e.diagnostics() {
                    tracing::error!(diagnostic = %d, "cannot load spec directory; keeping the feeds as they are");
                }
                return;
            }
        };
        for d in &set.errors {
            tracing::error!("{d}");
        }
        let mut wanted: BTreeMap<String, Arc<Spec>> = BTreeMap::new();
        for (name, s) in set.specs {
            if let Some(why) = unsafe_permissions(&s.path) {
                tracing::error!(spec = %name, "{why}");
                continue;
            }
            wanted.insert(name, Arc::new(s));
        }
        // Feeds whose file failed to load keep their last good version.
        for f in &set.failed_files {
            if let Some((name, feed)) = self.feeds.iter().find(|(_, feed)| &feed.spec.path == f) {
                if !wanted.contains_key(name) {
                    tracing::warn!(spec = %name, file = %f.display(), "keeping the last good version of this spec");
                    wanted.insert(name.clone(), feed.spec.clone());
                }
            }
        }
        wanted.retain(|name, s| {
            if !s.enabled {
                tracing::info!(spec = %name, "disabled: not scheduled");
            }
            s.enabled
        });
        let gone: Vec<String> = self.feeds.keys().filter(|n| !wanted.contains_key(*n)).cloned().collect();
        for name in gone {
            if let Some(feed) = self.feeds.remove(&name) {
                tracing::info!(spec = %name, "spec removed: no longer scheduled");
                feed.removed.cancel();
            }
        }
        for (name, s) in wanted {
            match self.feeds.get_mut(&name) {
                Some(feed) if feed.spec.fingerprint == s.fingerprint => {}
                Some(feed) => {
                    tracing::info!(spec = %name, "spec changed");
                    feed.spec = s.clone();
                    let _ = feed.updates.send(s);
                }
                None => {
                    tracing::info!(spec = %name, schedule = s.schedule.as_ref().map_or("none", |(e, _)| e.as_str()), "spec added");
                    let (updates, rx) = watch::channel(s.clone());
                    let removed = CancellationToken::new();
                    self.tracker.spawn(crate::scheduler::feed(
                        self.engine.clone(),
                        rx,
                        self.running.clone(),
                        removed.clone(),
                        self.stop.clone(),
                    ));
                    self.feeds.insert(name, Feed { spec: s, updates, removed });
                }
            }
        }
        systemd::status(&format!("{} feeds scheduled", self.feeds.len()));
    }
}

/// `s3syncd daemon`.
pub async fn run(config_arg: &ConfigArg) -> anyhow::Result<i32> {
    let config = match config_arg.load() {
        Ok(c) => c,
        Err(e) => {
            for d in e.diagnostics() {
                eprintln!("{d}");
            }
            return Ok(EXIT_INVALID);
        }
    };
    if let Some(why) = unsafe_permissions(&config.spec_dir) {
        eprintln!("{why}");
        return Ok(EXIT_INVALID);
    }
    if let Some(addr) = config.metrics_listen {
        if let Err(e) = crate::metrics::install(addr) {
            eprintln!("{e}");
            return Ok(EXIT_INVALID);
        }
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let grace = config.shutdown_grace;
    let spec_dir = config.spec_dir.clone();
    let engine = Engine::new(config)?;
    let running = Arc::new(Semaphore::new(engine.config.max_running_specs));
    let mut d = Daemon {
        engine,
        spec_dir,
        feeds: BTreeMap::new(),
        running,
        stop: Stop::default(),
        tracker: TaskTracker::new(),
    };

    let (reload_tx, mut reload_rx) = mpsc::channel::<()>(4);
    let _watcher = match crate::watcher::watch(&d.spec_dir, reload_tx.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, dir = %d.spec_dir.display(), "cannot watch the spec directory; reload with SIGHUP");
            None
        }
    };
    let mut signals = signals::stream()?;
    d.reload();
    systemd::ready();
    systemd::spawn_watchdog();
    tracing::info!(spec_dir = %d.spec_dir.display(), feeds = d.feeds.len(), "daemon started");

    loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Some(signals::Signal::Reload) => {
                    tracing::info!("SIGHUP: reloading specs");
                    systemd::reloading();
                    d.reload();
                    systemd::ready();
                }
                Some(signals::Signal::Terminate) | None => break,
            },
            Some(()) = reload_rx.recv() => {
                tracing::info!("spec directory changed: reloading");
                systemd::reloading();
                d.reload();
                systemd::ready();
            }
        }
    }

    tracing::info!(
        grace_seconds = grace.as_secs(),
        "stopping: no new runs; in-flight transfers may finish"
    );
    systemd::stopping();
    d.stop.stop.cancel();
    d.tracker.close();
    tokio::select! {
        () = d.tracker.wait() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over: aborting in-flight transfers");
            d.stop.hard_stop.cancel();
        }
        _ = signals.next() => {
            tracing::warn!("second signal: aborting in-flight transfers now");
            d.stop.hard_stop.cancel();
        }
    }
    // Aborted tasks record their run rows before they end; bound the wait anyway.
    let _ = tokio::time::timeout(Duration::from_secs(10), d.tracker.wait()).await;
    d.engine.writer.flush().await?;
    tracing::info!("stopped");
    Ok(0)
}
