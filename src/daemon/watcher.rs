//! Watches the spec directory (notify) and turns bursts of file events into one reload request,
//! the same request SIGHUP makes. Editors write temp files and rename them, so events are
//! debounced: a reload happens once the directory has been quiet for a moment.

use super::Reload;
use notify::{RecursiveMode, Watcher};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

const QUIET: Duration = Duration::from_millis(300);

/// Starts watching; every settled burst of changes sends a reload request. The returned watcher
/// must be kept alive.
pub fn watch(dir: &Path, reload: mpsc::Sender<Reload>) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Wait for quiet, swallowing the rest of the burst.
            loop {
                match tokio::time::timeout(QUIET, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if reload.send(Reload::FileChange).await.is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}
