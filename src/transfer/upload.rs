//! Writing to the destination, for every mode: a PutObject of the whole object (its ETag
//! checked against the MD5 of what was sent), or a multipart upload with its part ranges,
//! created, recorded, filled `parts_in_flight` at a time and completed with its parts in order,
//! or aborted on any failure so no incomplete upload is left to bill.

use super::error::{classify, Code, Op, TransferError};
use super::headers::Headers;
use super::Transferer;
use crate::plan::CopyJob;
use crate::s3::checksum::{checksum_of, set_checksum, stored_checksum, Checksum, ChecksumAlgo};
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder;
use aws_sdk_s3::types::{ChecksumType, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use tokio::task::JoinSet;

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

/// A PutObject of the whole object to its destination key, with the write options.
pub(super) fn put_object(t: &Transferer, job: &CopyJob) -> PutObjectFluentBuilder {
    let req = t
        .dst
        .put_object()
        .bucket(&t.spec.destination.bucket)
        .key(&job.dest_key)
        .content_length(job.source.size as i64);
    super::headers::put_with(&t.spec.destination.write, req)
}

/// An UploadPart of part `number` of the upload, with the part's checksum when the upload
/// carries one (the destination checks the part on arrival).
pub(super) fn upload_part(
    t: &Transferer,
    job: &CopyJob,
    upload: &Multipart,
    number: i32,
    len: u64,
    checksum: Option<String>,
) -> UploadPartFluentBuilder {
    let req = t
        .dst
        .upload_part()
        .bucket(&t.spec.destination.bucket)
        .key(&job.dest_key)
        .upload_id(&upload.upload_id)
        .part_number(number)
        .content_length(len as i64);
    match (upload.algorithm(), checksum) {
        (Some(algo), Some(v)) => set_checksum!(req.set_checksum_algorithm(algo.sdk()), algo, v),
        _ => req,
    }
}

/// Checks a single-part PUT's ETag against the MD5 of what was sent.
pub(super) fn check_put_etag(dest_etag: Option<&str>, md5: Option<&str>) -> Result<(), TransferError> {
    let Some(md5) = md5 else { return Ok(()) };
    match dest_etag {
        Some(e) if crate::s3::is_md5_etag(e) && !e.eq_ignore_ascii_case(md5) => Err(TransferError::verify(format!(
            "destination ETag {e} differs from the MD5 of the bytes sent ({md5})"
        ))),
        _ => Ok(()),
    }
}

/// Part uploads in flight, at most `limit` at once; the first failure ends the upload.
pub(super) struct PartUploads {
    inflight: JoinSet<Result<CompletedPart, TransferError>>,
    done: Vec<CompletedPart>,
    limit: usize,
    /// The upload's checksum algorithm: each part's answer carries its checksum, which the
    /// completion lists.
    algo: Option<crate::s3::checksum::ChecksumAlgo>,
}

impl PartUploads {
    pub(super) fn new(limit: usize, upload: &Multipart) -> Self {
        PartUploads {
            inflight: JoinSet::new(),
            done: Vec::new(),
            limit: limit.max(1),
            algo: upload.algorithm(),
        }
    }

    /// Waits for room, then sends the part. `permit` (buffer budget) is held until it is sent.
    pub(super) async fn send<P: Send + 'static>(
        &mut self,
        number: i32,
        req: UploadPartFluentBuilder,
        permit: P,
    ) -> Result<(), TransferError> {
        while self.inflight.len() >= self.limit {
            self.join_one().await?;
        }
        let algo = self.algo;
        self.inflight.spawn(async move {
            let out = req.send().await.map_err(|e| classify(Op::UploadPart, e));
            drop(permit);
            out.map(|o| {
                let sum = algo.and_then(|a| Some((a, checksum_of!(o, a)?)));
                completed(number, o.e_tag(), sum)
            })
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), TransferError> {
        if let Some(r) = self.inflight.join_next().await {
            let part = r.map_err(|e| TransferError::fatal(Op::UploadPart, e.to_string()))??;
            self.done.push(part);
        }
        Ok(())
    }

    /// Waits for every part; returns them all (any order).
    pub(super) async fn finish(mut self) -> Result<Vec<CompletedPart>, TransferError> {
        while !self.inflight.is_empty() {
            self.join_one().await?;
        }
        Ok(self.done)
    }
}
/// Part size for an object: the configured one, grown so that there are at most 10,000 parts.
pub(super) fn part_size_for(size: u64, configured: u64) -> u64 {
    configured.max(size.div_ceil(10_000))
}

/// Multipart upload ranges: (part number, offset, length).
pub(super) fn parts(size: u64, part: u64) -> impl Iterator<Item = (i32, u64, u64)> {
    let n = size.div_ceil(part).max(1);
    (0..n).map(move |i| ((i + 1) as i32, i * part, part.min(size - i * part)))
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
    matches!(&e.code, Some(Code::NotImplemented | Code::Invalid(_) | Code::Http(501 | 400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_ranges_cover_the_object_exactly() {
        let p: Vec<_> = parts(12 << 20, 5 << 20).collect();
        assert_eq!(p, vec![(1, 0, 5 << 20), (2, 5 << 20, 5 << 20), (3, 10 << 20, 2 << 20)]);
        assert_eq!(parts(0, 5).count(), 1);
        assert_eq!(part_size_for(100 << 30, 5 << 20), (100u64 << 30).div_ceil(10_000));
    }
}
