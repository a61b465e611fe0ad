//! Copies made elsewhere, brought home: the objects of a shard's own manifest (`run --keys
//! --manifest`) and the objects a completion report says were copied (checked against the
//! destination by the caller). Each import is one run of the spec, so its objects reach the
//! next change file like a run's own.

use super::{now, object_from_row, open_rw, sqlite_err, writes, ManifestError, ObjectRow, Reader, Result, Target, OBJECT_COLUMNS};
use rusqlite::{params, OptionalExtension, Transaction};
use std::path::Path;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    pub run_id: i64,
    /// Rows the manifest did not hold.
    pub added: u64,
    /// Rows newer than the ones held (by `copied_at`), which they replace.
    pub replaced: u64,
    /// Rows the manifest already held, or held newer: left as they were.
    pub kept: u64,
    pub bytes: u64,
}

/// Merges the objects of the manifest at `shard` into the one at `path`, as one run of
/// `target`'s spec; the newest verified row of each key wins, so importing twice changes
/// nothing. A shard holding rows of another spec or destination is refused whole.
pub fn shard(path: &Path, shard: &Path, target: &Target) -> Result<Imported> {
    // Opening it brings its schema up to date (or refuses a newer one).
    drop(open_rw(shard)?);
    let mut conn = open_rw(path)?;
    let err = sqlite_err(path);
    conn.execute("ATTACH DATABASE ?1 AS shard", [shard.to_string_lossy()])
        .map_err(&err)?;
    let foreign: Option<(String, String, String, i64)> = conn
        .query_row(
            "SELECT spec, dest_endpoint, dest_bucket, count(*) FROM shard.objects
              WHERE NOT (spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3) GROUP BY 1, 2, 3 LIMIT 1",
            params![target.spec, target.endpoint, target.bucket],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(&err)?;
    if let Some((spec, endpoint, bucket, rows)) = foreign {
        return Err(ManifestError::Refused {
            path: shard.to_path_buf(),
            why: format!(
                "it holds {rows} rows of spec {spec:?} at {endpoint} bucket {bucket:?}, not of spec {:?} at {} bucket {:?}: nothing imported",
                target.spec, target.endpoint, target.bucket
            ),
        });
    }
    in_run(&mut conn, path, &target.spec, "manifest", shard, |tx, done| {
        let mut rows = tx.prepare(&format!(
            "SELECT {OBJECT_COLUMNS} FROM shard.objects WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3"
        ))?;
        for row in rows.query_map(params![target.spec, target.endpoint, target.bucket], object_from_row)? {
            merge(tx, row?, done)?;
        }
        Ok(())
    })
}

/// The specs whose objects the manifest at `shard` holds.
pub fn specs_in(shard: &Path) -> Result<Vec<String>> {
    Reader::open(shard)?.all("SELECT DISTINCT spec FROM objects ORDER BY spec", [], |r| r.get(0))
}

/// Records `rows` (objects copied elsewhere and checked by the caller) as one run of `spec`,
/// `from` naming where they came from; the newest row of each key wins.
pub fn rows(path: &Path, spec: &str, from: &Path, rows: Vec<ObjectRow>) -> Result<Imported> {
    let mut conn = open_rw(path)?;
    in_run(&mut conn, path, spec, "report", from, |tx, done| {
        rows.into_iter().try_for_each(|row| merge(tx, row, done))
    })
}

/// One import as one run of `spec`, in one transaction: its run row, the rows `each` merges,
/// its counts.
fn in_run(
    conn: &mut rusqlite::Connection,
    path: &Path,
    spec: &str,
    kind: &str,
    from: &Path,
    each: impl FnOnce(&Transaction, &mut Imported) -> rusqlite::Result<()>,
) -> Result<Imported> {
    let err = sqlite_err(path);
    let tx = conn.transaction().map_err(&err)?;
    let mut done = Imported {
        run_id: start(&tx, spec, kind, from).map_err(&err)?,
        ..Imported::default()
    };
    each(&tx, &mut done).map_err(&err)?;
    finish(&tx, &done).map_err(&err)?;
    tx.commit().map_err(&err)?;
    Ok(done)
}

/// The import's run row: `ok` once it commits, its details naming the file.
fn start(tx: &Transaction, spec: &str, kind: &str, from: &Path) -> rusqlite::Result<i64> {
    let at = now();
    let details = serde_json::json!({ "listing": "import", "import": { "kind": kind, "file": from.display().to_string() } });
    tx.execute(
        "INSERT INTO runs (spec, started_at, finished_at, status, details) VALUES (?1, ?2, ?2, 'ok', ?3)",
        params![spec, at, details.to_string()],
    )?;
    Ok(tx.last_insert_rowid())
}

fn merge(tx: &Transaction, mut row: ObjectRow, done: &mut Imported) -> rusqlite::Result<()> {
    let held: Option<String> = tx
        .prepare_cached("SELECT copied_at FROM objects WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3 AND dest_key = ?4")?
        .query_row(params![row.spec, row.dest_endpoint, row.dest_bucket, row.dest_key], |r| r.get(0))
        .optional()?;
    match held {
        Some(at) if at >= row.copied_at => {
            done.kept += 1;
            return Ok(());
        }
        Some(_) => done.replaced += 1,
        None => done.added += 1,
    }
    done.bytes += row.size;
    row.run_id = done.run_id;
    row.kept_previous = None;
    writes::upsert(tx, &row)
}

fn finish(tx: &Transaction, done: &Imported) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE runs SET objects_listed = ?2, objects_copied = ?3, objects_skipped = ?4, bytes_copied = ?5,
           details = json_set(details, '$.import.added', ?6, '$.import.replaced', ?7, '$.import.kept', ?4) WHERE id = ?1",
        params![
            done.run_id,
            (done.added + done.replaced + done.kept) as i64,
            (done.added + done.replaced) as i64,
            done.kept as i64,
            done.bytes as i64,
            done.added as i64,
            done.replaced as i64
        ],
    )?;
    Ok(())
}
