//! Signals through signal-hook, at the edge of the program: handlers only set flags and wake a
//! stream, so nothing unsafe runs in signal context. The engine and the daemon only see tokens.

use crate::daemon::Reload;
use crate::engine::Stop;
use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;

/// SIGTERM or SIGINT fires `stop.stop`, the next one `stop.hard_stop`, and so does the end of
/// `grace` after the first when given; with `reload`, SIGHUP sends a reload request. Without
/// handlers the default actions still apply.
pub fn spawn(stop: Stop, reload: Option<mpsc::Sender<Reload>>, grace: Option<std::time::Duration>) -> std::io::Result<()> {
    let mut wanted = vec![SIGTERM, SIGINT];
    if reload.is_some() {
        wanted.push(SIGHUP);
    }
    let mut signals = Signals::new(wanted)?;
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            match (&reload, sig) {
                (Some(r), SIGHUP) => {
                    let _ = r.send(Reload::Signal).await;
                }
                _ if !stop.stop.is_cancelled() => {
                    tracing::warn!("stopping: finishing in-flight copies (send the signal again to abort them)");
                    stop.stop.cancel();
                    if let Some(grace) = grace {
                        let hard = stop.hard_stop.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(grace).await;
                            if !hard.is_cancelled() {
                                tracing::warn!(grace_seconds = grace.as_secs(), "grace period over: aborting in-flight transfers");
                                hard.cancel();
                            }
                        });
                    }
                }
                _ => stop.hard_stop.cancel(),
            }
        }
    });
    Ok(())
}
