//! Checksum sidecars (`KEY.CHECKSUM` holding the SHA-256 of `KEY`): the one a copy checks its
//! bytes against, and the SHA-256 of an object already at the destination, for a sidecar that
//! came after it.

use super::error::{self, Code, Op, TransferError};
use super::{verify, Transferer};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

/// The object's sidecar checksum, fetched at most once per object and only by a mode that can use it.
#[derive(Default)]
pub(crate) struct Sidecar {
    sha256: tokio::sync::OnceCell<Option<String>>,
    pub(super) bytes: AtomicU64,
}

impl Sidecar {
    pub(crate) async fn get(&self, t: &Transferer, key: &str) -> Result<Option<&str>, TransferError> {
        let sha = self
            .sha256
            .get_or_try_init(|| async {
                let (sha, bytes) = t.sidecar_sha256(key).await?;
                self.bytes.store(bytes, Ordering::Relaxed);
                Ok::<_, TransferError>(sha)
            })
            .await?;
        Ok(sha.as_deref())
    }
}

impl Transferer {
    /// The SHA-256 from the object's checksum sidecar, when the spec names one and it exists;
    /// also returns the sidecar's size (bytes through the host).
    pub(crate) async fn sidecar_sha256(&self, key: &str) -> Result<(Option<String>, u64), TransferError> {
        let Some(sidecar) = self.spec.verify.sidecar_of(key) else {
            return Ok((None, 0));
        };
        let got = self.src.get_object().bucket(&self.spec.source.bucket).key(&sidecar).send().await;
        let out = match got.map_err(|e| error::classify(Op::GetObject, e)) {
            Ok(o) => o,
            Err(e) if e.code.as_ref().is_some_and(Code::is_not_found) => return Ok((None, 0)),
            Err(e) => return Err(e),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| TransferError::body(Op::GetObject, e))?
            .into_bytes();
        match verify::parse_sidecar(&String::from_utf8_lossy(&bytes)) {
            Some(h) => Ok((Some(h), bytes.len() as u64)),
            None => Err(TransferError::verify(format!("checksum sidecar {sidecar} holds no sha256"))),
        }
    }

    /// The SHA-256 (hex) of an object at the destination, and the bytes read for it: the
    /// full-object SHA-256 the destination stores, when it shows one (no byte read), else the
    /// object's bytes hashed on their way through (one GET, nothing written).
    pub(crate) async fn dest_sha256(&self, dest_key: &str) -> Result<(String, u64), TransferError> {
        let bucket = &self.spec.destination.bucket;
        let head = self
            .dst
            .head_object()
            .bucket(bucket)
            .key(dest_key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| error::classify(Op::HeadObject, e))?;
        let stored = head
            .checksum_sha256()
            .filter(|v| !v.contains('-'))
            .and_then(|v| aws_smithy_types::base64::decode(v).ok());
        if let Some(sha) = stored {
            return Ok((hex::encode(sha), 0));
        }
        let mut body = self
            .dst
            .get_object()
            .bucket(bucket)
            .key(dest_key)
            .send()
            .await
            .map_err(|e| error::classify(Op::GetObject, e))?
            .body;
        let (mut sha, mut read) = (Sha256::new(), 0u64);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| TransferError::body(Op::GetObject, e))?;
            sha.update(&chunk);
            read += chunk.len() as u64;
        }
        Ok((hex::encode(sha.finalize()), read))
    }
}
