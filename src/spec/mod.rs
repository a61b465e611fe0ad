//! Spec and config files: parsing (`raw`), semantic checks (`check`), directory loading.
//!
//! Two layers, as in ripgrep's low/high args: `raw` holds what the TOML says, with spans; the
//! checked types here hold only valid values. Every problem becomes a located [`Diagnostic`], and
//! a loader reports all of them rather than stopping at the first.

mod check;
mod diag;
pub mod diff;
pub mod feed;
mod raw;
pub mod series;
pub mod size;

pub use diag::{Diagnostic, Locator};
pub use diff::{diff, SpecDiff};
pub use feed::{Deliveries, FeedOpts, Notifier, NotifyEvent, NotifyFormat};
pub use raw::LogFormat;

use chrono::{DateTime, Utc};
use globset::GlobSet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
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

/// How one object is copied. `auto` is not a mode but a chain of them ([`ModeChoice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Server-side CopyObject / UploadPartCopy: no byte through the host.
    Direct,
    /// GET piped into a PUT or multipart upload, bounded memory, no disk.
    Stream,
    /// Download to the staging directory, verify, upload.
    Staged,
}

impl Mode {
    /// The name in specs, the manifest's `mode` column and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Stream => "stream",
            Mode::Staged => "staged",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spec's `mode` key and `run --mode`: one mode, or `auto` (direct first, then the fallbacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModeChoice {
    /// Direct, falling back per object to stream, then staged.
    Auto,
    Direct,
    Stream,
    Staged,
}

impl ModeChoice {
    /// The mode tried first.
    pub fn first(self) -> Mode {
        match self {
            ModeChoice::Auto | ModeChoice::Direct => Mode::Direct,
            ModeChoice::Stream => Mode::Stream,
            ModeChoice::Staged => Mode::Staged,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ModeChoice::Auto => "auto",
            m => m.first().as_str(),
        }
    }
}

impl fmt::Display for ModeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// The global daemon config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; `None` for built-in defaults.
    pub path: Option<PathBuf>,
    pub spec_dir: PathBuf,
    pub state_dir: PathBuf,
    pub max_running_specs: usize,
    pub max_transfers: usize,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    /// Bytes all streamed multipart uploads may buffer together.
    pub stream_buffer: u64,
    pub cost: CostTable,
    /// `[[notify]]` of the global config: told of every feed's events.
    pub notify: Vec<Notifier>,
    /// `run --manifest`: this process records in its own manifest (a shard of a backfill),
    /// with its locks and staging files beside it, not in the state directory's.
    pub own_manifest: Option<PathBuf>,
}

/// Prices for the run summary's cost estimate, in USD. Defaults: AWS S3 Standard list prices
/// (us-east-1): class A (PUT, COPY, POST, LIST) $0.005 per 1,000, class B (GET, HEAD) $0.0004 per
/// 1,000, and $0.09 per GiB for data that leaves the source's network through this host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostTable {
    pub class_a_per_1000: f64,
    pub class_b_per_1000: f64,
    pub through_host_per_gib: f64,
}

impl Default for CostTable {
    fn default() -> Self {
        CostTable {
            class_a_per_1000: 0.005,
            class_b_per_1000: 0.0004,
            through_host_per_gib: 0.09,
        }
    }
}

impl CostTable {
    /// (requests, data) cost of a run from its attempts by operation and its bytes through the host.
    pub fn estimate(&self, requests: &BTreeMap<&str, u64>, bytes_through_host: u64) -> (f64, f64) {
        let (mut a, mut b) = (0u64, 0u64);
        for (op, n) in requests {
            if op.starts_with("Get") || op.starts_with("Head") {
                b += n;
            } else {
                a += n;
            }
        }
        let req = a as f64 / 1000.0 * self.class_a_per_1000 + b as f64 / 1000.0 * self.class_b_per_1000;
        (req, bytes_through_host as f64 / (1u64 << 30) as f64 * self.through_host_per_gib)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            spec_dir: PathBuf::from("/etc/s3syncd/specs.d"),
            state_dir: PathBuf::from("/var/lib/s3syncd"),
            max_running_specs: 4,
            max_transfers: 1024,
            metrics_listen: None,
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(30),
            stream_buffer: 256 << 20,
            cost: CostTable::default(),
            notify: Vec::new(),
            own_manifest: None,
        }
    }
}

