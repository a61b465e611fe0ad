//! `direct`: server-side CopyObject (UploadPartCopy above `copy_threshold`), signed by the
//! destination's credentials. No object byte passes through the host.

use super::error::{classify, Op, TransferError};
use super::headers::Headers;
use super::source::head_source;
use super::upload::{completed, part_size_for, parts, Multipart};
use super::verify::Verdict;
use super::{Copied, Sidecar, Transferer};
use crate::manifest::Verified;
use crate::plan::CopyJob;
use crate::s3::checksum::{checksum_of, Checksum, ChecksumAlgo};
use crate::s3::{copy_source, if_match, is_md5_etag, normalize_etag};
use aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder;
use aws_sdk_s3::operation::copy_object::CopyObjectOutput;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, MetadataDirective, TaggingDirective};
use futures::{StreamExt, TryStreamExt};

pub async fn copy(t: &Transferer, job: &CopyJob, sidecar: &Sidecar) -> Result<Copied, TransferError> {
    let spec = &t.spec;
    if !spec.source.same_endpoint(&spec.destination) {
        return Err(TransferError::unusable(
            Op::CopyObject,
            "source and destination are on different endpoints",
        ));
    }
    if job.source.size > spec.transfer.copy_threshold {
        return copy_multipart(t, job).await;
    }
    let etag_proves = job.source.etag.as_deref().is_some_and(is_md5_etag) && !spec.destination.write.etag_is_not_md5();
    let (req, head) = request(t, job, etag_proves).await?;
    let (out, dest_etag) = send(t, job, req, head.is_some()).await?;
    let stored = head.and_then(|h| h.checksum);
    let v = proven(
        t,
        job,
        sidecar,
        out.copy_object_result(),
        dest_etag.as_deref(),
        etag_proves,
        stored.as_ref(),
    )
    .await?;
    Ok(Copied::new(job, dest_etag, v))
}

/// The CopyObject of one job, asking for the checksum that can prove it, with the source's
/// headers when a HEAD was needed. Where the listed ETag proves nothing (a multipart source,
/// SSE-KMS), the checksum the source stores can: one HEAD reads it, and the copy is asked for
/// the same algorithm. (A listing without ETags, as s3s-fs gives, says nothing of a checksum:
/// no HEAD then.)
async fn request(t: &Transferer, job: &CopyJob, etag_proves: bool) -> Result<(CopyObjectFluentBuilder, Option<Headers>), TransferError> {
    let mut req = copy_request(t, job);
    let head = match etag_proves || job.source.etag.is_none() {
        true => None,
        false => Some(Headers::of_head(&head_source(t, job).await?)),
    };
    if t.wants_sidecar(&job.source.key) {
        req = req.checksum_algorithm(ChecksumAlgorithm::Sha256);
    } else if let Some(c) = head.as_ref().and_then(|h| h.checksum.as_ref()) {
        req = req.set_checksum_algorithm(c.algo.sdk());
    }
    // CopyObject never copies the website redirect; it takes the source's value beside COPY.
    let redirect = head.as_ref().and_then(|h| h.website_redirect_location.clone());
    Ok((req.set_website_redirect_location(redirect), head))
}

/// Sends the copy; returns the answer and the new object's ETag. Where the source serves a
/// website and no HEAD was made yet (`headed`), one runs beside the copy (no added latency),
/// and the rare object that has a redirect gets it by an in-place copy.
async fn send(
    t: &Transferer,
    job: &CopyJob,
    req: CopyObjectFluentBuilder,
    headed: bool,
) -> Result<(CopyObjectOutput, Option<String>), TransferError> {
    let (out, late) = match !headed && t.source_serves_website().await {
        false => (send_once(req).await?, None),
        true => {
            let (out, h) = tokio::try_join!(send_once(req), head_source(t, job))?;
            (out, Headers::of_head(&h).website_redirect_location)
        }
    };
    let mut dest_etag = out.copy_object_result().and_then(|r| r.e_tag()).map(normalize_etag);
    if let Some(location) = late {
        dest_etag = set_redirect(t, job, dest_etag.as_deref(), location).await?.or(dest_etag);
    }
    Ok((out, dest_etag))
}

/// The CopyObject of one job: metadata and tags as the spec keeps them, the destination's write
/// options, and only the version that was listed.
fn copy_request(t: &Transferer, job: &CopyJob) -> CopyObjectFluentBuilder {
    let spec = &t.spec;
    let req = t
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
    let req = super::headers::copy_with(&spec.destination.write, req);
    // Copy exactly the version that was listed; a newer one is left for the next run.
    req.set_copy_source_if_match(if_match(job.source.etag.as_deref()))
}

