//! A progress bar for `s3syncd run` on a terminal, fed by the engine's events.

use crate::engine::{Event, Observer};
use crate::spec::size::ByteSize;

pub struct Bar(indicatif::ProgressBar);

impl Bar {
    pub fn new() -> Bar {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} objects, {msg} copied, {per_sec}, ETA {eta} [{wide_bar}]")
                .expect("valid template"),
        );
        Bar(bar)
    }
}

impl Observer for Bar {
    fn on(&self, event: Event<'_>) {
        match event {
            Event::Queued => self.0.inc_length(1),
            Event::Done(t) => {
                self.0.inc(1);
                self.0.set_message(ByteSize(t.bytes_copied).to_string());
            }
            Event::Finished => self.0.finish_and_clear(),
        }
    }
}