impl Config {
    pub fn manifest_path(&self) -> PathBuf {
        self.own_manifest.clone().unwrap_or_else(|| self.state_dir.join("manifest.db"))
    }
    pub fn staging_dir(&self) -> PathBuf {
        self.beside_manifest("staging")
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.beside_manifest("locks")
    }
    /// `{state_dir}/NAME`, or `MANIFEST.NAME` beside a process's own manifest.
    fn beside_manifest(&self, name: &str) -> PathBuf {
        match &self.own_manifest {
            Some(m) => PathBuf::from(format!("{}.{name}", m.display())),
            None => self.state_dir.join(name),
        }
    }

    /// Loads the config file. A missing file at the default location (no `--config`, no
    /// `$S3SYNCD_CONFIG`) yields the built-in defaults; a missing file that was asked for is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, SpecError> {
        match std::fs::read(path) {
            Ok(bytes) => Config::parse(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Config::default()),
            Err(e) => Err(SpecError::single(path, format!("cannot read config file: {e}"))),
        }
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Config, SpecError> {
        let text = std::str::from_utf8(bytes).map_err(|e| SpecError::Invalid(vec![diag::utf8_error(path, bytes, &e)]))?;
        let loc = Locator { path, text };
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| SpecError::Invalid(vec![loc.at(e.span(), toml_message(&e))]))?;
        check::config(&loc, raw).map_err(SpecError::Invalid)
    }
}

/// One side of a feed: a bucket and prefix on some S3-compatible endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Side {
    pub bucket: String,
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub anonymous: bool,
    pub profile: Option<String>,
    /// Send `x-amz-request-payer: requester` on every request of this side.
    pub requester_pays: bool,
    /// A role to assume with the side's base credentials (its `profile`, else the default chain).
    pub role: Option<Role>,
    /// How objects are written (destination only).
    pub write: WriteOptions,
}

/// `role_arn` and its options: STS AssumeRole, refreshed before the credentials expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub arn: String,
    pub external_id: Option<String>,
    /// Shown in CloudTrail; `s3syncd` unless set.
    pub session_name: Option<String>,
    /// 15 minutes to 12 hours; STS's default (1 hour) unless set.
    pub duration: Option<std::time::Duration>,
}

impl Side {
    /// Whether the bucket's region is found by asking (HeadBucket's `x-amz-bucket-region`):
    /// `region = "auto"`, or no region on AWS. A region set by hand is checked the same way
    /// (a 301 names the right one); an S3-compatible server without one needs no region.
    pub fn probes_region(&self) -> bool {
        match self.region.as_deref() {
            None => self.endpoint.is_none(),
            Some(_) => true,
        }
    }
}

/// The destination's write options, applied the same way in every mode (PutObject, CopyObject,
/// CreateMultipartUpload). Values are checked against the names S3 accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// `STANDARD`, `STANDARD_IA`, `GLACIER_IR`, ...
    pub storage_class: Option<String>,
    /// `AES256`, `aws:kms` or `aws:kms:dsse`.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// A canned ACL such as `bucket-owner-full-control`.
    pub acl: Option<String>,
}

impl WriteOptions {
    /// Under SSE-KMS, ETags are not content MD5s and must never be compared as such.
    pub fn etag_is_not_md5(&self) -> bool {
        self.sse.as_deref().is_some_and(|s| s.starts_with("aws:kms"))
    }
}

