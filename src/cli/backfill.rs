//! Backfills past one machine: `plan` writes a run's copies as key files (S3 Batch Operations
//! manifests, or shards for `run --keys`); `manifest import` brings their results home.

use super::{print_diagnostics, resolve_spec, EXIT_FAILED_OBJECTS, EXIT_INVALID, EXIT_OK};
use crate::engine::{self, Engine, RunOptions, Stop};
use crate::manifest::{self, import::Imported, ObjectRow, Target, Verified};
use crate::s3::{self, RequestCounter, SourceObject};
use crate::spec::size::ByteSize;
use crate::spec::{Config, Mode, Side, Spec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `plan SPEC --out DIR --shards N`: a dry run whose copies are written as key files.
pub async fn plan(config: Config, spec_arg: &str, out: &Path, shards: usize) -> anyhow::Result<i32> {
    let spec = match resolve_spec(&config, spec_arg) {
        Ok(s) => s,
        Err(e) => {
            print_diagnostics(&e);
            return Ok(EXIT_INVALID);
        }
    };
    let engine = Engine::new(config)?;
    let copies = Arc::new(Mutex::new(Vec::new()));
    let opts = RunOptions {
        dry_run: true,
        full: true,
        collect: Some(copies.clone()),
        ..RunOptions::default()
    };
    let listed_at = crate::manifest::now();
    let spec = Arc::new(spec);
    let report = engine::run(&engine, spec.clone(), opts, Stop::default()).await;
    engine.drain().await;
    let report = report?;
    if let Some(e) = &report.listing_error {
        eprintln!("s3syncd: error: the listing did not complete, so no plan was written: {e}");
        return Ok(EXIT_FAILED_OBJECTS);
    }
    let copies = std::mem::take(&mut *copies.lock().expect("the plan's keys"));
    let plan = crate::shard::write_plan(out, &spec, copies, shards, listed_at)?;
    println!(
        "{}: {} objects ({}) to copy, in {} key files under {}",
        plan.spec,
        plan.objects,
        ByteSize(plan.bytes),
        plan.shards.len(),
        out.display()
    );
    for s in &plan.shards {
        println!("  {}  {} objects  {}", s.file, s.objects, ByteSize(s.bytes));
    }
    Ok(EXIT_OK)
}

/// `manifest import [--spec S] FILE...`: shard manifests and completion reports into the
/// manifest. Without `--spec`, a shard manifest names its spec (the one spec its rows hold); a
/// completion report names none. Exit 0 when every file was imported whole, 1 when some
/// report's copies could not be confirmed at the destination, 2 when a file was refused.
pub async fn import(config: &Config, spec_arg: Option<&str>, files: &[PathBuf]) -> anyhow::Result<i32> {
    let path = config.manifest_path();
    let mut code = EXIT_OK;
    for file in files {
        let spec = match spec_of(config, spec_arg, file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("s3syncd: error: {}: {e}", file.display());
                code = EXIT_INVALID;
                continue;
            }
        };
        let result = if is_sqlite(file) {
            Ok(manifest::import::shard(&path, file, &Target::of(&spec)))
        } else {
            import_report(&spec, &path, file).await
        };
        match result {
            Ok(Ok(done)) => println!(
                "{}: run {}: {} added, {} replaced, {} kept ({})",
                file.display(),
                done.run_id,
                done.added,
                done.replaced,
                done.kept,
                ByteSize(done.bytes)
            ),
            Ok(Err(e)) => {
                eprintln!("s3syncd: error: {e}");
                code = EXIT_INVALID;
            }
            Err(unconfirmed) => {
                for (key, why) in &unconfirmed.keys {
                    eprintln!("s3syncd: not imported: {key}: {why}");
                }
                println!("{}: {}", file.display(), unconfirmed.summary);
                code = code.max(EXIT_FAILED_OBJECTS);
            }
        }
    }
    Ok(code)
}

/// The spec a file is imported for: `--spec`, else the one spec a shard manifest's rows hold.
fn spec_of(config: &Config, spec_arg: Option<&str>, file: &Path) -> Result<Spec, String> {
    let name = match spec_arg {
        Some(s) => s.to_string(),
        None if is_sqlite(file) => match manifest::import::specs_in(file).map_err(|e| e.to_string())?.as_slice() {
            [one] => one.clone(),
            [] => return Err("it holds no objects".into()),
            many => {
                return Err(format!(
                    "it holds rows of {} specs ({}): name one with --spec",
                    many.len(),
                    many.join(", ")
                ))
            }
        },
        None => return Err("a completion report names no spec: name it with --spec".into()),
    };
    resolve_spec(config, &name).map_err(|e| e.to_string())
}

fn is_sqlite(file: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == b"SQLite format 3\0"
}

/// A report imported in part: the keys left out, and why.
struct Unconfirmed {
    keys: Vec<(String, String)>,
    summary: String,
}

