//! Planning: which listed objects to copy, which to skip, which manifest rows have no source.
//!
//! A sorted merge, as rclone's march: each listing page (sorted by key) is merged with the
//! manifest rows of the same key range (read in key order), so memory holds one page and its
//! window, never the whole listing or manifest. Destination keys keep the source order because
//! they are `destination.prefix` + (source key without `source.prefix`), and SQLite's binary
//! collation orders UTF-8 text as S3 does, by bytes.

use crate::manifest::{ManifestError, PlanRow, Reader, Target};
use crate::s3::SourceObject;
use crate::spec::{Compare, Spec};
use std::cmp::Ordering;

/// One step of a sorted merge of two key-ordered sequences.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<L, R> {
    /// A key only the left side has.
    Left(L),
    /// A key only the right side has.
    Right(R),
    Both(L, R),
}

/// Walks two sequences sorted by the byte order of their keys together, as rclone's march
/// walks a source and a destination: one merge for every caller (the planner merges a listing
/// with the manifest, `manifest verify` the destination listing with the manifest), each
/// deciding what a step means.
pub fn march<L, R>(
    left: impl IntoIterator<Item = L>,
    right: impl IntoIterator<Item = R>,
    left_key: impl Fn(&L) -> &str,
    right_key: impl Fn(&R) -> &str,
) -> impl Iterator<Item = Step<L, R>> {
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    std::iter::from_fn(move || {
        let order = match (left.peek(), right.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(l), Some(r)) => left_key(l).as_bytes().cmp(right_key(r).as_bytes()),
        };
        Some(match order {
            Ordering::Less => Step::Left(left.next()?),
            Ordering::Greater => Step::Right(right.next()?),
            Ordering::Equal => Step::Both(left.next()?, right.next()?),
        })
    })
}

/// Why an object is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    New,
    Size,
    Etag,
    LastModified,
    /// The row was copied from another source (endpoint or bucket), and size and ETag do not
    /// prove the objects equal.
    Source,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::Size => "size changed",
            Reason::Etag => "etag changed",
            Reason::LastModified => "last-modified changed",
            Reason::Source => "source changed",
        }
    }
}

/// Whether a listed object must be copied, given what the manifest recorded for it. The
/// listing's ETag decides when both sides have one; servers whose listings carry no ETag fall
/// back to LastModified. Destination ETags are never compared with source ETags: multipart
/// ETags are not content hashes. A row recorded from another source (`same_source` false)
/// skips the object only when size and ETag prove it equal: no LastModified, no size alone.
pub fn decide(src: &SourceObject, row: Option<&PlanRow>, compare: Compare) -> Option<Reason> {
    let Some(row) = row else {
        return Some(Reason::New);
    };
    if src.size != row.size {
        return Some(Reason::Size);
    }
    if !row.same_source {
        return match (&src.etag, &row.etag) {
            (Some(a), Some(b)) if a == b => None,
            _ => Some(Reason::Source),
        };
    }
    if compare == Compare::Size {
        return None;
    }
    match (&src.etag, &row.etag) {
        (Some(a), Some(b)) if a != b => Some(Reason::Etag),
        (Some(_), Some(_)) => None,
        _ if src.last_modified.is_some() && src.last_modified != row.source_last_modified => Some(Reason::LastModified),
        _ => None,
    }
}

/// One object to copy.
#[derive(Debug, Clone)]
pub struct CopyJob {
    pub source: SourceObject,
    pub dest_key: String,
    pub reason: Reason,
}

/// The plan for one listing page.
#[derive(Debug, Default)]
pub struct PagePlan {
    pub listed: u64,
    pub filtered: u64,
    pub copies: Vec<CopyJob>,
    pub skipped: u64,
    /// Manifest rows in this page's key range with no listed source: delete candidates.
    pub source_gone: Vec<PlanRow>,
    /// Objects held back because their checksum sidecar is not listed yet (`sidecar_wait`).
    pub held_for_sidecar: u64,
    /// Objects copied without a listed sidecar: their wait was over.
    pub without_sidecar: u64,
}

