//! `manifest verify`: the manifest against the destination. A listing of the destination
//! marched with the rows finds objects missing, of another size, or contradicted by a late
//! sidecar (`--repair` forgets them); `--checksums` HEADs each object and compares the checksum
//! recorded at copy time with the one the destination stores.

use super::{EXIT_FAILED_OBJECTS, EXIT_OK};
use crate::manifest::{ObjectRow, Reader, Target, Writer};
use crate::plan::{march, Step};
use crate::s3::{Lister, SourceObject};
use crate::spec::Spec;

/// Drift between the manifest and the destination, found by `verify`.
#[derive(Default)]
struct Drift {
    checked: u64,
    unknown: u64,
    /// Rows whose object is missing, of another size or contradicted by its checksum
    /// sidecar: what `--repair` forgets (the next run copies them again, checking the sidecar).
    bad: Vec<ObjectRow>,
    missing: u64,
}

impl Drift {
    fn step(&mut self, step: Step<SourceObject, ObjectRow>) {
        match step {
            Step::Right(r) => {
                println!(
                    "missing    {}  (manifest: {} bytes, copied {} by run {})",
                    r.dest_key, r.size, r.copied_at, r.run_id
                );
                self.missing += 1;
                self.bad.push(r);
            }
            Step::Left(obj) => {
                println!("unknown    {}  ({} bytes, not in the manifest)", obj.key, obj.size);
                self.unknown += 1;
            }
            Step::Both(obj, r) if r.size != obj.size => {
                println!(
                    "different  {}  (manifest: {} bytes, destination: {} bytes)",
                    obj.key, r.size, obj.size
                );
                self.bad.push(r);
            }
            Step::Both(_, r) if r.sidecar_mismatch.is_some() => {
                println!(
                    "contradicted {}  (its checksum sidecar, which came after the copy, says sha256 {})",
                    r.dest_key,
                    r.sidecar_mismatch.as_deref().unwrap_or_default()
                );
                self.bad.push(r);
            }
            Step::Both(..) => self.checked += 1,
        }
    }
}

/// Lists the spec's destination prefix and marches it with the manifest, page by page.
pub(super) async fn verify(spec: &Spec, dst: &aws_sdk_s3::Client, reader: &Reader, repair: bool) -> anyhow::Result<i32> {
    let mut lister = Lister::new(dst.clone(), &spec.destination.bucket, &spec.destination.prefix);
    let mut drift = Drift::default();
    let mut last: Option<String> = None;
    let target = Target::of(spec);
    let window = |lower: Option<&str>, upper: Option<&str>| reader.range(&target, &spec.destination.prefix, lower, upper);
    while let Some(page) = lister.next_page().await? {
        let Some(upper) = page.last().map(|o| o.key.clone()) else {
            continue;
        };
        let rows = window(last.as_deref(), Some(&upper))?;
        march(page, rows, |o| &o.key, |r| &r.dest_key).for_each(|s| drift.step(s));
        last = Some(upper);
    }
    window(last.as_deref(), None)?.into_iter().for_each(|r| drift.step(Step::Right(r)));
    println!(
        "{}: {} objects match the manifest; {} missing, {} different or contradicted, {} unknown at s3://{}/{}",
        spec.name,
        drift.checked,
        drift.missing,
        drift.bad.len() as u64 - drift.missing,
        drift.unknown,
        spec.destination.bucket,
        spec.destination.prefix
    );
    if repair && !drift.bad.is_empty() {
        let writer = Writer::open(reader.path(), std::time::Duration::from_secs(30))?;
        for r in &drift.bad {
            writer.forget(&target, &r.dest_key);
        }
        writer.flush().await?;
        println!("repair: {} objects forgotten; the next run copies them again", drift.bad.len());
    }
    Ok(if drift.bad.is_empty() && drift.unknown == 0 {
        EXIT_OK
    } else {
        EXIT_FAILED_OBJECTS
    })
}

