//! How many copies of one run are in flight. Fixed when `transfer.concurrency` is set;
//! otherwise adaptive between 1 and `max_transfers`, in the manner of Netflix's
//! concurrency-limits (a slow start, then the Gradient2 rule) with a multiplicative cut when a
//! server throttles:
//!
//! - **Start**: 64, and 64 more per 25 ms of a round trip measured before the copies (up to
//!   256): a far server fills its pipe in the first round trip.
//! - **Slow start**: each completion adds one, plus one per 25 ms of the lowest latency (up to
//!   five), while throughput follows: the limit doubles per round trip on a near server,
//!   quadruples at 50 ms and grows sixfold across an ocean. Across a WAN every copy waits a
//!   round trip, so throughput is requests in flight divided by latency, and this finds
//!   hundreds within two or three round trips. It ends when a doubling of the limit bought less than a quarter more
//!   copies a second, not when latency rises: Garage answers each copy later with more in
//!   flight but completes twice as many a second at 256 as at 64 (it batches), and a limit
//!   held where latency first rose made bench (f2) take 2.2x s5cmd's time there.
//! - **Gradient**: afterwards the limit follows `limit × clamp(1.5 × long / short, 0.5, 1) + √limit`
//!   once per round trip (spread over the round's completions), smoothed, where `short` is a
//!   short average of the latency and `long` a slow one: a server that queues (latency rising
//!   with no more throughput) pulls it down. The `√limit` growth needs room: latency within
//!   twice the floor, and a slow start that did not end for want of throughput. Latency above
//!   four times the floor is a queue at the server and takes a tenth off per round. The floor is
//!   the lowest latency seen, or, once the slow start has found where throughput stops
//!   growing, the latency there: what that operating point costs is not a queue to shrink.
//!   Across a WAN the latency is mostly the way there and back, and there is room; a server on
//!   the same host queues every copy added, which would only hold memory. (Applied per
//!   completion and without those bounds, as first built, the rule pulled the limit to
//!   `max_transfers` on loopback: 98 MiB and 0.90× s5cmd's time on bench (a).)
//! - **Throttling** (503 SlowDown, 429) cuts the limit to 70 %, at most once per round trip
//!   (and half a second), and ends the slow start; `Pace` then spaces the attempts.
//!
//! Latency is sampled only from objects copied in one request: a multipart copy's time says
//! more about its size than about the server's queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
// tokio's clock, so that the tests can play a server's round trips in paused time.
use tokio::time::Instant;

pub struct Limit {
    state: Mutex<State>,
    freed: Notify,
}

struct State {
    limit: f64,
    max: f64,
    adaptive: bool,
    inflight: usize,
    slow_start: bool,
    min_rtt: f64,
    /// Where the slow start found throughput stop following the limit, the latency there: the
    /// gradient's bounds measure a queue from it instead of `min_rtt`, and the limit no longer
    /// grows.
    settled_rtt: Option<f64>,
    long_rtt: f64,
    /// A short average of the latency (the last ten or so).
    short_rtt: f64,
    throttles_seen: u64,
    last_cut: Option<Instant>,
    peak: usize,
    /// Slow start's last checkpoint: when, how many copies had completed, the limit then, and
    /// the throughput (copies a second) up to it.
    checkpoint: (Instant, u64, f64, f64),
    completed: u64,
}

/// One copy's place in flight; gives it back when dropped.
pub struct Permit(Arc<Limit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.state.lock().unwrap().inflight -= 1;
        self.0.freed.notify_one();
    }
}

/// Where adaptive limits start: what a server on the same host or in the same region takes
/// well (more only queues there); from there the slow start climbs while latency holds.
pub const INITIAL: usize = 64;

impl Limit {
    pub fn fixed(n: usize) -> Arc<Limit> {
        Self::new(n, n, false)
    }

