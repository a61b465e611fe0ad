//! The SQL of each write the writer thread applies: rows recorded, moved into history,
//! forgotten or adopted, runs started and finished, failures, uploads and feed state.

use super::{FailureRow, ObjectRow, RunRow, Target};
use crate::spec::{Mode, Side};
use rusqlite::{params, Transaction};

pub(super) fn deleted(tx: &Transaction, t: &Target, dest_key: &str, run_id: i64, at: &str) -> rusqlite::Result<()> {
    to_history(tx, t, dest_key, run_id, at, "deleted", None)?;
    forget(tx, t, dest_key)?;
    tx.prepare_cached("INSERT INTO deletions (run_id, spec, dest_key, at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![run_id, t.spec, dest_key, at])?;
    Ok(())
}

/// A late sidecar's verdict on the object copied before it: verified by it, or contradicted.
pub(super) fn sidecar_checked(tx: &Transaction, t: &Target, dest_key: &str, sha256: &str, agrees: bool) -> rusqlite::Result<()> {
    let sql = match agrees {
        true => {
            "UPDATE objects SET verified = 'sha256', sha256 = ?5, sidecar_mismatch = NULL
              WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3 AND dest_key = ?4"
        }
        false => "UPDATE objects SET sidecar_mismatch = ?5 WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3 AND dest_key = ?4",
    };
    tx.prepare_cached(sql)?
        .execute(params![t.spec, t.endpoint, t.bucket, dest_key, sha256])?;
    Ok(())
}

pub(super) fn failure(tx: &Transaction, f: &FailureRow, at: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO failures (run_id, spec, source_key, mode, kind, code, message, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        f.run_id,
        f.spec,
        f.source_key,
        f.mode.map(Mode::as_str),
        f.kind,
        f.code,
        f.message,
        at
    ])?;
    Ok(())
}

/// One column of the spec's `feeds` row (one of a fixed few, never from input), the row made
/// when missing.
pub(super) fn set_feed(tx: &Transaction, spec: &str, column: &'static str, value: Option<&str>) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO feeds (spec, {column}) VALUES (?1, ?2) ON CONFLICT (spec) DO UPDATE SET {column} = excluded.{column}"
    ))?
    .execute(params![spec, value])?;
    Ok(())
}

pub(super) fn adopt(tx: &Transaction, t: &Target, source_endpoint: &str, source_bucket: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE objects SET dest_endpoint = ?2, dest_bucket = ?3, source_endpoint = ?4, source_bucket = ?5
         WHERE spec = ?1 AND dest_endpoint = '' AND dest_bucket = ''",
    )?
    .execute(params![t.spec, t.endpoint, t.bucket, source_endpoint, source_bucket])?;
    Ok(())
}

pub(super) fn upload_started(tx: &Transaction, upload_id: &str, spec: &str, side: &Side, dest_key: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO uploads (upload_id, spec, bucket, dest_key, created_at, endpoint, region, path_style, profile)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        upload_id,
        spec,
        side.bucket,
        dest_key,
        super::now(),
        side.endpoint,
        side.region,
        side.path_style,
        side.profile
    ])?;
    Ok(())
}

pub(super) fn forget(tx: &Transaction, t: &Target, dest_key: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM objects WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3 AND dest_key = ?4")?
        .execute(params![t.spec, t.endpoint, t.bucket, dest_key])?;
    // The kept series state counts the row: the next read counts every row again.
    tx.prepare_cached("UPDATE feeds SET series_state = NULL WHERE spec = ?1 AND series_state IS NOT NULL")?
        .execute(params![t.spec])?;
    Ok(())
}

