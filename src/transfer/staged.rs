//! `staged`: download to a file under `{state_dir}/staging/{spec}/`, verify, upload, remove.
//! The traditional path, for when neither server-side copy nor streaming can be used; the
//! upload is retryable by the SDK because the body is a file.

use super::error::{classify, Op, TransferError};
use super::headers::Headers;
use super::source::{get_source, read_get};
use super::upload::{check_put_etag, part_size_for, parts, put_object, upload_part, Multipart, PartUploads};
use super::verify::{Digests, Expect, PartSums, Verdict};
use super::{Copied, Transferer};
use crate::plan::CopyJob;
use crate::s3::normalize_etag;
use aws_sdk_s3::primitives::{ByteStream, Length};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Removes the staging file however the copy ends (success, error, cancellation).
struct StagingFile(PathBuf);

impl Drop for StagingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn copy(t: &Transferer, job: &CopyJob, sha256: Option<&str>) -> Result<Copied, TransferError> {
    let expect = Expect::for_job(job, sha256, t.wants_sidecar(&job.source.key));
    let file = StagingFile(t.staging_file());
    let (handle, headers, v, sums) = download(t, job, &file.0, &expect).await?;
    // The upload reads the inode that was verified, through this process's own descriptor:
    // a file put in its place under the same name afterwards is never read.
    let verified = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let dest_etag = if job.source.size > t.spec.transfer.multipart_threshold {
        upload_multipart(t, job, &verified, &headers, sums).await?
    } else {
        let body = ByteStream::from_path(&verified)
            .await
            .map_err(|e| TransferError::fatal(Op::Staging, e.to_string()))?;
        let out = headers
            .on_put(put_object(t, job))
            .body(body)
            .send()
            .await
            .map_err(|e| classify(Op::PutObject, e))?;
        let etag = out.e_tag().map(normalize_etag);
        check_put_etag(etag.as_deref(), v.md5.as_deref())?;
        etag
    };
    Ok(Copied::new(job, dest_etag, v))
}

/// Downloads into a new private file (0600, created exclusively, never through a symlink) and
/// verifies it; returns the open file, which the upload then reads, the object's headers, and
/// for a multipart upload with a full-object checksum, each part's checksum.
async fn download(
    t: &Transferer,
    job: &CopyJob,
    path: &Path,
    expect: &Expect,
) -> Result<(tokio::fs::File, Headers, Verdict, Vec<String>), TransferError> {
    let get = get_source(t, job).await?;
    let (headers, expect) = read_get(t, job, &get, expect.clone()).await?;
    let mut sums = (headers.checksum.as_ref())
        .filter(|c| c.algo.combines_across_parts() && job.source.size > t.spec.transfer.multipart_threshold)
        .and_then(|c| PartSums::new(c.algo, part_size_for(job.source.size, t.spec.transfer.part_size)));
    let expect = &expect;
    let mut out = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .await
        .map_err(|e| TransferError::io(Op::Staging, e))?;
    let mut digests = Digests::new(expect);
    let mut body = get.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| TransferError::body(Op::GetObject, e))?;
        digests.update(&chunk);
        if let Some(s) = &mut sums {
            s.update(&chunk);
        }
        out.write_all(&chunk).await.map_err(|e| TransferError::io(Op::Staging, e))?;
    }
    out.flush().await.map_err(|e| TransferError::io(Op::Staging, e))?;
    let v = digests.finish(expect)?;
    Ok((out, headers, v, sums.map(PartSums::finish).unwrap_or_default()))
}

async fn upload_multipart(
    t: &Transferer,
    job: &CopyJob,
    path: &Path,
    headers: &Headers,
    sums: Vec<String>,
) -> Result<Option<String>, TransferError> {
    let part = part_size_for(job.source.size, t.spec.transfer.part_size);
    let upload = Multipart::create(t, &job.dest_key, headers).await?;
    let mut sums = sums.into_iter();
    let work = async {
        let mut uploads = PartUploads::new(t.spec.transfer.parts_in_flight, &upload);
        for (n, offset, len) in parts(job.source.size, part) {
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| TransferError::fatal(Op::Staging, e.to_string()))?;
            uploads
                .send(n, upload_part(t, job, &upload, n, len, sums.next()).body(body), ())
                .await?;
        }
        Ok((uploads.finish().await?, ()))
    };
    let (done, ()) = upload.finish_or_abort(&t.hard_stop, work).await?;
    Ok(done.etag)
}

/// Removes whatever a previous run left in a staging directory (a crash, a kill), and makes the
/// directory and its parent private (0700): staged object data is nobody else's to read or swap.
pub fn clean_staging(dir: &std::path::Path) -> std::io::Result<usize> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut removed = 0;
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                // A link is removed, never followed: its target stays untouched.
                if e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()) && std::fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(removed)
}
