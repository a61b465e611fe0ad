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
    // A spec that is a symbolic link is edited where its target lives: watch that folder too.
    // (The watch is made anew at each reload, so links added later are followed.)
    for folder in link_target_folders(dir) {
        if let Err(e) = watcher.watch(&folder, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %folder.display(), error = %e, "cannot watch the folder a spec links to; reload with SIGHUP after editing it");
        }
    }
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

/// The folders holding the targets of the spec files in `dir` that are symbolic links, other
/// than `dir` itself.
fn link_target_folders(dir: &Path) -> std::collections::BTreeSet<std::path::PathBuf> {
    let own = std::fs::canonicalize(dir).ok();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Default::default();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| crate::spec::is_spec_file(p) && p.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()))
        .filter_map(|p| std::fs::canonicalize(p).ok()?.parent().map(Path::to_path_buf))
        .filter(|f| Some(f) != own.as_ref())
        .collect()
}
