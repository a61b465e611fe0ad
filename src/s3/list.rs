//! The source listing: ListObjectsV2 page by page with the checks a sync relies on (key order,
//! continuation tokens), in parts listed at once (key ranges of a full listing, the prefixes of
//! an include filter, the folders of a series run), and where the next full listing can cut its
//! ranges.

use super::{explain, format_time, listxml, normalize_etag};
use crate::spec::Side;
use aws_sdk_s3::Client;

/// Lists at most one key under the side's prefix: whether the side answers, at the cost of
/// one request (the run's destination check, `s3syncd check`).
pub async fn list_one(
    client: &Client,
    side: &Side,
) -> Result<
    aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output,
    aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error, aws_smithy_runtime_api::http::Response>,
> {
    client
        .list_objects_v2()
        .bucket(&side.bucket)
        .prefix(&side.prefix)
        .max_keys(1)
        .send()
        .await
}

/// A listed source object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl SourceObject {
    /// An object as a listing page gave it, read by the SDK or by `listxml`: a negative size
    /// reads as 0, the ETag without its quotes, an empty one as none.
    pub(super) fn listed(key: String, size: i64, etag: Option<&str>, last_modified: Option<String>) -> SourceObject {
        SourceObject {
            key,
            size: size.max(0) as u64,
            etag: etag.map(normalize_etag).filter(|e| !e.is_empty()),
            last_modified,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("listing s3://{bucket}/{prefix} failed: {message}")]
    Failed {
        bucket: String,
        prefix: String,
        message: String,
        /// The S3 error code and HTTP status, when S3 answered.
        code: Option<super::op::Code>,
        status: Option<u16>,
    },
    #[error("listing s3://{bucket}/{prefix} came back truncated without a continuation token; refusing to treat it as complete")]
    TruncatedWithoutToken { bucket: String, prefix: String },
    #[error("a part of the source listing stopped before its end")]
    PartEnded,
    #[error(
        "listing s3://{bucket}/{prefix} is not in key order ({previous:?} then {next:?}); the server breaks the ListObjectsV2 contract"
    )]
    OutOfOrder {
        bucket: String,
        prefix: String,
        previous: String,
        next: String,
    },
}

/// Pages through ListObjectsV2 one page at a time, checking what a sync relies on: every page
/// sorted after the one before, and a truncated page always carrying a continuation token.
/// Optionally only the keys in `(start_after, until]`, for one part of a partitioned listing.
pub struct Lister {
    client: Client,
    bucket: String,
    prefix: String,
    start_after: Option<String>,
    until: Option<String>,
    token: Option<String>,
    done: bool,
    last_key: Option<String>,
}

impl Lister {
    pub fn new(client: Client, bucket: &str, prefix: &str) -> Lister {
        Lister::range(client, bucket, prefix, None, None)
    }

    fn range(client: Client, bucket: &str, prefix: &str, start_after: Option<String>, until: Option<String>) -> Lister {
        Lister {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
            start_after,
            until,
            token: None,
            done: false,
            last_key: None,
        }
    }

