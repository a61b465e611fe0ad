//! What `stream` and `staged` share: the bytes pass through this host, so both GET the listed
//! version of the source, PUT or upload parts to the destination, and check the PUT's ETag.

use super::error::{classify, Op, TransferError};
use super::headers::Headers;
use super::upload::{completed, Multipart};
use super::verify::Expect;
use super::Transferer;
use crate::plan::CopyJob;
use crate::s3::checksum::{checksum_of, set_checksum};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder;
use aws_sdk_s3::types::CompletedPart;
use tokio::task::JoinSet;

/// GETs the listed version of the source object.
pub(super) async fn get_source(t: &Transferer, job: &CopyJob) -> Result<GetObjectOutput, TransferError> {
    // Checksum mode: the answer carries the full-object checksum the source stores, if any.
    let mut req = t
        .src
        .get_object()
        .bucket(&t.spec.source.bucket)
        .key(&job.source.key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
    if let Some(e) = &job.source.etag {
        req = req.if_match(format!("\"{e}\""));
    }
    let out = req.send().await.map_err(|e| classify(Op::GetObject, e))?;
    let len = out.content_length().unwrap_or(-1);
    if len != job.source.size as i64 {
        return Err(TransferError::fatal(
            Op::GetObject,
            format!(
                "the object is {len} bytes now, {} when listed; it changed and will be copied next run",
                job.source.size
            ),
        ));
    }
    Ok(out)
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

/// What the GET's answer says of the object: its headers (with its tags, when the spec
/// preserves them) and what its bytes must match: the full-object checksum the source stores,
/// and no MD5 when either side encrypts with KMS (an ETag is then no MD5).
pub(super) async fn read_get(
    t: &Transferer,
    job: &CopyJob,
    get: &GetObjectOutput,
    mut expect: Expect,
) -> Result<(Headers, Expect), TransferError> {
    let headers = Headers {
        tagging: t.source_tags(job).await?,
        ..Headers::of_get(get)
    };
    let source_kms = get.server_side_encryption().is_some_and(|s| s.as_str().starts_with("aws:kms"));
    if source_kms || t.spec.destination.write.etag_is_not_md5() {
        expect.md5_hex = None;
    }
    expect.stored = headers.checksum.clone();
    Ok((headers, expect))
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
