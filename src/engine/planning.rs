//! The plan stage: list the source (in key ranges at once when the manifest says where to cut),
//! merge each page with the manifest, send the copy jobs to the copy stage, and collect the
//! manifest rows whose source is gone (delete candidates).

use super::{EngineError, Run};
use crate::manifest::{ListSplits, Listed, PlanRow, Reader, Target};
use crate::plan::CopyJob;
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
    /// Which listing the run did: deletes follow only a full one.
    pub scope: super::listing::Scope,
}

impl Planned {
    /// Learns the count of rows held at the start (awaited the first time) and the
    /// `max_delete` cap on them.
    async fn settle(&mut self, held: &mut Held, spec: &crate::spec::Spec) -> Result<(), EngineError> {
        self.held = held.get().await?;
        self.cap = spec.max_delete.limit(self.held);
        Ok(())
    }

    /// Keeps delete candidates up to the cap plus one.
    async fn note_gone(&mut self, rows: Vec<PlanRow>, held: &mut Held, spec: &crate::spec::Spec) -> Result<(), EngineError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.settle(held, spec).await?;
        for r in rows {
            self.gone_count += 1;
            if self.gone.len() as u64 <= self.cap {
                self.gone.push(r);
            }
        }
        Ok(())
    }
}

/// The count of the spec's rows as the run found them: taken on a snapshot of the start, on
/// a thread of its own, and awaited only when a delete candidate first appears (or at the
/// end), so that counting a million rows does not hold up the listing.
enum Held {
    Counting(tokio::task::JoinHandle<Result<u64, crate::manifest::ManifestError>>),
    Known(u64),
    /// Not counted until needed.
    Later(std::path::PathBuf, Target),
}

impl Held {
    fn count(reader: Reader, target: Target) -> Held {
        Held::Counting(tokio::task::spawn_blocking(move || reader.count_objects(&target)))
    }

    async fn get(&mut self) -> Result<u64, EngineError> {
        if let Held::Later(path, target) = self {
            *self = Held::count(Reader::open(path)?, target.clone());
        }
        if let Held::Counting(task) = self {
            *self = Held::Known(task.await.expect("the count of held rows panicked")?);
        }
        let Held::Known(n) = self else { unreachable!() };
        Ok(*n)
    }
}

/// How a listing's planning ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Every part listed to its end.
    Complete,
    /// The run was asked to stop.
    Stopped,
    /// A listing request failed (`Planned::listing_error`).
    Failed,
    /// The copy stage closed its queue (shutdown).
    CopiesStopped,
}

impl Run {
    pub(super) async fn plan(&self, mut reader: Reader, jobs: mpsc::Sender<CopyJob>) -> Result<Planned, EngineError> {
        let spec = &self.spec;
        let mut planned = Planned::default();
        let series = match (&self.opts.keys, &self.opts.events) {
            (None, None) => super::listing::series_run(&reader, spec, self.opts.full)?,
            _ => None,
        };
        let (series, discovery) = match series {
            Some(run) => (Some(run.parts), run.discover),
            None => (None, None),
        };
        let mut plan = self.listing(&reader, series)?;
        planned.scope = plan.scope;
        // A series run deletes nothing: it need not count the rows held (a second over millions).
        let mut held = match plan.scope {
            super::listing::Scope::Series => Held::Known(0),
            // A few keys a second: counted only if one of them is gone.
            super::listing::Scope::Events => Held::Later(reader.path().to_path_buf(), self.target.clone()),
            _ => Held::count(Reader::open(reader.path())?.snapshot()?, self.target.clone()),
        };
        // New series are looked for beside the known series' listings (a delimiter listing can
        // take a server seconds), and their folders listed after them. A stop ends the search
        // with the listings: it is not waited for.
        let discover = async {
            let Some(d) = discovery else { return Vec::new() };
            tokio::select! {
                biased;
                () = self.stop.stop.cancelled() => Vec::new(),
                found = d.new_folders(self.transferer.src(), &spec.source.bucket) => found,
            }
        };
        let (flow, new) = tokio::join!(self.plan_listing(&mut reader, &mut plan, &mut planned, &mut held, &jobs), discover);
        let mut flow = flow?;
        if flow == Flow::Complete && !new.is_empty() {
            self.tally(|t| t.series_discovered = new.len() as u64);
            let mut more = self.listing(&reader, Some(new))?;
            flow = self.plan_listing(&mut reader, &mut more, &mut planned, &mut held, &jobs).await?;
        }
        planned.complete = flow == Flow::Complete;
        planned.settle(&mut held, spec).await?;
        if flow == Flow::CopiesStopped {
            return Ok(planned);
        }
        if let Some(keys) = self.opts.keys.as_ref().filter(|_| planned.complete) {
            let missing = keys.len() as u64 - self.tally(|t| t.keys_found);
            if missing > 0 {
                tracing::warn!(missing, "keys of the key file are not at the source: nothing to copy for them");
            }
        }
        if planned.complete && plan.scope == super::listing::Scope::Full && !self.opts.dry_run {
            // Where the next run cuts its parts, so that it need not scan the manifest for them.
            self.engine.writer.list_splits(
                &spec.name,
                &ListSplits {
                    of: Listed::of(spec),
                    keys: plan.listing.cuts(spec.transfer.list_partitions),
                },
            );
        }
        Ok(planned)
    }

