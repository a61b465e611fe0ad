//! `staged`: download to a file under `{state_dir}/staging/{spec}/`, verify, upload, remove.
//! The traditional path, for when neither server-side copy nor streaming can be used; the
//! upload is retryable by the SDK because the body is a file.

use super::error::{classify, TransferError};
use super::stream::{body_error, check_put_etag, get_source, joined};
use super::upload::{completed, Multipart};
use super::verify::{Digests, Expect};
use super::{part_size_for, parts, Outcome, Transferer};
use crate::plan::CopyJob;
use crate::s3::normalize_etag;
use crate::spec::Mode;
use aws_sdk_s3::primitives::{ByteStream, Length};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

/// Removes the staging file however the copy ends (success, error, cancellation).
struct StagingFile(PathBuf);

impl Drop for StagingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn copy(t: &Transferer, job: &CopyJob, sha256: Option<&str>) -> Result<Outcome, TransferError> {
    let expect = Expect::for_job(job, sha256);
    let file = StagingFile(t.staging_file());
    let (level, md5) = download(t, job, &file.0, &expect).await?;
    let dest_etag = if job.source.size > t.spec.transfer.multipart_threshold {
        upload_multipart(t, job, &file.0).await?
    } else {
        let body = ByteStream::from_path(&file.0)
            .await
            .map_err(|e| TransferError::fatal("staging", e.to_string()))?;
        let out = t
            .dst
            .put_object()
            .bucket(&t.spec.destination.bucket)
            .key(&job.dest_key)
            .content_length(job.source.size as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| classify("PutObject", e))?;
        let etag = out.e_tag().map(normalize_etag);
        check_put_etag(etag.as_deref(), md5.as_deref())?;
        etag
    };
    Ok(Outcome {
        mode: Mode::Staged,
        etag: job.source.etag.clone().or(md5).or_else(|| dest_etag.clone()),
        dest_etag,
        verified: level,
    })
}

async fn download(t: &Transferer, job: &CopyJob, path: &Path, expect: &Expect) -> Result<(&'static str, Option<String>), TransferError> {
    let get = get_source(t, job).await?;
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|e| TransferError::io("staging", e))?;
    let mut digests = Digests::new(expect);
    let mut body = get.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| body_error("GetObject", e))?;
        digests.update(&chunk);
        out.write_all(&chunk).await.map_err(|e| TransferError::io("staging", e))?;
    }
    out.flush().await.map_err(|e| TransferError::io("staging", e))?;
    digests.finish(expect)
}

async fn upload_multipart(t: &Transferer, job: &CopyJob, path: &Path) -> Result<Option<String>, TransferError> {
    let spec = &t.spec;
    let part = part_size_for(job.source.size, spec.transfer.part_size);
    let upload = Multipart::create(t, &job.dest_key).await?;
    let work = async {
        let mut inflight = JoinSet::new();
        let mut done = Vec::new();
        for (n, offset, len) in parts(job.source.size, part) {
            while inflight.len() >= spec.transfer.parts_in_flight {
                done.push(joined(inflight.join_next().await.expect("not empty"))?);
            }
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| TransferError::fatal("staging", e.to_string()))?;
            let req = t
                .dst
                .upload_part()
                .bucket(&spec.destination.bucket)
                .key(&job.dest_key)
                .upload_id(&upload.upload_id)
                .part_number(n)
                .content_length(len as i64)
                .body(body);
            inflight.spawn(async move {
                req.send()
                    .await
                    .map_err(|e| classify("UploadPart", e))
                    .map(|o| completed(n, o.e_tag()))
            });
        }
        while let Some(r) = inflight.join_next().await {
            done.push(joined(r)?);
        }
        Ok((done, ()))
    };
    let (etag, ()) = upload.finish_or_abort(&t.hard_stop, work).await?;
    Ok(etag)
}
