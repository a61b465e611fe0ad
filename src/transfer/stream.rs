//! `stream`: GET piped into a PUT (or a multipart upload above `multipart_threshold`), across
//! any endpoints and credentials. Nothing touches the disk; memory is bounded by part size times
//! parts in flight, under the process-wide buffer budget.

use super::error::{classify, Op, TransferError};
use super::headers::Headers;
use super::source::{get_source, read_get};
use super::upload::{check_put_etag, part_size_for, put_object, upload_part, Multipart, PartUploads};
use super::verify::{Digests, Expect, HashingBody};
use super::{Copied, Transferer};
use crate::plan::CopyJob;
use crate::s3::normalize_etag;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use bytes::BytesMut;

pub async fn copy(t: &Transferer, job: &CopyJob, sha256: Option<&str>) -> Result<Copied, TransferError> {
    let get = get_source(t, job).await?;
    let (headers, expect) = read_get(t, job, &get, Expect::for_job(job, sha256, t.wants_sidecar(&job.source.key))).await?;
    if job.source.size > t.spec.transfer.multipart_threshold {
        return copy_multipart(t, job, get, &headers, expect).await;
    }
    let (body, verdict) = HashingBody::new(get.body.into_inner(), expect.clone());
    let req = headers.on_put(put_object(t, job)).body(ByteStream::from_body_1_x(body));
    // The body is a live stream: hashing it for the signature would mean buffering it all.
    let put = req.customize().disable_payload_signing().send().await;
    let verdict = verdict.lock().unwrap().take();
    let (out, v) = match (put, verdict) {
        (_, Some(Err(verify_error))) => return Err(verify_error),
        (Err(e), _) => return Err(classify(Op::PutObject, e)),
        (Ok(out), Some(Ok(v))) => (out, v),
        // An empty body may never be polled (Content-Length 0): check what nothing hashes to.
        (Ok(out), None) if job.source.size == 0 => (out, Digests::new(&expect).finish(&expect)?),
        (Ok(_), None) => return Err(TransferError::verify("the PUT completed before the whole source body was read")),
    };
    let dest_etag = out.e_tag().map(normalize_etag);
    check_put_etag(dest_etag.as_deref(), v.md5.as_deref())?;
    Ok(Copied::new(job, dest_etag, v))
}

/// Reads the GET body into parts and uploads `parts_in_flight` of them at once; verifies the
/// whole before completing, so a short or corrupt read never becomes an object.
async fn copy_multipart(
    t: &Transferer,
    job: &CopyJob,
    get: GetObjectOutput,
    headers: &Headers,
    expect: Expect,
) -> Result<Copied, TransferError> {
    let part = part_size_for(job.source.size, t.spec.transfer.part_size) as usize;
    let permits = ((part >> 20).max(1) as u32).min(t.buffer_mib);
    let upload = Multipart::create(t, &job.dest_key, headers).await?;
    let work = async {
        let mut digests = Digests::new(&expect);
        let mut body = get.body;
        let mut uploads = PartUploads::new(t.spec.transfer.parts_in_flight, &upload);
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
                    Some(Err(e)) => return Err(TransferError::body(Op::GetObject, e)),
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
            let sum = upload.algorithm().and_then(|a| a.of(&buf));
            let req = upload_part(t, job, &upload, number, buf.len() as u64, sum).body(ByteStream::from(buf.freeze()));
            uploads.send(number, req, permit).await?;
            if body_done && carry.is_empty() {
                break;
            }
        }
        let done = uploads.finish().await?;
        Ok((done, digests.finish(&expect)?))
    };
    let (done, v) = upload.finish_or_abort(&t.hard_stop, work).await?;
    Ok(Copied::new(job, done.etag, v))
}
