//! Checksums as S3 and the manifest speak of them: an algorithm and a value, written
//! `ALGO:VALUE` in the manifest's `checksum` column (`sha256:HEX`, `crc64nvme:BASE64`,
//! `md5:HEX`). S3 stores a full-object checksum of one of five algorithms and spells its
//! setters and getters alike on every request, part and answer: the macros here dispatch on
//! the algorithm for any of them, with no arm that lets an unknown one through.

use std::fmt;
use std::str::FromStr;

/// The algorithm of a checksum: the five S3 stores, and MD5 (the content MD5 a single-part
/// ETag is, and the manifest records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgo {
    Crc64Nvme,
    Crc32C,
    Crc32,
    Sha256,
    Sha1,
    Md5,
}

impl ChecksumAlgo {
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgo::Crc64Nvme => "crc64nvme",
            ChecksumAlgo::Crc32C => "crc32c",
            ChecksumAlgo::Crc32 => "crc32",
            ChecksumAlgo::Sha256 => "sha256",
            ChecksumAlgo::Sha1 => "sha1",
            ChecksumAlgo::Md5 => "md5",
        }
    }

    /// Whether a multipart upload can carry it as a full-object checksum: the CRCs combine
    /// across parts; SHA-1 and SHA-256 are only ever composite there, and MD5 is never stored.
    pub fn combines_across_parts(self) -> bool {
        matches!(self, ChecksumAlgo::Crc64Nvme | ChecksumAlgo::Crc32 | ChecksumAlgo::Crc32C)
    }

    /// The SDK's name of it, for `checksum_algorithm` (MD5 is none of S3's).
    pub fn sdk(self) -> Option<aws_sdk_s3::types::ChecksumAlgorithm> {
        use aws_sdk_s3::types::ChecksumAlgorithm as A;
        Some(match self {
            ChecksumAlgo::Crc64Nvme => A::Crc64Nvme,
            ChecksumAlgo::Crc32C => A::Crc32C,
            ChecksumAlgo::Crc32 => A::Crc32,
            ChecksumAlgo::Sha256 => A::Sha256,
            ChecksumAlgo::Sha1 => A::Sha1,
            ChecksumAlgo::Md5 => return None,
        })
    }

    /// A running checksum of this algorithm, whose `finalize` is the value S3 stores (base64
    /// of the digest). MD5 is computed apart (as hex, like an ETag): none here.
    pub fn hasher(self) -> Option<Box<dyn aws_smithy_checksums::http::HttpChecksum>> {
        use aws_smithy_checksums::ChecksumAlgorithm as A;
        let algo = match self {
            ChecksumAlgo::Crc64Nvme => A::Crc64Nvme,
            ChecksumAlgo::Crc32C => A::Crc32c,
            ChecksumAlgo::Crc32 => A::Crc32,
            ChecksumAlgo::Sha256 => A::Sha256,
            ChecksumAlgo::Sha1 => A::Sha1,
            ChecksumAlgo::Md5 => return None,
        };
        Some(algo.into_impl())
    }

    /// The base64 checksum S3 would store for `bytes`.
    pub fn of(self, bytes: &[u8]) -> Option<String> {
        let mut c = self.hasher()?;
        c.update(bytes);
        Some(aws_smithy_types::base64::encode(c.finalize()))
    }
}

impl fmt::Display for ChecksumAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChecksumAlgo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            ChecksumAlgo::Crc64Nvme,
            ChecksumAlgo::Crc32C,
            ChecksumAlgo::Crc32,
            ChecksumAlgo::Sha256,
            ChecksumAlgo::Sha1,
            ChecksumAlgo::Md5,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown checksum algorithm {s:?}"))
    }
}

/// One checksum: its algorithm and its value as S3 or the manifest writes it (base64 for the
/// stored ones, hex for MD5 and a sidecar's SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algo: ChecksumAlgo,
    pub value: String,
}

impl Checksum {
    pub fn new(algo: ChecksumAlgo, value: impl Into<String>) -> Self {
        Checksum { algo, value: value.into() }
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.value)
    }
}

impl FromStr for Checksum {
    type Err = String;
    /// Reads the manifest's `ALGO:VALUE`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (algo, value) = s.split_once(':').ok_or_else(|| format!("{s:?} is not ALGO:VALUE"))?;
        Ok(Checksum::new(algo.parse()?, value))
    }
}

