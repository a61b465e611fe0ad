//! The checks of one side of a feed: bucket names, endpoints, credentials and roles, and the
//! write options of a destination.

use super::{span, Diags};
use crate::spec::raw::RawSide;
use crate::spec::{Locator, Role, Side, WriteOptions};
use std::ops::Range;
use toml::Spanned;

/// Returns the side and the span of its bucket (for overlap messages).
pub(super) fn check_side(loc: &Locator, d: &mut Diags, which: &str, raw: RawSide) -> (Side, Option<Range<usize>>) {
    let bucket_span = span(&raw.bucket);
    if let Err(m) = bucket_name_problem(raw.bucket.get_ref()) {
        d.push(loc.at(bucket_span.clone(), format!("{which}.bucket: {m}")));
    }
    let prefix = raw.prefix.as_ref().map(|p| p.get_ref().clone()).unwrap_or_default();
    if let Some(p) = &raw.prefix {
        if p.get_ref().starts_with('/') {
            d.push(loc.at(
                span(p),
                format!("{which}.prefix must not start with '/': S3 keys have no leading slash"),
            ));
        }
        if p.get_ref().len() > 1024 {
            d.push(loc.at(span(p), format!("{which}.prefix is longer than 1024 bytes, the S3 key limit")));
        }
    }
    if let Some(e) = &raw.endpoint {
        if let Err(m) = endpoint_problem(e.get_ref()) {
            d.push(loc.at(span(e), format!("{which}.endpoint: {m}")));
        }
    }
    if let Some(r) = &raw.region {
        let ok = !r.get_ref().is_empty() && r.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            d.push(loc.at(
                span(r),
                format!("{which}.region {:?} is not a region name like \"us-east-1\"", r.get_ref()),
            ));
        }
    }
    let anonymous = raw.anonymous.unwrap_or(false);
    if let (true, Some(p)) = (anonymous, &raw.profile) {
        d.push(loc.at(
            span(p),
            format!("{which}: `anonymous = true` and `profile` exclude each other; remove one"),
        ));
    }
    let keys = RoleKeys {
        role_arn: raw.role_arn.as_ref(),
        external_id: raw.external_id.as_ref(),
        role_session_name: raw.role_session_name.as_ref(),
        duration: raw.duration.as_ref(),
    };
    let role = check_role(loc, d, which, keys, anonymous);
    let write = check_write_options(loc, d, which, &raw);
    let side = Side {
        bucket: raw.bucket.into_inner(),
        prefix,
        region: raw.region.map(|r| r.into_inner()),
        path_style: raw.path_style.unwrap_or(raw.endpoint.is_some()),
        endpoint: raw.endpoint.map(|e| e.into_inner().trim_end_matches('/').to_string()),
        anonymous,
        profile: raw.profile.map(|p| p.into_inner()),
        requester_pays: raw.requester_pays.unwrap_or(false),
        role,
        write,
    };
    (side, bucket_span)
}

/// The keys of a role, as a side or a queue (`[source.events]`) writes them.
pub(in crate::spec) struct RoleKeys<'a> {
    pub role_arn: Option<&'a Spanned<String>>,
    pub external_id: Option<&'a Spanned<String>>,
    pub role_session_name: Option<&'a Spanned<String>>,
    pub duration: Option<&'a Spanned<String>>,
}

/// `role_arn` and the keys that only make sense with it. STS's own limits are checked here, so
/// a typo fails `validate` rather than the first run.
pub(in crate::spec) fn check_role(loc: &Locator, d: &mut Diags, which: &str, raw: RoleKeys<'_>, anonymous: bool) -> Option<Role> {
    let Some(arn) = raw.role_arn else {
        for (key, v) in [
            ("external_id", raw.external_id),
            ("role_session_name", raw.role_session_name),
            ("duration", raw.duration),
        ] {
            if let Some(v) = v {
                d.push(loc.at(
                    span(v),
                    format!("{which}.{key} needs role_arn beside it; add role_arn or remove {key}"),
                ));
            }
        }
        return None;
    };
    if anonymous {
        d.push(loc.at(
            span(arn),
            format!("{which}: `anonymous = true` and `role_arn` exclude each other; remove one"),
        ));
    }
    let a = arn.get_ref();
    let parts: Vec<&str> = a.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "iam" || !parts[5].starts_with("role/") || parts[5].len() <= 5 {
        d.push(loc.at(
            span(arn),
            format!("{which}.role_arn {a:?} is not a role ARN like \"arn:aws:iam::123456789012:role/s3syncd-writer\""),
        ));
    }
    let name_ok = |s: &str| (2..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c));
    if let Some(n) = raw.role_session_name.filter(|n| !name_ok(n.get_ref())) {
        d.push(loc.at(
            span(n),
            format!("{which}.role_session_name must be 2 to 64 letters, digits or +=,.@-_ (STS's rule)"),
        ));
    }
    if let Some(e) = raw.external_id.filter(|e| !(2..=1224).contains(&e.get_ref().len())) {
        d.push(loc.at(
            span(e),
            format!("{which}.external_id must be 2 to 1224 characters long (STS's rule)"),
        ));
    }
    let duration = raw.duration.and_then(|v| match crate::spec::size::parse_duration(v.get_ref()) {
        Ok(t) if (900..=43_200).contains(&t.as_secs()) => Some(t),
        Ok(_) => {
            d.push(loc.at(
                span(v),
                format!("{which}.duration {:?} is outside what STS grants: 15m to 12h", v.get_ref()),
            ));
            None
        }
        Err(m) => {
            d.push(loc.at(span(v), format!("{which}.duration: {m}")));
            None
        }
    });
    Some(Role {
        arn: a.clone(),
        external_id: raw.external_id.map(|e| e.get_ref().clone()),
        session_name: raw.role_session_name.map(|n| n.get_ref().clone()),
        duration,
    })
}