    /// Starts a listing (see [`super::listing::start`]) and counts its parts into the tally.
    fn listing(&self, reader: &Reader, series: Option<Vec<crate::s3::ListPart>>) -> Result<super::listing::Plan<'_>, EngineError> {
        let plan = match &self.opts.events {
            Some(keys) => super::listing::events_parts(&self.spec, self.transferer.src(), keys),
            None => self.full_or_part_listing(reader, series)?,
        };
        self.tally(|t| {
            t.listing = plan.scope;
            t.list_parts += plan.parts;
        });
        Ok(plan)
    }

    fn full_or_part_listing(
        &self,
        reader: &Reader,
        series: Option<Vec<crate::s3::ListPart>>,
    ) -> Result<super::listing::Plan<'_>, EngineError> {
        super::listing::start(
            reader,
            &self.target,
            &self.spec,
            self.transferer.src(),
            series,
            self.opts.keys.as_deref(),
        )
    }

    /// Plans every page of `plan`'s listing as it arrives and sends its copies on. (`&mut`:
    /// a reader is not shared across threads, and this future may move between them.)
    async fn plan_listing(
        &self,
        reader: &mut Reader,
        plan: &mut super::listing::Plan<'_>,
        planned: &mut Planned,
        held: &mut Held,
        jobs: &mpsc::Sender<CopyJob>,
    ) -> Result<Flow, EngineError> {
        let spec = &self.spec;
        loop {
            let next = tokio::select! {
                biased;
                () = self.stop.stop.cancelled() => return Ok(Flow::Stopped),
                n = plan.listing.next() => n,
            };
            match next {
                None => return Ok(Flow::Complete),
                Some(Ok((part, page))) => {
                    let paged = match page {
                        Some(page) => plan.planners[part].plan_page(&*reader, self.only_keys(page))?,
                        // The part is complete: manifest rows left in its range have no source.
                        None => plan.planners[part].finish(&*reader)?,
                    };
                    self.tally(|t| t.planned(&paged));
                    planned.note_gone(paged.source_gone, held, spec).await?;
                    for job in paged.copies {
                        if jobs.send(job).await.is_err() {
                            // The copy stage stopped (shutdown): so does the listing.
                            return Ok(Flow::CopiesStopped);
                        }
                    }
                }
                Some(Err(e)) => {
                    let e = e.explained(&self.spec.source);
                    tracing::error!(error = %e, "source listing failed; no deletes this run");
                    planned.listing_error = Some(e);
                    return Ok(Flow::Failed);
                }
            }
        }
    }

    /// A listing page as planned: with `run --keys`, only the keys of the key file; the keys
    /// found are counted, so the run can say which it did not find.
    fn only_keys(&self, mut page: Vec<crate::s3::SourceObject>) -> Vec<crate::s3::SourceObject> {
        if let Some(keys) = &self.opts.keys {
            page.retain(|o| keys.contains(&o.key));
            self.tally(|t| t.keys_found += page.len() as u64);
        }
        page
    }
}

/// Where to cut the listing into ranges listed at once: where the spec's last complete listing
/// of this source said (kept in the manifest's `feeds`), else the manifest's quantiles (none on
/// a first run). Any cuts are correct, only more or less even; but keys recorded under an
/// earlier source prefix could be out of place: only increasing keys under the current prefix
/// make valid cuts. Returns the cuts and where they came from, for the log.
pub(super) fn split_keys(reader: &Reader, target: &Target, spec: &crate::spec::Spec) -> Result<(Vec<String>, &'static str), EngineError> {
    let learnt = reader.list_splits(&spec.name)?.filter(|s| s.of == Listed::of(spec));
    let (keys, cut_by) = match learnt {
        Some(s) => (s.keys, "last listing"),
        None => (
            reader.split_keys(target, &spec.destination.prefix, spec.transfer.list_partitions)?,
            "manifest",
        ),
    };
    let mut split: Vec<String> = Vec::new();
    for k in keys {
        if k.starts_with(&spec.source.prefix) && split.last().is_none_or(|l| k > *l) {
            split.push(k);
        }
    }
    Ok((split, cut_by))
}
