//! `s3syncd check`: whether a feed will run, before it does. Cheap and read-only unless asked
//! to write: credentials resolve on each side, each side lists, and whether `direct` can copy
//! (one HEAD of a source object signed by the destination's credentials). Each failed check
//! says its likely cause and fix (`s3::explain`).

use crate::s3::{self, RequestCounter};
use crate::spec::{ModeChoice, Side, Spec, Which};
use crate::transfer::error::{classify, Code, Op};
use aws_sdk_s3::Client;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Passes, with something the operator should know (`auto` will stream, say).
    Note,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

fn check(name: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        verdict,
        detail: detail.into(),
    }
}

/// Runs every check of `spec`; `write` adds a PutObject and DeleteObject of a probe key under
/// the destination prefix, the delivery prefix and `keep_previous`.
pub async fn run(spec: &Spec, write: bool) -> Vec<Check> {
    let mut out = Vec::new();
    for (which, side) in spec.sides() {
        out.push(credentials(which, side).await);
    }
    if out.iter().any(|c| c.verdict == Verdict::Fail) {
        return out;
    }
    let counter = Arc::new(RequestCounter::default());
    let (src, dst) = tokio::join!(
        s3::client(&spec.source, Which::Source, &spec.transfer, counter.clone()),
        s3::client(&spec.destination, Which::Destination, &spec.transfer, counter)
    );
    let (first, listed) = lists(Which::Source, &spec.source, &src).await;
    out.push(listed);
    let (_, listed) = lists(Which::Destination, &spec.destination, &dst).await;
    out.push(listed);
    out.push(direct(spec, &dst, first.as_deref()).await);
    if let Some(events) = &spec.events {
        out.push(queue(events).await);
    }
    if write {
        // Every place a run writes: its objects, its delivery files, the versions it keeps.
        let side = &spec.destination;
        out.push(write_probe(spec, &dst, "destination writes", &side.prefix, true).await);
        if let Some(crate::spec::Deliveries::Prefix(p)) = &spec.feed.deliveries {
            out.push(write_probe(spec, &dst, "delivery writes", &format!("{p}{}/", spec.name), false).await);
        }
        if let Some(p) = &spec.feed.keep_previous {
            out.push(write_probe(spec, &dst, "keep_previous writes", p, false).await);
        }
    }
    out
}

/// `[source.events]`: the queue answers GetQueueAttributes, and has a redrive policy.
async fn queue(events: &crate::spec::Events) -> Check {
    let q = crate::events::Queue::connect(events).await;
    match q.attributes().await {
        Ok((depth, true)) => check("event queue", Verdict::Pass, format!("{depth} messages waiting")),
        Ok((depth, false)) => check(
            "event queue",
            Verdict::Note,
            format!("{depth} messages waiting; no redrive policy: a message that always fails comes back forever (docs/events.md)"),
        ),
        Err(e) => check("event queue", Verdict::Fail, e.to_string()),
    }
}

/// Which provider supplied the side's credentials, and the last four characters of the key id
/// (never the secret).
async fn credentials(which: Which, side: &Side) -> Check {
    use aws_sdk_s3::config::ProvideCredentials;
    let name = format!("{which} credentials");
    let who = s3::explain::signer(side);
    if let Some(why) = s3::missing_profile(side) {
        return check(name, Verdict::Fail, why);
    }
    let Some(provider) = s3::credentials(side).await else {
        return check(name, Verdict::Pass, format!("{who}: unsigned requests"));
    };
    match provider.provide_credentials().await {
        Ok(c) => {
            let id = c.access_key_id();
            let tail = &id[id.len().saturating_sub(4)..];
            let source = provider_name(&format!("{c:?}"));
            check(name, Verdict::Pass, format!("{who}: resolved by {source} (key id ...{tail})"))
        }
        Err(e) => {
            let detail = aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
            let failure = s3::explain::Failure {
                op: crate::s3::op::Op::Credentials,
                code: None,
                status: None,
                detail: &format!("failed to load credentials: {detail}"),
            };
            let cause = s3::explain::cause(which, side, failure).unwrap_or_default();
            check(name, Verdict::Fail, format!("{who}: none resolved ({detail}). {cause}"))
        }
    }
}

