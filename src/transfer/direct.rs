//! `direct`: server-side CopyObject (UploadPartCopy above `copy_threshold`), signed by the
//! destination's credentials. No object byte passes through the host.

use super::error::{classify, Op, TransferError};
use super::headers::Headers;
use super::upload::{completed, Multipart};
use super::{part_size_for, parts, Copied, Sidecar, Transferer};
use crate::manifest::Verified;
use crate::plan::CopyJob;
use crate::s3::{copy_source, is_md5_etag, normalize_etag};
use aws_sdk_s3::types::{ChecksumAlgorithm, MetadataDirective, TaggingDirective};
use futures::{StreamExt, TryStreamExt};

pub async fn copy(t: &Transferer, job: &CopyJob, sidecar: &Sidecar) -> Result<Copied, TransferError> {
    let spec = &t.spec;
    if spec.source.endpoint_identity() != spec.destination.endpoint_identity() {
        return Err(TransferError::unusable(
            Op::CopyObject,
            "source and destination are on different endpoints",
        ));
    }
    if job.source.size > spec.transfer.copy_threshold {
        return copy_multipart(t, job).await;
    }
    let mut req = t
        .dst
        .copy_object()
        .bucket(&spec.destination.bucket)
        .key(&job.dest_key)
        .copy_source(copy_source(&spec.source.bucket, &job.source.key))
        .metadata_directive(MetadataDirective::Copy)
        // Tags follow `preserve_tags` in every mode: copied, or none at all.
        .tagging_directive(if spec.transfer.preserve_tags {
            TaggingDirective::Copy
        } else {
            TaggingDirective::Replace
        });
    req = super::headers::copy_with(&spec.destination.write, req);
    // Copy exactly the version that was listed; a newer one is left for the next run.
    if let Some(e) = &job.source.etag {
        req = req.copy_source_if_match(format!("\"{e}\""));
    }
    let wants_sidecar = t.wants_sidecar(&job.source.key);
    if wants_sidecar {
        req = req.checksum_algorithm(ChecksumAlgorithm::Sha256);
    }
    let out = req.send().await.map_err(|e| classify(Op::CopyObject, e))?;
    let result = out.copy_object_result();
    let dest_etag = result.and_then(|r| r.e_tag()).map(normalize_etag);
    let mut verified = Verified::Size;
    let mut checksum = None;
    // Under SSE-KMS at the destination the new ETag is no MD5: nothing to compare.
    if let (Some(src), Some(dst), false) = (&job.source.etag, &dest_etag, spec.destination.write.etag_is_not_md5()) {
        if is_md5_etag(src) && is_md5_etag(dst) {
            if !src.eq_ignore_ascii_case(dst) {
                return Err(TransferError::verify(format!(
                    "destination ETag {dst} differs from the source ETag {src}"
                )));
            }
            verified = Verified::Etag;
            checksum = Some(format!("md5:{}", dst.to_ascii_lowercase()));
        }
    }
    // A server that computed SHA-256 during the copy lets the sidecar check happen without a
    // byte here; only then is the sidecar worth fetching. Otherwise the row says `etag`/`size`.
    let server_sha = result.and_then(|r| r.checksum_sha256()).filter(|_| wants_sidecar);
    if let (Some(b64), Some(want)) = (server_sha, sidecar_if(server_sha.is_some(), t, job, sidecar).await?) {
        let got = aws_smithy_types::base64::decode(b64).map(hex::encode).unwrap_or_default();
        if !got.eq_ignore_ascii_case(want) {
            return Err(TransferError::verify(format!(
                "server-side sha256 {got} differs from the checksum sidecar's {want}"
            )));
        }
        verified = Verified::Sha256;
        checksum = Some(format!("sha256:{}", got.to_ascii_lowercase()));
    }
    Ok(Copied {
        etag: job.source.etag.clone().or_else(|| dest_etag.clone()),
        dest_etag,
        verified,
        checksum,
    })
}

async fn sidecar_if<'a>(fetch: bool, t: &Transferer, job: &CopyJob, sidecar: &'a Sidecar) -> Result<Option<&'a str>, TransferError> {
    if fetch {
        sidecar.get(t, &job.source.key).await
    } else {
        Ok(None)
    }
}

/// UploadPartCopy with exact byte ranges, `parts_in_flight` at a time.
async fn copy_multipart(t: &Transferer, job: &CopyJob) -> Result<Copied, TransferError> {
    let spec = &t.spec;
    let size = job.source.size;
    let part = part_size_for(size, spec.transfer.part_size);
    let source = copy_source(&spec.source.bucket, &job.source.key);
    // UploadPartCopy carries no headers: the upload takes the source's, from one HEAD.
    let mut head = t.src.head_object().bucket(&spec.source.bucket).key(&job.source.key);
    if let Some(e) = &job.source.etag {
        head = head.if_match(format!("\"{e}\""));
    }
    let head = head.send().await.map_err(|e| classify(Op::HeadObject, e))?;
    let headers = Headers {
        tagging: t.source_tags(job).await?,
        ..Headers::of_head(&head)
    };
    let upload = Multipart::create(t, &job.dest_key, &headers).await?;
    let work = futures::stream::iter(parts(size, part))
        .map(|(n, offset, len)| {
            let mut req = t
                .dst
                .upload_part_copy()
                .bucket(&spec.destination.bucket)
                .key(&job.dest_key)
                .upload_id(&upload.upload_id)
                .part_number(n)
                .copy_source(&source)
                .copy_source_range(format!("bytes={}-{}", offset, offset + len - 1));
            if let Some(e) = &job.source.etag {
                req = req.copy_source_if_match(format!("\"{e}\""));
            }
            async move {
                let out = req.send().await.map_err(|e| classify(Op::UploadPartCopy, e))?;
                Ok::<_, TransferError>(completed(n, out.copy_part_result().and_then(|r| r.e_tag())))
            }
        })
        .buffer_unordered(spec.transfer.parts_in_flight)
        .try_collect::<Vec<_>>();
    let work = async { work.await.map(|parts| (parts, ())) };
    let (dest_etag, ()) = upload.finish_or_abort(&t.hard_stop, work).await?;
    Ok(Copied {
        etag: job.source.etag.clone(),
        dest_etag,
        verified: Verified::Size,
        checksum: None,
    })
}
