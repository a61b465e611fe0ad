//! The pace of a run's copy attempts under throttling (503 SlowDown, 429).

use std::sync::Mutex;
use std::time::Duration;
// tokio's clock, so that a test with paused time sees the timer's real grain.
use tokio::time::Instant;

/// Paces the copy attempts of a run once a server has throttled: without throttling, none. The
/// rate starts at 95 % of the attempts the server admitted in the last second and then grows
/// once no throttled answer has come for 200 ms, by half per 100 ms until the next cut (the
/// first cut follows the burst that opens a run and says little), then by 8 % per 100 ms; a
/// throttled answer cuts it to 95 % again (at most once per 200 ms). A SlowDown costs one
/// request; a rate held below the cap costs every second, hence a shallow cut.
///
/// A cut is a test of whether the rate is what the server refuses: paced below what it
/// admitted, a rate limit stops throttling, or throttles a smaller share. Throttling that goes
/// on at the same share a full second after the first cut, with no raise since, does not
/// depend on the rate (a busy partition, a server's own faults); cutting again would only decay
/// the rate towards one attempt a second, so that share becomes background and retries cure it.
/// Every attempt waits its turn, retries too: a storm cannot feed itself. On a fast server
/// one copy in flight already exceeds a prefix's request rate, so only a rate holds it.
pub struct Pace {
    state: Mutex<PaceState>,
    /// Waiters take their turn one at a time, in order, each spaced by the rate of the moment
    /// it comes (no slot is booked ahead at a rate that has since changed).
    turn: tokio::sync::Mutex<()>,
}

struct PaceState {
    rate: Option<f64>,
    next: Instant,
    /// When the rate was last cut and last raised, and when the last throttled answer came.
    cut: Instant,
    raised: Instant,
    throttled: Instant,
    /// Until the second cut the rate climbs fast (×1.5 per step): the first cut comes from the
    /// burst that opened the run, and says little of what the server takes.
    climbing: bool,
    /// The attempts of the last second: when each ended, and whether it was throttled.
    recent: std::collections::VecDeque<(Instant, bool)>,
    /// How many of `recent` were throttled.
    recent_throttled: usize,
    /// The last cut, until a second at its rate tells whether the rate caused the throttling.
    trial: Option<Trial>,
    /// A throttled share found not to move with the rate: throttles within it are ignored.
    background: Option<f64>,
}

/// How far behind its schedule the pace may fall and still make up: a few slots at the rates S3
/// allows per prefix, never a burst.
const CATCH_UP: Duration = Duration::from_millis(5);

