//! S3 clients per side of a spec, request accounting, key encoding and source listing.

pub mod checksum;
pub mod explain;
mod listxml;

use crate::spec::{Side, TransferOpts};
use aws_sdk_s3::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::Client;
use aws_smithy_runtime::client::retries::{RetryPartition, TokenBucket};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counts every HTTP attempt (retries included) by S3 operation and result, for run accounting
/// and metrics. Results: `ok`, `client_error` (4xx), `server_error` (5xx), `network_error`.
#[derive(Debug, Default)]
pub struct RequestCounter {
    by_op: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Answers that asked to slow down (503 SlowDown, 429): the concurrency limit hears of them.
    throttled: std::sync::atomic::AtomicU64,
}

impl RequestCounter {
    /// Throttled answers so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Attempts by (operation, result).
    pub fn by_result(&self) -> BTreeMap<(String, &'static str), u64> {
        self.by_op.lock().unwrap().clone()
    }
    fn add(&self, op: &str, result: &'static str) {
        let mut m = self.by_op.lock().unwrap();
        *m.entry((op.to_string(), result)).or_default() += 1;
    }
}

#[derive(Debug)]
struct CountRequests(Arc<RequestCounter>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "s3syncd.count_requests"
    }
    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let status = ctx.response().map(|r| r.status().as_u16());
        if matches!(status, Some(503 | 429)) {
            self.0.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let result = match status {
            None => "network_error",
            Some(s) if s >= 500 => "server_error",
            Some(s) if s >= 400 => "client_error",
            Some(_) => "ok",
        };
        self.0.add(cfg.load::<Metadata>().map_or("unknown", |m| m.name()), result);
        Ok(())
    }
}

/// Sends `x-amz-request-payer: requester` on every request of a side whose bucket is
/// requester-pays (`requester_pays = true`): signed, as S3 requires.
#[derive(Debug)]
struct RequesterPays;

impl Intercept for RequesterPays {
    fn name(&self) -> &'static str {
        "s3syncd.requester_pays"
    }
    fn modify_before_signing(
        &self,
        ctx: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        ctx.request_mut().headers_mut().insert("x-amz-request-payer", "requester");
        Ok(())
    }
}

/// The AWS shared config and credentials files, as the SDK finds them.
fn profile_files() -> [std::path::PathBuf; 2] {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
    let file = |var: &str, default: &str| std::env::var_os(var).map_or_else(|| home.join(default), std::path::PathBuf::from);
    [
        file("AWS_CONFIG_FILE", ".aws/config"),
        file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
    ]
}

/// Why a side's named profile cannot be used: no AWS config or credentials file defines it.
/// The SDK would otherwise fail every request with a page-long dump of its credential chain.
pub fn missing_profile(side: &Side) -> Option<String> {
    if side.anonymous {
        return None;
    }
    // Without `profile`, the default chain reads AWS_PROFILE: a name there must exist too (the
    // SDK's own error for it is a chain dump that names no profile).
    let from_env = std::env::var("AWS_PROFILE")
        .ok()
        .filter(|p| !p.is_empty() && side.profile.is_none());
    let name = side.profile.clone().or(from_env.clone())?;
    let name = name.as_str();
    let files = profile_files();
    let defined = files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines().map(str::trim).any(|l| {
                let section = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')).map(str::trim);
                section.is_some_and(|s| s == name || s.strip_prefix("profile").map(str::trim) == Some(name))
            })
        })
    });
    (!defined).then(|| {
        format!(
            "profile {name:?}{} is not defined in {} or {}: add it there, or point AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE at the files that define it",
            if from_env.is_some() { " (from AWS_PROFILE)" } else { "" },
            files[0].display(),
            files[1].display()
        )
    })
}

/// The one HTTPS client of the process (rustls with ring; certificates from the system's
/// store): every S3, STS and SSO client shares its connection pool, across runs too.
fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    static CLIENT: std::sync::OnceLock<aws_smithy_runtime_api::client::http::SharedHttpClient> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .build_https()
        })
        .clone()
}

