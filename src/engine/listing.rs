//! What a run lists: the whole source prefix (in key ranges), only the prefixes an include
//! filter names, or, for a spec with `[series]` between reconcile runs, only what can be new:
//! each series' folder after its last held key once its next period has ended, or from its
//! earliest recent hole.

use super::planning::split_keys;
use super::EngineError;
use crate::manifest::{Reader, Target};
use crate::plan::Planner;
use crate::s3::{self, ListPart, Listing};
use crate::spec::series::Gaps;
use crate::spec::Spec;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// Holes older than this (their period's end) are probed no more: the reconcile run finds them.
const HOLE_AGE: chrono::TimeDelta = chrono::TimeDelta::days(35);

/// Which listing a run does (`details.listing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The whole source prefix: the only listing after which deletes may follow.
    #[default]
    Full,
    /// The include filter's prefixes.
    Prefixes,
    /// Between reconcile runs of a spec with `[series]`: only what can be new.
    Series,
    /// The key range of a key file (`run --keys`), only its keys planned.
    Keys,
    /// The keys of a batch of S3 events (`[source.events]`), each with its sidecar: the
    /// listing of each key says whether its source is there; deletes follow for those gone.
    Events,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Full => "full",
            Scope::Prefixes => "prefixes",
            Scope::Series => "series",
            Scope::Keys => "keys",
            Scope::Events => "events",
        }
    }
}

/// A run's listing and a planner for each of its parts.
pub(super) struct Plan<'a> {
    pub scope: Scope,
    pub listing: Listing,
    pub planners: Vec<Planner<'a>>,
    /// Parts listed (for the log and `details`).
    pub parts: usize,
}

/// Chooses and starts the listing of a run of `spec`: a key file's range, a series run's parts
/// (the known series, then any new folders [`Discovery`] found), the include filter's prefixes, or the whole source.
pub(super) fn start<'a>(
    reader: &Reader,
    target: &Target,
    spec: &'a Spec,
    client: &aws_sdk_s3::Client,
    series: Option<Vec<ListPart>>,
    keys: Option<&BTreeSet<String>>,
) -> Result<Plan<'a>, EngineError> {
    let bucket = &spec.source.bucket;
    if let Some(keys) = keys {
        return Ok(keys_part(spec, client, keys));
    }
    if let Some(parts) = series {
        tracing::info!(parts = parts.len(), "series run: listing only what can be new");
        let planners = parts
            .iter()
            .map(|(prefix, after)| Planner::under(spec, prefix, after.as_deref()))
            .collect();
        return Ok(Plan {
            scope: Scope::Series,
            parts: parts.len(),
            listing: Listing::parts(client, bucket, &parts),
            planners,
        });
    }
    if !spec.filter.list_prefixes.is_empty() {
        // The include filter names where its keys start: only those prefixes are listed.
        let parts: Vec<ListPart> = spec
            .filter
            .list_prefixes
            .iter()
            .map(|p| (format!("{}{p}", spec.source.prefix), None))
            .collect();
        tracing::info!(prefixes = parts.len(), "listing only the prefixes the include filter names");
        let planners = parts.iter().map(|(p, _)| Planner::under(spec, p, None)).collect();
        return Ok(Plan {
            scope: Scope::Prefixes,
            parts: parts.len(),
            listing: Listing::parts(client, bucket, &parts),
            planners,
        });
    }
    let (split, cut_by) = split_keys(reader, target, spec)?;
    let planners: Vec<Planner> = s3::key_ranges(&split)
        .map(|(after, until)| Planner::part(spec, after, until))
        .collect();
    if planners.len() > 1 {
        tracing::info!(partitions = planners.len(), cut_by, "listing the source in key ranges at once");
    }
    Ok(Plan {
        scope: Scope::Full,
        parts: planners.len(),
        listing: Listing::start(client, bucket, &spec.source.prefix, &split),
        planners,
    })
}

/// The listing of a key file: one range from just before its first key to its last (a few keys
/// more to pass over, never one less).
fn keys_part<'a>(spec: &'a Spec, client: &aws_sdk_s3::Client, keys: &BTreeSet<String>) -> Plan<'a> {
    let range = crate::shard::key_range(keys);
    let planners: Vec<Planner> = range
        .iter()
        .map(|(after, until)| Planner::part(spec, Some(after), Some(until)))
        .collect();
    Plan {
        scope: Scope::Keys,
        parts: planners.len(),
        listing: Listing::range(client, &spec.source.bucket, &spec.source.prefix, range),
        planners,
    }
}