    /// Starts at `INITIAL`, and one more `INITIAL` per 25 ms of `rtt` (a round trip measured
    /// before the copies start), up to four: a far server gets 256 copies in its first round
    /// trip, as s5cmd's fixed 256, rather than climb there; a near one starts where it queues
    /// least. (Per 50 ms, a server 50 ms away started at 128 and spent a round trip more in
    /// the slow start: CHANGELOG.md, 2026-11-28.)
    pub fn adaptive(max: usize, rtt: Duration) -> Arc<Limit> {
        let scale = 1 + (rtt.as_secs_f64() / 0.025).floor().min(3.0) as usize;
        Self::new((INITIAL * scale).min(max), max, true)
    }

    fn new(initial: usize, max: usize, adaptive: bool) -> Arc<Limit> {
        let max = max.max(1);
        Arc::new(Limit {
            state: Mutex::new(State {
                limit: initial.clamp(1, max) as f64,
                max: max as f64,
                adaptive,
                inflight: 0,
                slow_start: true,
                min_rtt: f64::MAX,
                settled_rtt: None,
                long_rtt: 0.0,
                short_rtt: 0.0,
                throttles_seen: 0,
                last_cut: None,
                peak: 0,
                checkpoint: (Instant::now(), 0, initial.clamp(1, max) as f64, 0.0),
                completed: 0,
            }),
            freed: Notify::new(),
        })
    }

    /// Waits for a place in flight. (One task acquires; `notify_one` keeps a wake-up that
    /// arrives before it waits.)
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            {
                let mut s = self.state.lock().unwrap();
                if (s.inflight as f64) < s.limit.floor().max(1.0) {
                    s.inflight += 1;
                    s.peak = s.peak.max(s.inflight);
                    return Permit(self.clone());
                }
            }
            self.freed.notified().await;
        }
    }

    /// The highest number of copies that were in flight at once (0 when none ran).
    pub fn peak(&self) -> usize {
        self.state.lock().unwrap().peak
    }

    /// The current limit.
    #[cfg(test)]
    pub fn current(&self) -> usize {
        self.state.lock().unwrap().limit as usize
    }

    /// Adjusts the limit after one copy: `latency` when it was a single-request copy, and the
    /// run's count of throttled answers so far.
    pub fn sample(&self, latency: Option<Duration>, throttles: u64) {
        let mut s = self.state.lock().unwrap();
        if !s.adaptive {
            return;
        }
        let old = s.limit;
        if throttles > s.throttles_seen {
            s.throttles_seen = throttles;
            let window = Duration::from_secs_f64(s.long_rtt.max(0.5));
            if s.last_cut.is_none_or(|t| t.elapsed() >= window) {
                s.limit = (s.limit * 0.7).max(1.0);
                s.slow_start = false;
                s.last_cut = Some(Instant::now());
            }
        } else if let Some(rtt) = latency.map(|d| d.as_secs_f64().max(1e-6)) {
            s.completed += 1;
            s.check_throughput();
            s.min_rtt = s.min_rtt.min(rtt);
            s.long_rtt = if s.long_rtt == 0.0 { rtt } else { s.long_rtt * 0.95 + rtt * 0.05 };
            s.short_rtt = if s.short_rtt == 0.0 { rtt } else { s.short_rtt * 0.9 + rtt * 0.1 };
            // Grow only when the limit is what holds copies back, not the planner.
            let busy = s.inflight as f64 + 1.0 >= s.limit / 2.0;
            if s.slow_start {
                // A round trip costs more the longer it is: climb faster across a WAN (one more
                // per completion, plus one per 25 ms of the lowest latency, up to five: the
                // way there and back, not a queue that more copies only lengthen).
                if busy {
                    s.limit += 1.0 + (s.min_rtt / 0.025).floor().min(4.0);
                }
            } else {
                // One round's update, `limit × (gradient − 1) + √limit` smoothed by a fifth,
                // shared out over the round's `limit` completions.
                let gradient = (1.5 * s.long_rtt / s.short_rtt).clamp(0.5, 1.0);
                // Growth needs room: latency within twice the floor, and a slow start that did
                // not end because throughput stopped following the limit. Latency above four
                // times the floor is a queue at the server: a tenth off per round.
                let floor = s.settled_rtt.map_or(s.min_rtt, |r| r.max(s.min_rtt));
                let room = s.short_rtt < 2.0 * floor && s.settled_rtt.is_none();
                let grow = if busy && room { s.limit.sqrt() } else { 0.0 };
                s.limit += 0.2 * (s.limit * (gradient - 1.0) + grow) / s.limit;
                if s.short_rtt > 4.0 * floor {
                    s.limit -= 0.1;
                }
            }
        }
        s.limit = s.limit.clamp(1.0, s.max);
        if s.limit as usize != old as usize {
            tracing::trace!(limit = s.limit as usize, "concurrency limit");
        }
        drop(s);
        // A higher limit frees places now.
        self.freed.notify_one();
    }
}

