//! `stream`: GET piped into a PUT (or a multipart upload above `multipart_threshold`), across
//! any endpoints and credentials. Nothing touches the disk; memory is bounded by part size times
//! parts in flight, under the process-wide buffer budget.

use super::error::{classify, ErrorKind, TransferError};
use super::upload::{completed, Multipart};
use super::verify::{Digests, Expect, HashingBody};
use super::{part_size_for, Outcome, Transferer};
use crate::plan::CopyJob;
use crate::s3::normalize_etag;
use crate::spec::Mode;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use bytes::BytesMut;
use tokio::task::JoinSet;

/// GETs the listed version of the source object.
pub(super) async fn get_source(t: &Transferer, job: &CopyJob) -> Result<GetObjectOutput, TransferError> {
    let mut req = t.src.get_object().bucket(&t.spec.source.bucket).key(&job.source.key);
    if let Some(e) = &job.source.etag {
        req = req.if_match(format!("\"{e}\""));
    }
    let out = req.send().await.map_err(|e| classify("GetObject", e))?;
    let len = out.content_length().unwrap_or(-1);
    if len != job.source.size as i64 {
        return Err(TransferError::fatal(
            "GetObject",
            format!(
                "the object is {len} bytes now, {} when listed; it changed and will be copied next run",
                job.source.size
            ),
        ));
    }
    Ok(out)
}

pub(super) fn body_error(op: &'static str, e: impl std::fmt::Display) -> TransferError {
    TransferError::new(ErrorKind::Retryable, op, format!("reading the source body: {e}"))
}

/// Checks a single-part PUT's ETag against the MD5 of what was sent.
pub(super) fn check_put_etag(dest_etag: Option<&str>, md5: Option<&str>) -> Result<(), TransferError> {
    let Some(md5) = md5 else { return Ok(()) };
    match dest_etag {
        Some(e) if e.len() == 32 && !e.eq_ignore_ascii_case(md5) => Err(TransferError::verify(format!(
            "destination ETag {e} differs from the MD5 of the bytes sent ({md5})"
        ))),
        _ => Ok(()),
    }
}

pub async fn copy(t: &Transferer, job: &CopyJob, sha256: Option<&str>) -> Result<Outcome, TransferError> {
    let expect = Expect::for_job(job, sha256);
    let get = get_source(t, job).await?;
    if job.source.size > t.spec.transfer.multipart_threshold {
        return copy_multipart(t, job, get, expect).await;
    }
    let (body, verdict) = HashingBody::new(get.body.into_inner(), expect);
    let mut req = t
        .dst
        .put_object()
        .bucket(&t.spec.destination.bucket)
        .key(&job.dest_key)
        .content_length(job.source.size as i64)
        .body(ByteStream::from_body_1_x(body));
    if let Some(ct) = get.content_type {
        req = req.content_type(ct);
    }
    // The body is a live stream: hashing it for the signature would mean buffering it all.
    let put = req.customize().disable_payload_signing().send().await;
    let verdict = verdict.lock().unwrap().take();
    let (out, (level, md5)) = match (put, verdict) {
        (_, Some(Err(verify_error))) => return Err(verify_error),
        (Err(e), _) => return Err(classify("PutObject", e)),
        (Ok(out), Some(Ok(v))) => (out, v),
        (Ok(_), None) => return Err(TransferError::verify("the PUT completed before the whole source body was read")),
    };
    let dest_etag = out.e_tag().map(normalize_etag);
    check_put_etag(dest_etag.as_deref(), md5.as_deref())?;
    Ok(Outcome {
        mode: Mode::Stream,
        etag: job.source.etag.clone().or(md5).or_else(|| dest_etag.clone()),
        dest_etag,
        verified: level,
    })
}

/// Reads the GET body into parts and uploads `parts_in_flight` of them at once; verifies the
/// whole before completing, so a short or corrupt read never becomes an object.
async fn copy_multipart(t: &Transferer, job: &CopyJob, get: GetObjectOutput, expect: Expect) -> Result<Outcome, TransferError> {
    let spec = &t.spec;
    let part = part_size_for(job.source.size, spec.transfer.part_size) as usize;
    let permits = ((part >> 20).max(1) as u32).min(t.buffer_mib);
    let upload = Multipart::create(t, &job.dest_key).await?;
    let work = async {
        let mut digests = Digests::new(&expect);
        let mut body = get.body;
        let mut inflight = JoinSet::new();
        let mut done = Vec::new();
        let mut carry = BytesMut::new();
        let mut number = 0;
        let mut body_done = false;
        loop {
            let permit = t
                .buffer
                .clone()
                .acquire_many_owned(permits)
                .await
                .expect("the buffer semaphore is never closed");
            let mut buf = std::mem::take(&mut carry);
            buf.reserve(part.saturating_sub(buf.len()));
            while buf.len() < part && !body_done {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        digests.update(&chunk);
                        buf.extend_from_slice(&chunk);
                    }
                    Some(Err(e)) => return Err(body_error("GetObject", e)),
                    None => body_done = true,
                }
            }
            if buf.len() > part {
                carry = buf.split_off(part);
            }
            if buf.is_empty() && number > 0 {
                break;
            }
            number += 1;
            while inflight.len() >= spec.transfer.parts_in_flight {
                done.push(joined(inflight.join_next().await.expect("not empty"))?);
            }
            let req = t
                .dst
                .upload_part()
                .bucket(&spec.destination.bucket)
                .key(&job.dest_key)
                .upload_id(&upload.upload_id)
                .part_number(number)
                .content_length(buf.len() as i64)
                .body(ByteStream::from(buf.freeze()));
            inflight.spawn(async move {
                let out = req.send().await.map_err(|e| classify("UploadPart", e));
                drop(permit);
                out.map(|o| completed(number, o.e_tag()))
            });
            if body_done && carry.is_empty() {
                break;
            }
        }
        while let Some(r) = inflight.join_next().await {
            done.push(joined(r)?);
        }
        let (level, _md5) = digests.finish(&expect)?;
        Ok((done, level))
    };
    let (dest_etag, level) = upload.finish_or_abort(&t.hard_stop, work).await?;
    Ok(Outcome {
        mode: Mode::Stream,
        etag: job.source.etag.clone(),
        dest_etag,
        verified: level,
    })
}

pub(super) fn joined<T>(r: Result<Result<T, TransferError>, tokio::task::JoinError>) -> Result<T, TransferError> {
    r.map_err(|e| TransferError::fatal("UploadPart", e.to_string()))?
}
