//! What a feed tells the lakehouse after its runs (`docs/lakehouse.md`): a change feed per run
//! (`[deliveries]`), notifications (`[[notify]]`, in a spec and in the global config), a
//! freshness window (`stale_after`) and upstream revisions kept aside (`keep_previous`).

use super::check::{span, Diags};
use super::diag::Locator;
use super::raw::{RawDeliveries, RawNotify};
use super::Side;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// The feed's options for what comes after the copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedOpts {
    /// No new or changed object from the source for this long: the feed is stale.
    pub stale_after: Option<Duration>,
    /// A prefix in the destination bucket where the version an upstream revision replaces is
    /// kept, as `{keep_previous}run-{RUN}/{dest_key}`.
    pub keep_previous: Option<String>,
    pub deliveries: Option<Deliveries>,
    pub notify: Vec<Notifier>,
}

/// Where each run's change feed file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deliveries {
    /// A prefix in the destination bucket (from the bucket's root).
    Prefix(String),
    /// A local directory.
    Dir(PathBuf),
}

/// The events a notifier can be told of: how a run ended, and what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyEvent {
    Failed,
    Partial,
    Interrupted,
    Ok,
    /// Nothing new from the source within `stale_after`.
    Stale,
    /// Objects republished upstream (new bytes under a held key).
    Revised,
    /// The run's change file could not be written.
    DeliveryFailed,
    /// More periods missing, or more series overdue, than the run before found.
    Gap,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 8] = [
        NotifyEvent::Failed,
        NotifyEvent::Partial,
        NotifyEvent::Interrupted,
        NotifyEvent::Ok,
        NotifyEvent::Stale,
        NotifyEvent::Revised,
        NotifyEvent::DeliveryFailed,
        NotifyEvent::Gap,
    ];

    /// Its name in `events` and in the body's `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Failed => "failed",
            NotifyEvent::Partial => "partial",
            NotifyEvent::Interrupted => "interrupted",
            NotifyEvent::Ok => "ok",
            NotifyEvent::Stale => "stale",
            NotifyEvent::Revised => "revised",
            NotifyEvent::DeliveryFailed => "delivery_failed",
            NotifyEvent::Gap => "gap",
        }
    }

    /// Without `events`: everything but `ok`, which would post after every quiet run.
    fn by_default(self) -> bool {
        self != NotifyEvent::Ok
    }
}

impl std::fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NotifyEvent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NotifyEvent::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
            format!("notify event {s:?} is not one of {}", names.join(", "))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    Json,
    /// A JSON body with a `text` field, as Slack's (and Mattermost's, Teams') webhooks take.
    Slack,
}

/// One `[[notify]]`: an HTTP POST with a JSON body on the chosen events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    pub url: String,
    pub events: Vec<NotifyEvent>,
    pub format: NotifyFormat,
    /// Holds the HMAC key for `X-S3syncd-Signature`; read when sending, never logged.
    pub secret_file: Option<PathBuf>,
}

impl Notifier {
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.contains(&event)
    }
}

/// Checks `[[notify]]` entries (a spec's or the global config's); `base` resolves relative
/// secret files.
pub fn check_notify(loc: &Locator, d: &mut Diags, raw: Vec<RawNotify>, base: &std::path::Path) -> Vec<Notifier> {
    let mut out = Vec::new();
    for n in raw {
        let url = n.url.get_ref();
        let ok = (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len();
        if !ok {
            d.push(loc.at(span(&n.url), format!("notify.url {url:?} must be an http:// or https:// URL")));
        } else if has_userinfo(url) {
            d.push(
                loc.at(
                    span(&n.url),
                    "notify.url carries credentials (user:password@host): they would be neither sent as authentication nor kept out \
                 of logs. Remove them; to let the receiver know the post is yours, set secret_file (each body is signed, \
                 X-S3syncd-Signature) or put a token the receiver checks in the URL's path"
                        .to_string(),
                ),
            );
        }
        let events = match &n.events {
            None => NotifyEvent::ALL.into_iter().filter(|e| e.by_default()).collect(),
            Some(list) => {
                let mut v = Vec::new();
                for e in list.get_ref() {
                    match e.get_ref().parse() {
                        Ok(event) => v.push(event),
                        Err(m) => d.push(loc.at(span(e), m)),
                    }
                }
                v
            }
        };
        let format = match n.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("json") => NotifyFormat::Json,
            Some("slack") => NotifyFormat::Slack,
            Some(other) => {
                d.push(loc.at(
                    span(n.format.as_ref().unwrap()),
                    format!("notify.format {other:?} is not \"json\" or \"slack\""),
                ));
                NotifyFormat::Json
            }
        };
        let secret_file = n.secret_file.as_ref().map(|f| {
            let p = base.join(f.get_ref());
            if let Err(m) = secret_problem(&p) {
                d.push(loc.at(span(f), format!("notify.secret_file {}: {m}", p.display())));
            }
            p
        });
        out.push(Notifier {
            url: url.clone(),
            events,
            format,
            secret_file,
        });
    }
    out
}

