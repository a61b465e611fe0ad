//! Progress as events (vector's internal events): the engine says what happened, and whoever
//! presents it (a progress bar in `cli`, log lines in `daemon`) subscribes. The engine itself
//! imports no presentation code.

use super::Tally;

/// Something that happened in a run.
#[derive(Debug)]
pub enum Event<'a> {
    /// A copy was started.
    Queued,
    /// A copy ended (copied or failed); the run's counts so far.
    Done(&'a Tally),
    /// The run is over; its report follows.
    Finished,
}

/// Told of each event of a run, from the run's own task: keep `on` quick.
pub trait Observer: Send + Sync {
    fn on(&self, event: Event<'_>);
}

/// Ignores every event.
pub struct Quiet;

impl Observer for Quiet {
    fn on(&self, _: Event<'_>) {}
}
