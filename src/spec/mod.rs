//! Spec and config files: parsing (`raw`), semantic checks (`check`), directory loading.
//!
//! Two layers, as in ripgrep's low/high args: `raw` holds what the TOML says, with spans; the
//! checked types here hold only valid values. Every problem becomes a located [`Diagnostic`], and
//! a loader reports all of them rather than stopping at the first.

mod check;
mod config;
mod diag;
pub mod diff;
mod events;
pub mod feed;
mod load;
mod mode;
mod raw;
pub mod series;
mod side;
pub mod size;

pub use config::{Config, CostTable};
pub use diag::{Diagnostic, Locator};
pub use diff::diff;
pub use events::Events;
pub use feed::{Deliveries, FeedOpts, Notifier, NotifyEvent, NotifyFormat};
use load::{deserialize_all, fingerprint};
pub use load::{is_spec_file, load_dir, load_paths, unsafe_permissions, SpecSet, MAX_SPEC_BYTES};
pub use mode::{chain, Mode, ModeChoice};
pub use raw::LogFormat;
pub use side::{Role, Side, Which, WriteOptions};

use chrono::{DateTime, Utc};
use globset::GlobSet;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/s3syncd/s3syncd.toml";

/// A config or spec that can't be used, with every located problem found in it.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl SpecError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            SpecError::Invalid(d) => d,
        }
    }
    fn single(path: &Path, message: impl Into<String>) -> Self {
        SpecError::Invalid(vec![Diagnostic {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: message.into(),
        }])
    }
}

/// A feed's cron schedule (UTC), as written and parsed.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expr: String,
    parsed: cron::Schedule,
}

impl Schedule {
    /// Accepts 5-field (minute first) and 6-field (seconds first) cron.
    /// An expression that names no real date (`0 0 31 2 *`) is refused: it would never run.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let parsed = check::parse_cron(expr)?;
        if parsed.upcoming(Utc).next().is_none() {
            return Err(format!(
                "cron expression {expr:?} never fires: no date matches it (a day the month does not have?)"
            ));
        }
        Ok(Schedule {
            expr: expr.to_string(),
            parsed,
        })
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed.after(&after).next()
    }

    /// Ticks in `(from, to]`: how many a run that lasted that long made the feed skip.
    pub fn ticks_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
        self.parsed.after(&from).take_while(|t| *t <= to).count()
    }

    /// Whether a tick fell between the last run's start and now (the daemon was down or busy).
    pub fn missed(&self, last_run: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        last_run.is_some_and(|l| self.next_after(l).is_some_and(|t| t <= now))
    }
}

/// What decides that a listed source object differs from what the manifest recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Compare {
    #[serde(rename = "size")]
    Size,
    #[default]
    #[serde(rename = "size-etag")]
    SizeEtag,
}

/// Include/exclude globs over the key relative to `source.prefix`.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    /// Where every included key starts (relative to `source.prefix`): the literal part of each
    /// include glob up to its first wildcard, brace alternatives expanded, none inside another.
    /// Empty when some include has no literal start (the whole prefix is listed).
    pub list_prefixes: Vec<String>,
}

impl Filter {
    pub fn matches(&self, relative_key: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(relative_key)) && !self.exclude.as_ref().is_some_and(|g| g.is_match(relative_key))
    }
}

/// The listing prefixes of include globs (see [`Filter::list_prefixes`]).
pub fn list_prefixes<'a>(globs: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    for glob in globs {
        for alt in expand_braces(glob) {
            let literal: String = alt.chars().take_while(|c| !matches!(c, '*' | '?' | '[' | '\\')).collect();
            if literal.is_empty() {
                return Vec::new();
            }
            out.push(literal);
        }
    }
    out.sort();
    // A prefix inside another adds nothing: its keys are listed with the other's.
    let mut kept: Vec<String> = Vec::new();
    for p in out {
        if !kept.last().is_some_and(|k| p.starts_with(k.as_str())) {
            kept.push(p);
        }
    }
    kept
}

/// The alternatives of the first `{a,b}` group, each expanded in turn (globset's braces do not
/// nest); a glob without braces is itself.
fn expand_braces(glob: &str) -> Vec<String> {
    let Some(open) = glob.find('{') else {
        return vec![glob.to_string()];
    };
    let Some(close) = glob[open..].find('}').map(|i| open + i) else {
        return vec![glob.to_string()];
    };
    glob[open + 1..close]
        .split(',')
        .flat_map(|alt| expand_braces(&format!("{}{alt}{}", &glob[..open], &glob[close + 1..])))
        .collect()
}