/// Whether an http(s) URL names a user (and maybe a password) before its host.
fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.contains('@')
}

/// A secret file must exist and be private to its owner: a signature anyone on the host can
/// forge proves nothing.
fn secret_problem(p: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p).map_err(|e| format!("cannot read it ({e})"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("is readable by others (mode {mode:o}): chmod 600 it"));
    }
    Ok(())
}

/// The feed keys of a spec file, as written.
pub struct RawFeed {
    pub stale_after: Option<Spanned<String>>,
    pub keep_previous: Option<Spanned<String>>,
    pub deliveries: Option<RawDeliveries>,
    pub notify: Vec<RawNotify>,
}

/// Checks the feed keys of a spec. The delivery prefix and `keep_previous` are paths from the
/// destination bucket's root, outside the destination prefix: inside it, they would be
/// listed as data, and deleted by `delete = true`.
/// Nor may they lie inside the source prefix when the source is the same bucket: each run
/// would copy its own files back in as data, and the feed would never be quiet again.
pub fn check_feed(loc: &Locator, d: &mut Diags, raw: RawFeed, destination: &Side, source: &Side) -> FeedOpts {
    let outside = |d: &mut Diags, key: &str, v: &Spanned<String>| -> Option<String> {
        let p = v.get_ref();
        let dest = &destination.prefix;
        if p.is_empty() || p.starts_with('/') {
            d.push(loc.at(
                span(v),
                format!("{key} must be a non-empty prefix without a leading '/', like \"_s3syncd/\""),
            ));
            return None;
        }
        if destination.holds_keys_under(p) {
            d.push(loc.at(
                span(v),
                format!("{key} {p:?} overlaps the destination prefix {dest:?}: it must lie outside it (a path from the bucket's root, like \"_s3syncd/\")"),
            ));
            return None;
        }
        if source.same_bucket(destination) && source.holds_keys_under(p) {
            d.push(loc.at(
                span(v),
                format!(
                    "{key} {p:?} overlaps the source prefix {:?} in the same bucket: each run would copy its own files back in as data; put it outside the source prefix",
                    source.prefix
                ),
            ));
            return None;
        }
        Some(p.clone())
    };
    let stale_after = raw
        .stale_after
        .as_ref()
        .and_then(|v| match super::size::parse_duration(v.get_ref()) {
            Ok(t) if t >= Duration::from_secs(1) => Some(t),
            Ok(_) => {
                d.push(loc.at(span(v), "stale_after must be at least 1s"));
                None
            }
            Err(m) => {
                d.push(loc.at(span(v), format!("stale_after: {m}")));
                None
            }
        });
    let keep_previous = raw.keep_previous.as_ref().and_then(|v| outside(d, "keep_previous", v));
    // Relative paths are relative to the spec file's folder.
    let base = loc.path.parent().unwrap_or(std::path::Path::new("."));
    let deliveries = raw.deliveries.and_then(|r| match (r.prefix, r.dir) {
        (Some(p), None) => outside(d, "deliveries.prefix", &p).map(Deliveries::Prefix),
        (None, Some(dir)) => Some(Deliveries::Dir(base.join(dir.get_ref()))),
        (Some(p), Some(_)) => {
            d.push(loc.at(span(&p), "[deliveries] takes `prefix` or `dir`, not both"));
            None
        }
        (None, None) => {
            d.push(loc.at(
                None,
                "[deliveries] needs `prefix` (in the destination bucket) or `dir` (a local directory)",
            ));
            None
        }
    });
    FeedOpts {
        stale_after,
        keep_previous,
        deliveries,
        notify: check_notify(loc, d, raw.notify, base),
    }
}