/// The listing of a batch of events: for each object key, the keys from it to its sidecar
/// (one request a key, however large the bucket), planned against exactly those rows.
pub(super) fn events_parts<'a>(spec: &'a Spec, client: &aws_sdk_s3::Client, keys: &BTreeSet<String>) -> Plan<'a> {
    let suffix = spec.verify.checksum_sidecar.as_deref().unwrap_or("");
    let mut parts: Vec<(String, String)> = Vec::with_capacity(keys.len());
    for k in keys {
        // A key inside the part before (`a.CHECK` of `a`'s part up to `a.CHECKSUM`) is listed
        // and planned there.
        if parts.last().is_some_and(|(prev, until)| k.starts_with(prev.as_str()) && k <= until) {
            continue;
        }
        parts.push((k.clone(), format!("{k}{suffix}")));
    }
    let planners = parts.iter().map(|(k, until)| Planner::key(spec, k, until)).collect();
    Plan {
        scope: Scope::Events,
        parts: parts.len(),
        listing: Listing::keys(client, &spec.source.bucket, &parts),
        planners,
    }
}

/// A series run before its listing: the parts of the known series, and where new series would
/// show up as new folders.
pub(super) struct SeriesRun {
    pub(super) parts: Vec<ListPart>,
    pub(super) discover: Option<Discovery>,
}

/// Where new series would show up: the folders before the pattern's first field
/// (`source.prefix` + its literal folders), when that field names a folder; and the folders
/// under it that known series live in.
pub(super) struct Discovery {
    prefix: String,
    known: BTreeSet<String>,
}

/// A series run, or `None` when this run lists in full: no `[series]`, `--full`, a key file,
/// no series held yet, or a `reconcile` tick since the last full listing.
pub(super) fn series_run(reader: &Reader, spec: &Spec, full: bool) -> Result<Option<SeriesRun>, EngineError> {
    let Some(opts) = spec.series.as_ref().filter(|_| !full) else {
        return Ok(None);
    };
    let now = Utc::now();
    let last_full = reader.last_full_listing(&spec.name)?;
    let reconcile_due = match last_full.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        None => true,
        Some(at) => opts.reconcile.next_after(at.with_timezone(&Utc)).is_some_and(|tick| tick <= now),
    };
    if reconcile_due {
        return Ok(None);
    }
    let Some(kept) = reader.series(spec, false)? else { return Ok(None) };
    if kept.gaps.is_empty() {
        return Ok(None);
    }
    let src = &spec.source.prefix;
    let (parts, due) = parts_of(&kept.gaps, src, now);
    // New series are looked for when a period has ended (known series are due): a new symbol's
    // first file comes with a period's end, as every other's next one does. A run with nothing
    // due sends no delimiter listing, which a server may answer by reading every key under it.
    let discover = opts.pattern.folder_prefix().filter(|_| due).map(|lit| {
        let known = kept
            .gaps
            .tails()
            .filter_map(|t| {
                t.last_key
                    .strip_prefix(lit)?
                    .split_once('/')
                    .map(|(folder, _)| format!("{src}{lit}{folder}/"))
            })
            .collect();
        Discovery {
            prefix: format!("{src}{lit}"),
            known,
        }
    });
    Ok(Some(SeriesRun { parts, discover }))
}

impl Discovery {
    /// Each folder at the level of the pattern's first field that no known series lives in (a
    /// new symbol), as a part to list whole. One ListObjectsV2 with a delimiter per 1,000
    /// folders finds them; a failed one is logged and the reconcile run finds the new series
    /// instead.
    pub(super) async fn new_folders(self, client: &aws_sdk_s3::Client, bucket: &str) -> Vec<ListPart> {
        let Discovery { prefix, known } = self;
        let mut parts = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "discovering new series failed; the reconcile run will find them");
                    break;
                }
            };
            for folder in page.common_prefixes().iter().filter_map(|p| p.prefix()) {
                if !known.contains(folder) {
                    parts.push((folder.to_string(), None));
                }
            }
        }
        parts
    }
}

/// Each folder holding a series whose next period has ended, or a hole whose period ended
/// within `HOLE_AGE`: listed after the least of its series' last keys, or from just before the
/// earliest recent hole, so that one request a folder finds both a late day and the new ones
/// (35 days of a daily series are 70 keys: one page). Each folder is one part: no key is in two.
/// Also whether any series is due.
fn parts_of(gaps: &Gaps, source_prefix: &str, now: DateTime<Utc>) -> (Vec<ListPart>, bool) {
    let mut folders: BTreeMap<String, String> = BTreeMap::new();
    let mut any_due = false;
    for tail in gaps.tails() {
        let due = tail.last.next().end() <= now;
        any_due |= due;
        let hole = tail
            .holes
            .iter()
            .filter(|(period, _)| period.end() + HOLE_AGE > now)
            .map(|(_, key)| key)
            .min();
        let after = match hole {
            // The hole's key less its last character, as `shard::key_range` starts a key
            // file's range: the listing starts at the hole.
            Some(key) => {
                let mut after = format!("{source_prefix}{key}");
                after.pop();
                after
            }
            None if due => format!("{source_prefix}{}", tail.last_key),
            None => continue,
        };
        let folder = tail.last_key.rfind('/').map_or("", |i| &tail.last_key[..=i]);
        folders
            .entry(format!("{source_prefix}{folder}"))
            .and_modify(|a| *a = a.clone().min(after.clone()))
            .or_insert(after);
    }
    (folders.into_iter().map(|(f, a)| (f, Some(a))).collect(), any_due)
}
