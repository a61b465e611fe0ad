//! A multipart upload at the destination, shared by the three modes: created, completed with
//! its parts in order, or aborted on any failure so no incomplete upload is left to bill.

use super::error::{classify, TransferError};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

pub struct Multipart<'a> {
    pub client: &'a Client,
    pub bucket: &'a str,
    pub key: &'a str,
    pub upload_id: String,
}

impl<'a> Multipart<'a> {
    pub async fn create(
        client: &'a Client,
        bucket: &'a str,
        key: &'a str,
    ) -> Result<Multipart<'a>, TransferError> {
        let out = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("CreateMultipartUpload", e))?;
        let upload_id = out
            .upload_id()
            .ok_or_else(|| {
                TransferError::fatal("CreateMultipartUpload", "the server returned no upload id")
            })?
            .to_string();
        Ok(Multipart {
            client,
            bucket,
            key,
            upload_id,
        })
    }

    /// Completes with the given parts (any order) and returns the destination ETag.
    pub async fn complete(
        &self,
        mut parts: Vec<CompletedPart>,
    ) -> Result<Option<String>, TransferError> {
        parts.sort_by_key(|p| p.part_number());
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify("CompleteMultipartUpload", e))?;
        Ok(out.e_tag().map(crate::s3::normalize_etag))
    }

    /// Best effort: a failed abort is logged, and the error that caused it is what the caller reports.
    pub async fn abort(&self) {
        let r = self
            .client
            .abort_multipart_upload()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(key = %self.key, error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "could not abort multipart upload");
        }
    }

    /// Runs `work` (which uploads the parts and may return a verdict beside them), then
    /// completes, or aborts if it fails or `stop` fires. Returns the destination ETag and the verdict.
    pub async fn finish_or_abort<F, T>(
        &self,
        stop: &tokio_util::sync::CancellationToken,
        work: F,
    ) -> Result<(Option<String>, T), TransferError>
    where
        F: std::future::Future<Output = Result<(Vec<CompletedPart>, T), TransferError>>,
    {
        let result = tokio::select! {
            r = work => r,
            () = stop.cancelled() => Err(TransferError::fatal("multipart", "stopped by shutdown before the upload finished")),
        };
        let result = match result {
            Ok((parts, verdict)) => self.complete(parts).await.map(|etag| (etag, verdict)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.abort().await;
        }
        result
    }
}

pub fn completed(part_number: i32, etag: Option<&str>) -> CompletedPart {
    CompletedPart::builder()
        .part_number(part_number)
        .set_e_tag(etag.map(str::to_string))
        .build()
}