/// What the copy's answer proves of its bytes: the destination ETag equal to a content-MD5
/// source ETag, the checksum the source stores computed again by the server, and a SHA-256
/// the server computed checked against the sidecar; the strongest one found, as the verdict
/// the other modes reach by reading the bytes.
async fn proven(
    t: &Transferer,
    job: &CopyJob,
    sidecar: &Sidecar,
    result: Option<&aws_sdk_s3::types::CopyObjectResult>,
    dest_etag: Option<&str>,
    etag_proves: bool,
    stored: Option<&Checksum>,
) -> Result<Verdict, TransferError> {
    let mut verified = Verified::Size;
    let mut checksum = None;
    if let (Some(src), Some(dst), true) = (&job.source.etag, dest_etag, etag_proves) {
        if is_md5_etag(dst) {
            if !src.eq_ignore_ascii_case(dst) {
                return Err(TransferError::verify(format!(
                    "destination ETag {dst} differs from the source ETag {src}"
                )));
            }
            verified = Verified::Etag;
            checksum = Some(Checksum::new(ChecksumAlgo::Md5, dst.to_ascii_lowercase()));
        }
    }
    if let (Some(want), Some(r)) = (stored, result) {
        let answered = checksum_of!(r, want.algo).map(|v| Checksum::new(want.algo, v));
        if let Some(c) = compare(want, answered)? {
            (verified, checksum) = (Verified::Checksum, Some(c));
        }
    }
    // A server that computed SHA-256 during the copy lets the sidecar check happen without a
    // byte here; only then is the sidecar worth fetching.
    let server_sha = result
        .and_then(|r| r.checksum_sha256())
        .filter(|v| t.wants_sidecar(&job.source.key) && !v.contains('-'))
        .and_then(|b64| aws_smithy_types::base64::decode(b64).ok())
        .map(hex::encode);
    if let (Some(got), Some(want)) = (&server_sha, sidecar_if(server_sha.is_some(), t, job, sidecar).await?) {
        if !got.eq_ignore_ascii_case(want) {
            return Err(TransferError::verify(format!(
                "server-side sha256 {got} differs from the checksum sidecar's {want}"
            )));
        }
        verified = Verified::Sha256;
        checksum = Some(Checksum::new(ChecksumAlgo::Sha256, got.to_ascii_lowercase()));
    }
    Ok(Verdict {
        level: verified,
        md5: None,
        checksum,
        sha256: server_sha,
    })
}

/// Sends a CopyObject without SDK retries: the caller retries, each attempt under the run's pace.
async fn send_once(req: CopyObjectFluentBuilder) -> Result<CopyObjectOutput, TransferError> {
    let once = aws_sdk_s3::config::Builder::default().retry_config(aws_smithy_types::retry::RetryConfig::disabled());
    req.customize()
        .config_override(once)
        .send()
        .await
        .map_err(|e| classify(Op::CopyObject, e))
}

/// Gives the new object the source's website redirect by copying it onto itself with the
/// redirect set (metadata, tags and checksum stay; the write options are applied again, as a
/// copy does not keep the ACL). Returns the ETag it then has.
async fn set_redirect(t: &Transferer, job: &CopyJob, dest_etag: Option<&str>, location: String) -> Result<Option<String>, TransferError> {
    let dst = &t.spec.destination;
    let req = t
        .dst
        .copy_object()
        .bucket(&dst.bucket)
        .key(&job.dest_key)
        .copy_source(copy_source(&dst.bucket, &job.dest_key))
        .metadata_directive(MetadataDirective::Copy)
        .tagging_directive(TaggingDirective::Copy)
        .website_redirect_location(location);
    let req = super::headers::copy_with(&dst.write, req).set_copy_source_if_match(if_match(dest_etag));
    let out = send_once(req).await?;
    Ok(out.copy_object_result().and_then(|r| r.e_tag()).map(normalize_etag))
}

/// Compares the source's full-object checksum with the one the destination reports for the
/// copy: the same value proves the copy's bytes; another algorithm, or none, proves nothing;
/// another value is a failed copy.
fn compare(want: &Checksum, got: Option<Checksum>) -> Result<Option<Checksum>, TransferError> {
    match got {
        Some(c) if c.algo == want.algo && c.value != want.value => Err(TransferError::verify(format!(
            "the copy's {} {} differs from the checksum the source stores ({})",
            c.algo, c.value, want.value
        ))),
        Some(c) if c.algo == want.algo => Ok(Some(c)),
        _ => Ok(None),
    }
}

