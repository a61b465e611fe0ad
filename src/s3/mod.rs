//! S3 clients per side of a spec, request accounting and key encoding; the source listing is
//! `list`, checksums `checksum`.

pub mod checksum;
pub mod explain;
pub mod https;
mod list;
mod listxml;
pub mod op;

pub use list::{key_ranges, list_one, ListError, ListPart, Lister, Listing, SourceObject};

use crate::spec::{Side, TransferOpts, Which};
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

/// Counts every HTTP attempt (retries included) by S3 operation (as the SDK names it) and how
/// it ended, for run accounting and metrics.
#[derive(Debug, Default)]
pub struct RequestCounter {
    by_op: Mutex<BTreeMap<(String, op::Answer), u64>>,
    /// Answers that asked to slow down (503 SlowDown, 429): the concurrency limit hears of them.
    throttled: std::sync::atomic::AtomicU64,
}

impl RequestCounter {
    /// Throttled answers so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Attempts by (operation, result).
    pub fn by_result(&self) -> BTreeMap<(String, op::Answer), u64> {
        self.by_op.lock().unwrap().clone()
    }
    fn add(&self, op: &str, result: op::Answer) {
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
        self.0
            .add(cfg.load::<Metadata>().map_or("unknown", |m| m.name()), op::Answer::of(status));
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

/// Builds the client for one side (`which` of the two): its own endpoint,
/// addressing, credentials and region. Where the side asks for it (`Side::probes_region`), one
/// HeadBucket finds the bucket's region first (S3 names it in `x-amz-bucket-region`, also in a
/// 301 or 403 answer), and the client uses that region for the whole run.
pub async fn client(side: &Side, which: Which, transfer: &TransferOpts, counter: Arc<RequestCounter>) -> Client {
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

/// The SDK config of one side in `region`: its credentials exactly as the spec names them (also
/// those of a feed's event queue, `spec::Events::credentials_side`).
pub async fn shared_config(side: &Side, region: &str) -> aws_config::SdkConfig {
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

/// Characters kept as they are in an `x-amz-copy-source` value: RFC 3986 unreserved and '/'.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// `bucket/key` for CopyObject and UploadPartCopy, percent-encoded: the SDK sends it verbatim,
/// and keys with spaces, '+', '%', '?', '#' or unicode would otherwise copy the wrong object.
pub fn copy_source(bucket: &str, key: &str) -> String {
    format!("{}/{}", bucket, utf8_percent_encode(key, COPY_SOURCE))
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

/// An ETag quoted as a condition header wants it (`If-Match`, `x-amz-copy-source-if-match`):
/// the inverse of [`normalize_etag`]. None stays none: no condition.
pub fn if_match(etag: Option<&str>) -> Option<String> {
    etag.map(|e| format!("\"{e}\""))
}

/// Whether an ETag has the shape of a content MD5 (a single-part upload without SSE-KMS):
/// multipart ETags (`md5-N`) are not content hashes and must never be compared as one.
pub fn is_md5_etag(e: &str) -> bool {
    e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_quotes_the_etag_a_listing_gave_unquoted() {
        let listed = normalize_etag("\"d41d8cd98f00b204e9800998ecf8427e\"");
        assert_eq!(if_match(Some(&listed)).as_deref(), Some("\"d41d8cd98f00b204e9800998ecf8427e\""));
        assert_eq!(if_match(None), None);
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
