//! How fast a run copies: how many copies are in flight ([`Limit`], adaptive unless
//! `transfer.concurrency` is set) and, once a server throttles, how often a request attempt may
//! go out ([`Pace`]). The limit answers a queue at the server (latency), the pace a refusal
//! (503 SlowDown, 429); a throttled answer reaches both. Pure arithmetic over tokio's clock: no
//! request is made here, so the tests play a server's answers in paused time.

mod limit;
mod pace;

pub use limit::Limit;
pub use pace::Pace;