    /// The next page, or `None` when the listing is complete.
    pub async fn next_page(&mut self) -> Result<Option<Vec<SourceObject>>, ListError> {
        if self.done {
            return Ok(None);
        }
        let mut req = self.client.list_objects_v2().bucket(&self.bucket).prefix(&self.prefix);
        req = match &self.token {
            Some(t) => req.continuation_token(t),
            None => req.set_start_after(self.start_after.clone()),
        };
        let fast: listxml::Slot = Default::default();
        let out = req
            .customize()
            .interceptor(listxml::FastContents(fast.clone()))
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                ListError::Failed {
                    bucket: self.bucket.clone(),
                    prefix: self.prefix.clone(),
                    code: e
                        .code()
                        .map(|c| super::op::Code::new(Some(c), e.raw_response().map_or(0, |r| r.status().as_u16()))),
                    status: e.raw_response().map(|r| r.status().as_u16()),
                    message: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
                }
            })?;
        let truncated = out.is_truncated().unwrap_or(false);
        self.token = out.next_continuation_token().map(str::to_string);
        if truncated && self.token.is_none() {
            return Err(ListError::TruncatedWithoutToken {
                bucket: self.bucket.clone(),
                prefix: self.prefix.clone(),
            });
        }
        self.done = !truncated;
        let listed = fast.lock().unwrap().take().unwrap_or_else(|| {
            out.contents()
                .iter()
                .filter_map(|o| {
                    Some(SourceObject::listed(
                        o.key()?.to_string(),
                        o.size().unwrap_or(0),
                        o.e_tag(),
                        o.last_modified().and_then(format_time),
                    ))
                })
                .collect()
        });
        let mut page = Vec::with_capacity(listed.len());
        for o in listed {
            let key = o.key.as_str();
            // A server that ignores start-after lists from the start: those keys belong to
            // another part, so they are skipped rather than listed twice.
            if self.start_after.as_deref().is_some_and(|s| key.as_bytes() <= s.as_bytes()) {
                continue;
            }
            if self.until.as_deref().is_some_and(|u| key.as_bytes() > u.as_bytes()) {
                self.done = true;
                break;
            }
            let prev = page.last().map(|p: &SourceObject| p.key.as_str()).or(self.last_key.as_deref());
            if let Some(prev) = prev.filter(|p| key.as_bytes() <= p.as_bytes()) {
                return Err(ListError::OutOfOrder {
                    bucket: self.bucket.clone(),
                    prefix: self.prefix.clone(),
                    previous: prev.into(),
                    next: key.into(),
                });
            }
            page.push(o);
        }
        if let Some(last) = page.last() {
            // Nothing after `until` belongs to the part: no need for the next page.
            self.done |= self.until.as_deref() == Some(last.key.as_str());
            self.last_key = Some(last.key.clone());
        }
        Ok(Some(page))
    }
}

/// Page ends that cut a listing's parts (in key order) into `parts` runs of about equal size:
/// each cut is the first known page end with its share of the keys before it, so it lies
/// within a page or two of the quantile (a few pages for listings thinned past `SAMPLES`
/// pages a part). None when the listing found less than a page (1,000 keys) per part.
fn cuts(ends: &[PageEnds], parts: usize) -> Vec<String> {
    let total: u64 = ends.iter().map(|e| e.listed).sum();
    let parts = crate::spec::list_ranges(parts, total);
    let mut cuts = Vec::new();
    let mut next = 1; // the cut sought: the first page end with next/parts of the keys
    let mut before = 0; // keys in the parts before this one
    for part in ends {
        for (key, listed) in &part.ends {
            let mut reached = false;
            while next < parts && before + listed >= next * total / parts {
                next += 1;
                reached = true;
            }
            if reached {
                cuts.push(key.clone());
            }
        }
        before += part.listed;
    }
    cuts
}

/// What a part's listing task sends: a page of part `i`, its end (`None`), or its error. The
/// end is explicit so that a task that died is never mistaken for a complete part (which could
/// trigger deletes).
type PartMessage = (usize, Result<Option<Vec<SourceObject>>, ListError>);

/// A source listing split into key ranges listed at once. Part `i` holds the keys in
/// `(split[i-1], split[i]]`; pages come in the order they arrive, each tagged with its part, so
/// the parts proceed in parallel and the caller plans each part on its own. At most two pages
/// per part wait for the caller, so memory stays bounded and a stopped run stops listing.
/// The split keys come from the manifest (`Reader::split_keys`), so parts are about equal; none
/// means one plain sequential listing.
pub struct Listing {
    rx: tokio::sync::mpsc::Receiver<PartMessage>,
    open: usize,
    /// Per part, where its pages ended: what [`Listing::cuts`] learns from.
    ends: Vec<PageEnds>,
    /// Dropping the listing aborts its tasks.
    _tasks: tokio::task::JoinSet<()>,
}