/// Walks the listing page by page, keeping the position reached in the manifest. One planner
/// covers the whole listing, or one part of a partitioned one: the source keys in
/// `(after, until]`.
pub struct Planner<'a> {
    spec: &'a Spec,
    /// Where the spec's rows are: its destination.
    target: Target,
    /// The source as rows record it: endpoint identity and bucket.
    source: (String, String),
    /// Destination key of the last listed object: the manifest window's exclusive lower bound.
    last_dest_key: Option<String>,
    /// Destination key of the part's last possible key: where `finish` stops.
    until: Option<String>,
    /// The destination keys this planner's manifest windows cover: those under it.
    scope: String,
    /// Copies whose checksum sidecar would sort after the last listed key: the next page, or
    /// the part's end, tells whether it exists.
    pending: Vec<CopyJob>,
    /// Folders where a sidecar was listed: there an object without one waits for it.
    sidecar_folders: std::collections::HashSet<String>,
    /// When the run started: what `sidecar_wait` is measured from.
    now: chrono::DateTime<chrono::Utc>,
}

impl<'a> Planner<'a> {
    pub fn new(spec: &'a Spec) -> Self {
        Planner::part(spec, None, None)
    }

    pub fn part(spec: &'a Spec, after: Option<&str>, until: Option<&str>) -> Self {
        Planner {
            spec,
            target: Target::of(spec),
            source: (spec.source.endpoint_identity(), spec.source.bucket.clone()),
            last_dest_key: after.and_then(|k| spec.dest_key(k)),
            until: until.and_then(|k| spec.dest_key(k)),
            scope: spec.destination.prefix.clone(),
            pending: Vec::new(),
            sidecar_folders: Default::default(),
            now: chrono::Utc::now(),
        }
    }

    /// A planner of the keys under `source_prefix` (under `source.prefix`), after `after` if
    /// given: one listing prefix of the include filter, or one part of a series run. Manifest
    /// rows outside it are never read, so never delete candidates.
    pub fn under(spec: &'a Spec, source_prefix: &str, after: Option<&str>) -> Self {
        Planner {
            scope: spec.dest_key(source_prefix).unwrap_or_else(|| spec.destination.prefix.clone()),
            ..Planner::part(spec, after, None)
        }
    }

    /// A planner of the keys from `key` to `until` that start with `key` (an object and its
    /// sidecar, named by an event): exactly the rows such a listing can list.
    pub fn key(spec: &'a Spec, key: &str, until: &str) -> Self {
        Planner {
            scope: spec.dest_key(key).unwrap_or_else(|| spec.destination.prefix.clone()),
            ..Planner::part(spec, None, Some(until))
        }
    }

    pub fn plan_page(&mut self, reader: &Reader, page: Vec<SourceObject>) -> Result<PagePlan, ManifestError> {
        let Some(last) = page.last() else {
            return Ok(PagePlan::default());
        };
        let upper = self.spec.dest_key(&last.key);
        let rows = reader.plan_range(
            &self.target,
            &self.source,
            &self.scope,
            self.last_dest_key.as_deref(),
            upper.as_deref(),
        )?;
        self.last_dest_key = upper;
        let sidecars = Sidecars::of(self.spec, &page);
        self.sidecar_folders.extend(sidecars.keys.iter().map(|k| folder_of(k).to_string()));
        let mut plan = PagePlan::default();
        for job in std::mem::take(&mut self.pending) {
            self.gate(job, &sidecars, &mut plan);
        }
        self.merge(page, rows, &sidecars, &mut plan);
        Ok(plan)
    }