/// Moves the current row of `dest_key` into `history`, as replaced (`changed`) or `deleted` by
/// run `run_id`.
fn to_history(
    tx: &Transaction,
    t: &Target,
    dest_key: &str,
    run_id: i64,
    at: &str,
    change: &str,
    kept_key: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO history (spec, dest_endpoint, dest_bucket, dest_key, source_key, size, etag, checksum, source_last_modified,
           mode, copied_at, run_id, replaced_at, replaced_by_run, change, kept_key)
         SELECT spec, dest_endpoint, dest_bucket, dest_key, source_key, size, etag, checksum, source_last_modified,
           mode, copied_at, run_id, ?5, ?6, ?7, ?8
         FROM objects WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3 AND dest_key = ?4",
    )?
    .execute(params![t.spec, t.endpoint, t.bucket, dest_key, at, run_id, change, kept_key])?;
    Ok(())
}

pub(super) fn upsert(tx: &Transaction, r: &ObjectRow) -> rusqlite::Result<()> {
    // A different version replaces the one recorded: the old one goes to history (a re-copy of
    // the same version, as a repair makes, does not).
    let replaced: bool =
        tx.prepare_cached(
            "SELECT count(*) FROM objects WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3 AND dest_key = ?4
               AND run_id != ?5 AND (size != ?6 OR etag IS NOT ?7 OR (?7 IS NULL AND source_last_modified IS NOT ?8))",
        )?
        .query_row(
            params![
                r.spec,
                r.dest_endpoint,
                r.dest_bucket,
                r.dest_key,
                r.run_id,
                r.size as i64,
                r.etag,
                r.source_last_modified
            ],
            |row| row.get::<_, i64>(0),
        )? > 0;
    if replaced {
        let t = Target {
            spec: r.spec.clone(),
            endpoint: r.dest_endpoint.clone(),
            bucket: r.dest_bucket.clone(),
        };
        to_history(tx, &t, &r.dest_key, r.run_id, &r.copied_at, "changed", r.kept_previous.as_deref())?;
    }
    tx.prepare_cached(
        "INSERT INTO objects (spec, dest_key, source_key, size, etag, source_last_modified, copied_at, mode, run_id, dest_etag, verified,
           dest_endpoint, dest_bucket, source_endpoint, source_bucket, checksum, sha256, sidecar_mismatch)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, NULL)
         ON CONFLICT (spec, dest_endpoint, dest_bucket, dest_key) DO UPDATE SET source_key = excluded.source_key, size = excluded.size,
           etag = excluded.etag, source_last_modified = excluded.source_last_modified, copied_at = excluded.copied_at,
           mode = excluded.mode, run_id = excluded.run_id, dest_etag = excluded.dest_etag, verified = excluded.verified,
           source_endpoint = excluded.source_endpoint, source_bucket = excluded.source_bucket, checksum = excluded.checksum,
           sha256 = excluded.sha256, sidecar_mismatch = NULL",
    )?
    .execute(params![
        r.spec,
        r.dest_key,
        r.source_key,
        r.size as i64,
        r.etag,
        r.source_last_modified,
        r.copied_at,
        r.mode.as_str(),
        r.run_id,
        r.dest_etag,
        r.verified,
        r.dest_endpoint,
        r.dest_bucket,
        r.source_endpoint,
        r.source_bucket,
        r.checksum,
        r.sha256
    ])?;
    Ok(())
}

pub(super) fn finish_run(tx: &Transaction, r: &RunRow) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE runs SET finished_at = ?2, status = ?3, objects_listed = ?4, objects_copied = ?5, objects_skipped = ?6,
           objects_failed = ?7, objects_deleted = ?8, bytes_copied = ?9, bytes_through_host = ?10, requests = ?11,
           details = ?12, error = ?13 WHERE id = ?1",
        params![
            r.id,
            r.finished_at,
            r.status,
            r.objects_listed as i64,
            r.objects_copied as i64,
            r.objects_skipped as i64,
            r.objects_failed as i64,
            r.objects_deleted as i64,
            r.bytes_copied as i64,
            r.bytes_through_host as i64,
            r.requests as i64,
            r.details,
            r.error
        ],
    )?;
    Ok(())
}
