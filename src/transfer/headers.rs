//! What travels with an object besides its bytes: the content headers, the user metadata and
//! the website redirect. Read from the answer a copy already has (GetObject in stream and staged,
//! one HeadObject where a multipart server-side copy needs them) and set on PutObject and
//! CreateMultipartUpload, so that every path gives the destination what the source has.
//! User metadata values pass unchanged (S3 returns non-ASCII ones RFC 2047-encoded).

use crate::s3::checksum::Checksum;
use crate::spec::WriteOptions;
use aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder;
use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_smithy_types::date_time::Format;
use std::collections::HashMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    /// As the source sent it (an HTTP date).
    pub expires: Option<String>,
    pub metadata: Option<HashMap<String, String>>,
    pub website_redirect_location: Option<String>,
    /// The source's tags as a URL query (`k=v&k2=v2`), when tags are preserved.
    pub tagging: Option<String>,
    /// The full-object checksum the source stores, from an answer in checksum mode. A
    /// single-part PUT sends it, so the destination checks and stores it.
    pub checksum: Option<Checksum>,
}

/// Both answers carry the same accessors; one macro reads either.
macro_rules! read_headers {
    ($o:expr) => {
        Headers {
            content_type: $o.content_type().map(str::to_string),
            content_encoding: $o.content_encoding().map(str::to_string),
            content_disposition: $o.content_disposition().map(str::to_string),
            content_language: $o.content_language().map(str::to_string),
            cache_control: $o.cache_control().map(str::to_string),
            expires: $o.expires_string().map(str::to_string),
            metadata: $o.metadata().filter(|m| !m.is_empty()).cloned(),
            website_redirect_location: $o.website_redirect_location().map(str::to_string),
            tagging: None,
            checksum: crate::s3::checksum::stored_checksum!($o),
        }
    };
}

/// Both requests take the same setters; one macro writes either.
macro_rules! write_headers {
    ($h:expr, $req:expr) => {{
        let h = $h;
        $req.set_content_type(h.content_type.clone())
            .set_content_encoding(h.content_encoding.clone())
            .set_content_disposition(h.content_disposition.clone())
            .set_content_language(h.content_language.clone())
            .set_cache_control(h.cache_control.clone())
            .set_expires(h.expires_time())
            .set_metadata(h.metadata.clone())
            .set_website_redirect_location(h.website_redirect_location.clone())
            .set_tagging(h.tagging.clone())
    }};
}

impl Headers {
    pub fn of_get(o: &GetObjectOutput) -> Headers {
        read_headers!(o)
    }

    pub fn of_head(o: &HeadObjectOutput) -> Headers {
        read_headers!(o)
    }

    pub fn on_put(&self, req: PutObjectFluentBuilder) -> PutObjectFluentBuilder {
        put_checksum(self.checksum.as_ref(), write_headers!(self, req))
    }

    pub fn on_create(&self, req: CreateMultipartUploadFluentBuilder) -> CreateMultipartUploadFluentBuilder {
        write_headers!(self, req)
    }

    /// `Expires` as a time; a value that is no HTTP date (S3 keeps whatever was sent) is dropped.
    fn expires_time(&self) -> Option<aws_smithy_types::DateTime> {
        let e = self.expires.as_deref()?;
        aws_smithy_types::DateTime::from_str(e, Format::HttpDate).ok()
    }
}

/// The three requests that create an object take the same write options.
macro_rules! write_options {
    ($w:expr, $req:expr) => {{
        use aws_sdk_s3::types::{ObjectCannedAcl, ServerSideEncryption, StorageClass};
        let w = $w;
        $req.set_storage_class(w.storage_class.as_deref().map(StorageClass::from))
            .set_server_side_encryption(w.sse.as_deref().map(ServerSideEncryption::from))
            .set_ssekms_key_id(w.sse_kms_key_id.clone())
            .set_acl(w.acl.as_deref().map(ObjectCannedAcl::from))
    }};
}

/// Applies the destination's write options (`[destination]` storage_class, sse, acl).
pub fn put_with(w: &WriteOptions, req: PutObjectFluentBuilder) -> PutObjectFluentBuilder {
    write_options!(w, req)
}

pub fn create_with(w: &WriteOptions, req: CreateMultipartUploadFluentBuilder) -> CreateMultipartUploadFluentBuilder {
    write_options!(w, req)
}

pub fn copy_with(w: &WriteOptions, req: CopyObjectFluentBuilder) -> CopyObjectFluentBuilder {
    write_options!(w, req)
}

/// A tag set as the `x-amz-tagging` query form (`k=v&k2=v2`, each part percent-encoded).
pub fn tagging_query(tags: &[aws_sdk_s3::types::Tag]) -> Option<String> {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const PART: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    let enc = |s: &str| utf8_percent_encode(s, PART).to_string();
    let q: Vec<String> = tags.iter().map(|t| format!("{}={}", enc(t.key()), enc(t.value()))).collect();
    (!q.is_empty()).then(|| q.join("&"))
}

/// Sends the source's full-object checksum with a single-part PUT: the destination checks the
/// bytes against it on arrival and stores it, so `manifest verify --checksums` can later compare
/// it without reading a byte.
fn put_checksum(stored: Option<&Checksum>, req: PutObjectFluentBuilder) -> PutObjectFluentBuilder {
    let Some(c) = stored else { return req };
    // The algorithm too: servers store a checksum only when told which algorithm made it (the
    // SDK computes nothing when the value is given).
    let req = req.set_checksum_algorithm(c.algo.sdk());
    crate::s3::checksum::set_checksum!(req, c.algo, c.value.clone())
}