impl Default for Pace {
    fn default() -> Self {
        let now = Instant::now();
        Pace {
            state: Mutex::new(PaceState {
                rate: None,
                next: now,
                cut: now,
                raised: now,
                throttled: now,
                climbing: true,
                recent: Default::default(),
                recent_throttled: 0,
                trial: None,
                background: None,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }
}

impl Pace {
    /// Waits for the next attempt's turn. The next slot follows this one's slot, not the moment
    /// the wait ended: tokio's timer has a millisecond's grain, and spacing from the wake-up
    /// lost up to that much per attempt (at 500 a second, every 2 ms slot became 3: the pace
    /// held 84 % of the rate it meant). A slot already past is taken at once, and a late wake-up
    /// is made up by the next few, at most `CATCH_UP` behind.
    pub async fn wait(&self) {
        if self.state.lock().unwrap().rate.is_none() {
            return;
        }
        let _turn = self.turn.lock().await;
        let slot = self.state.lock().unwrap().next;
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
        let mut s = self.state.lock().unwrap();
        if let Some(rate) = s.rate {
            let now = Instant::now();
            let behind = now.checked_sub(CATCH_UP).unwrap_or(now);
            s.next = slot.max(behind) + Duration::from_secs_f64(1.0 / rate);
        }
    }

    /// The paced rate, once there is one (attempts a second).
    pub fn rate(&self) -> Option<f64> {
        self.state.lock().unwrap().rate
    }

    /// After each attempt: whether the server throttled it.
    pub fn attempted(&self, throttled: bool) {
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        s.recent.push_back((now, throttled));
        s.recent_throttled += throttled as usize;
        while let Some(&(t, was)) = s.recent.front() {
            if now.duration_since(t) <= Duration::from_secs(1) {
                break;
            }
            s.recent.pop_front();
            s.recent_throttled -= was as usize;
        }
        let n = s.recent.len();
        let share = s.recent_throttled as f64 / n as f64;
        if let Some(t) = &mut s.trial {
            t.seen += 1;
            t.refused += throttled as usize;
        }
        s.judge(now);
        // Throttling within the share the server refuses whatever the rate says nothing of the
        // rate: it is cured by retries, and the rate may grow through it.
        let signal = throttled && !s.background.is_some_and(|b| share <= b + tolerance(b, n).max(0.25 * b));
        if !signal {
            s.raise(now);
            return;
        }
        s.throttled = now;
        let ok = n - s.recent_throttled;
        // A cut needs a share over 20 attempts at least: the first throttles of a burst say
        // little of the rate the server takes, and retries cure them. A cut under trial is
        // judged before the next.
        if n < 20 || ok == 0 || s.trial.is_some() || (s.rate.is_some() && now.duration_since(s.cut) < Duration::from_millis(200)) {
            return;
        }
        // What the server admitted: the attempts it took in the last second (or since the first
        // attempt, if that is younger), per second. The first cut starts from what the server
        // took; later ones from the pace, but never far above what was taken (the last second's
        // count lags a rising rate).
        let oldest = s.recent.front().map_or(now, |&(t, _)| t);
        let window = now.duration_since(oldest).as_secs_f64().clamp(0.05, 1.0);
        let admitted = ok as f64 / window;
        let before = s.rate.unwrap_or(n as f64 / window);
        let base = s.rate.map_or(admitted, |r| r.min(admitted * 1.2));
        s.climbing = s.rate.is_none();
        s.rate = Some((base * 0.95).max(1.0));
        s.cut = now;
        s.trial = Some(Trial {
            before,
            share,
            n,
            at: now,
            deep: false,
            seen: 0,
            refused: 0,
        });
        tracing::debug!(rate = s.rate, admitted, share, "pace cut");
    }
}

/// A cut under judgment: the rate before it, and the throttled share (over `n` attempts) that
/// caused it.
#[derive(Clone, Copy)]
struct Trial {
    before: f64,
    share: f64,
    n: usize,
    at: Instant,
    /// The second test: the rate halved after a cut that changed nothing.
    deep: bool,
    /// Attempts since the cut, and how many of them were throttled.
    seen: usize,
    refused: usize,
}

/// Two standard errors of a share `p` measured over `n` attempts: a change smaller than this
/// is noise.
fn tolerance(p: f64, n: usize) -> f64 {
    2.0 * (p * (1.0 - p) / n.max(1) as f64).sqrt()
}

/// Whether share `b` (over `nb` attempts) differs from share `a` (over `na`) by more than
/// noise: two standard errors of the difference, and a tenth of `a`.
fn differs(a: f64, na: usize, b: f64, nb: usize) -> bool {
    let pooled = (a * na as f64 + b * nb as f64) / (na + nb).max(1) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / na.max(1) as f64 + 1.0 / nb.max(1) as f64)).sqrt();
    (b - a).abs() > (2.0 * se).max(0.1 * a)
}

impl PaceState {
    /// Judges the cut under trial once a second was paced at its rate: a rate limit's share
    /// falls with the rate, so the cut stands (and more may follow); a share that rose says the
    /// cut was not enough (or the limit fell), so it stands too. A share unchanged after the
    /// cut and after a second at half that rate is not the rate's doing: it becomes
    /// background, and the cuts are undone, so that such throttling never decays the rate
    /// towards one attempt a second.
    fn judge(&mut self, now: Instant) {
        // A second at the new rate and 20 attempts; at a slow rate, 3 s and 5 attempts.
        let ready = |t: &Trial| {
            let age = now.duration_since(t.at);
            age >= Duration::from_secs(1) && (t.seen >= 20 || (age >= Duration::from_secs(3) && t.seen >= 5))
        };
        let Some(t) = self.trial.filter(ready) else {
            return;
        };
        self.trial = None;
        let (share, n) = (t.refused as f64 / t.seen as f64, t.seen);
        if differs(t.share, t.n, share, n) {
            return;
        }
        // Unchanged once may be a limit that fell meanwhile (the yardstick mixed two): halve
        // the rate for a second before calling it background.
        if !t.deep {
            self.rate = self.rate.map(|r| (r * 0.5).max(1.0));
            self.cut = now;
            self.trial = Some(Trial {
                share,
                n,
                at: now,
                deep: true,
                seen: 0,
                refused: 0,
                ..t
            });
            return;
        }
        self.background = Some(share.max(t.share));

        self.rate = Some(self.rate.unwrap_or(t.before).max(t.before));
        self.raised = now;
        // What cut it was not the rate: climb back fast (a real limit would throttle above the
        // background and be cut again).
        self.climbing = true;
        tracing::debug!(share, "pace: throttling that does not follow the rate; the cut is undone");
    }

