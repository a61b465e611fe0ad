//! One line for each common failure: its likely cause and the fix, in the operator's terms
//! (spec keys, IAM permissions), for the log, the run summary and the `failures` table. An
//! S3 error code alone ("AccessDenied") is where every peer tool leaves its users.

use super::op::{Code, Op};
use crate::spec::{Side, Which};

/// What failed, as an S3 answer (code, status) or a transport error (`detail`).
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The S3 operation (or local step) that failed.
    pub op: Op,
    /// The answer's code; a bare HTTP status is `status` alone.
    pub code: Option<&'a Code>,
    pub status: Option<u16>,
    /// The error's text, for transport failures (DNS, refused, TLS) that carry no code.
    pub detail: &'a str,
}

/// Who signs a side's requests, as the spec says it; never a secret.
pub fn signer(side: &Side) -> String {
    let base = match (&side.profile, side.anonymous) {
        (_, true) => return "anonymous requests".into(),
        (Some(p), _) => format!("profile {p:?}"),
        (None, _) => "the default credential chain".into(),
    };
    match &side.role {
        Some(r) => format!("role {} (assumed with {base})", r.arn),
        None => base,
    }
}

/// The likely cause of `f` on side `which` and what to do, or None when the code says enough
/// by itself.
pub fn cause(which: Which, side: &Side, f: Failure<'_>) -> Option<String> {
    let who = signer(side);
    let url = format!("s3://{}/{}", side.bucket, side.prefix);
    let endpoint = side.endpoint.as_deref().unwrap_or("AWS S3");
    let detail = f.detail.to_ascii_lowercase();
    let line = match (f.code, f.op) {
        _ if f.status == Some(301) || matches!(f.code, Some(Code::WrongRegion(_))) => {
            format!("bucket {} is in another region than {}: set `region` in [{which}] to the bucket's region, or `region = \"auto\"` to find it", side.bucket, side.region.as_deref().unwrap_or("us-east-1"))
        }
        (Some(Code::AccessDenied), Op::CopyObject | Op::UploadPartCopy) => format!(
            "server-side copy refused: the destination's credentials ({who}) need s3:GetObject (and s3:GetObjectTagging with preserve_tags) on the source objects besides s3:PutObject here, and kms:Decrypt if the source is SSE-KMS; `mode = \"auto\"` streams instead"
        ),
        (Some(Code::AccessDenied), Op::GetObjectTagging) => {
            format!("preserve_tags needs s3:GetObjectTagging on {url}* for {who}; grant it or set preserve_tags = false")
        }
        (Some(Code::AccessDenied), Op::GetObject | Op::HeadObject | Op::ListObjectsV2) if which == Which::Source && !side.requester_pays => {
            let perm = if f.op == Op::ListObjectsV2 { "s3:ListBucket on the bucket" } else { "s3:GetObject on the objects" };
            format!("{who} may not read {url}: the bucket may be requester-pays (set `requester_pays = true` in [source]), or the credentials lack {perm}{}", kms_hint(&detail, "kms:Decrypt"))
        }
        (Some(Code::AccessDenied), Op::ListObjectsV2) => format!("{who} lacks s3:ListBucket on bucket {} ({which})", side.bucket),
        (Some(Code::AccessDenied), Op::GetObject | Op::HeadObject) => format!("{who} lacks s3:GetObject on {url}*{}", kms_hint(&detail, "kms:Decrypt")),
        (Some(Code::AccessDenied), _) if which == Which::Destination => {
            let acl = if side.write.acl.is_some() { ", s3:PutObjectAcl (acl is set)" } else { "" };
            let kms = if side.write.sse.as_deref().is_some_and(|s| s.starts_with("aws:kms")) || detail.contains("kms") {
                ", and kms:GenerateDataKey on the bucket's KMS key"
            } else {
                ""
            };
            format!("{who} may not write {url}: it needs s3:PutObject{acl}{kms}")
        }
        (Some(Code::CredentialsRejected(_)), _) => format!(
            "the {which}'s credentials ({who}) were rejected at {endpoint}: check the access key and secret there (and that they belong to this endpoint)"
        ),
        (Some(Code::CredentialsExpired(_)), _) => format!(
            "the {which}'s session credentials ({who}) expired or are invalid: renew them (aws sso login, or fresh keys); an assumed `role_arn` is renewed by s3syncd itself"
        ),
        (Some(Code::ClockSkewed), _) => "this host's clock differs from S3's by more than 15 minutes; fix the clock (timedatectl set-ntp true) and run again (not retried: waiting does not fix a clock)".into(),
        (Some(Code::NoSuchBucket), _) => format!(
            "bucket {} does not exist at {endpoint}: check [{which}] bucket{}",
            side.bucket,
            if side.endpoint.is_some() { ", endpoint" } else { " and region" }
        ),
        (Some(Code::AccountDisabled(_)), _) => format!("the account that owns bucket {} has been disabled", side.bucket),
        _ if detail.contains("dns error") || detail.contains("failed to lookup address") || detail.contains("name or service not known") => {
            format!("the {which} endpoint's host name does not resolve: check [{which}] endpoint ({endpoint}) and this host's DNS")
        }
        _ if detail.contains("connection refused") => {
            format!("nothing accepts connections at {endpoint}: check [{which}] endpoint and that the server is running")
        }
        _ if detail.contains("certificate") || detail.contains("tls") || detail.contains("handshake") => {
            format!("the TLS handshake with {endpoint} failed: check that [{which}] endpoint is https with a certificate this host trusts (or http for a plain server)")
        }
        _ if detail.contains("assumerole") || detail.contains("sts:assumerole") => match &side.role {
            Some(r) => format!("{who} could not assume {}: check the role's trust policy and external_id", r.arn),
            None => return None,
        },
        _ if detail.contains("credentials") && (detail.contains("load") || detail.contains("provider")) => format!(
            "no credentials for the {which}: {who} supplied none; set `profile`, keys in the environment, an instance profile, or `anonymous = true` for a public bucket"
        ),
        _ => return None,
    };
    Some(line)
}