impl State {
    /// Slow start goes on only while throughput follows the limit: each time the limit has
    /// doubled since the last checkpoint, the copies a second since then must have grown by a
    /// quarter, or the limit goes back to a quarter above the checkpoint's and slow start ends.
    /// This is what ends it near the server (same host or region), where more in flight may
    /// or may not buy more; across a WAN throughput doubles with the limit until the pipe or
    /// the server is full.
    fn check_throughput(&mut self) {
        let (at, done, limit, rate) = self.checkpoint;
        if !self.slow_start || self.limit < 2.0 * limit {
            return;
        }
        // Judged over a round: as many completions as the limit allowed in flight at the
        // checkpoint. (Waiting for a time instead let the limit run far past the doubling.)
        if self.completed - done < limit as u64 {
            return;
        }
        let secs = at.elapsed().as_secs_f64().max(1e-6);
        let now_rate = (self.completed - done) as f64 / secs;
        if rate > 0.0 && now_rate < 1.25 * rate {
            self.slow_start = false;
            self.limit = limit * 1.25;
            self.settled_rtt = Some(self.short_rtt);
        }
        self.checkpoint = (Instant::now(), self.completed, self.limit, now_rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Completions while the copier keeps the limit full, as it does when jobs are waiting:
    /// with `limit` copies of `ms` each in flight, one completes every `ms / limit` (the
    /// tests run in paused time, which this advances).
    async fn feed(l: &Arc<Limit>, held: &mut Vec<Permit>, n: usize, ms: f64, throttles: u64) {
        for _ in 0..n {
            while held.len() < l.current() {
                held.push(l.acquire().await);
            }
            tokio::time::advance(Duration::from_secs_f64(ms / 1000.0 / l.current() as f64)).await;
            held.pop();
            l.sample(Some(Duration::from_secs_f64(ms / 1000.0)), throttles);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn grows_under_a_steady_latency_and_stays_within_its_bounds() {
        let l = Limit::adaptive(2048, Duration::ZERO);
        let mut held = Vec::new();
        feed(&l, &mut held, 100, 200.0, 0).await;
        assert_eq!(l.current(), INITIAL + 500, "slow start at 200 ms: five per completion");
        feed(&l, &mut held, 100, 10.0, 0).await;
        assert_eq!(l.current(), INITIAL + 600, "slow start at 10 ms: one per completion");
        feed(&l, &mut held, 2000, 10.0, 0).await;
        assert_eq!(l.current(), 2048, "never above max_transfers");
        assert_eq!(l.peak(), 2048);
        // An idle copier (the planner is what holds copies back) does not grow it.
        let idle = Limit::adaptive(512, Duration::ZERO);
        idle.sample(Some(Duration::from_millis(200)), 0);
        assert_eq!(idle.current(), INITIAL);
        assert_eq!(Limit::adaptive(8, Duration::ZERO).current(), 8);
        // A far destination starts higher: one more INITIAL per 25 ms, four at most.
        assert_eq!(Limit::adaptive(2048, Duration::from_millis(10)).current(), INITIAL);
        assert_eq!(Limit::adaptive(2048, Duration::from_millis(30)).current(), 2 * INITIAL);
        assert_eq!(Limit::adaptive(2048, Duration::from_millis(60)).current(), 3 * INITIAL);
        assert_eq!(Limit::adaptive(2048, Duration::from_millis(900)).current(), 4 * INITIAL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queueing_server_or_throttling_pulls_it_down() {
        let l = Limit::adaptive(512, Duration::ZERO);
        let mut held = Vec::new();
        serve(&l, &mut held, 5_000, 10.0, |_| 1000.0).await;
        let before = l.current();
        // The server slows tenfold: copies queue there at the same limit, which shrinks.
        serve(&l, &mut held, 200, 10.0, |_| 100.0).await;
        let queued = l.current();
        assert!(queued < before, "{queued} < {before}");
        // A throttled answer cuts it to 70 %, once per round trip however many arrive.
        l.sample(None, 1);
        let cut = l.current();
        assert!((cut as f64 - queued as f64 * 0.7).abs() <= 1.0, "{cut} is 70 % of {queued}");
        l.sample(None, 5);
        assert_eq!(l.current(), cut);
    }

    /// A server `base` ms away whose rate grows with the copies in flight as `rate(limit)`
    /// says: the latency is the base, or the queue's wait once the limit exceeds what the
    /// server completes in that time.
    /// (The first copy finds the server idle: its latency is the base.)
    async fn serve(l: &Arc<Limit>, held: &mut Vec<Permit>, n: usize, base: f64, rate: impl Fn(f64) -> f64) {
        for i in 0..n {
            let limit = l.current() as f64;
            let queued = if i == 0 && held.is_empty() { 0.0 } else { limit / rate(limit) };
            feed(l, held, 1, (base / 1000.0).max(queued) * 1000.0, 0).await;
        }
    }

    async fn settle(base: f64, rate: impl Fn(f64) -> f64) -> usize {
        let l = Limit::adaptive(4096, Duration::ZERO);
        serve(&l, &mut Vec::new(), 20_000, base, rate).await;
        l.current()
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_settles_where_throughput_stops_growing_whatever_the_latency_does() {
        // Same host, 1,000 copies a second however many are in flight: latency follows the
        // limit. The slow start stops one doubling after throughput did.
        let near = settle(1.0, |_| 1000.0).await;
        assert!(near <= 160, "a server that gains nothing from more in flight: {near}");
        // A server that batches (Garage): latency rises with the limit, but so does the rate,
        // up to 3,000 a second at 256 in flight. The limit follows it there.
        let batching = settle(1.0, |n| 3000.0 * (n / 256.0).min(1.0).sqrt()).await;
        assert!(batching >= 256, "latency rose, throughput too: {batching}");
        // 200 ms away, the pipe wants 200 in flight; the limit gets there and above.
        let far = settle(200.0, |_| 1000.0).await;
        assert!(far >= 200, "a far server gets at least its bandwidth-delay product: {far}");
    }

    #[tokio::test]
    async fn acquire_waits_for_a_place_and_a_fixed_limit_never_moves() {
        let l = Limit::fixed(1);
        let first = l.acquire().await;
        let second = tokio::time::timeout(Duration::from_millis(50), l.acquire()).await;
        assert!(second.is_err(), "the second copy waits");
        l.sample(Some(Duration::from_millis(1)), 0);
        l.sample(None, 3);
        assert_eq!(l.current(), 1);
        drop(first);
        let _second = tokio::time::timeout(Duration::from_secs(1), l.acquire()).await.expect("freed");
        assert_eq!(l.peak(), 1);
    }
}