async fn sidecar_if<'a>(fetch: bool, t: &Transferer, job: &CopyJob, sidecar: &'a Sidecar) -> Result<Option<&'a str>, TransferError> {
    if fetch {
        sidecar.get(t, &job.source.key).await
    } else {
        Ok(None)
    }
}

/// UploadPartCopy with exact byte ranges, `parts_in_flight` at a time. The upload carries the
/// source's full-object checksum when it has one, so the destination checks the assembled
/// object against it.
async fn copy_multipart(t: &Transferer, job: &CopyJob) -> Result<Copied, TransferError> {
    let spec = &t.spec;
    let size = job.source.size;
    let part = part_size_for(size, spec.transfer.part_size);
    let source = copy_source(&spec.source.bucket, &job.source.key);
    // UploadPartCopy carries no headers: the upload takes the source's, from one HEAD.
    let headers = Headers {
        tagging: t.source_tags(job).await?,
        ..Headers::of_head(&head_source(t, job).await?)
    };
    let upload = Multipart::create(t, &job.dest_key, &headers).await?;
    let algo = upload.algorithm();
    let work = futures::stream::iter(parts(size, part))
        .map(|(n, offset, len)| {
            let req = t
                .dst
                .upload_part_copy()
                .bucket(&spec.destination.bucket)
                .key(&job.dest_key)
                .upload_id(&upload.upload_id)
                .part_number(n)
                .copy_source(&source)
                .copy_source_range(format!("bytes={}-{}", offset, offset + len - 1))
                .set_copy_source_if_match(if_match(job.source.etag.as_deref()));
            async move {
                let out = req.send().await.map_err(|e| classify(Op::UploadPartCopy, e))?;
                let r = out.copy_part_result();
                let sum = algo.and_then(|a| Some((a, checksum_of!(r?, a)?)));
                Ok::<_, TransferError>(completed(n, r.and_then(|r| r.e_tag()), sum))
            }
        })
        .buffer_unordered(spec.transfer.parts_in_flight)
        .try_collect::<Vec<_>>();
    let work = async { work.await.map(|parts| (parts, ())) };
    let (done, ()) = upload.finish_or_abort(&t.hard_stop, work).await?;
    let (mut verified, mut checksum) = (Verified::Size, None);
    if let Some(want) = &upload.checksum {
        // The completion's answer may omit the checksum: one HEAD of the new object asks.
        let got = match done.checksum {
            Some(c) => Some(c),
            None => dest_checksum(t, &job.dest_key).await,
        };
        if let Some(c) = compare(want, got)? {
            (verified, checksum) = (Verified::Checksum, Some(c));
        }
    }
    let v = Verdict {
        level: verified,
        md5: None,
        checksum,
        sha256: None,
    };
    Ok(Copied::new(job, done.etag, v))
}

/// The full-object checksum the destination stores for `key`; none if the HEAD fails.
async fn dest_checksum(t: &Transferer, key: &str) -> Option<Checksum> {
    let head = t
        .dst
        .head_object()
        .bucket(&t.spec.destination.bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .ok()?;
    Headers::of_head(&head).checksum
}

#[cfg(test)]
mod tests {
    use super::compare;
    use crate::s3::checksum::{Checksum, ChecksumAlgo};

    #[test]
    fn only_the_same_algorithm_is_compared_and_a_different_value_fails() {
        let want = Checksum::new(ChecksumAlgo::Crc32, "AAAA");
        let got = |a, v: &str| Some(Checksum::new(a, v));
        let proved = compare(&want, got(ChecksumAlgo::Crc32, "AAAA")).unwrap();
        assert_eq!(proved.map(|c| c.to_string()).as_deref(), Some("crc32:AAAA"));
        assert_eq!(compare(&want, got(ChecksumAlgo::Crc64Nvme, "BBBB")).unwrap(), None);
        assert_eq!(compare(&want, None).unwrap(), None);
        let e = compare(&want, got(ChecksumAlgo::Crc32, "BBBB")).unwrap_err().to_string();
        assert!(
            e.contains("the copy's crc32 BBBB differs from the checksum the source stores (AAAA)"),
            "{e}"
        );
    }
}
