//! The pace of a run's copy attempts under throttling (503 SlowDown, 429).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Paces the copy attempts of a run once a server has throttled: without throttling, none. The
/// rate starts at 90 % of the attempts the server admitted in the last second and then grows
/// once no throttled answer has come for 200 ms, by half per 100 ms until the next cut (the
/// first cut follows the burst that opens a run and says little), then by 8 % per 100 ms; a
/// throttled answer cuts it to 90 % again (at most once per 200 ms).
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
    started: Instant,
    /// When the copies of the last second completed.
    recent: std::collections::VecDeque<Instant>,
}

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
                started: now,
                recent: Default::default(),
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }
}

impl Pace {
    /// Waits for the next attempt's turn.
    pub async fn wait(&self) {
        if self.state.lock().unwrap().rate.is_none() {
            return;
        }
        let _turn = self.turn.lock().await;
        let slot = self.state.lock().unwrap().next;
        tokio::time::sleep_until(slot.into()).await;
        let mut s = self.state.lock().unwrap();
        if let Some(rate) = s.rate {
            s.next = Instant::now() + Duration::from_secs_f64(1.0 / rate);
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
        if !throttled {
            s.recent.push_back(now);
        }
        while s.recent.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1)) {
            s.recent.pop_front();
        }
        if throttled {
            s.throttled = now;
            if s.rate.is_none() || now.duration_since(s.cut) >= Duration::from_millis(200) {
                // What the server admitted: the attempts it took in the last second (or in the
                // run, if it is younger), per second.
                let window = now.duration_since(s.started).as_secs_f64().clamp(0.05, 1.0);
                let admitted = s.recent.len() as f64 / window;
                // The first cut starts from what the server took; later ones from the pace, but
                // never far above what was taken (the last second's count lags a rising rate).
                let base = s.rate.map_or(admitted, |r| r.min(admitted * 1.2));
                s.climbing = s.rate.is_none();
                s.rate = Some((base * 0.9).max(1.0));
                s.cut = now;
                tracing::debug!(rate = s.rate, admitted, "pace cut");
            }
        } else if let Some(r) = s.rate {
            // Raised only after 200 ms without a SlowDown: while they keep coming, never.
            if now.duration_since(s.raised) >= Duration::from_millis(100) && now.duration_since(s.throttled) >= Duration::from_millis(200) {
                s.rate = Some(r * if s.climbing { 1.5 } else { 1.08 });
                s.raised = now;
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
        p.attempted(true);
        let cut = p.rate().expect("paced");
        assert!((1.0..=200.0 / 0.05 * 0.9).contains(&cut), "{cut}");
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

    #[tokio::test]
    async fn raises_never_outrun_the_cuts_while_throttling_goes_on() {
        let p = Pace::default();
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
}
