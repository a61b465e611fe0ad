//! systemd notifications (`Type=notify`): READY, RELOADING, STOPPING, STATUS and the watchdog.
//! Outside systemd (no `$NOTIFY_SOCKET`) every call is a no-op.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

pub fn ready() {
    send(&[NotifyState::Ready]);
}

pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing in-flight transfers"),
    ]);
}

pub fn status(s: &str) {
    send(&[NotifyState::Status(s)]);
}

/// Pings the watchdog at half its interval when `WatchdogSec=` is set.
pub fn spawn_watchdog() {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let every = std::time::Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            loop {
                send(&[NotifyState::Watchdog]);
                tokio::time::sleep(every).await;
            }
        });
    }
}
