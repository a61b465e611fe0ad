//! Backfills handed out: a run's copy plan written as key files, each a valid S3 Batch
//! Operations CSV manifest (`bucket,key`, the key URL-encoded) and what `s3syncd run --keys`
//! copies, with a `plan.json` that says what was planned from what.

use crate::spec::Spec;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a key file's key keeps as it is: the unreserved characters and `/`.
const KEY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// The version of `plan.json`.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Line { path: PathBuf, line: usize, message: String },
}

/// A key as a key file holds it: URL-encoded, spaces as `%20`.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY).to_string()
}

/// A key file's key as S3 names it. `+` is a space, as in S3 Inventory and Batch Operations
/// reports (a plus sign is `%2B`).
pub fn decode_key(field: &str) -> Option<String> {
    percent_decode_str(&field.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
}

/// One side of the plan, as the manifest names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Place {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
}

/// One key file of the plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardFile {
    pub file: String,
    pub objects: u64,
    pub bytes: u64,
    pub first_key: String,
    pub last_key: String,
}

/// `plan.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanFile {
    pub format: u32,
    pub spec: String,
    /// SHA-256 of the spec file's bytes: the shards run the spec that was planned.
    pub spec_sha256: String,
    pub source: Place,
    pub destination: Place,
    pub listed_at: String,
    pub objects: u64,
    pub bytes: u64,
    pub shards: Vec<ShardFile>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ShardError + '_ {
    move |source| ShardError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// SHA-256 of a spec's file, hex.
pub fn spec_digest(spec: &Spec) -> Result<String, ShardError> {
    let bytes = std::fs::read(&spec.path).map_err(io(&spec.path))?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Writes the copies `(source key, size)` as `shards` key files cut at key quantiles (about as
/// many keys in each), and `plan.json`, into `dir`. The same copies give the same files.
pub fn write_plan(
    dir: &Path,
    spec: &Spec,
    mut copies: Vec<(String, u64)>,
    shards: usize,
    listed_at: String,
) -> Result<PlanFile, ShardError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    copies.sort_unstable();
    copies.dedup_by(|a, b| a.0 == b.0);
    let n = copies.len();
    let shards = shards.clamp(1, n.max(1));
    let mut files = Vec::new();
    for i in (0..shards).filter(|_| n > 0) {
        let part = &copies[i * n / shards..(i + 1) * n / shards];
        let file = format!("keys-{i:04}.csv");
        let mut text = String::with_capacity(part.len() * 64);
        for (key, _) in part {
            text.push_str(&spec.source.bucket);
            text.push(',');
            text.push_str(&encode_key(key));
            text.push('\n');
        }
        let path = dir.join(&file);
        std::fs::write(&path, text).map_err(io(&path))?;
        files.push(ShardFile {
            file,
            objects: part.len() as u64,
            bytes: part.iter().map(|(_, s)| s).sum(),
            first_key: part[0].0.clone(),
            last_key: part[part.len() - 1].0.clone(),
        });
    }
    let place = |side: &crate::spec::Side| Place {
        endpoint: side.endpoint_identity(),
        bucket: side.bucket.clone(),
        prefix: side.prefix.clone(),
    };
    let plan = PlanFile {
        format: FORMAT,
        spec: spec.name.clone(),
        spec_sha256: spec_digest(spec)?,
        source: place(&spec.source),
        destination: place(&spec.destination),
        listed_at,
        objects: n as u64,
        bytes: copies.iter().map(|(_, s)| s).sum(),
        shards: files,
    };
    let path = dir.join("plan.json");
    let json = serde_json::to_string_pretty(&plan).expect("a plan serializes");
    std::fs::write(&path, json + "\n").map_err(io(&path))?;
    Ok(plan)
}

fn line_error(path: &Path, line: usize) -> impl Fn(String) -> ShardError + '_ {
    move |message| ShardError::Line {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// The non-empty lines of a CSV file with their numbers (from 1), without a CR.
fn csv_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.is_empty())
}

/// Reads a key file for `spec`: `bucket,key` lines (more fields, such as a version id, are
/// ignored), the bucket the spec's source bucket and the key under its source prefix.
pub fn read_keys(path: &Path, spec: &Spec) -> Result<BTreeSet<String>, ShardError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut keys = BTreeSet::new();
    for (i, line) in csv_lines(&text) {
        let bad = line_error(path, i);
        let mut fields = line.split(',');
        let (bucket, key) = (fields.next().unwrap_or(""), fields.next());
        let Some(key) = key.and_then(decode_key) else {
            return Err(bad("expected `bucket,key` with the key URL-encoded".into()));
        };
        if bucket != spec.source.bucket {
            return Err(bad(format!(
                "bucket {bucket:?} is not this spec's source bucket {:?}",
                spec.source.bucket
            )));
        }
        if !key.starts_with(&spec.source.prefix) || key.len() == spec.source.prefix.len() {
            return Err(bad(format!("key {key:?} is not under the source prefix {:?}", spec.source.prefix)));
        }
        keys.insert(key);
    }
    Ok(keys)
}

/// One task of an S3 Batch Operations completion report: `bucket,key,version,status,error
/// code,HTTP status,result message`, the key URL-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub key: String,
    pub succeeded: bool,
    /// The error code and result message of a failed task.
    pub error: String,
}

/// Reads a completion report for `spec`: each task's source key under the spec's source
/// prefix in its source bucket, and whether it succeeded.
pub fn read_report(path: &Path, spec: &Spec) -> Result<Vec<Task>, ShardError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut tasks = Vec::new();
    for (i, line) in csv_lines(&text) {
        let bad = line_error(path, i);
        let fields: Vec<&str> = line.splitn(7, ',').collect();
        let [bucket, key, _version, status, code, _http, message] = fields[..] else {
            return Err(bad(
                "expected bucket,key,version,task status,error code,HTTP status,result message".into()
            ));
        };
        let key = decode_key(key).ok_or_else(|| bad("the key is not URL-encoded UTF-8".into()))?;
        if bucket != spec.source.bucket || !key.starts_with(&spec.source.prefix) {
            return Err(bad(format!(
                "s3://{bucket}/{key} is not under this spec's source s3://{}/{}",
                spec.source.bucket, spec.source.prefix
            )));
        }
        let succeeded = match status.to_ascii_lowercase().as_str() {
            "succeeded" => true,
            "failed" => false,
            other => return Err(bad(format!("task status {other:?} is neither succeeded nor failed"))),
        };
        tasks.push(Task {
            key,
            succeeded,
            error: format!("{code} {}", message.trim_matches('"')).trim().to_string(),
        });
    }
    Ok(tasks)
}

/// The listing range `(after, until]` that holds `keys`: until the last, after the first
/// key's string without its last character, which sorts before the first key and after every
/// key before it but those that share it and sort lower (a few keys more to pass over, never
/// one less). `None` for no keys.
pub fn key_range(keys: &BTreeSet<String>) -> Option<(String, String)> {
    let (first, last) = (keys.first()?, keys.last()?);
    let mut after = first.clone();
    after.pop();
    Some((after, last.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_csv_encoding() {
        for key in ["data/a b+c,d.zip", "data/ü/%41/é?x=1&y#z", "data/\"q\"\t\n"] {
            let field = encode_key(key);
            assert!(!field.contains([',', ' ', '+', '"', '\n']), "{field}");
            assert_eq!(decode_key(&field).as_deref(), Some(key));
        }
        assert_eq!(decode_key("data/a+b%2Bc").as_deref(), Some("data/a b+c"));
        assert_eq!(decode_key("%FF"), None);
    }
}
