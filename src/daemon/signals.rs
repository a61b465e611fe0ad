//! Signals through signal-hook: handlers only set flags and wake a stream, so nothing unsafe
//! runs in signal context.

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

/// Waits for the next SIGTERM or SIGINT.
pub async fn wait_terminate() {
    let Ok(mut signals) = Signals::new([SIGTERM, SIGINT]) else {
        // Without handlers the default action (terminate) still applies.
        return futures::future::pending().await;
    };
    signals.next().await;
}

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Reload,
}

/// A stream of daemon signals: SIGTERM/SIGINT terminate, SIGHUP reloads.
pub fn stream() -> std::io::Result<impl futures::Stream<Item = Signal>> {
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    Ok(signals.map(|s| if s == SIGHUP { Signal::Reload } else { Signal::Terminate }))
}