/// The last key of a part's pages with the number of keys listed up to it: of every page, then,
/// whenever `2 * SAMPLES` are kept, of every other one kept (every 2nd, 4th... page), so that
/// memory stays bounded for any size and the kept ends stay evenly spaced.
#[derive(Debug)]
struct PageEnds {
    ends: Vec<(String, u64)>,
    listed: u64,
    pages: u64,
    /// Every how many pages an end is kept.
    stride: u64,
}

impl Default for PageEnds {
    fn default() -> Self {
        PageEnds {
            ends: Vec::new(),
            listed: 0,
            pages: 0,
            stride: 1,
        }
    }
}

impl PageEnds {
    const SAMPLES: usize = 128;

    fn note(&mut self, page: &[SourceObject]) {
        let Some(last) = page.last() else { return };
        self.listed += page.len() as u64;
        self.pages += 1;
        if !self.pages.is_multiple_of(self.stride) {
            return;
        }
        self.ends.push((last.key.clone(), self.listed));
        if self.ends.len() == 2 * Self::SAMPLES {
            let mut i = 0;
            self.ends.retain(|_| {
                i += 1;
                i % 2 == 0
            });
            self.stride *= 2;
        }
    }
}

/// One part of a listing: the keys under a prefix, after a key if one is given.
pub type ListPart = (String, Option<String>);

/// Parts of a listing listed at once, at most (the series of a large archive are thousands).
const PARTS_AT_ONCE: usize = 64;

/// The key range `(after, until]` of each part, in part order: the one definition the listing
/// and the planners share.
pub fn key_ranges(split_keys: &[String]) -> impl Iterator<Item = (Option<&str>, Option<&str>)> {
    (0..=split_keys.len()).map(|i| {
        (
            i.checked_sub(1).map(|j| split_keys[j].as_str()),
            split_keys.get(i).map(String::as_str),
        )
    })
}

impl Listing {
    /// The keys under `prefix`, in the key ranges `split_keys` cut, listed at once.
    pub fn start(client: &Client, bucket: &str, prefix: &str, split_keys: &[String]) -> Listing {
        let listers = key_ranges(split_keys)
            .map(|(after, until)| Lister::range(client.clone(), bucket, prefix, after.map(str::to_string), until.map(str::to_string)));
        Listing::of_parts(listers.collect())
    }

    /// The keys under `prefix` in `(after, until]`, as one part; none lists nothing.
    pub fn range(client: &Client, bucket: &str, prefix: &str, range: Option<(String, String)>) -> Listing {
        let listers = range.map(|(after, until)| Lister::range(client.clone(), bucket, prefix, Some(after), Some(until)));
        Listing::of_parts(listers.into_iter().collect())
    }

    /// The keys under each `(prefix, after)`: under the prefix and after the key, if one is
    /// given. Each is a part; no key may be in two. At most `PARTS_AT_ONCE` are listed at once.
    pub fn parts(client: &Client, bucket: &str, parts: &[ListPart]) -> Listing {
        let listers = parts
            .iter()
            .map(|(prefix, after)| Lister::range(client.clone(), bucket, prefix, after.clone(), None));
        Listing::of_parts(listers.collect())
    }

    /// For each `(key, until)`, the keys that start with `key` up to `until`: an object and
    /// its sidecar, one request each. Each is a part; no key may be in two.
    pub fn keys(client: &Client, bucket: &str, keys: &[(String, String)]) -> Listing {
        let listers = keys
            .iter()
            .map(|(key, until)| Lister::range(client.clone(), bucket, key, None, Some(until.clone())));
        Listing::of_parts(listers.collect())
    }

