//! Transfer errors and their kind, which alone decides what happens next (rclone's sentinel
//! errors, not string matching at the call sites): retry the object, fall back to the next
//! mode, or fail the object and go on with the others.

use crate::spec::Which;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::fmt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient: throttling, 5xx, timeouts, resets. Retried with backoff.
    Retryable,
    /// This mode cannot copy this object; with `for_run`, no object of this run: try the next mode.
    ModeUnusable { for_run: bool },
    /// This object fails; the run goes on.
    Fatal,
    /// Not attempted: the run was stopped while this copy waited for its turn (the pace, a
    /// retry's backoff). Nothing of it was written; the next run copies it.
    Stopped,
}

impl ErrorKind {
    /// The name stored in the manifest's `failures.kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Retryable => "retryable",
            ErrorKind::ModeUnusable { .. } => "cant-use-mode",
            ErrorKind::Fatal => "fatal",
            ErrorKind::Stopped => "stopped",
        }
    }
}

pub use crate::s3::op::{Code, Op};

#[derive(Debug, thiserror::Error)]
pub struct TransferError {
    pub kind: ErrorKind,
    pub op: Op,
    pub code: Option<Code>,
    /// The HTTP status of the answer, when there was one.
    pub status: Option<u16>,
    pub message: String,
    /// The SDK or I/O error behind this one, for `{:#}` chains and debugging.
    #[source]
    pub source: Option<BoxError>,
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(c) => write!(f, "{} failed: {} ({})", self.op, self.message, c),
            None => write!(f, "{} failed: {}", self.op, self.message),
        }
    }
}

impl TransferError {
    pub fn new(kind: ErrorKind, op: Op, message: impl Into<String>) -> Self {
        TransferError {
            kind,
            op,
            code: None,
            status: None,
            message: message.into(),
            source: None,
        }
    }
    pub fn fatal(op: Op, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, op, message)
    }
    /// The mode can't be used for any object of this run.
    pub fn unusable(op: Op, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ModeUnusable { for_run: true }, op, message)
    }
    /// The run stopped before this copy's next attempt.
    pub fn stopped() -> Self {
        Self::new(ErrorKind::Stopped, Op::Copy, "not attempted: the run was stopped")
    }
    pub fn verify(message: impl Into<String>) -> Self {
        Self::fatal(Op::Verify, message)
    }
    pub fn io(op: Op, e: std::io::Error) -> Self {
        TransferError {
            message: e.to_string(),
            source: Some(Box::new(e)),
            ..Self::fatal(op, "")
        }
    }
    /// Reading a GET body failed midway: the connection broke, so another try may succeed.
    pub fn body(op: Op, e: impl Into<BoxError>) -> Self {
        let e = e.into();
        TransferError {
            message: format!("reading the source body: {e}"),
            source: Some(e),
            ..Self::new(ErrorKind::Retryable, op, "")
        }
    }
    /// The server asked to slow down (503 SlowDown, 429): the pace, not a retry soon, cures it.
    pub fn is_throttle(&self) -> bool {
        matches!(&self.code, Some(Code::SlowDown(_) | Code::Http(503 | 429)))
    }

    pub fn is_verify(&self) -> bool {
        self.op == Op::Verify
    }

    /// The likely cause and its fix in one line (`s3::explain`), on the side that signed the
    /// failed request: the destination signs server-side copies and every write.
    pub fn cause(&self, spec: &crate::spec::Spec) -> Option<String> {
        match self.op {
            Op::GetObject | Op::GetObjectTagging | Op::HeadObject | Op::ListObjectsV2 => self.cause_on(Which::Source, &spec.source),
            _ => self.cause_on(Which::Destination, &spec.destination),
        }
    }

    /// The error and, when known, its likely cause on side `which`, in one line.
    pub fn explained(&self, which: Which, side: &crate::spec::Side) -> String {
        match self.cause_on(which, side) {
            Some(c) => format!("{self}. Likely cause: {c}"),
            None => self.to_string(),
        }
    }

    /// The likely cause, for a request of side `which`.
    pub fn cause_on(&self, which: Which, side: &crate::spec::Side) -> Option<String> {
        let code = self.code.as_ref().filter(|c| !matches!(c, Code::Http(_)));
        let detail = match &self.source {
            Some(s) => format!("{} {s:?}", self.message),
            None => self.message.clone(),
        };
        let failure = crate::s3::explain::Failure {
            op: self.op,
            code,
            status: self.status,
            detail: &detail,
        };
        crate::s3::explain::cause(which, side, failure)
    }

    /// The raw S3 error code for the manifest's `failures.code`; the HTTP status without one.
    pub fn code_str(&self) -> Option<String> {
        self.code.as_ref().map(ToString::to_string)
    }
}

