//! Reading the source, for every mode: the listed version's GET or HEAD (checksum mode, and
//! `If-Match` its listed ETag, so a newer version is left for the next run), its tags, whether
//! the bucket serves a website, and what the answer says the bytes must match.

use super::error::{classify, Code, Op, TransferError};
use super::headers::{self, Headers};
use super::verify::Expect;
use super::Transferer;
use crate::plan::CopyJob;
use crate::s3::if_match;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::types::ChecksumMode;

/// GETs the listed version of the source object.
pub(super) async fn get_source(t: &Transferer, job: &CopyJob) -> Result<GetObjectOutput, TransferError> {
    // Checksum mode: the answer carries the full-object checksum the source stores, if any.
    let req = t
        .src
        .get_object()
        .bucket(&t.spec.source.bucket)
        .key(&job.source.key)
        .checksum_mode(ChecksumMode::Enabled)
        .set_if_match(if_match(job.source.etag.as_deref()));
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

/// HEADs the listed version of the source, in checksum mode.
pub(super) async fn head_source(t: &Transferer, job: &CopyJob) -> Result<HeadObjectOutput, TransferError> {
    let head = t
        .src
        .head_object()
        .bucket(&t.spec.source.bucket)
        .key(&job.source.key)
        .checksum_mode(ChecksumMode::Enabled)
        .set_if_match(if_match(job.source.etag.as_deref()));
    head.send().await.map_err(|e| classify(Op::HeadObject, e))
}

impl Transferer {
    /// Whether the source bucket serves a website, where an object's redirect takes effect:
    /// only then does `direct` read each object's redirect (one HEAD beside each CopyObject,
    /// which does not copy it). Any refusal (no permission, no website, a server without the
    /// call) counts as no.
    pub(crate) async fn source_serves_website(&self) -> bool {
        *self
            .website
            .get_or_init(|| async { self.src.get_bucket_website().bucket(&self.spec.source.bucket).send().await.is_ok() })
            .await
    }

    /// The source object's tags as a query, when the spec preserves tags. A server without
    /// tagging (501) gives none, and the run notes it; it never disables a mode.
    pub(super) async fn source_tags(&self, job: &CopyJob) -> Result<Option<String>, TransferError> {
        if !self.spec.transfer.preserve_tags {
            return Ok(None);
        }
        let got = self
            .src
            .get_object_tagging()
            .bucket(&self.spec.source.bucket)
            .key(&job.source.key)
            .send()
            .await;
        match got.map_err(|e| classify(Op::GetObjectTagging, e)) {
            Ok(out) => Ok(headers::tagging_query(out.tag_set())),
            Err(e) if e.code == Some(Code::NotImplemented) || e.code == Some(Code::Http(501)) => {
                self.note_unsupported("tags");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
