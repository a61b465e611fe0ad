//! The pace of a run's copy attempts under throttling (503 SlowDown, 429).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Paces the copy attempts of a run once a server has throttled: without throttling, none. The
/// rate starts at 90 % of the attempts the server admitted in the last second and then grows
/// 4 % per 100 ms until the next throttled answer cuts it again (at most once per 200 ms).
/// Every attempt waits its turn, retries too: a storm cannot feed itself. On a fast server
/// one copy in flight already exceeds a prefix's request rate, so only a rate holds it.
pub struct Pace {
    state: Mutex<PaceState>,
}

struct PaceState {
    rate: Option<f64>,
    next: Instant,
    changed: Instant,
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
                changed: now,
                started: now,
                recent: Default::default(),
            }),
        }
    }
}

impl Pace {
    /// Waits for the next attempt's turn.
    pub async fn wait(&self) {
        let slot = {
            let mut s = self.state.lock().unwrap();
            let Some(rate) = s.rate else { return };
            let slot = s.next.max(Instant::now());
            s.next = slot + Duration::from_secs_f64(1.0 / rate);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
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
            if s.rate.is_none() || now.duration_since(s.changed) >= Duration::from_millis(200) {
                // What the server admitted: the attempts it took in the last second (or in the
                // run, if it is younger), per second.
                let window = now.duration_since(s.started).as_secs_f64().clamp(0.05, 1.0);
                let admitted = s.recent.len() as f64 / window;
                let base = s.rate.map_or(admitted, |r| r.min(admitted));
                s.rate = Some((base * 0.9).max(1.0));
                s.changed = now;
            }
        } else if let Some(r) = s.rate {
            if now.duration_since(s.changed) >= Duration::from_millis(100) {
                s.rate = Some(r * 1.04);
                s.changed = now;
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
        assert!(cut <= 200.0 / 0.05 * 0.9 && cut >= 1.0, "{cut}");
        // Throttles within 200 ms of a change do not cut again.
        p.attempted(true);
        assert_eq!(p.rate(), Some(cut));
        // Paced attempts are spaced: 10 at the cut rate take about 9 intervals.
        let began = Instant::now();
        for _ in 0..10 {
            p.wait().await;
        }
        assert!(began.elapsed() >= Duration::from_secs_f64(8.0 / cut), "{:?} at {cut}/s", began.elapsed());
    }
}
