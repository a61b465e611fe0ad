//! The run's one accounting: every count the run row, the summary and the metrics show comes
//! from here, so they cannot disagree.

use crate::plan::{CopyJob, PagePlan};
use crate::spec::Mode;
use crate::transfer::{Fallback, Outcome, Trail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ModeCount {
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub listed: u64,
    /// Listed but excluded by the spec's filter.
    pub filtered: u64,
    /// Unchanged since they were copied.
    pub skipped: u64,
    /// Held back for this run: their checksum sidecar is not listed yet (`sidecar_wait`).
    pub held_for_sidecar: u64,
    /// Copied although no sidecar was listed: their `sidecar_wait` was over.
    pub without_sidecar: u64,
    /// Sidecars that came after their object was copied, checked against it; and of those,
    /// the ones that contradict it (each a failed object).
    pub late_sidecars: u64,
    pub late_sidecar_mismatches: u64,
    /// Copied and verified (in a dry run: would be copied).
    pub copied: u64,
    pub failed: u64,
    /// The spec's series after the run (`[series]`).
    pub series: Option<crate::spec::series::Totals>,
    /// Which listing the run did, and in how many parts.
    pub listing: super::listing::Scope,
    pub list_parts: usize,
    /// `run --keys`: the keys of the key file the listing found (the others are not at the
    /// source now).
    pub keys_found: u64,
    /// A series run: folders of new series found by a listing with a delimiter.
    pub series_discovered: u64,
    /// A listing run of a feed driven by events: objects it copied that their events should
    /// have brought.
    pub events_missed: Option<u64>,
    /// Waiting for their turn when the run stopped: not attempted, new again to the next run.
    pub stopped: u64,
    pub deleted: u64,
    /// Bytes of every object the plan chose to copy.
    pub bytes_planned: u64,
    pub bytes_copied: u64,
    pub bytes_through_host: u64,
    pub modes: BTreeMap<Mode, ModeCount>,
    pub fallbacks: BTreeMap<Fallback, u64>,
    /// Modes found unusable for the whole run, with the reason.
    pub disabled_modes: BTreeMap<Mode, String>,
    /// Object-level retries (the SDK's own request retries are in `requests`).
    pub retries: u64,
    /// Answers that asked to slow down (503 SlowDown, 429).
    pub throttled: u64,
    /// Request attempts by operation and how they ended.
    pub requests: BTreeMap<(String, crate::s3::op::Answer), u64>,
    /// Dry run: the first keys that would be copied, with why.
    pub sample_copies: Vec<String>,
    /// Optional features a server lacked (`tags`): copies went on without them.
    pub unsupported: Vec<&'static str>,
    /// The most copies in flight at once, and whether the limit was adaptive.
    pub concurrency: usize,
    pub adaptive: bool,
    /// Failed objects by their likely cause (`s3::explain`), for the summary.
    pub causes: BTreeMap<String, u64>,
}

impl Tally {
    pub(super) fn planned(&mut self, plan: &PagePlan) {
        self.listed += plan.listed;
        self.filtered += plan.filtered;
        self.skipped += plan.skipped;
        self.held_for_sidecar += plan.held_for_sidecar;
        self.without_sidecar += plan.without_sidecar;
        self.bytes_planned += plan.copies.iter().map(|j| j.source.size).sum::<u64>();
    }

    pub(super) fn would_copy(&mut self, job: &CopyJob) {
        self.copied += 1;
        if self.sample_copies.len() < 10 {
            self.sample_copies.push(format!("{} ({})", job.dest_key, job.reason.as_str()));
        }
    }

    pub(super) fn copied(&mut self, job: &CopyJob, o: &Outcome) {
        self.copied += 1;
        self.bytes_copied += job.source.size;
        let m = self.modes.entry(o.mode).or_default();
        m.objects += 1;
        m.bytes += job.source.size;
        self.trail(&o.trail);
    }

    pub(super) fn failed(&mut self, trail: Option<&Trail>, cause: Option<&str>) {
        self.failed += 1;
        if let Some(c) = cause {
            *self.causes.entry(c.to_string()).or_default() += 1;
        }
        if let Some(t) = trail {
            self.trail(t);
        }
    }

    fn trail(&mut self, t: &Trail) {
        self.bytes_through_host += t.through_host;
        self.retries += t.retries;
        for f in &t.fallbacks {
            *self.fallbacks.entry(f.clone()).or_default() += 1;
        }
        for (mode, why) in &t.disabled {
            self.disabled_modes.entry(*mode).or_insert_with(|| why.clone());
        }
    }

    /// Request attempts by operation.
    pub fn requests_by_op(&self) -> BTreeMap<&str, u64> {
        let mut out = BTreeMap::new();
        for ((op, _), n) in &self.requests {
            *out.entry(op.as_str()).or_default() += n;
        }
        out
    }

    /// Request attempts by S3's price class: (class A, class B).
    pub fn requests_by_class(&self) -> (u64, u64) {
        use crate::s3::op::PriceClass;
        let (mut a, mut b) = (0, 0);
        for ((op, _), n) in &self.requests {
            match PriceClass::of(op) {
                PriceClass::A => a += n,
                PriceClass::B => b += n,
            }
        }
        (a, b)
    }

    pub fn requests_total(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Objects that fell back, over all pairs of modes.
    pub fn fallback_count(&self) -> u64 {
        self.fallbacks.values().sum()
    }

    /// The run row's `details` JSON (documented in docs/manifest.md).
    pub fn details(&self, estimated_cost_usd: f64, wall: Duration) -> serde_json::Value {
        let by_name = |m: &Mode| m.as_str().to_string();
        let modes: BTreeMap<String, &ModeCount> = self.modes.iter().map(|(m, c)| (by_name(m), c)).collect();
        let fallbacks: BTreeMap<String, u64> = self.fallbacks.iter().map(|(f, n)| (f.to_string(), *n)).collect();
        let disabled: BTreeMap<String, &String> = self.disabled_modes.iter().map(|(m, w)| (by_name(m), w)).collect();
        serde_json::json!({
            "modes": modes,
            "fallbacks": fallbacks,
            "disabled_modes": disabled,
            "retries": self.retries,
            "requests": self.requests_by_op(),
            "objects_filtered": self.filtered,
            "objects_stopped": self.stopped,
            "held_for_sidecar": self.held_for_sidecar,
            "without_sidecar": self.without_sidecar,
            "late_sidecars": self.late_sidecars,
            "late_sidecar_mismatches": self.late_sidecar_mismatches,
            "series_missing": self.series.as_ref().map(|s| s.missing),
            "series_overdue": self.series.as_ref().map(|s| s.overdue),
            "listing": self.listing.as_str(),
            "list_parts": self.list_parts,
            "keys_found": (self.listing == super::listing::Scope::Keys).then_some(self.keys_found),
            "events_missed": self.events_missed,
            "series_discovered": (self.listing == super::listing::Scope::Series).then_some(self.series_discovered),
            "unsupported": self.unsupported,
            "concurrency": self.concurrency,
            "causes": self.causes,
            "estimated_cost_usd": estimated_cost_usd,
            "wall_seconds": wall.as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_keep_their_documented_names() {
        let mut t = Tally::default();
        t.modes.insert(Mode::Stream, ModeCount { objects: 2, bytes: 10 });
        t.fallbacks.insert(
            Fallback {
                from: Mode::Direct,
                to: Mode::Stream,
                reason: "AccessDenied".into(),
            },
            2,
        );
        t.requests.insert(("GetObject".into(), crate::s3::op::Answer::Ok), 3);
        t.requests.insert(("GetObject".into(), crate::s3::op::Answer::ServerError), 1);
        t.requests.insert(("ListObjectsV2".into(), crate::s3::op::Answer::Ok), 2);
        let d = t.details(0.5, Duration::from_secs(2));
        assert_eq!(d["modes"]["stream"]["objects"], 2);
        assert_eq!(d["fallbacks"]["direct -> stream (AccessDenied)"], 2);
        assert_eq!(d["requests"]["GetObject"], 4);
        assert_eq!(t.requests_total(), 6);
        assert_eq!(t.requests_by_class(), (2, 4));
    }
}
