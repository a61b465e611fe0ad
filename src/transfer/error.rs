//! Transfer errors and their kind, which alone decides what happens next (rclone's sentinel
//! errors, not string matching at the call sites): retry the object, fall back to the next
//! mode, or fail the object and go on with the others.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient: throttling, 5xx, timeouts, resets. Retried with backoff.
    Retryable,
    /// This mode cannot copy this object (or any object, when `sticky`): try the next mode.
    CantUseMode,
    /// This object fails; the run goes on.
    Fatal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Retryable => "retryable",
            ErrorKind::CantUseMode => "cant-use-mode",
            ErrorKind::Fatal => "fatal",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub struct TransferError {
    pub kind: ErrorKind,
    /// For `CantUseMode`: the mode is unusable for the rest of the run, not just this object.
    pub sticky: bool,
    /// The S3 operation or step that failed.
    pub op: &'static str,
    pub code: Option<String>,
    pub message: String,
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
    pub fn new(kind: ErrorKind, op: &'static str, message: impl Into<String>) -> Self {
        TransferError {
            kind,
            sticky: false,
            op,
            code: None,
            message: message.into(),
        }
    }
    pub fn fatal(op: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, op, message)
    }
    /// The mode can't be used for any object of this run.
    pub fn unusable(op: &'static str, message: impl Into<String>) -> Self {
        TransferError {
            sticky: true,
            ..Self::new(ErrorKind::CantUseMode, op, message)
        }
    }
    pub fn verify(message: impl Into<String>) -> Self {
        Self::fatal("verify", message)
    }
    pub fn io(op: &'static str, e: std::io::Error) -> Self {
        Self::fatal(op, e.to_string())
    }
}

/// Operations whose refusal means "server-side copy is not possible here" rather than "this
/// object is broken": the destination signs them, and the source may not let it read.
fn is_copy_op(op: &str) -> bool {
    matches!(op, "CopyObject" | "UploadPartCopy")
}

/// Classifies an SDK error of operation `op`.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> TransferError {
    let message = aws_smithy_types::error::display::DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            TransferError::new(ErrorKind::Retryable, op, message)
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().map(str::to_string);
            let (kind, sticky) = classify_code(op, status, code.as_deref());
            let message = se.err().message().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}"));
            TransferError {
                kind,
                sticky,
                op,
                code: code.or(Some(format!("HTTP {status}"))),
                message,
            }
        }
        _ => TransferError::fatal(op, message),
    }
}

/// The kind (and stickiness) for an S3 error code and HTTP status.
pub fn classify_code(op: &str, status: u16, code: Option<&str>) -> (ErrorKind, bool) {
    let code = code.unwrap_or("");
    let throttled = matches!(
        code,
        "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "RequestTimeTooSkewed"
    );
    if status == 501 || code == "NotImplemented" {
        return (ErrorKind::CantUseMode, true);
    }
    if throttled || status >= 500 || status == 429 {
        return (ErrorKind::Retryable, false);
    }
    if is_copy_op(op) {
        return match code {
            // The source object may simply be gone: the next mode's GET will tell.
            "NoSuchKey" => (ErrorKind::CantUseMode, false),
            "PreconditionFailed" => (ErrorKind::Fatal, false),
            _ if status == 403 || status == 400 || status == 404 || code == "XAmzContentSHA256Mismatch" => (ErrorKind::CantUseMode, true),
            _ => (ErrorKind::Fatal, false),
        };
    }
    (ErrorKind::Fatal, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_drive_retry_fallback_fail() {
        assert_eq!(classify_code("CopyObject", 503, Some("SlowDown")), (ErrorKind::Retryable, false));
        assert_eq!(classify_code("GetObject", 500, None), (ErrorKind::Retryable, false));
        assert_eq!(
            classify_code("CopyObject", 403, Some("AccessDenied")),
            (ErrorKind::CantUseMode, true)
        );
        assert_eq!(
            classify_code("UploadPartCopy", 501, Some("NotImplemented")),
            (ErrorKind::CantUseMode, true)
        );
        assert_eq!(classify_code("CopyObject", 404, Some("NoSuchKey")), (ErrorKind::CantUseMode, false));
        assert_eq!(
            classify_code("CopyObject", 412, Some("PreconditionFailed")),
            (ErrorKind::Fatal, false)
        );
        assert_eq!(classify_code("GetObject", 404, Some("NoSuchKey")), (ErrorKind::Fatal, false));
        assert_eq!(
            classify_code("GetObject", 403, Some("InvalidObjectState")),
            (ErrorKind::Fatal, false)
        );
        assert_eq!(classify_code("PutObject", 403, Some("AccessDenied")), (ErrorKind::Fatal, false));
    }
}