    /// The end of the part: manifest rows after the last listed key (their sources are gone
    /// too), and the copies that waited to see whether their sidecar follows (it does not).
    pub fn finish(&mut self, reader: &Reader) -> Result<PagePlan, ManifestError> {
        let rows = reader.plan_range(
            &self.target,
            &self.source,
            &self.scope,
            self.last_dest_key.as_deref(),
            self.until.as_deref(),
        )?;
        let mut plan = PagePlan {
            source_gone: rows.into_iter().filter(|r| self.in_filter(r)).collect(),
            ..PagePlan::default()
        };
        for job in std::mem::take(&mut self.pending) {
            self.gate(job, &Sidecars::default(), &mut plan);
        }
        Ok(plan)
    }

    /// Lets a copy through, holds it back while its sidecar may still come, or keeps it
    /// pending when its sidecar would sort after the page. An object whose sidecar is not
    /// listed waits `sidecar_wait` from its LastModified, then goes without.
    fn gate(&mut self, job: CopyJob, sidecars: &Sidecars, plan: &mut PagePlan) {
        let Some(sidecar) = self.spec.verify.sidecar_of(&job.source.key) else {
            return plan.copies.push(job);
        };
        if sidecars.keys.contains(&sidecar) {
            return plan.copies.push(job);
        }
        if sidecars.last.as_ref().is_some_and(|last| sidecar.as_bytes() > last.as_bytes()) {
            return self.pending.push(job);
        }
        // Only where sidecars are the rule: a README beside the archives never waits.
        if !self.sidecar_folders.contains(folder_of(&job.source.key)) {
            return plan.copies.push(job);
        }
        let modified = job
            .source
            .last_modified
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let wait = chrono::TimeDelta::from_std(self.spec.verify.sidecar_wait).unwrap_or(chrono::TimeDelta::MAX);
        if modified.is_some_and(|m| self.now.signed_duration_since(m) < wait) {
            plan.held_for_sidecar += 1;
        } else {
            plan.without_sidecar += 1;
            plan.copies.push(job);
        }
    }

    fn in_filter(&self, row: &PlanRow) -> bool {
        row.dest_key
            .strip_prefix(&self.spec.destination.prefix)
            .is_some_and(|rel| self.spec.filter.matches(rel))
    }

    fn merge(&mut self, page: Vec<SourceObject>, rows: Vec<PlanRow>, sidecars: &Sidecars, plan: &mut PagePlan) {
        plan.listed = page.len() as u64;
        // A destination key is the source key with its prefix replaced, so both sides are in
        // the order of their keys' parts after the prefix: the merge runs on those, and a
        // destination key is built only for what is copied.
        let (from, to) = (&self.spec.source.prefix, &self.spec.destination.prefix);
        let listed = page.into_iter().filter(|src| src.key.starts_with(from.as_str()));
        for step in march(
            listed,
            rows,
            |src| src.key.get(from.len()..).unwrap_or_default(),
            |r| r.dest_key.get(to.len()..).unwrap_or_default(),
        ) {
            let (src, row) = match step {
                Step::Right(r) => {
                    // A manifest row with no source in the listing.
                    if self.in_filter(&r) {
                        plan.source_gone.push(r);
                    }
                    continue;
                }
                Step::Left(l) => (l, None),
                Step::Both(l, r) => (l, Some(r)),
            };
            let rel = &src.key[from.len()..];
            if !self.spec.filter.matches(rel) {
                plan.filtered += 1;
                continue;
            }
            match decide(&src, row.as_ref(), self.spec.verify.compare) {
                Some(reason) => {
                    let job = CopyJob {
                        dest_key: format!("{to}{rel}"),
                        source: src,
                        reason,
                    };
                    self.gate(job, sidecars, plan);
                }
                None => plan.skipped += 1,
            }
        }
    }
}

/// The folder of a key: up to its last '/'.
fn folder_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

/// The checksum sidecars one listing page holds, and its last key (a sidecar after it may
/// still be listed). Empty for a spec without sidecars.
#[derive(Default)]
struct Sidecars {
    keys: std::collections::HashSet<String>,
    last: Option<String>,
}