fn kms_hint(detail: &str, permission: &str) -> String {
    if detail.contains("kms") {
        format!(", or {permission} on the objects' KMS key")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Role;

    fn side(profile: Option<&str>) -> Side {
        Side {
            bucket: "bronze".into(),
            prefix: "binance/".into(),
            profile: profile.map(Into::into),
            ..Side::default()
        }
    }

    /// The cause of a failure written as the tables below write it: side and operation by name.
    fn why(which: &str, side: &Side, op: &str, code: Option<&str>, status: u16, detail: &str) -> String {
        let which = if which == "source" { Which::Source } else { Which::Destination };
        let op = [
            Op::GetObject,
            Op::GetObjectTagging,
            Op::HeadObject,
            Op::PutObject,
            Op::CopyObject,
            Op::UploadPartCopy,
            Op::ListObjectsV2,
            Op::Credentials,
        ]
        .into_iter()
        .find(|o| o.as_str() == op)
        .unwrap_or_else(|| panic!("no operation {op} in the table's list"));
        let code = code.map(|c| Code::new(Some(c), status));
        let failure = Failure {
            op,
            code: code.as_ref(),
            status: Some(status),
            detail,
        };
        cause(which, side, failure).unwrap_or_else(|| "-".into())
    }

    /// (side, its spec, operation, code, status, error text, what the line must say)
    type Case<'a> = (&'a str, &'a Side, &'a str, Option<&'a str>, u16, &'a str, &'a str);

    fn check(cases: &[Case]) {
        for (which, side, op, code, status, detail, want) in cases {
            let got = why(which, side, op, *code, *status, detail);
            assert!(got.contains(want), "{op} {code:?} {status}: {got:?} lacks {want:?}");
        }
    }

    /// A side with a profile, and one with a role over the default chain.
    fn profiled_and_role() -> (Side, Side) {
        let role = Side {
            role: Some(Role {
                arn: "arn:aws:iam::123456789012:role/w".into(),
                external_id: None,
                session_name: None,
                duration: None,
            }),
            ..side(None)
        };
        (side(Some("lake")), role)
    }

    /// Each mapped failure of permissions and buckets, one line naming the cause and the fix.
    #[test]
    fn every_common_failure_names_its_cause_and_fix() {
        let (p, _) = profiled_and_role();
        check(&[
            (
                "source",
                &p,
                "GetObject",
                Some("AccessDenied"),
                403,
                "",
                "set `requester_pays = true` in [source]",
            ),
            ("source", &p, "ListObjectsV2", Some("AccessDenied"), 403, "", "s3:ListBucket"),
            (
                "destination",
                &p,
                "CopyObject",
                Some("AccessDenied"),
                403,
                "",
                "need s3:GetObject (and s3:GetObjectTagging with preserve_tags) on the source",
            ),
            (
                "destination",
                &p,
                "PutObject",
                Some("AccessDenied"),
                403,
                "",
                "profile \"lake\" may not write s3://bronze/binance/: it needs s3:PutObject",
            ),
            (
                "source",
                &p,
                "GetObjectTagging",
                Some("AccessDenied"),
                403,
                "",
                "s3:GetObjectTagging",
            ),
            (
                "destination",
                &p,
                "PutObject",
                Some("InvalidAccessKeyId"),
                403,
                "",
                "the destination's credentials (profile \"lake\") were rejected",
            ),
            (
                "source",
                &p,
                "ListObjectsV2",
                Some("SignatureDoesNotMatch"),
                403,
                "",
                "the source's credentials (profile \"lake\") were rejected",
            ),
            (
                "source",
                &p,
                "GetObject",
                Some("RequestTimeTooSkewed"),
                403,
                "",
                "this host's clock",
            ),
            (
                "destination",
                &p,
                "ListObjectsV2",
                Some("NoSuchBucket"),
                404,
                "",
                "bucket bronze does not exist",
            ),
        ]);
    }

    /// Failures of regions, addressing, clocks and credentials, likewise.
    #[test]
    fn region_address_clock_and_credential_failures_name_their_cause_and_fix() {
        let (p, role) = profiled_and_role();
        check(&[
            ("source", &p, "ListObjectsV2", None, 301, "", "set `region` in [source]"),
            (
                "source",
                &p,
                "ListObjectsV2",
                Some("PermanentRedirect"),
                301,
                "",
                "is in another region",
            ),
            (
                "destination",
                &p,
                "ListObjectsV2",
                None,
                0,
                "dispatch failure: io error: dns error: failed to lookup address information",
                "host name does not resolve",
            ),
            (
                "destination",
                &p,
                "ListObjectsV2",
                None,
                0,
                "dispatch failure: Connection refused (os error 111)",
                "nothing accepts connections",
            ),
            (
                "destination",
                &p,
                "ListObjectsV2",
                None,
                0,
                "invalid peer certificate: UnknownIssuer",
                "TLS handshake",
            ),
            (
                "destination",
                &role,
                "PutObject",
                Some("ExpiredToken"),
                400,
                "",
                "role arn:aws:iam::123456789012:role/w (assumed with the default credential chain)) expired",
            ),
            (
                "destination",
                &role,
                "PutObject",
                None,
                0,
                "failed to load credentials: AccessDenied: not authorized to perform: sts:AssumeRole",
                "could not assume arn:aws:iam::123456789012:role/w",
            ),
        ]);
        // The default chain is named, never a key; a code that says enough gets no line.
        assert!(
            why("source", &side(None), "GetObject", Some("AccessDenied"), 403, "").starts_with("the default credential chain may not read")
        );
        assert_eq!(why("source", &p, "GetObject", Some("NoSuchKey"), 404, ""), "-");
    }
}