/// A completion report: its succeeded tasks are checked against listings of both sides (the
/// destination holds the key with the source's size, and its ETag where both are content
/// MD5s) and recorded; failed tasks and keys that do not check out are left for the next run.
async fn import_report(spec: &Spec, path: &Path, file: &Path) -> Result<manifest::Result<Imported>, Unconfirmed> {
    let fail = |why: String| Unconfirmed {
        keys: Vec::new(),
        summary: why,
    };
    let tasks = crate::shard::read_report(file, spec).map_err(|e| fail(e.to_string()))?;
    let mut left: Vec<(String, String)> = tasks
        .iter()
        .filter(|t| !t.succeeded)
        .map(|t| (t.key.clone(), format!("the task failed: {}", t.error)))
        .collect();
    let keys: BTreeSet<String> = tasks.into_iter().filter(|t| t.succeeded).map(|t| t.key).collect();
    let counter = Arc::new(RequestCounter::default());
    let src = s3::client(&spec.source, crate::spec::Which::Source, &spec.transfer, counter.clone()).await;
    let dst = s3::client(&spec.destination, crate::spec::Which::Destination, &spec.transfer, counter).await;
    let sources = listed(&src, &spec.source, &keys)
        .await
        .map_err(|e| fail(e.explained(&spec.source)))?;
    let dest_keys: BTreeSet<String> = keys.iter().filter_map(|k| spec.dest_key(k)).collect();
    let dests = listed(&dst, &spec.destination, &dest_keys)
        .await
        .map_err(|e| fail(e.explained(&spec.destination)))?;
    let mut rows = Vec::new();
    for key in &keys {
        match confirmed(spec, sources.get(key), key, &dests) {
            Ok(row) => rows.push(row),
            Err(why) => left.push((key.clone(), why)),
        }
    }
    let done = manifest::import::rows(path, &spec.name, file, rows);
    if left.is_empty() {
        return Ok(done);
    }
    let summary = match &done {
        Ok(d) => format!(
            "run {}: {} added, {} replaced, {} kept, {} not imported",
            d.run_id,
            d.added,
            d.replaced,
            d.kept,
            left.len()
        ),
        Err(e) => e.to_string(),
    };
    Err(Unconfirmed { keys: left, summary })
}

/// The objects of `keys` in one listing of their range on `side`.
async fn listed(
    client: &aws_sdk_s3::Client,
    side: &Side,
    keys: &BTreeSet<String>,
) -> Result<BTreeMap<String, SourceObject>, s3::ListError> {
    let mut found = BTreeMap::new();
    let mut listing = s3::Listing::range(client, &side.bucket, &side.prefix, crate::shard::key_range(keys));
    while let Some(page) = listing.next().await {
        for o in page?.1.into_iter().flatten() {
            if keys.contains(&o.key) {
                found.insert(o.key.clone(), o);
            }
        }
    }
    Ok(found)
}

/// The manifest row of a copy another engine made, if the listings confirm it.
fn confirmed(spec: &Spec, source: Option<&SourceObject>, key: &str, dests: &BTreeMap<String, SourceObject>) -> Result<ObjectRow, String> {
    let source = source.ok_or("not at the source now")?;
    let dest_key = spec.dest_key(key).ok_or("not under the source prefix")?;
    let dest = dests
        .get(&dest_key)
        .ok_or_else(|| format!("not at the destination as {dest_key}"))?;
    if dest.size != source.size {
        return Err(format!("{dest_key} holds {} bytes, the source {}", dest.size, source.size));
    }
    let md5 = |o: &SourceObject| o.etag.clone().filter(|e| s3::is_md5_etag(e));
    let verified = match (md5(source), md5(dest)) {
        (Some(a), Some(b)) if a.eq_ignore_ascii_case(&b) => Verified::Etag,
        (Some(a), Some(b)) => return Err(format!("{dest_key} has ETag {b}, the source {a}")),
        _ => Verified::Size,
    };
    let target = Target::of(spec);
    Ok(ObjectRow {
        spec: spec.name.clone(),
        dest_endpoint: target.endpoint,
        dest_bucket: target.bucket,
        dest_key,
        source_endpoint: spec.source.endpoint_identity(),
        source_bucket: spec.source.bucket.clone(),
        source_key: key.to_string(),
        size: source.size,
        etag: source.etag.clone(),
        source_last_modified: source.last_modified.clone(),
        copied_at: dest.last_modified.clone().unwrap_or_else(manifest::now),
        mode: Mode::Direct,
        run_id: 0,
        dest_etag: dest.etag.clone(),
        checksum: (verified == Verified::Etag).then(|| {
            let md5 = md5(source).unwrap_or_default().to_ascii_lowercase();
            crate::s3::checksum::Checksum::new(crate::s3::checksum::ChecksumAlgo::Md5, md5).to_string()
        }),
        verified,
        sha256: None,
        sidecar_mismatch: None,
        kept_previous: None,
    })
}