/// Builds the client for one side (`which`: "source" or "destination"): its own endpoint,
/// addressing, credentials and region. Where the side asks for it (`Side::probes_region`), one
/// HeadBucket finds the bucket's region first (S3 names it in `x-amz-bucket-region`, also in a
/// 301 or 403 answer), and the client uses that region for the whole run.
pub async fn client(side: &Side, which: &str, transfer: &TransferOpts, counter: Arc<RequestCounter>) -> Client {
    let configured = side.region.as_deref().filter(|r| *r != "auto");
    // "auto" is a signing region in its own right on some S3-compatible servers (R2).
    let first = configured
        .or(side.region.as_deref().filter(|_| side.endpoint.is_some()))
        .unwrap_or("us-east-1");
    let c = build(side, first, transfer, counter.clone()).await;
    if !side.probes_region() {
        return c;
    }
    let found = match c.head_bucket().bucket(&side.bucket).send().await {
        Ok(o) => o.bucket_region().map(str::to_string),
        Err(e) => e
            .raw_response()
            .and_then(|r| r.headers().get("x-amz-bucket-region"))
            .map(str::to_string),
    };
    match found {
        Some(r) if r != first => {
            match configured {
                Some(set) => tracing::warn!(
                    bucket = %side.bucket,
                    "{which} bucket {} is in region {r}, not {set}: set `region = \"{r}\"` in [{which}] (this run uses {r})",
                    side.bucket
                ),
                None => tracing::info!(bucket = %side.bucket, region = %r, "{which} bucket region found"),
            }
            build(side, &r, transfer, counter).await
        }
        _ => c,
    }
}

/// The provider of a side's credentials, as its clients use it (`s3syncd check` shows which
/// source supplied them); None for an anonymous side.
pub async fn credentials(side: &Side) -> Option<aws_sdk_s3::config::SharedCredentialsProvider> {
    let region = side.region.as_deref().filter(|r| *r != "auto").unwrap_or("us-east-1");
    shared_config(side, region).await.credentials_provider()
}

/// The client for one side in `region`.
async fn build(side: &Side, region: &str, transfer: &TransferOpts, counter: Arc<RequestCounter>) -> Client {
    let shared = shared_config(side, region).await;
    // Adaptive: after a throttled answer the client paces its own requests (a CUBIC token
    // bucket of the SDK), so a SlowDown storm slows the copies instead of failing them.
    let retry = RetryConfig::standard()
        .with_max_attempts(transfer.retries + 1)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(10));
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(side.path_style)
        .retry_config(retry)
        // The default retry quota stops retrying after a burst of errors; a batch sync would
        // then fail objects that one more try would copy. Retries stay bounded per request.
        .retry_partition(RetryPartition::custom("s3syncd").token_bucket(TokenBucket::unlimited()).build())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(120))
                .build(),
        )
        // Many S3-compatible servers reject the SDK's default trailing CRC32 checksums.
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .interceptor(CountRequests(counter));
    if let Some(e) = &side.endpoint {
        b = b.endpoint_url(e);
    }
    if side.requester_pays {
        b = b.interceptor(RequesterPays);
    }
    Client::from_conf(b.build())
}

/// The SDK config of one side in `region`: its credentials exactly as the spec names them.
async fn shared_config(side: &Side, region: &str) -> aws_config::SdkConfig {
    let region = aws_config::Region::new(region.to_string());
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region.clone())
        .http_client(http_client());
    if side.anonymous {
        loader = loader.no_credentials();
    } else if let Some(p) = &side.profile {
        // That profile and nothing else: the SDK's default chain would put the environment's
        // keys first, and sign with another account's credentials on a shared host.
        let conf = aws_config::provider_config::ProviderConfig::default()
            .with_http_client(http_client())
            .with_region(Some(region.clone()));
        let creds = aws_config::profile::ProfileFileCredentialsProvider::builder()
            .configure(&conf)
            .profile_name(p)
            .build();
        loader = loader.profile_name(p).credentials_provider(creds);
    }
    let shared = loader.load().await;
    match (&side.role, shared.credentials_provider()) {
        (Some(role), Some(base)) => assume(role, &shared, base).await,
        _ => shared,
    }
}
/// The config with `role` assumed over the base credentials. The SDK's identity cache renews
/// the role's credentials before they expire, so a run of many hours keeps signing. STS is
/// reached where the environment says (`AWS_ENDPOINT_URL_STS`), else in the side's region.
async fn assume(
    role: &crate::spec::Role,
    shared: &aws_config::SdkConfig,
    base: aws_sdk_s3::config::SharedCredentialsProvider,
) -> aws_config::SdkConfig {
    let region = shared.region().map(|r| r.as_ref()).filter(|r| *r != "auto").unwrap_or("us-east-1");
    let mut b = aws_config::sts::AssumeRoleProvider::builder(&role.arn)
        .configure(shared)
        .region(aws_config::Region::new(region.to_string()))
        .session_name(role.session_name.as_deref().unwrap_or("s3syncd"));
    if let Some(e) = &role.external_id {
        b = b.external_id(e);
    }
    if let Some(d) = role.duration {
        b = b.session_length(d);
    }
    let provider = b.build_from_provider(base).await;
    shared
        .to_builder()
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(provider))
        .build()
}

