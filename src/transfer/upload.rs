//! A multipart upload at the destination, shared by the three modes: created, completed with
//! its parts in order, or aborted on any failure so no incomplete upload is left to bill.

use super::error::{classify, Code, Op, TransferError};
use super::headers::Headers;
use super::Transferer;
use crate::s3::checksum::{set_checksum, stored_checksum, Checksum, ChecksumAlgo};
use aws_sdk_s3::types::{ChecksumType, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

pub struct Multipart<'a> {
    t: &'a Transferer,
    pub key: &'a str,
    pub upload_id: String,
    /// The full-object checksum the upload was created to carry: the source's, so the
    /// destination checks the assembled object against it and stores it.
    pub checksum: Option<Checksum>,
}

impl<'a> Multipart<'a> {
    /// Creates the upload at the destination and records its id in the manifest before any
    /// part is sent, so that a run after a crash can abort it. A crash between the upload's
    /// creation and that record is covered by a pending row written before the create: the next
    /// run looks for uploads on that key (`abort_stale_uploads`).
    pub async fn create(t: &'a Transferer, key: &'a str, headers: &Headers) -> Result<Multipart<'a>, TransferError> {
        static PENDING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PENDING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pending = format!("{PENDING_PREFIX}{}:{n}", std::process::id());
        let manifest_err = |e: crate::manifest::ManifestError| TransferError::fatal(Op::Manifest, e.to_string());
        t.writer
            .upload_started(&pending, &t.spec.name, &t.spec.destination, key)
            .await
            .map_err(manifest_err)?;
        let mut checksum = headers.checksum.clone().filter(|c| c.algo.combines_across_parts());
        let mut created = send_create(t, key, headers, checksum.as_ref()).await;
        // A server without full-object checksums on multipart uploads still gets the copy.
        if checksum.is_some() && created.as_ref().is_err_and(rejects_checksum) {
            t.note_unsupported("full-object checksums on multipart uploads");
            checksum = None;
            created = send_create(t, key, headers, None).await;
        }
        let upload_id = match created {
            Ok(id) => id,
            Err(e) => {
                t.writer.upload_ended(&pending);
                return Err(e);
            }
        };
        let upload = Multipart {
            t,
            key,
            upload_id,
            checksum,
        };
        let recorded = t
            .writer
            .upload_started(&upload.upload_id, &t.spec.name, &t.spec.destination, key)
            .await;
        t.writer.upload_ended(&pending);
        if let Err(e) = recorded {
            upload.abort().await;
            return Err(manifest_err(e));
        }
        Ok(upload)
    }

    /// Completes with the given parts (any order) and returns the destination ETag and the
    /// full-object checksum it reports. With a checksum, the destination checks the assembled
    /// object against the source's value (AWS answers BadDigest on a mismatch).
    pub async fn complete(&self, mut parts: Vec<CompletedPart>) -> Result<Completed, TransferError> {
        parts.sort_by_key(|p| p.part_number());
        let mut req = self
            .t
            .dst
            .complete_multipart_upload()
            .bucket(&self.t.spec.destination.bucket)
            .key(self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
        if let Some(c) = &self.checksum {
            req = set_checksum!(req.checksum_type(ChecksumType::FullObject), c.algo, c.value.clone());
        }
        let out = req.send().await.map_err(|e| classify(Op::CompleteMultipartUpload, e))?;
        self.t.writer.upload_ended(&self.upload_id);
        let checksum = stored_checksum!(out);
        Ok(Completed {
            etag: out.e_tag().map(crate::s3::normalize_etag),
            checksum,
        })
    }

    /// The algorithm of the upload's checksum, if it carries one.
    pub fn algorithm(&self) -> Option<ChecksumAlgo> {
        self.checksum.as_ref().map(|c| c.algo)
    }

    /// Best effort: a failed abort is logged, and the error that caused it is what the caller reports.
    pub async fn abort(&self) {
        if abort_upload(&self.t.dst, &self.t.spec.destination.bucket, self.key, &self.upload_id).await {
            self.t.writer.upload_ended(&self.upload_id);
        }
    }

    /// Runs `work` (which uploads the parts and may return a verdict beside them), then
    /// completes, or aborts if it fails or `stop` fires. Returns the destination ETag and the verdict.
    pub async fn finish_or_abort<F, T>(&self, stop: &tokio_util::sync::CancellationToken, work: F) -> Result<(Completed, T), TransferError>
    where
        F: std::future::Future<Output = Result<(Vec<CompletedPart>, T), TransferError>>,
    {
        let result = tokio::select! {
            r = work => r,
            () = stop.cancelled() => Err(TransferError::fatal(Op::Multipart, "stopped by shutdown before the upload finished")),
        };
        let result = match result {
            Ok((parts, verdict)) => self.complete(parts).await.map(|done| (done, verdict)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.abort().await;
        }
        result
    }
}

/// Upload ids of the rows written before CreateMultipartUpload: the real id is not known yet.
pub const PENDING_PREFIX: &str = "pending:";

/// Aborts the uploads on exactly `key`, for a pending row: a run killed between creating an
/// upload and recording its id. The spec lock rules out a live s3syncd upload on that key.
/// Best effort, tried once: failures are logged (a server without ListMultipartUploads, such as
/// s3s-fs, can never answer).
pub async fn abort_uploads_on_key(dst: &Client, bucket: &str, key: &str) {
    let listed = match dst.list_multipart_uploads().bucket(bucket).prefix(key).send().await {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(key = %key, error = %aws_smithy_types::error::display::DisplayErrorContext(&e),
                "cannot list multipart uploads: an upload a killed run created may be left (a lifecycle rule AbortIncompleteMultipartUpload removes it)");
            return;
        }
    };
    for u in listed.uploads().iter().filter(|u| u.key() == Some(key)) {
        if let Some(id) = u.upload_id() {
            abort_upload(dst, bucket, key, id).await;
        }
    }
}

