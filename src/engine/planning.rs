//! The plan stage: list the source (in key ranges at once when the manifest says where to cut),
//! merge each page with the manifest, send the copy jobs to the copy stage, and collect the
//! manifest rows whose source is gone (delete candidates).

use super::{EngineError, Run};
use crate::manifest::{PlanRow, Reader, Target};
use crate::plan::{CopyJob, Planner};
use crate::s3::{self, Listing};
use tokio::sync::mpsc;

/// Copy jobs waiting for the copy stage: one listing page, so memory stays bounded.
pub(super) const QUEUE: usize = 1000;

/// What the plan stage found, for the finish stage's delete guard.
#[derive(Debug, Default)]
pub(super) struct Planned {
    /// Every part of the listing reached its end.
    pub complete: bool,
    pub listing_error: Option<String>,
    /// Delete candidates, kept up to the cap plus one (to know the cap was passed).
    pub gone: Vec<PlanRow>,
    pub gone_count: u64,
    /// Objects the manifest held for the spec at the start, and the `max_delete` cap on them.
    pub held: u64,
    pub cap: u64,
}

impl Planned {
    fn note_gone(&mut self, rows: Vec<PlanRow>) {
        for r in rows {
            self.gone_count += 1;
            if self.gone.len() as u64 <= self.cap {
                self.gone.push(r);
            }
        }
    }
}

impl Run {
    pub(super) async fn plan(&self, reader: Reader, jobs: mpsc::Sender<CopyJob>) -> Result<Planned, EngineError> {
        let spec = &self.spec;
        let held = reader.count_objects(&self.target)?;
        let mut planned = Planned {
            held,
            cap: spec.max_delete.limit(held),
            ..Planned::default()
        };
        let split = split_keys(&reader, &self.target, spec)?;
        let mut lister = Listing::start(&self.transferer.src, &spec.source.bucket, &spec.source.prefix, &split);
        let mut planners: Vec<Planner> = s3::key_ranges(&split)
            .map(|(after, until)| Planner::part(spec, after, until))
            .collect();
        if planners.len() > 1 {
            tracing::info!(partitions = planners.len(), "listing the source in key ranges at once");
        }
        loop {
            let next = tokio::select! {
                biased;
                () = self.stop.stop.cancelled() => break,
                n = lister.next() => n,
            };
            match next {
                None => {
                    planned.complete = true;
                    break;
                }
                // The part is complete: manifest rows left in its range have no source.
                Some(Ok((part, None))) => planned.note_gone(planners[part].finish(&reader)?),
                Some(Ok((part, Some(page)))) => {
                    let plan = planners[part].plan_page(&reader, page)?;
                    self.tally(|t| t.planned(&plan));
                    planned.note_gone(plan.source_gone);
                    for job in plan.copies {
                        if jobs.send(job).await.is_err() {
                            // The copy stage stopped (shutdown): so does the listing.
                            return Ok(planned);
                        }
                    }
                }
                Some(Err(e)) => {
                    let e = e.explained(&self.spec.source);
                    tracing::error!(error = %e, "source listing failed; no deletes this run");
                    planned.listing_error = Some(e);
                    break;
                }
            }
        }
        Ok(planned)
    }
}

/// Where to cut the listing into ranges listed at once: the manifest's quantiles (none on a
/// first run). Rows recorded under an earlier source prefix could be out of place: only
/// increasing keys under the current prefix make valid cuts.
fn split_keys(reader: &Reader, target: &Target, spec: &crate::spec::Spec) -> Result<Vec<String>, EngineError> {
    let mut split: Vec<String> = Vec::new();
    for k in reader.split_keys(target, &spec.destination.prefix, spec.transfer.list_partitions)? {
        if k.starts_with(&spec.source.prefix) && split.last().is_none_or(|l| k > *l) {
            split.push(k);
        }
    }
    Ok(split)
}
