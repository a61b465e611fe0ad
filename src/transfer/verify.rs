//! Verification while bytes pass through the host: MD5 (to check against single-part ETags),
//! the full-object checksum the source stores (CRC64NVME, CRC32, CRC32C, SHA-1 or SHA-256, as its
//! GetObject says in checksum mode) and, when a checksum sidecar exists, SHA-256. A body wrapper hashes a stream on its way into a PUT
//! and turns a short read or a mismatch into a body error, so the PUT never completes with bad data.

use super::error::TransferError;
use crate::manifest::Verified;
use crate::s3::checksum::{Checksum, ChecksumAlgo};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use md5::{Digest, Md5};
use sha2::Sha256;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// What the bytes must match.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub size: u64,
    /// The source ETag, when it is a plain MD5 (single-part upload).
    pub md5_hex: Option<String>,
    /// From the checksum sidecar.
    pub sha256_hex: Option<String>,
    /// The full-object checksum the source stores.
    pub stored: Option<Checksum>,
    /// Compute the SHA-256 even with no sidecar to check it against: one may come later.
    pub keep_sha256: bool,
}

/// What verification proved of one object's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub level: Verified,
    /// The content MD5 in hex, when it was computed.
    pub md5: Option<String>,
    /// The strongest checksum that verified the bytes (the manifest records it as
    /// `sha256:HEX`, `crc64nvme:BASE64`, `md5:HEX`); none when only the size was checked.
    pub checksum: Option<Checksum>,
    /// The bytes' SHA-256 in hex, when it was computed.
    pub sha256: Option<String>,
}

impl Expect {
    /// What a copy job's bytes must match, given its sidecar checksum if any; `keep_sha256`
    /// when the spec has sidecars (one may come after the copy).
    pub fn for_job(job: &crate::plan::CopyJob, sha256: Option<&str>, keep_sha256: bool) -> Self {
        Expect {
            keep_sha256,
            ..Expect::new(job.source.size, job.source.etag.as_deref(), sha256.map(str::to_string))
        }
    }

    pub fn new(size: u64, source_etag: Option<&str>, sha256_hex: Option<String>) -> Self {
        let md5_hex = source_etag.filter(|e| crate::s3::is_md5_etag(e)).map(str::to_ascii_lowercase);
        Expect {
            size,
            md5_hex,
            sha256_hex,
            stored: None,
            keep_sha256: false,
        }
    }
}

/// Running digests of one object.
pub struct Digests {
    /// Only when there is a source MD5 to check against: hashing costs a core on big streams.
    md5: Option<Md5>,
    sha256: Option<Sha256>,
    /// The source's stored checksum's algorithm, computed over the bytes.
    stored: Option<Box<dyn aws_smithy_checksums::http::HttpChecksum>>,
    pub len: u64,
}

impl Digests {
    pub fn new(expect: &Expect) -> Self {
        Digests {
            md5: expect.md5_hex.as_ref().map(|_| Md5::new()),
            sha256: (expect.sha256_hex.is_some() || expect.keep_sha256).then(Sha256::new),
            stored: expect.stored.as_ref().and_then(|c| c.algo.hasher()),
            len: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        if let Some(m) = &mut self.md5 {
            m.update(chunk);
        }
        if let Some(s) = &mut self.sha256 {
            s.update(chunk);
        }
        if let Some(c) = &mut self.stored {
            c.update(chunk);
        }
        self.len += chunk.len() as u64;
    }

    /// Checks the finished digests; returns the strongest check passed.
    pub fn finish(self, expect: &Expect) -> Result<Verdict, TransferError> {
        if self.len != expect.size {
            return Err(TransferError::verify(format!(
                "read {} bytes, the listing said {}",
                self.len, expect.size
            )));
        }
        let md5 = self.md5.map(|m| hex::encode(m.finalize()));
        let sha256 = self.sha256.map(|s| hex::encode(s.finalize()));
        let mut v = Verdict {
            level: Verified::Size,
            md5: md5.clone(),
            checksum: None,
            sha256: sha256.clone(),
        };
        if let (Some(want), Some(md5)) = (&expect.md5_hex, &md5) {
            if want != md5 {
                return Err(TransferError::verify(format!(
                    "content MD5 {md5} differs from the source ETag {want}"
                )));
            }
            v.level = Verified::Etag;
            v.checksum = Some(Checksum::new(ChecksumAlgo::Md5, md5.as_str()));
        }
        if let (Some(want), Some(c)) = (&expect.stored, self.stored) {
            let got = aws_smithy_types::base64::encode(c.finalize());
            if got != want.value {
                return Err(TransferError::verify(format!(
                    "{} {got} differs from the checksum the source stores ({})",
                    want.algo, want.value
                )));
            }
            v.level = Verified::Checksum;
            v.checksum = Some(Checksum::new(want.algo, got));
        }
        if let (Some(want), Some(got)) = (&expect.sha256_hex, sha256) {
            if !got.eq_ignore_ascii_case(want) {
                return Err(TransferError::verify(format!(
                    "sha256 {got} differs from the checksum sidecar's {want}"
                )));
            }
            v.level = Verified::Sha256;
            v.checksum = Some(Checksum::new(ChecksumAlgo::Sha256, got.to_ascii_lowercase()));
        }
        Ok(v)
    }
}

/// One checksum per part, of the algorithm the upload was created with, computed as the bytes
/// pass (parts are `part` bytes, the last one shorter), for UploadPart and CompletedPart.
pub struct PartSums {
    algo: ChecksumAlgo,
    part: u64,
    current: Box<dyn aws_smithy_checksums::http::HttpChecksum>,
    filled: u64,
    done: Vec<String>,
}

impl PartSums {
    pub fn new(algo: ChecksumAlgo, part: u64) -> Option<Self> {
        Some(PartSums {
            algo,
            part,
            current: algo.hasher()?,
            filled: 0,
            done: Vec::new(),
        })
    }

