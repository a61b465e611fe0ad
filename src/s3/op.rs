//! The S3 vocabulary of requests and answers: the operation a request was (and the local steps
//! around it), and the error code an answer carried, typed where s3syncd decides on it.

use std::fmt;

/// The S3 operation or the local step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    GetObject,
    GetObjectTagging,
    HeadObject,
    PutObject,
    CopyObject,
    UploadPartCopy,
    UploadPart,
    CreateMultipartUpload,
    CompleteMultipartUpload,
    DeleteObjects,
    ListObjectsV2,
    /// Comparing what arrived with what was expected.
    Verify,
    /// Writing or reading the staging file.
    Staging,
    /// Recording an upload in the manifest.
    Manifest,
    /// A multipart upload as a whole (stopped by shutdown).
    Multipart,
    /// Choosing a mode.
    Copy,
    /// Resolving a side's credentials.
    Credentials,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::GetObject => "GetObject",
            Op::GetObjectTagging => "GetObjectTagging",
            Op::HeadObject => "HeadObject",
            Op::PutObject => "PutObject",
            Op::CopyObject => "CopyObject",
            Op::UploadPartCopy => "UploadPartCopy",
            Op::UploadPart => "UploadPart",
            Op::CreateMultipartUpload => "CreateMultipartUpload",
            Op::CompleteMultipartUpload => "CompleteMultipartUpload",
            Op::DeleteObjects => "DeleteObjects",
            Op::ListObjectsV2 => "ListObjectsV2",
            Op::Verify => "verify",
            Op::Staging => "staging",
            Op::Manifest => "manifest",
            Op::Multipart => "multipart",
            Op::Copy => "copy",
            Op::Credentials => "credentials",
        }
    }

    /// Operations whose refusal means "server-side copy is not possible here" rather than "this
    /// object is broken": the destination signs them, and the source may not let it read.
    pub fn is_server_side_copy(self) -> bool {
        matches!(self, Op::CopyObject | Op::UploadPartCopy)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a request attempt ended, as it is counted (`details.requests`, the metric's `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Answer {
    Ok,
    /// 4xx
    ClientError,
    /// 5xx
    ServerError,
    /// No answer.
    NetworkError,
}

impl Answer {
    /// The attempt's HTTP status, if an answer came.
    pub fn of(status: Option<u16>) -> Answer {
        match status {
            None => Answer::NetworkError,
            Some(s) if s >= 500 => Answer::ServerError,
            Some(s) if s >= 400 => Answer::ClientError,
            Some(_) => Answer::Ok,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Ok => "ok",
            Answer::ClientError => "client_error",
            Answer::ServerError => "server_error",
            Answer::NetworkError => "network_error",
        }
    }
}

/// S3's price class of a request, by its operation's name (as the SDK names every operation,
/// those s3syncd does not decide on included): reads are class B, writes and listings class A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceClass {
    A,
    B,
}

impl PriceClass {
    pub fn of(operation: &str) -> PriceClass {
        if operation.starts_with("Get") || operation.starts_with("Head") {
            PriceClass::B
        } else {
            PriceClass::A
        }
    }
}

/// An S3 error code, typed where s3syncd decides on it (retry, fall back, fail, explain); any
/// other code is kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    NoSuchKey,
    NoSuchBucket,
    PreconditionFailed,
    NotImplemented,
    AccessDenied,
    /// The server asks to slow down (SlowDown, Throttling, ThrottlingException,
    /// ServiceUnavailable), kept as sent: the pace, not a retry soon, cures it.
    SlowDown(String),
    /// Other transient server codes (InternalError, RequestTimeout), kept as sent: retried.
    Transient(String),
    /// The bucket is in another region than the request's (PermanentRedirect,
    /// AuthorizationHeaderMalformed, IllegalLocationConstraintException).
    WrongRegion(String),
    /// The credentials are not this endpoint's (InvalidAccessKeyId, SignatureDoesNotMatch).
    CredentialsRejected(String),
    /// Session credentials that ran out (ExpiredToken, TokenRefreshRequired, InvalidToken).
    CredentialsExpired(String),
    /// RequestTimeTooSkewed: this host's clock.
    ClockSkewed,
    /// The bucket owner's account is disabled (AllAccessDisabled, AccountProblem).
    AccountDisabled(String),
    /// A request the server does not take as sent (InvalidRequest, InvalidArgument): an option
    /// it does not know, such as a checksum on CreateMultipartUpload.
    Invalid(String),
    /// XAmzContentSHA256Mismatch: the server checked the payload hash a copy cannot carry.
    ContentSha256Mismatch,
    Other(String),
    /// No code in the answer, only an HTTP status.
    Http(u16),
}

impl Code {
    pub fn new(code: Option<&str>, status: u16) -> Code {
        match code {
            None | Some("") => Code::Http(status),
            Some("NoSuchKey") => Code::NoSuchKey,
            Some("NoSuchBucket") => Code::NoSuchBucket,
            Some("PreconditionFailed") => Code::PreconditionFailed,
            Some("NotImplemented") => Code::NotImplemented,
            Some("AccessDenied") => Code::AccessDenied,
            Some("RequestTimeTooSkewed") => Code::ClockSkewed,
            Some(c @ ("SlowDown" | "Throttling" | "ThrottlingException" | "ServiceUnavailable")) => Code::SlowDown(c.into()),
            Some(c @ ("RequestTimeout" | "InternalError")) => Code::Transient(c.into()),
            Some(c @ ("PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException")) => {
                Code::WrongRegion(c.into())
            }
            Some(c @ ("InvalidAccessKeyId" | "SignatureDoesNotMatch")) => Code::CredentialsRejected(c.into()),
            Some(c @ ("ExpiredToken" | "TokenRefreshRequired" | "InvalidToken")) => Code::CredentialsExpired(c.into()),
            Some(c @ ("AllAccessDisabled" | "AccountProblem")) => Code::AccountDisabled(c.into()),
            Some(c @ ("InvalidRequest" | "InvalidArgument")) => Code::Invalid(c.into()),
            Some("XAmzContentSHA256Mismatch") => Code::ContentSha256Mismatch,
            Some(c) => Code::Other(c.into()),
        }
    }

    /// The destination cannot take any object: no such bucket, credentials it rejects or that
    /// ran out, a skewed clock, a disabled account.
    pub fn is_unusable_side(&self) -> bool {
        matches!(
            self,
            Code::NoSuchBucket | Code::CredentialsRejected(_) | Code::CredentialsExpired(_) | Code::ClockSkewed | Code::AccountDisabled(_)
        )
    }

    /// The object (or the key) does not exist: a coded NoSuchKey, or a bare 404 (HEAD answers
    /// have no body to carry a code).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Code::NoSuchKey | Code::Http(404))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::NoSuchKey => f.write_str("NoSuchKey"),
            Code::NoSuchBucket => f.write_str("NoSuchBucket"),
            Code::PreconditionFailed => f.write_str("PreconditionFailed"),
            Code::NotImplemented => f.write_str("NotImplemented"),
            Code::AccessDenied => f.write_str("AccessDenied"),
            Code::ClockSkewed => f.write_str("RequestTimeTooSkewed"),
            Code::ContentSha256Mismatch => f.write_str("XAmzContentSHA256Mismatch"),
            Code::SlowDown(c)
            | Code::Transient(c)
            | Code::WrongRegion(c)
            | Code::CredentialsRejected(c)
            | Code::CredentialsExpired(c)
            | Code::AccountDisabled(c)
            | Code::Invalid(c)
            | Code::Other(c) => f.write_str(c),
            Code::Http(s) => write!(f, "HTTP {s}"),
        }
    }
}