/// How many key ranges a listing of `keys` keys is cut into: `list_partitions`, but none
/// smaller than a listing page (1,000 keys). Under two means one sequential listing. The one
/// rule for cuts from the manifest and cuts learnt from a listing.
pub fn list_ranges(list_partitions: usize, keys: u64) -> u64 {
    (list_partitions as u64).min(keys / 1000)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOpts {
    /// Copies of this spec in flight: fixed when set, else adaptive up to `max_transfers`.
    pub concurrency: Option<usize>,
    pub part_size: u64,
    pub multipart_threshold: u64,
    pub copy_threshold: u64,
    pub parts_in_flight: usize,
    /// Source listings run this many key ranges at once (see [`list_ranges`]).
    pub list_partitions: usize,
    /// Copy each object's tags (one GetObjectTagging per object outside `direct`).
    pub preserve_tags: bool,
    pub retries: u32,
}

impl Default for TransferOpts {
    fn default() -> Self {
        TransferOpts {
            concurrency: None,
            part_size: 16 << 20,
            multipart_threshold: 256 << 20,
            copy_threshold: 5 << 30,
            parts_in_flight: 4,
            list_partitions: 8,
            preserve_tags: false,
            retries: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOpts {
    pub compare: Compare,
    pub checksum_sidecar: Option<String>,
    /// How long an object whose sidecar is not listed yet is held back; then it is copied and
    /// counted as copied without its sidecar.
    pub sidecar_wait: Duration,
}

impl Default for VerifyOpts {
    fn default() -> Self {
        VerifyOpts {
            compare: Compare::default(),
            checksum_sidecar: None,
            sidecar_wait: VerifyOpts::SIDECAR_WAIT,
        }
    }
}

impl VerifyOpts {
    pub const SIDECAR_WAIT: Duration = Duration::from_secs(3600);

    /// The key of `key`'s checksum sidecar, when the spec names sidecars and `key` is not one.
    pub fn sidecar_of(&self, key: &str) -> Option<String> {
        self.checksum_sidecar
            .as_ref()
            .filter(|s| !key.ends_with(s.as_str()))
            .map(|s| format!("{key}{s}"))
    }

    /// The key whose sidecar `key` is, when it is one.
    pub fn object_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        self.checksum_sidecar.as_ref().and_then(|s| key.strip_suffix(s.as_str()))
    }
}

/// The delete cap: above it a run deletes nothing and says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxDelete {
    Count(u64),
    Percent(u8),
}

impl MaxDelete {
    /// The largest number of deletions allowed when the manifest held `held` objects. A
    /// percentage allows at least one deletion, so that a small feed can lose an object.
    pub fn limit(self, held: u64) -> u64 {
        match self {
            MaxDelete::Count(n) => n,
            MaxDelete::Percent(0) => 0,
            MaxDelete::Percent(p) => (held * u64::from(p) / 100).max(held.min(1)),
        }
    }
}

/// A checked feed spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub path: PathBuf,
    pub schedule: Option<Schedule>,
    pub enabled: bool,
    pub mode: ModeChoice,
    pub fallback: Vec<Mode>,
    pub delete: bool,
    pub max_delete: MaxDelete,
    pub source: Side,
    pub destination: Side,
    pub filter: Filter,
    pub transfer: TransferOpts,
    pub verify: VerifyOpts,
    /// `[series]`: the keys form dated series (`manifest gaps`).
    pub series: Option<series::SeriesOpts>,
    /// `[source.events]`: runs also follow S3 event notifications from this queue.
    pub events: Option<Events>,
    /// Deliveries, notifications, freshness and kept revisions.
    pub feed: FeedOpts,
    /// Hash of the file's bytes: a reload restarts a feed only when this changes.
    pub fingerprint: u64,
    /// Line and column of `name` (1:1 when it comes from the file name), for duplicate reports.
    pub name_at: (usize, usize),
    /// Line and column of `destination.bucket`, for overlap reports.
    pub dest_at: (usize, usize),
}

impl Spec {
    /// The modes to try for each object, in order; `choice` overrides the spec's `mode`
    /// (`run --mode`), and the fallback list still applies.
    pub fn mode_chain(&self, choice: Option<ModeChoice>) -> Vec<Mode> {
        chain(choice.unwrap_or(self.mode), &self.fallback)
    }

    /// Both sides with their names, as messages and spec sections call them.
    pub fn sides(&self) -> [(Which, &Side); 2] {
        [(Which::Source, &self.source), (Which::Destination, &self.destination)]
    }

    /// Maps a source key to its destination key; `None` if outside `source.prefix`.
    pub fn dest_key(&self, source_key: &str) -> Option<String> {
        let rel = source_key.strip_prefix(&self.source.prefix)?;
        Some(format!("{}{}", self.destination.prefix, rel))
    }

    /// Reads and checks a spec file, refusing what the daemon must not trust: anything but a
    /// regular file of a sane size, and a file that others may write ([`unsafe_permissions`]).
    /// `validate`, `run` and the daemon all load specs here, so they agree on every file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let meta = std::fs::metadata(path).map_err(|e| SpecError::single(path, format!("cannot read spec file: {e}")))?;
        if !meta.is_file() {
            return Err(SpecError::single(path, "not a regular file: a spec must be a plain *.toml file"));
        }
        if meta.len() > MAX_SPEC_BYTES {
            return Err(SpecError::single(
                path,
                format!(
                    "spec file is {} bytes; the limit is {MAX_SPEC_BYTES}: split it into one file per feed",
                    meta.len()
                ),
            ));
        }
        if let Some(why) = unsafe_permissions(path) {
            return Err(SpecError::single(path, why));
        }
        let bytes = std::fs::read(path).map_err(|e| SpecError::single(path, format!("cannot read spec file: {e}")))?;
        Spec::parse(path, &bytes)
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Spec, SpecError> {
        let text = std::str::from_utf8(bytes).map_err(|e| SpecError::Invalid(vec![diag::utf8_error(path, bytes, &e)]))?;
        let loc = Locator { path, text };
        if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            return Err(SpecError::Invalid(vec![
                loc.at(None, "spec file is empty: it needs at least [source] and [destination] tables")
            ]));
        }
        let (raw, mut diags) = deserialize_all(&loc);
        let Some(raw) = raw else {
            return Err(SpecError::Invalid(diags));
        };
        match check::spec(&loc, raw, fingerprint(bytes)) {
            Ok(spec) if diags.is_empty() => Ok(spec),
            Ok(_) => Err(SpecError::Invalid(diags)),
            Err(more) => {
                diags.extend(more);
                diags.sort_by_key(|d| (d.line, d.column));
                Err(SpecError::Invalid(diags))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_and_bad_value_in_one_pass() {
        let text = "mode = \"fast\"\n[source]\nbucket = \"src-bucket\"\nbukcet = \"x\"\n[destination]\nbucket = \"dst-bucket\"\n[transfer]\nconcurency = 4\n";
        let e = Spec::parse(Path::new("s.toml"), text.as_bytes()).unwrap_err();
        let got: Vec<String> = e.diagnostics().iter().map(|d| d.to_string()).collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].starts_with("s.toml:1:8: unknown variant `fast`"), "{got:#?}");
        assert!(
            got[1].starts_with("s.toml:4:1: unknown field `bukcet`") && got[1].ends_with("did you mean `bucket`?"),
            "{got:#?}"
        );
        assert!(
            got[2].starts_with("s.toml:8:1: unknown field `concurency`") && got[2].ends_with("did you mean `concurrency`?"),
            "{got:#?}"
        );
    }

    #[test]
    fn include_globs_list_only_their_literal_starts() {
        let got = |g: &[&str]| list_prefixes(g.iter().copied());
        assert_eq!(got(&["{BTCUSDT,ETHUSDT}/**", "XRP*/1m/*.zip"]), ["BTCUSDT/", "ETHUSDT/", "XRP"]);
        assert_eq!(got(&["spot/{daily,monthly}/klines/{A,B}/**"]).len(), 4);
        // A prefix inside another adds nothing; a glob without a literal start lists all.
        assert_eq!(got(&["BTC*", "BTCUSDT/**"]), ["BTC"]);
        assert!(got(&["BTCUSDT/**", "**/*.zip"]).is_empty());
        assert!(got(&["*.zip"]).is_empty());
        assert_eq!(got(&["a/b.csv"]), ["a/b.csv"]);
    }
}