impl Sidecars {
    fn of(spec: &Spec, page: &[SourceObject]) -> Sidecars {
        let Some(suffix) = &spec.verify.checksum_sidecar else {
            return Sidecars::default();
        };
        Sidecars {
            keys: page
                .iter()
                .filter(|o| o.key.ends_with(suffix.as_str()))
                .map(|o| o.key.clone())
                .collect(),
            last: page.last().map(|o| o.key.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(key: &str, size: u64, etag: Option<&str>, lm: &str) -> SourceObject {
        SourceObject {
            key: key.into(),
            size,
            etag: etag.map(Into::into),
            last_modified: Some(lm.into()),
        }
    }

    fn row(key: &str, size: u64, etag: Option<&str>, lm: &str) -> PlanRow {
        PlanRow {
            dest_key: key.into(),
            source_key: key.into(),
            size,
            etag: etag.map(Into::into),
            source_last_modified: Some(lm.into()),
            same_source: true,
        }
    }

    /// The row as if copied from another source.
    fn foreign(r: PlanRow) -> PlanRow {
        PlanRow { same_source: false, ..r }
    }

    #[test]
    fn decide_uses_size_then_etag_then_last_modified() {
        let t1 = "2024-01-01T00:00:00.000Z";
        let t2 = "2024-01-02T00:00:00.000Z";
        let c = Compare::SizeEtag;
        assert_eq!(decide(&src("k", 1, Some("a"), t1), None, c), Some(Reason::New));
        assert_eq!(
            decide(&src("k", 2, Some("a"), t1), Some(&row("k", 1, Some("a"), t1)), c),
            Some(Reason::Size)
        );
        assert_eq!(
            decide(&src("k", 1, Some("b"), t1), Some(&row("k", 1, Some("a"), t1)), c),
            Some(Reason::Etag)
        );
        // Same content re-uploaded: a new LastModified alone does not copy when ETags agree.
        assert_eq!(decide(&src("k", 1, Some("a"), t2), Some(&row("k", 1, Some("a"), t1)), c), None);
        // No ETag in the listing (s3s-fs): LastModified decides.
        assert_eq!(
            decide(&src("k", 1, None, t2), Some(&row("k", 1, Some("a"), t1)), c),
            Some(Reason::LastModified)
        );
        assert_eq!(decide(&src("k", 1, None, t1), Some(&row("k", 1, Some("a"), t1)), c), None);
        assert_eq!(
            decide(&src("k", 1, Some("b"), t2), Some(&row("k", 1, Some("a"), t1)), Compare::Size),
            None
        );
        // A row from another source: only size and ETag together prove the object equal.
        assert_eq!(
            decide(&src("k", 1, Some("a"), t2), Some(&foreign(row("k", 1, Some("a"), t1))), c),
            None
        );
        assert_eq!(
            decide(
                &src("k", 1, Some("b"), t1),
                Some(&foreign(row("k", 1, Some("a"), t1))),
                Compare::Size
            ),
            Some(Reason::Source)
        );
        assert_eq!(
            decide(&src("k", 1, None, t1), Some(&foreign(row("k", 1, Some("a"), t1))), c),
            Some(Reason::Source)
        );
    }

    fn spec() -> Spec {
        let text = br#"
            [source]
            bucket = "src-bucket"
            prefix = "data/"
            [destination]
            bucket = "dst-bucket"
            prefix = "bronze/"
            [filter]
            exclude = ["**/*.tmp"]
        "#;
        Spec::parse(std::path::Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn march_pairs_equal_keys_and_keeps_byte_order() {
        let steps: Vec<_> = march(["a", "c", "é"], ["b", "c", "z"], |k| k, |k| k).collect();
        assert_eq!(
            steps,
            [
                Step::Left("a"),
                Step::Right("b"),
                Step::Both("c", "c"),
                Step::Right("z"),
                Step::Left("é")
            ]
        );
    }

    #[test]
    fn merge_finds_new_changed_skipped_and_gone() {
        let spec = spec();
        let mut planner = Planner::new(&spec);
        let t = "2024-01-01T00:00:00.000Z";
        let page = vec![
            src("data/a", 1, Some("x"), t),
            src("data/c", 2, Some("y"), t),
            src("data/d.tmp", 1, None, t),
            src("data/e", 3, Some("z"), t),
        ];
        let rows = vec![
            row("bronze/a", 1, Some("x"), t),
            row("bronze/b", 1, Some("x"), t),
            row("bronze/c", 2, Some("old"), t),
            row("bronze/f", 1, None, t),
        ];
        let mut plan = PagePlan::default();
        planner.merge(page, rows, &Sidecars::default(), &mut plan);
        assert_eq!(plan.listed, 4);
        assert_eq!(plan.filtered, 1);
        assert_eq!(plan.skipped, 1);
        let copies: Vec<_> = plan.copies.iter().map(|c| (c.dest_key.as_str(), c.reason)).collect();
        assert_eq!(copies, vec![("bronze/c", Reason::Etag), ("bronze/e", Reason::New)]);
        let gone: Vec<_> = plan.source_gone.iter().map(|r| r.dest_key.as_str()).collect();
        assert_eq!(gone, vec!["bronze/b", "bronze/f"]);
    }

    /// An object waits for its sidecar where sidecars are listed: across a page's end,
    /// `sidecar_wait` from its LastModified while none is listed, and then goes without one.
    #[test]
    fn objects_wait_for_their_sidecars_across_pages() {
        let text = br#"
            [source]
            bucket = "src-bucket"
            prefix = "data/"
            [destination]
            bucket = "dst-bucket"
            [verify]
            checksum_sidecar = ".CHECKSUM"
            sidecar_wait = "1h"
        "#;
        let spec = Spec::parse(std::path::Path::new("t.toml"), text).unwrap();
        let (old, young) = ("2024-01-01T00:00:00.000Z", chrono::Utc::now().to_rfc3339());
        let mut planner = Planner::new(&spec);
        let mut plan = PagePlan::default();
        let page = vec![
            src("data/a.zip", 1, None, &young),
            src("data/a.zip.CHECKSUM", 1, None, &young),
            src("data/b.zip", 1, None, &young),
            src("data/c.zip", 1, None, old),
            src("data/d.zip", 1, None, &young),
        ];
        let sidecars = Sidecars::of(&spec, &page);
        planner.sidecar_folders.insert("data/".into());
        planner.merge(page, Vec::new(), &sidecars, &mut plan);
        let keys = |p: &PagePlan| p.copies.iter().map(|c| c.source.key.clone()).collect::<Vec<_>>();
        // b is young with no sidecar: held; c is old: copied without; d's may be on the next page.
        assert_eq!(keys(&plan), ["data/a.zip", "data/a.zip.CHECKSUM", "data/c.zip"]);
        assert_eq!((plan.held_for_sidecar, plan.without_sidecar), (1, 1));
        let next = vec![
            src("data/d.zip.CHECKSUM", 1, None, &young),
            src("data/docs/README", 1, None, &young),
            src("data/e.zip", 1, None, &young),
        ];
        let (sidecars, mut plan) = (Sidecars::of(&spec, &next), PagePlan::default());
        for job in std::mem::take(&mut planner.pending) {
            planner.gate(job, &sidecars, &mut plan);
        }
        planner.merge(next, Vec::new(), &sidecars, &mut plan);
        // A folder where no sidecar was listed waits for none.
        assert_eq!(keys(&plan), ["data/d.zip", "data/d.zip.CHECKSUM", "data/docs/README"]);
        // The part ends: e's sidecar never came, and e is young.
        let mut end = PagePlan::default();
        for job in std::mem::take(&mut planner.pending) {
            planner.gate(job, &Sidecars::default(), &mut end);
        }
        assert_eq!((end.copies.len(), end.held_for_sidecar), (0, 1));
    }
}
