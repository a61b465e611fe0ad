//! Progress of a run as log lines: one every 10 s while objects are being copied. Used by the
//! daemon for every run, and by `s3syncd run` when stderr is not a terminal.

use crate::engine::{Event, Observer};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(10);

pub struct LogProgress {
    last: Mutex<Instant>,
}

impl Default for LogProgress {
    fn default() -> Self {
        LogProgress {
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Observer for LogProgress {
    fn on(&self, event: Event<'_>) {
        let Event::Done(t) = event else { return };
        let mut last = self.last.lock().unwrap();
        if last.elapsed() >= EVERY {
            *last = Instant::now();
            tracing::info!(
                listed = t.listed,
                copied = t.copied,
                skipped = t.skipped,
                failed = t.failed,
                bytes = t.bytes_copied,
                "progress"
            );
        }
    }
}