/// Classifies an SDK error of operation `op`.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    op: Op,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> TransferError {
    let message = aws_smithy_types::error::display::DisplayErrorContext(&err).to_string();
    let status = err.raw_response().map(|r| r.status().as_u16());
    let (kind, code, message) = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => (ErrorKind::Retryable, None, message),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = Code::new(se.err().code(), status);
            let message = se.err().message().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}"));
            (classify_code(op, status, &code), Some(code), message)
        }
        _ => (ErrorKind::Fatal, None, message),
    };
    TransferError {
        kind,
        op,
        code,
        status,
        message,
        source: Some(Box::new(err)),
    }
}

/// The kind for an S3 error code and HTTP status of operation `op`.
pub fn classify_code(op: Op, status: u16, code: &Code) -> ErrorKind {
    if status == 501 || *code == Code::NotImplemented {
        return ErrorKind::ModeUnusable { for_run: true };
    }
    if matches!(code, Code::SlowDown(_) | Code::Transient(_)) || status >= 500 || status == 429 {
        return ErrorKind::Retryable;
    }
    // Another mode would sign with the same credentials, at the same clock and bucket.
    if code.is_unusable_side() {
        return ErrorKind::Fatal;
    }
    if op.is_server_side_copy() {
        return match code {
            // The source object may simply be gone: the next mode's GET will tell.
            Code::NoSuchKey => ErrorKind::ModeUnusable { for_run: false },
            Code::PreconditionFailed => ErrorKind::Fatal,
            Code::ContentSha256Mismatch => ErrorKind::ModeUnusable { for_run: true },
            _ if matches!(status, 400 | 403 | 404) => ErrorKind::ModeUnusable { for_run: true },
            _ => ErrorKind::Fatal,
        };
    }
    ErrorKind::Fatal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(op: Op, status: u16, code: Option<&str>) -> ErrorKind {
        classify_code(op, status, &Code::new(code, status))
    }

    #[test]
    fn kinds_drive_retry_fallback_fail() {
        let for_run = ErrorKind::ModeUnusable { for_run: true };
        assert_eq!(kind(Op::CopyObject, 503, Some("SlowDown")), ErrorKind::Retryable);
        assert_eq!(kind(Op::GetObject, 500, None), ErrorKind::Retryable);
        assert_eq!(kind(Op::CopyObject, 403, Some("AccessDenied")), for_run);
        assert_eq!(kind(Op::UploadPartCopy, 501, Some("NotImplemented")), for_run);
        assert_eq!(kind(Op::CopyObject, 400, Some("XAmzContentSHA256Mismatch")), for_run);
        assert_eq!(
            kind(Op::CopyObject, 404, Some("NoSuchKey")),
            ErrorKind::ModeUnusable { for_run: false }
        );
        assert_eq!(kind(Op::CopyObject, 412, Some("PreconditionFailed")), ErrorKind::Fatal);
        assert_eq!(kind(Op::GetObject, 404, Some("NoSuchKey")), ErrorKind::Fatal);
        assert_eq!(kind(Op::GetObject, 403, Some("InvalidObjectState")), ErrorKind::Fatal);
        assert_eq!(kind(Op::PutObject, 403, Some("AccessDenied")), ErrorKind::Fatal);
    }

    #[test]
    fn codes_read_as_s3_sent_them() {
        assert_eq!(Code::new(None, 404).to_string(), "HTTP 404");
        assert!(Code::new(None, 404).is_not_found() && Code::new(Some("NoSuchKey"), 404).is_not_found());
        assert_eq!(Code::new(Some("SlowDown"), 503).to_string(), "SlowDown");
        assert_eq!(Code::new(Some("Weird"), 400), Code::Other("Weird".into()));
        // Every code s3syncd decides on is typed, and prints as S3 sent it (the failures
        // table and the log keep the server's word).
        for sent in [
            "NoSuchKey",
            "NoSuchBucket",
            "PreconditionFailed",
            "NotImplemented",
            "AccessDenied",
            "SlowDown",
            "Throttling",
            "ThrottlingException",
            "ServiceUnavailable",
            "RequestTimeout",
            "InternalError",
            "PermanentRedirect",
            "AuthorizationHeaderMalformed",
            "IllegalLocationConstraintException",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "TokenRefreshRequired",
            "InvalidToken",
            "RequestTimeTooSkewed",
            "AllAccessDisabled",
            "AccountProblem",
            "InvalidRequest",
            "InvalidArgument",
            "XAmzContentSHA256Mismatch",
        ] {
            let code = Code::new(Some(sent), 400);
            assert!(!matches!(code, Code::Other(_)), "{sent} is not typed");
            assert_eq!(code.to_string(), sent);
        }
        assert!(Code::new(Some("ExpiredToken"), 400).is_unusable_side());
        assert!(!Code::new(Some("AccessDenied"), 403).is_unusable_side());
    }
}
