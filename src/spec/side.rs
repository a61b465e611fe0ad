//! One side of a feed: bucket, prefix, endpoint, credentials and write options.

/// Which side of a feed: where requests go and whose credentials sign them, as spec sections
/// and messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Which {
    Source,
    Destination,
}

impl Which {
    pub fn as_str(self) -> &'static str {
        match self {
            Which::Source => "source",
            Which::Destination => "destination",
        }
    }
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