/// The provider named in the credentials' debug form (`provider_name: "Environment"`), which
/// prints no secret.
fn provider_name(debug: &str) -> String {
    debug
        .split("provider_name: \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("the SDK")
        .to_string()
}

async fn lists(which: Which, side: &Side, client: &Client) -> (Option<String>, Check) {
    let name = format!("{which} lists");
    let url = format!("s3://{}/{}", side.bucket, side.prefix);
    match s3::list_one(client, side).await {
        Ok(o) => {
            let first = o.contents().first().and_then(|o| o.key()).map(str::to_string);
            let what = first.as_deref().map_or("empty".to_string(), |k| format!("first key {k:?}"));
            (first, check(name, Verdict::Pass, format!("{url}: {what}")))
        }
        Err(e) => {
            let e = classify(Op::ListObjectsV2, e);
            // A write-only destination cannot list, and runs go on without it (engine).
            let verdict = if which == Which::Destination && e.code == Some(Code::AccessDenied) {
                Verdict::Note
            } else {
                Verdict::Fail
            };
            let note = if verdict == Verdict::Note {
                " (a write-only destination: runs go on, but drift audits and deletes need s3:ListBucket)"
            } else {
                ""
            };
            (None, check(name, verdict, format!("{url}: {}{note}", e.explained(which, side))))
        }
    }
}

/// Whether `direct` can copy: the destination's credentials HEAD one source object, as a
/// server-side copy would read it.
async fn direct(spec: &Spec, dst: &Client, first: Option<&str>) -> Check {
    let name = "direct (server-side copy)";
    let wants = matches!(spec.mode, ModeChoice::Direct | ModeChoice::Auto);
    let refused = |why: String| {
        if spec.mode == ModeChoice::Direct {
            check(
                name,
                Verdict::Fail,
                format!("{why}; mode = \"direct\" cannot copy: use \"auto\" to stream instead"),
            )
        } else if wants {
            check(
                name,
                Verdict::Note,
                format!("{why}; auto will stream (bytes pass through this host)"),
            )
        } else {
            check(name, Verdict::Pass, format!("{why} (not used: mode = \"{}\")", spec.mode))
        }
    };
    if spec.source.endpoint_identity() != spec.destination.endpoint_identity() {
        return refused("not possible: source and destination are on different endpoints".into());
    }
    let Some(key) = first else {
        return check(name, Verdict::Note, "not tried: the source prefix is empty");
    };
    let head = dst.head_object().bucket(&spec.source.bucket).key(key).send().await;
    match head {
        Ok(_) => check(
            name,
            Verdict::Pass,
            format!("the destination's credentials can read {key:?} at the source"),
        ),
        Err(e) => {
            let e = classify(Op::HeadObject, e);
            refused(format!(
                "the destination's credentials cannot read the source ({}): they need s3:GetObject on s3://{}/{}*",
                e.code.as_ref().map_or("no answer".to_string(), ToString::to_string),
                spec.source.bucket,
                spec.source.prefix
            ))
        }
    }
}

/// PutObject and DeleteObject of an empty probe key under `prefix` of the destination bucket,
/// with the spec's write options (so a KMS key or ACL the credentials may not use shows here).
/// `deletes`: runs delete there (`delete = true`), so a refused delete fails the check.
async fn write_probe(spec: &Spec, dst: &Client, name: &str, prefix: &str, deletes: bool) -> Check {
    let side = &spec.destination;
    let key = format!("{prefix}.s3syncd-check-{}", std::process::id());
    let put = dst.put_object().bucket(&side.bucket).key(&key).body(Vec::new().into());
    let put = crate::transfer::headers::put_with(&side.write, put).send().await;
    if let Err(e) = put {
        let e = classify(Op::PutObject, e);
        return check(
            name,
            Verdict::Fail,
            format!("PutObject {key:?}: {}", e.explained(Which::Destination, side)),
        );
    }
    match dst.delete_object().bucket(&side.bucket).key(&key).send().await {
        Ok(_) => check(name, Verdict::Pass, format!("put and deleted {key:?}")),
        Err(e) if deletes => {
            let e = classify(Op::DeleteObjects, e);
            check(
                name,
                Verdict::Fail,
                format!(
                    "put {key:?} but could not delete it ({e}): s3:DeleteObject is needed for `delete = true`; remove the probe by hand"
                ),
            )
        }
        Err(e) => {
            let e = classify(Op::DeleteObjects, e);
            check(
                name,
                Verdict::Note,
                format!("put {key:?} but could not delete it ({e}); runs need no delete here: remove the probe by hand"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_provider_name_comes_from_the_debug_form_without_the_secret() {
        let c = aws_sdk_s3::config::Credentials::new("AKIAEXAMPLE", "secret-value", None, None, "Environment");
        let debug = format!("{c:?}");
        assert!(!debug.contains("secret-value"));
        assert_eq!(super::provider_name(&debug), "Environment");
    }
}