const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
    "EXPRESS_ONEZONE",
];
const SSE: &[&str] = &["AES256", "aws:kms", "aws:kms:dsse"];
const ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

/// The destination's write options: known names only, the KMS key only with `aws:kms`, and
/// none of them on the source side (which is only read).
fn check_write_options(loc: &Locator, d: &mut Diags, which: &str, raw: &RawSide) -> WriteOptions {
    let one_of = |d: &mut Diags, v: &Option<Spanned<String>>, key: &str, names: &[&str]| -> Option<String> {
        let v = v.as_ref()?;
        if which == "source" {
            d.push(loc.at(
                span(v),
                format!("source.{key}: write options belong in [destination]; the source is only read"),
            ));
            return None;
        }
        if names.contains(&v.get_ref().as_str()) {
            return Some(v.get_ref().clone());
        }
        d.push(loc.at(
            span(v),
            format!("{which}.{key} {:?} is not one of {}", v.get_ref(), names.join(", ")),
        ));
        None
    };
    let storage_class = one_of(d, &raw.storage_class, "storage_class", STORAGE_CLASSES);
    let sse = one_of(d, &raw.sse, "sse", SSE);
    let acl = one_of(d, &raw.acl, "acl", ACLS);
    let sse_kms_key_id = raw.sse_kms_key_id.as_ref().and_then(|k| {
        if !raw.sse.as_ref().is_some_and(|s| s.get_ref().starts_with("aws:kms")) {
            d.push(loc.at(
                span(k),
                format!("{which}.sse_kms_key_id needs sse = \"aws:kms\" (or \"aws:kms:dsse\") beside it"),
            ));
            return None;
        }
        Some(k.get_ref().clone())
    });
    WriteOptions {
        storage_class,
        sse,
        sse_kms_key_id,
        acl,
    }
}

/// S3 bucket naming rules (the general-purpose bucket subset every provider accepts).
pub fn bucket_name_problem(b: &str) -> Result<(), String> {
    if b.len() < 3 || b.len() > 63 {
        return Err(format!("bucket name {b:?} must be 3 to 63 characters long"));
    }
    if !b
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        return Err(format!("bucket name {b:?} may use only lowercase letters, digits, '.' and '-'"));
    }
    let first_last_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_last_ok(b.chars().next()) || !first_last_ok(b.chars().last()) {
        return Err(format!("bucket name {b:?} must begin and end with a letter or digit"));
    }
    if b.contains("..") || b.contains(".-") || b.contains("-.") {
        return Err(format!("bucket name {b:?} must not contain '..', '.-' or '-.'"));
    }
    if b.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!("bucket name {b:?} must not look like an IP address"));
    }
    Ok(())
}

fn endpoint_problem(e: &str) -> Result<(), String> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or_else(|| format!("{e:?} must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(['?', '#', '@', ' ']) {
        return Err(format!(
            "{e:?} must be a URL like \"https://s3.example.com\" with a host and optional port, no credentials or query"
        ));
    }
    if rest.trim_end_matches('/').contains('/') {
        return Err(format!(
            "{e:?} must not contain a path; put the bucket in `bucket` and the path in `prefix`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_rules() {
        assert!(bucket_name_problem("data.binance.vision").is_ok());
        assert!(bucket_name_problem("crypto-lakehouse-bronze").is_ok());
        assert!(bucket_name_problem("ab").unwrap_err().contains("3 to 63"));
        assert!(bucket_name_problem("Bronze").unwrap_err().contains("lowercase"));
        assert!(bucket_name_problem("a..b").unwrap_err().contains("'..'"));
        assert!(bucket_name_problem("-abc").unwrap_err().contains("begin and end"));
        assert!(bucket_name_problem("192.168.1.1").unwrap_err().contains("IP address"));
    }

    #[test]
    fn endpoints() {
        assert!(endpoint_problem("http://127.0.0.1:9000").is_ok());
        assert!(endpoint_problem("https://s3.example.com/").is_ok());
        assert!(endpoint_problem("127.0.0.1:9000").unwrap_err().contains("http://"));
        assert!(endpoint_problem("http://k:s@host").unwrap_err().contains("no credentials"));
        assert!(endpoint_problem("http://host/bucket")
            .unwrap_err()
            .contains("must not contain a path"));
    }
}