/// What a destination HEAD proves of one recorded checksum.
enum Proof {
    Match,
    Mismatch(String),
    Missing,
    Unverifiable(&'static str),
}

/// Compares a recorded `ALGORITHM:VALUE` with what the destination's HEAD (checksum mode) shows.
/// A SHA-256 is recorded in hex when a sidecar verified it, in base64 when the source stored it.
fn prove(recorded: Option<&str>, head: &aws_sdk_s3::operation::head_object::HeadObjectOutput, kms: bool) -> Proof {
    use crate::s3::checksum::{stored_checksum, Checksum, ChecksumAlgo};
    let Some(want) = recorded.and_then(|c| c.parse::<Checksum>().ok()) else {
        return Proof::Unverifiable("only its size was checked when copied");
    };
    let sidecar_hex = want.algo == ChecksumAlgo::Sha256 && crate::transfer::verify::parse_sidecar(&want.value).is_some();
    let got = match want.algo {
        ChecksumAlgo::Md5 => head
            .e_tag()
            .map(crate::s3::normalize_etag)
            .filter(|e| crate::s3::is_md5_etag(e) && !kms)
            .map(|e| e.to_ascii_lowercase()),
        ChecksumAlgo::Sha256 if sidecar_hex => head
            .checksum_sha256()
            .filter(|v| !v.contains('-'))
            .and_then(|v| aws_smithy_types::base64::decode(v).ok())
            .map(hex::encode),
        ChecksumAlgo::Crc64Nvme | ChecksumAlgo::Crc32C | ChecksumAlgo::Crc32 | ChecksumAlgo::Sha256 | ChecksumAlgo::Sha1 => {
            stored_checksum!(head).filter(|c| c.algo == want.algo).map(|c| c.value)
        }
    };
    match got {
        None => Proof::Unverifiable("the destination shows no checksum of that kind"),
        Some(g) if g == want.value => Proof::Match,
        Some(g) => Proof::Mismatch(format!("recorded {want}, destination {}:{g}", want.algo)),
    }
}

/// `verify --checksums`: HEADs every object the manifest holds for the spec's destination.
pub(super) async fn verify_checksums(spec: &Spec, dst: &aws_sdk_s3::Client, reader: &Reader) -> anyhow::Result<i32> {
    use futures::StreamExt;
    let rows = reader.range(&Target::of(spec), &spec.destination.prefix, None, None)?;
    let kms = spec.destination.write.etag_is_not_md5();
    let heads = futures::stream::iter(rows)
        .map(|r| {
            let req = dst
                .head_object()
                .bucket(&spec.destination.bucket)
                .key(&r.dest_key)
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
            async move { (req.send().await, r) }
        })
        .buffer_unordered(32);
    let (mut matched, mut bad, mut unverifiable) = (0u64, 0u64, 0u64);
    futures::pin_mut!(heads);
    while let Some((head, r)) = heads.next().await {
        let proof = match head {
            Ok(h) => prove(r.checksum.as_deref(), &h, kms),
            Err(e) if e.raw_response().is_some_and(|x| x.status().as_u16() == 404) => Proof::Missing,
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "HEAD {}: {}",
                    r.dest_key,
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ))
            }
        };
        match proof {
            Proof::Match => matched += 1,
            Proof::Mismatch(why) => {
                bad += 1;
                println!("mismatch       {}  ({why})", r.dest_key);
            }
            Proof::Missing => {
                bad += 1;
                println!("missing        {}", r.dest_key);
            }
            Proof::Unverifiable(why) => {
                unverifiable += 1;
                println!("unverifiable   {}  ({why})", r.dest_key);
            }
        }
    }
    println!(
        "{}: checksums: {matched} match, {bad} mismatched or missing, {unverifiable} unverifiable",
        spec.name
    );
    Ok(if bad > 0 { EXIT_FAILED_OBJECTS } else { EXIT_OK })
}