/// Aborts an upload; true when it is gone (aborted now, or already gone). A failed abort is
/// logged and left recorded, for the next run to try again.
pub async fn abort_upload(dst: &Client, bucket: &str, key: &str, upload_id: &str) -> bool {
    match dst
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => true,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => true,
        Err(e) => {
            tracing::warn!(key = %key, error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "could not abort multipart upload");
            false
        }
    }
}

/// A finished part, with its checksum (algorithm, base64) when the upload carries one.
pub fn completed(number: i32, etag: Option<&str>, checksum: Option<(ChecksumAlgo, &str)>) -> CompletedPart {
    let b = CompletedPart::builder().part_number(number).set_e_tag(etag.map(str::to_string));
    match checksum {
        Some((algo, v)) => set_checksum!(b, algo, v.to_string()).build(),
        None => b.build(),
    }
}

/// What CompleteMultipartUpload answered.
pub struct Completed {
    pub etag: Option<String>,
    /// The full-object checksum the destination reports, if any.
    pub checksum: Option<Checksum>,
}

async fn send_create(t: &Transferer, key: &str, headers: &Headers, checksum: Option<&Checksum>) -> Result<String, TransferError> {
    let mut create = super::headers::create_with(
        &t.spec.destination.write,
        t.dst.create_multipart_upload().bucket(&t.spec.destination.bucket).key(key),
    );
    if let Some(c) = checksum {
        create = create.set_checksum_algorithm(c.algo.sdk()).checksum_type(ChecksumType::FullObject);
    }
    let out = headers
        .on_create(create)
        .send()
        .await
        .map_err(|e| classify(Op::CreateMultipartUpload, e))?;
    out.upload_id()
        .map(str::to_string)
        .ok_or_else(|| TransferError::fatal(Op::CreateMultipartUpload, "the server returned no upload id"))
}

/// A server that does not know a checksum option on CreateMultipartUpload says so with 501 or
/// a 400 of one of these codes.
fn rejects_checksum(e: &TransferError) -> bool {
    matches!(&e.code, Some(Code::NotImplemented | Code::Http(501 | 400)))
        || matches!(&e.code, Some(Code::Other(c)) if matches!(c.as_str(), "InvalidRequest" | "InvalidArgument"))
}