/// The full-object checksum an answer in checksum mode reports (GetObject, HeadObject,
/// CompleteMultipartUpload, ...) as a [`Checksum`]. Composite (per-part) checksums are not
/// checksums of the bytes as a whole, and are never compared with one.
macro_rules! stored_checksum {
    ($o:expr) => {{
        use $crate::s3::checksum::{Checksum, ChecksumAlgo};
        let composite = $o.checksum_type().is_some_and(|t| *t == aws_sdk_s3::types::ChecksumType::Composite);
        [
            (ChecksumAlgo::Crc64Nvme, $o.checksum_crc64_nvme()),
            (ChecksumAlgo::Crc32C, $o.checksum_crc32_c()),
            (ChecksumAlgo::Crc32, $o.checksum_crc32()),
            (ChecksumAlgo::Sha256, $o.checksum_sha256()),
            (ChecksumAlgo::Sha1, $o.checksum_sha1()),
        ]
        .into_iter()
        .find_map(|(a, v)| Some(Checksum::new(a, v?)))
        .filter(|c| !composite && !c.value.contains('-'))
    }};
}
pub(crate) use stored_checksum;

/// Sets a checksum value of algorithm `$algo` on any request or part builder. MD5 is never a
/// stored checksum (a request carries it as Content-MD5): the builder goes unchanged.
macro_rules! set_checksum {
    ($req:expr, $algo:expr, $v:expr) => {{
        use $crate::s3::checksum::ChecksumAlgo;
        let v: String = $v;
        match $algo {
            ChecksumAlgo::Crc64Nvme => $req.checksum_crc64_nvme(v),
            ChecksumAlgo::Crc32C => $req.checksum_crc32_c(v),
            ChecksumAlgo::Crc32 => $req.checksum_crc32(v),
            ChecksumAlgo::Sha256 => $req.checksum_sha256(v),
            ChecksumAlgo::Sha1 => $req.checksum_sha1(v),
            ChecksumAlgo::Md5 => $req,
        }
    }};
}
pub(crate) use set_checksum;

/// Reads the checksum of algorithm `$algo` from any answer (MD5: none, S3 stores no MD5).
macro_rules! checksum_of {
    ($o:expr, $algo:expr) => {{
        use $crate::s3::checksum::ChecksumAlgo;
        match $algo {
            ChecksumAlgo::Crc64Nvme => $o.checksum_crc64_nvme(),
            ChecksumAlgo::Crc32C => $o.checksum_crc32_c(),
            ChecksumAlgo::Crc32 => $o.checksum_crc32(),
            ChecksumAlgo::Sha256 => $o.checksum_sha256(),
            ChecksumAlgo::Sha1 => $o.checksum_sha1(),
            ChecksumAlgo::Md5 => None,
        }
    }};
}
pub(crate) use checksum_of;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_column_round_trips() {
        for s in [
            "sha256:ab12",
            "crc64nvme:AAAA+/==",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "crc32c:x:y",
        ] {
            assert_eq!(s.parse::<Checksum>().unwrap().to_string(), s);
        }
        assert_eq!("CRC32C:v".parse::<Checksum>().unwrap(), Checksum::new(ChecksumAlgo::Crc32C, "v"));
        assert!("blake3:v".parse::<Checksum>().unwrap_err().contains("unknown checksum algorithm"));
        assert!("nocolon".parse::<Checksum>().is_err());
    }

    #[test]
    fn every_stored_algorithm_has_a_hasher_and_an_sdk_name_and_md5_neither() {
        for a in [
            ChecksumAlgo::Crc64Nvme,
            ChecksumAlgo::Crc32C,
            ChecksumAlgo::Crc32,
            ChecksumAlgo::Sha256,
            ChecksumAlgo::Sha1,
        ] {
            assert!(a.hasher().is_some() && a.sdk().is_some(), "{a}");
            assert_eq!(a.sdk().unwrap().as_str().to_ascii_lowercase(), a.as_str(), "{a}");
        }
        assert!(ChecksumAlgo::Md5.hasher().is_none() && ChecksumAlgo::Md5.sdk().is_none());
        // CRC32 of "123456789", the check value of the algorithm.
        assert_eq!(ChecksumAlgo::Crc32.of(b"123456789").as_deref(), Some("y/Q5Jg=="));
    }
}