    fn of_parts(listers: Vec<Lister>) -> Listing {
        let parts = listers.len();
        let (tx, rx) = tokio::sync::mpsc::channel::<PartMessage>(2 * parts.min(PARTS_AT_ONCE));
        let at_once = std::sync::Arc::new(tokio::sync::Semaphore::new(PARTS_AT_ONCE));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut lister) in listers.into_iter().enumerate() {
            let tx = tx.clone();
            let at_once = at_once.clone();
            tasks.spawn(async move {
                let _turn = at_once.acquire_owned().await;
                loop {
                    let msg = lister.next_page().await;
                    let last = !matches!(msg, Ok(Some(_)));
                    if tx.send((i, msg)).await.is_err() || last {
                        break;
                    }
                }
            });
        }
        Listing {
            rx,
            open: parts,
            ends: (0..parts).map(|_| PageEnds::default()).collect(),
            _tasks: tasks,
        }
    }

    /// Source keys that would cut what this listing found into `parts` runs of about equal
    /// size; meaningful once the listing is complete. See [`cuts`].
    pub fn cuts(&self, parts: usize) -> Vec<String> {
        cuts(&self.ends, parts)
    }

    /// The next page of some part, `(part, None)` when that part is complete, or `None` when
    /// every part is.
    pub async fn next(&mut self) -> Option<Result<(usize, Option<Vec<SourceObject>>), ListError>> {
        if self.open == 0 {
            return None;
        }
        Some(match self.rx.recv().await {
            Some((i, Ok(page))) => {
                match &page {
                    Some(p) => self.ends[i].note(p),
                    None => self.open -= 1,
                }
                Ok((i, page))
            }
            Some((_, Err(e))) => Err(e),
            None => Err(ListError::PartEnded),
        })
    }
}

impl ListError {
    /// The error with its likely cause and fix, when one is known (`explain`).
    pub fn explained(&self, side: &Side) -> String {
        let cause = match self {
            ListError::Failed { message, code, status, .. } => explain::cause(
                crate::spec::Which::Source,
                side,
                explain::Failure {
                    op: super::op::Op::ListObjectsV2,
                    code: code.as_ref(),
                    status: *status,
                    detail: message,
                },
            ),
            _ => None,
        };
        match cause {
            Some(c) => format!("{self}. Likely cause: {c}"),
            None => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part listed in pages of `page` keys named by their position in the whole listing.
    fn listed(from: usize, n: usize, page: usize) -> PageEnds {
        let mut ends = PageEnds::default();
        let keys: Vec<SourceObject> = (from..from + n)
            .map(|i| SourceObject::listed(format!("k{i:07}"), 1, None, None))
            .collect();
        for p in keys.chunks(page) {
            ends.note(p);
        }
        ends
    }

    #[test]
    fn cuts_fall_on_page_ends_at_the_quantiles_across_uneven_parts() {
        // 5,000 keys in one part and 3,000 in the next: four even parts end near 2,000, 4,000
        // and 6,000 keys, whatever the old split was.
        let ends = [listed(0, 5000, 1000), listed(5000, 3000, 1000)];
        assert_eq!(cuts(&ends, 4), ["k0001999", "k0003999", "k0005999"]);
        // Fewer than 1,000 keys a part: fewer parts; under 2,000 keys: none.
        assert_eq!(cuts(&ends, 64).len(), 7);
        assert!(cuts(&[listed(0, 1999, 1000)], 8).is_empty());
        assert!(cuts(&[PageEnds::default(), PageEnds::default()], 8).is_empty());
    }

    #[test]
    fn a_long_listing_keeps_few_page_ends_and_still_cuts_evenly() {
        // 1,000,000 keys in one part, pages of 1,000: 1,000 page ends thinned to under 256.
        let ends = listed(0, 1_000_000, 1000);
        assert!(ends.ends.len() < 2 * PageEnds::SAMPLES);
        let got: Vec<u64> = cuts(&[ends], 8).iter().map(|k| k[1..].parse::<u64>().unwrap() + 1).collect();
        assert_eq!(got.len(), 7);
        for (j, at) in got.iter().enumerate() {
            let want = (j as u64 + 1) * 125_000;
            // Within the spacing of the kept page ends: every 4th page after two thinnings.
            assert!(at >= &want && at - want < 4_000, "cut {j} at {at}, wanted {want}");
        }
    }
}