impl Side {
    /// The endpoint as compared for "same server" decisions (direct copy, overlaps): the host
    /// in lower case, loopback names as one, the scheme's default port made explicit, so that
    /// `http://LOCALHOST:80/` and `http://127.0.0.1` are the same server. AWS is `aws`.
    pub fn endpoint_identity(&self) -> String {
        let Some(e) = &self.endpoint else {
            return "aws".into();
        };
        let e = e.trim().trim_end_matches('/').to_ascii_lowercase();
        let (scheme, rest) = e.split_once("://").unwrap_or(("http", &e));
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => (h, p.to_string()),
            _ => (rest, if scheme == "https" { "443".into() } else { "80".into() }),
        };
        let host = match host.trim_start_matches('[').trim_end_matches(']') {
            "localhost" | "127.0.0.1" | "::1" | "0:0:0:0:0:0:0:1" => "loopback",
            h => h,
        };
        format!("{host}:{}", port.trim_start_matches('0'))
    }

    /// Whether this side and `other` can write or read the same keys: the same server and
    /// bucket, and one prefix inside the other.
    pub fn overlaps(&self, other: &Side) -> bool {
        self.same_bucket(other) && self.holds_keys_under(&other.prefix)
    }

    /// Whether this side's keys and the keys under `prefix` (from the same bucket's root) can
    /// meet: one prefix is inside the other.
    pub fn holds_keys_under(&self, prefix: &str) -> bool {
        self.prefix.starts_with(prefix) || prefix.starts_with(&self.prefix)
    }

    /// Whether this side and `other` name the same bucket of the same server.
    pub fn same_bucket(&self, other: &Side) -> bool {
        self.bucket == other.bucket && self.same_endpoint(other)
    }

    /// Whether this side and `other` are on the same server (one server can copy between them).
    pub fn same_endpoint(&self, other: &Side) -> bool {
        self.endpoint_identity() == other.endpoint_identity()
    }
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
    pub fn sides(&self) -> [(&'static str, &Side); 2] {
        [("source", &self.source), ("destination", &self.destination)]
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

/// Deserializes a spec, reporting every unknown key and bad value in one pass: serde stops at
/// the first, so each one found is blanked out (with spaces, keeping every offset) and the
/// text read again. Stops at a syntax error, at a missing key, or when blanking would break the
/// TOML itself. Returns the spec read from what was left, if any, and the problems found.
fn deserialize_all(loc: &Locator) -> (Option<raw::RawSpec>, Vec<Diagnostic>) {
    let mut text = loc.text.to_string();
    let mut diags = Vec::new();
    loop {
        let e = match toml::from_str::<raw::RawSpec>(&text) {
            Ok(raw) => return (Some(raw), diags),
            Err(e) => e,
        };
        diags.push(loc.at(e.span(), toml_message(&e)));
        let Some(span) = e.span().filter(|_| diags.len() < 50) else {
            return (None, diags);
        };
        let blanked = blank_entry(&text, span.start);
        if e.message().starts_with("missing field") || toml::from_str::<toml::Table>(&blanked).is_err() {
            return (None, diags);
        }
        text = blanked;
    }
}

/// The text with the line at `at` replaced by spaces; for a table header, its whole table.
fn blank_entry(text: &str, at: usize) -> String {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = |from: usize| text[from..].find('\n').map_or(text.len(), |i| from + i);
    let mut end = line_end(start);
    if text[start..end].trim_start().starts_with('[') {
        // Up to the next table header, or the end.
        while end < text.len() {
            let next = line_end(end + 1);
            if text[end + 1..next].trim_start().starts_with('[') {
                break;
            }
            end = next;
        }
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.extend(text[start..end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
    out.push_str(&text[end..]);
    out
}

/// The mode order for a mode choice and fallback list: the first mode (`auto` means `direct`),
/// then the fallbacks (default for `auto`: stream, then staged), without repeats.
pub fn chain(choice: ModeChoice, fallback: &[Mode]) -> Vec<Mode> {
    let mut out = vec![choice.first()];
    for m in fallback {
        if !out.contains(m) {
            out.push(*m);
        }
    }
    out
}

/// The parser's message; some syntax errors (a value missing at the end of the file) carry an
/// empty one.
fn toml_message(e: &toml::de::Error) -> String {
    match e.message().trim() {
        "" => "incomplete TOML: a value, quote or bracket is missing here".into(),
        m => match did_you_mean(m) {
            Some(near) => format!("{m}; did you mean `{near}`?"),
            None => m.to_string(),
        },
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (and "unknown variant"): the
/// expected name nearest to the one written, if it is a likely typo.
fn did_you_mean(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (written, expected) = rest.split_once('`')?;
    let (near, distance) = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (name, edit_distance(written, name)))
        .min_by_key(|(_, d)| *d)?;
    (distance <= 2.max(written.len() / 4)).then_some(near)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A spec describes one feed; anything larger than this is a generated file gone wrong.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Like sshd's StrictModes: spec files decide what gets copied where with which credentials,
/// so a file or directory that group or others may write is refused.
pub fn unsafe_permissions(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o022 != 0).then(|| {
        format!(
            "{} is writable by group or others (mode {:o}); refusing it: run `chmod go-w {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// Whether a directory entry is a spec file: `*.toml`, not hidden (editors' temp files, `.#x.toml`).
pub fn is_spec_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && path.extension().is_some_and(|e| e == "toml") && name.len() > ".toml".len()
}

/// Every spec in a directory: the good ones, and the located problems of the others.
#[derive(Debug, Default)]
pub struct SpecSet {
    pub specs: BTreeMap<String, Spec>,
    pub errors: Vec<Diagnostic>,
    /// Files that failed, so a reload can keep their last good version.
    pub failed_files: Vec<PathBuf>,
    /// Names refused for a clash with another file, and the file refused.
    pub refused: BTreeMap<String, PathBuf>,
}

/// Loads every `*.toml` in `dir` (sorted by file name), checking name uniqueness across files.
pub fn load_dir(dir: &Path) -> Result<SpecSet, SpecError> {
    if let Some(why) = unsafe_permissions(dir) {
        return Err(SpecError::single(dir, why));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| SpecError::single(dir, format!("cannot read spec directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| is_spec_file(p))
        .collect();
    files.sort();
    let mut set = SpecSet::default();
    for file in files {
        add_spec(&mut set, &file);
    }
    Ok(set)
}

/// Loads the given files and directories into one set (for `validate PATH...`).
pub fn load_paths(paths: &[PathBuf]) -> SpecSet {
    let mut set = SpecSet::default();
    for p in paths {
        if p.is_dir() {
            match load_dir(p) {
                Ok(sub) => {
                    set.errors.extend(sub.errors);
                    set.failed_files.extend(sub.failed_files);
                    set.refused.extend(sub.refused);
                    for (_, spec) in sub.specs {
                        insert_unique(&mut set, spec);
                    }
                }
                Err(e) => set.errors.extend(e.diagnostics().iter().cloned()),
            }
        } else {
            add_spec(&mut set, p);
        }
    }
    set
}

fn add_spec(set: &mut SpecSet, file: &Path) {
    match Spec::load(file) {
        Ok(spec) => insert_unique(set, spec),
        Err(e) => {
            set.errors.extend(e.diagnostics().iter().cloned());
            set.failed_files.push(file.to_path_buf());
        }
    }
}

/// Adds a spec unless its name or its destination collides with one already loaded. A
/// collision refuses both files, each error naming the other file: a reload then keeps each
/// running feed's last good version, and `run NAME` refuses rather than pick one.
fn insert_unique(set: &mut SpecSet, spec: Spec) {
    // A name refused for a clash stays refused: a third file with it is refused too.
    if let Some(first) = set.refused.get(&spec.name).cloned() {
        return refuse(set, spec, &first, Clash::Name);
    }
    let clash = set.specs.values().find_map(|s| {
        if s.name == spec.name {
            Some((s.name.clone(), Clash::Name))
        } else if s.destination.overlaps(&spec.destination) {
            Some((s.name.clone(), Clash::Destination))
        } else {
            places_into(s, &spec).or_else(|| places_into(&spec, s)).map(|c| (s.name.clone(), c))
        }
    });
    match clash {
        None => {
            set.specs.insert(spec.name.clone(), spec);
        }
        Some((name, clash)) => {
            let first = set.specs.remove(&name).expect("found above");
            let first_path = first.path.clone();
            refuse(set, first, &spec.path, clash);
            refuse(set, spec, &first_path, clash);
        }
    }
}

/// Where `a` writes its delivery files or kept versions inside `b`: in `b`'s destination, where
/// `b` would list them as its data (and delete them with `delete = true`), or in `b`'s source,
/// where `b` would copy them as data on every run.
fn places_into(a: &Spec, b: &Spec) -> Option<Clash> {
    let delivery = match &a.feed.deliveries {
        Some(Deliveries::Prefix(p)) => Some(p.as_str()),
        _ => None,
    };
    let inside = |side: &Side| {
        a.destination.same_bucket(side)
            && [delivery, a.feed.keep_previous.as_deref()]
                .into_iter()
                .flatten()
                .any(|p| side.holds_keys_under(p))
    };
    if inside(&b.destination) {
        Some(Clash::Placement)
    } else if inside(&b.source) {
        Some(Clash::Feeding)
    } else {
        None
    }
}

fn refuse(set: &mut SpecSet, spec: Spec, other: &Path, clash: Clash) {
    set.errors.push(clash.diagnostic(&spec, other));
    set.failed_files.push(spec.path.clone());
    set.refused.insert(spec.name, spec.path);
}

/// Why two spec files cannot both be loaded.
#[derive(Clone, Copy)]
enum Clash {
    Name,
    /// One destination lies inside the other.
    Destination,
    /// One spec's delivery prefix or `keep_previous` lies inside the other's destination.
    Placement,
    /// One spec's delivery prefix or `keep_previous` lies inside the other's source.
    Feeding,
}

impl Clash {
    fn diagnostic(self, spec: &Spec, other: &Path) -> Diagnostic {
        let (at, message) = match self {
            Clash::Name => (
                spec.name_at,
                format!(
                    "spec name {:?} is also used by {}; give each spec a unique `name` (neither file is loaded until then)",
                    spec.name,
                    other.display()
                ),
            ),
            Clash::Destination => (
                spec.dest_at,
                format!(
                    "destination s3://{}/{} overlaps the destination of {}: two specs would overwrite and delete each other's objects; give each its own bucket or a prefix outside the other's",
                    spec.destination.bucket,
                    spec.destination.prefix,
                    other.display()
                ),
            ),
            Clash::Placement => (
                spec.dest_at,
                format!(
                    "a delivery prefix or keep_previous of this spec or of {} lies inside the other's destination prefix (bucket {}): it would be listed as data; move it outside every destination prefix",
                    other.display(),
                    spec.destination.bucket
                ),
            ),
            Clash::Feeding => (
                spec.dest_at,
                format!(
                    "a delivery prefix or keep_previous of this spec or of {} lies inside the other's source prefix (bucket {}): its runs would copy those files back in as data; move it outside every source prefix",
                    other.display(),
                    spec.destination.bucket
                ),
            ),
        };
        Diagnostic {
            path: spec.path.clone(),
            line: at.0,
            column: at.1,
            message,
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

    #[test]
    fn typos_get_the_nearest_name() {
        let m = "unknown field `concurency`, expected one of `concurrency`, `part_size`, `retries`";
        assert_eq!(did_you_mean(m), Some("concurrency"));
        assert_eq!(
            did_you_mean("unknown field `bukcet`, expected one of `bucket`, `prefix`"),
            Some("bucket")
        );
        assert_eq!(
            did_you_mean("unknown variant `steam`, expected one of `auto`, `direct`, `stream`, `staged`"),
            Some("stream")
        );
        assert_eq!(
            did_you_mean("unknown field `threads`, expected one of `concurrency`, `retries`"),
            None
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