impl ListError {
    /// The error with its likely cause and fix, when one is known (`explain`).
    pub fn explained(&self, side: &Side) -> String {
        let cause = match self {
            ListError::Failed { message, code, status, .. } => explain::cause(
                "source",
                side,
                explain::Failure {
                    op: "ListObjectsV2",
                    code: code.as_deref(),
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

/// Characters kept as they are in an `x-amz-copy-source` value: RFC 3986 unreserved and '/'.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// `bucket/key` for CopyObject and UploadPartCopy, percent-encoded: the SDK sends it verbatim,
/// and keys with spaces, '+', '%', '?', '#' or unicode would otherwise copy the wrong object.
pub fn copy_source(bucket: &str, key: &str) -> String {
    format!("{}/{}", bucket, utf8_percent_encode(key, COPY_SOURCE))
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
    fn listed(key: String, size: i64, etag: Option<&str>, last_modified: Option<String>) -> SourceObject {
        SourceObject {
            key,
            size: size.max(0) as u64,
            etag: etag.map(normalize_etag).filter(|e| !e.is_empty()),
            last_modified,
        }
    }
}

/// S3 times as the manifest stores them: RFC 3339 UTC with milliseconds.
pub fn format_time(t: &aws_smithy_types::DateTime) -> Option<String> {
    let dt = chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())?;
    Some(dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// ETags without their quotes, so that listings and copy responses compare equal.
pub fn normalize_etag(e: &str) -> String {
    e.trim_matches('"').to_string()
}

/// Whether an ETag has the shape of a content MD5 (a single-part upload without SSE-KMS):
/// multipart ETags (`md5-N`) are not content hashes and must never be compared as one.
pub fn is_md5_etag(e: &str) -> bool {
    e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("listing s3://{bucket}/{prefix} failed: {message}")]
    Failed {
        bucket: String,
        prefix: String,
        message: String,
        /// The S3 error code and HTTP status, when S3 answered.
        code: Option<String>,
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
                    code: e.code().map(str::to_string),
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

    #[test]
    fn copy_source_encodes_what_urls_would_misread() {
        assert_eq!(copy_source("b", "data/a b+c%d?e#f.zip"), "b/data/a%20b%2Bc%25d%3Fe%23f.zip");
        assert_eq!(copy_source("b", "ü/x~y-z_.zip"), "b/%C3%BC/x~y-z_.zip");
    }

    #[test]
    fn a_profile_counts_when_either_file_defines_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config"), "[default]\nregion = x\n[profile bronze]\nregion = y\n").unwrap();
        std::fs::write(dir.path().join("credentials"), "[partner]\naws_access_key_id = A\n").unwrap();
        // SAFETY: this test alone reads these variables in this process.
        unsafe {
            std::env::set_var("AWS_CONFIG_FILE", dir.path().join("config"));
            std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("credentials"));
        }
        let side = |p: &str| Side {
            bucket: "b".into(),
            profile: Some(p.into()),
            ..Side::default()
        };
        assert_eq!(missing_profile(&side("bronze")), None);
        assert_eq!(missing_profile(&side("partner")), None);
        assert_eq!(missing_profile(&side("default")), None);
        assert!(missing_profile(&side("silver"))
            .unwrap()
            .contains("profile \"silver\" is not defined in"));
    }

    #[test]
    fn times_have_millis() {
        let t = aws_smithy_types::DateTime::from_secs_and_nanos(1_700_000_000, 123_456_789);
        assert_eq!(format_time(&t).unwrap(), "2023-11-14T22:13:20.123Z");
    }
}