    pub fn update(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let room = (self.part - self.filled) as usize;
            let (now, rest) = chunk.split_at(room.min(chunk.len()));
            self.current.update(now);
            self.filled += now.len() as u64;
            chunk = rest;
            if self.filled == self.part {
                self.roll();
            }
        }
    }

    fn roll(&mut self) {
        let next = self.algo.hasher().expect("an algorithm with a hasher (checked when made)");
        let c = std::mem::replace(&mut self.current, next);
        self.done.push(aws_smithy_types::base64::encode(c.finalize()));
        self.filled = 0;
    }

    /// The checksums of every part, in order.
    pub fn finish(mut self) -> Vec<String> {
        if self.filled > 0 {
            self.roll();
        }
        self.done
    }
}

/// The result a [`HashingBody`] leaves behind once it has been read to the end.
pub type BodyVerdict = Arc<Mutex<Option<Result<Verdict, TransferError>>>>;

/// Wraps a GET body on its way into a PUT: hashes it, counts it, and ends in an error (so the
/// PUT is abandoned) if it comes up short or fails verification.
pub struct HashingBody {
    inner: aws_smithy_types::body::SdkBody,
    digests: Option<Digests>,
    expect: Expect,
    verdict: BodyVerdict,
}

impl HashingBody {
    pub fn new(inner: aws_smithy_types::body::SdkBody, expect: Expect) -> (Self, BodyVerdict) {
        let verdict = BodyVerdict::default();
        (
            HashingBody {
                inner,
                digests: Some(Digests::new(&expect)),
                expect,
                verdict: verdict.clone(),
            },
            verdict,
        )
    }
}

impl HashingBody {
    /// Finishes the digests once; returns the error message if verification failed.
    fn conclude(&mut self) -> Option<String> {
        let d = self.digests.take()?;
        let result = d.finish(&self.expect);
        let failed = result.as_ref().err().map(|e| e.to_string());
        *self.verdict.lock().unwrap() = Some(result);
        failed
    }
}

impl Body for HashingBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Some(d) = this.digests.as_mut() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                if let Some(data) = frame.data_ref() {
                    d.update(data);
                }
                // Decide when the last expected byte arrives: the HTTP client stops reading at
                // Content-Length, and on a mismatch this final chunk is withheld, so the server
                // never receives a complete body.
                if d.len >= this.expect.size {
                    if let Some(m) = this.conclude() {
                        return Poll::Ready(Some(Err(m.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => match this.conclude() {
                Some(m) => Poll::Ready(Some(Err(m.into()))),
                None => Poll::Ready(None),
            },
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.expect.size)
    }
}

/// Parses a Binance-style sidecar (`<sha256 hex>  <file name>`): the first word, if it is 64 hex digits.
pub fn parse_sidecar(text: &str) -> Option<String> {
    let word = text.split_whitespace().next()?;
    (word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit())).then(|| word.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_check_size_md5_and_sha256() {
        let data = b"hello world";
        let md5 = hex::encode(Md5::digest(data));
        let sha = hex::encode(Sha256::digest(data));
        let ok = Expect::new(11, Some(&md5), Some(sha.clone()));
        let mut d = Digests::new(&ok);
        d.update(data);
        assert_eq!(d.finish(&ok).unwrap().level, Verified::Sha256);

        let short = Expect::new(12, None, None);
        let mut d = Digests::new(&short);
        d.update(data);
        assert!(d
            .finish(&short)
            .unwrap_err()
            .to_string()
            .contains("read 11 bytes, the listing said 12"));

        let bad = Expect::new(11, None, Some("0".repeat(64)));
        let mut d = Digests::new(&bad);
        d.update(data);
        assert!(d
            .finish(&bad)
            .unwrap_err()
            .to_string()
            .contains("differs from the checksum sidecar"));

        // Multipart ETags are not MD5s: they only get the size check.
        assert_eq!(Expect::new(1, Some("abc-2"), None).md5_hex, None);
    }

    #[test]
    fn part_sums_split_at_part_boundaries_whatever_the_chunks() {
        let data: Vec<u8> = (0..25u32).map(|i| (i * 7) as u8).collect();
        let want: Vec<String> = data.chunks(10).map(|b| ChecksumAlgo::Crc32C.of(b).unwrap()).collect();
        for chunk in [1, 3, 10, 25] {
            let mut p = PartSums::new(ChecksumAlgo::Crc32C, 10).unwrap();
            data.chunks(chunk).for_each(|c| p.update(c));
            assert_eq!(p.finish(), want, "chunks of {chunk}");
        }
        assert!(
            !ChecksumAlgo::Sha256.combines_across_parts(),
            "SHA-256 is never a full-object multipart checksum"
        );
        assert!(PartSums::new(ChecksumAlgo::Md5, 10).is_none());
    }

    #[test]
    fn sidecar_format() {
        let h = "a".repeat(64);
        assert_eq!(parse_sidecar(&format!("{h}  BTCUSDT-1m-2024-01-01.zip\n")), Some(h));
        assert_eq!(parse_sidecar("not a checksum"), None);
    }
}