    /// Raises the rate, at most every 100 ms, once 200 ms passed without a throttle that
    /// counts: while they keep coming, never; nor while a cut is under trial at its rate.
    fn raise(&mut self, now: Instant) {
        if let Some(r) = self.rate.filter(|_| self.trial.is_none()) {
            if now.duration_since(self.raised) >= Duration::from_millis(100)
                && now.duration_since(self.throttled) >= Duration::from_millis(200)
            {
                self.rate = Some(r * if self.climbing { 1.5 } else { 1.08 });
                self.raised = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_pace_until_throttled_then_a_cut_below_what_was_admitted_and_a_slow_climb() {
        let p = Pace::default();
        for _ in 0..200 {
            p.wait().await;
            p.attempted(false);
        }
        assert_eq!(p.rate(), None, "no throttling, no pace");
        let quiet = Pace::default();
        for _ in 0..19 {
            quiet.attempted(true);
        }
        assert_eq!(quiet.rate(), None, "nothing admitted, and under 20 attempts: no rate to start from");
        p.attempted(true);
        let cut = p.rate().expect("paced");
        assert!((1.0..=200.0 / 0.05 * 0.95).contains(&cut), "{cut}");
        // Throttles within 200 ms of a change do not cut again.
        p.attempted(true);
        assert_eq!(p.rate(), Some(cut));
        // Paced attempts are spaced: 10 at the cut rate take about 9 intervals.
        let began = Instant::now();
        for _ in 0..10 {
            p.wait().await;
        }
        assert!(
            began.elapsed() >= Duration::from_secs_f64(8.0 / cut),
            "{:?} at {cut}/s",
            began.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn paced_attempts_keep_the_rate_whatever_the_timers_grain() {
        // 400 a second is a slot every 2.5 ms; a timer that wakes on whole milliseconds must
        // not make it 3 (333 a second, as before).
        let p = Pace::default();
        p.state.lock().unwrap().rate = Some(400.0);
        let began = Instant::now();
        for _ in 0..400 {
            p.wait().await;
        }
        let took = began.elapsed().as_secs_f64();
        assert!((0.99..=1.01).contains(&took), "400 attempts at 400/s took {took:.3} s");
    }

    #[tokio::test]
    async fn raises_never_outrun_the_cuts_while_throttling_goes_on() {
        let p = Pace::default();
        for _ in 0..20 {
            p.attempted(false);
        }
        p.attempted(true);
        let first = p.rate().unwrap();
        // Every 110 ms a success and a SlowDown: the rate may rise, but each throttle a cut
        // later brings it down again; it never climbs away.
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(110)).await;
            p.attempted(false);
            p.attempted(true);
        }
        assert!(p.rate().unwrap() <= first, "{:?} > {first}", p.rate());
    }

    /// Runs attempts one after another (1 ms each) for `secs` seconds of paused time; `throttle`
    /// says, from the attempt's number and the time, whether the server refuses it. Returns the
    /// attempts admitted and refused in the last `tail` seconds.
    async fn drive(p: &Pace, secs: u64, tail: u64, mut throttle: impl FnMut(u64, Instant) -> bool) -> (u64, u64) {
        let began = Instant::now();
        let (mut i, mut ok, mut refused) = (0, 0, 0);
        while began.elapsed() < Duration::from_secs(secs) {
            p.wait().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            let t = throttle(i, Instant::now());
            p.attempted(t);
            if began.elapsed() >= Duration::from_secs(secs - tail) {
                if t {
                    refused += 1;
                } else {
                    ok += 1;
                }
            }
            i += 1;
        }
        (ok, refused)
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_that_the_rate_does_not_cause_does_not_decay_the_rate() {
        // One attempt in three refused, whatever the rate (a fault, a busy partition): after
        // the first cut the rate holds. (It used to be cut every 200 ms, to one a second.)
        let p = Pace::default();
        let (ok, _) = drive(&p, 10, 5, |i, _| i % 3 == 2).await;
        assert!(p.state.lock().unwrap().background.is_some(), "found not to follow the rate");
        assert!(ok >= 5 * 100, "{ok} admitted in 5 s at {:?}/s", p.rate());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_is_held_near_its_cap_and_followed_when_it_falls() {
        // A server that admits `cap` attempts a second, in bursts of at most a tenth of that
        // (a token bucket, as the fault proxy's cap and, roughly, an S3 prefix).
        let cap = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(300));
        let limit = |cap: std::sync::Arc<std::sync::atomic::AtomicU64>| {
            let (mut tokens, mut last) = (30.0, Instant::now());
            move |_, now: Instant| {
                let per_second = cap.load(std::sync::atomic::Ordering::Relaxed) as f64;
                tokens = (tokens + now.duration_since(last).as_secs_f64() * per_second).min(per_second / 10.0);
                last = now;
                let refuse = tokens < 1.0;
                if !refuse {
                    tokens -= 1.0;
                }
                refuse
            }
        };
        let p = Pace::default();
        let mut server = limit(cap.clone());
        let (ok, refused) = drive(&p, 10, 5, &mut server).await;
        assert!(ok >= 5 * 300 * 85 / 100, "{ok} admitted in 5 s under a cap of 300/s");
        assert!(refused * 10 <= ok, "{refused} refused beside {ok}");
        cap.store(100, std::sync::atomic::Ordering::Relaxed);
        let (ok, refused) = drive(&p, 10, 5, &mut server).await;
        assert!(ok >= 5 * 100 * 85 / 100, "{ok} admitted in 5 s under a cap of 100/s");
        assert!(
            refused * 10 <= ok,
            "{refused} refused beside {ok}: the pace did not follow the cap down"
        );
    }

    /// `workers` copies at once, each attempt taking `latency`, for `secs` seconds of paused
    /// time; each attempt is refused with probability `share` (seeded), whatever the rate.
    /// Returns the attempts admitted in the last half.
    async fn drive_concurrent(share: f64, workers: usize, secs: u64) -> u64 {
        let p = std::sync::Arc::new(Pace::default());
        let admitted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let began = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (p, admitted) = (p.clone(), admitted.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(w as u64);
                while began.elapsed() < Duration::from_secs(secs) {
                    p.wait().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let refused = rng.f64() < share;
                    p.attempted(refused);
                    if !refused && began.elapsed() >= Duration::from_secs(secs / 2) {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        admitted.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_share_of_throttling_keeps_most_of_the_rate_with_many_in_flight() {
        // 64 copies in flight, 5 ms each: unthrottled, the pace never engages.
        let free = drive_concurrent(0.0, 64, 20).await;
        for (share, bound) in [(0.1, 2.0), (0.4, 4.0)] {
            let got = drive_concurrent(share, 64, 20).await;
            let ratio = free as f64 / got.max(1) as f64;
            assert!(
                ratio <= bound,
                "{share}: {got} admitted against {free} unthrottled ({ratio:.1}x, bound {bound}x)"
            );
        }
    }
}
