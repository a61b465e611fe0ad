//! Reading the manifest: a connection of its own per reader (WAL: never blocking the writer),
//! the planner's windows of rows, the runs, failures and counts the audits show.

use super::{schema, sqlite_err, ListSplits, ManifestError, ModeColumn, ObjectRow, PlanRow, Result, RunRow, Target};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A read connection for planning and audits. Never blocks the writer (WAL).
pub struct Reader {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(sqlite_err(path))?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sqlite_err(path))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite_err(path))?;
        if version > schema::VERSION {
            return Err(ManifestError::TooNew {
                path: path.to_path_buf(),
                found: version,
                supported: schema::VERSION,
            });
        }
        Ok(Reader {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The target's rows with `lower < dest_key <= upper` (bounds optional) and `dest_key` under
    /// `prefix`, in key order: an audit's window onto the manifest beside one listing page.
    pub fn range(&self, t: &Target, prefix: &str, lower: Option<&str>, upper: Option<&str>) -> Result<Vec<ObjectRow>> {
        self.window(OBJECT_COLUMNS, t, prefix, &[], lower, upper, object_from_row)
    }

    /// The target's row of `dest_key`, if it holds one.
    pub fn object(&self, t: &Target, dest_key: &str) -> Result<Option<ObjectRow>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {OBJECT_COLUMNS} FROM objects WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3 AND dest_key = ?4"
                ),
                params![t.spec, t.endpoint, t.bucket, dest_key],
                object_from_row,
            )
            .optional()
            .map_err(sqlite_err(&self.path))
    }

    /// The source keys of the sidecars (`suffix`) that the spec's runs interrupted since its
    /// last finished run copied: a run killed after copying a sidecar never checked its object.
    /// (Through the rows of those runs: without `INDEXED BY`, SQLite reads every row of the spec.)
    pub fn sidecars_of_interrupted_runs(&self, spec: &str, suffix: &str) -> Result<Vec<String>> {
        self.all(
            "SELECT source_key FROM objects INDEXED BY objects_by_run WHERE spec = ?1 AND substr(source_key, -length(?2)) = ?2 AND run_id IN
               (SELECT id FROM runs WHERE spec = ?1 AND status = 'interrupted'
                  AND id > coalesce((SELECT max(id) FROM runs WHERE spec = ?1 AND status IN ('ok', 'partial')), 0))",
            params![spec, suffix],
            |r| r.get(0),
        )
    }

    /// How many objects run `run_id` of `spec` copied whose source changed before `before`
    /// (RFC 3339, as `source_last_modified` is stored).
    pub fn copied_changed_before(&self, spec: &str, run_id: i64, before: &str) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM objects INDEXED BY objects_by_run
                  WHERE spec = ?1 AND run_id = ?2 AND source_last_modified < ?3",
                params![spec, run_id, before],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sqlite_err(&self.path))
    }

    /// The first `limit` failures of a run: source key and message.
    pub fn failures(&self, run_id: i64, limit: u32) -> Result<Vec<(String, String)>> {
        self.all(
            "SELECT source_key, message FROM failures WHERE run_id = ?1 ORDER BY rowid LIMIT ?2",
            params![run_id, limit],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// [`Reader::range`] with only what the planner compares, and whether each row was copied
    /// from `source` (endpoint identity, bucket): a no-op run reads a row per listed key, and
    /// the full rows' thirteen strings were most of its CPU once the listing was fast.
    pub fn plan_range(
        &self,
        t: &Target,
        source: &(String, String),
        prefix: &str,
        lower: Option<&str>,
        upper: Option<&str>,
    ) -> Result<Vec<PlanRow>> {
        let columns = "dest_key, source_key, size, etag, source_last_modified, coalesce(source_endpoint = ?5 AND source_bucket = ?6, 0)";
        self.window(columns, t, prefix, &[&source.0, &source.1], lower, upper, |r| {
            Ok(PlanRow {
                dest_key: r.get(0)?,
                source_key: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                etag: r.get(3)?,
                source_last_modified: r.get(4)?,
                same_source: r.get(5)?,
            })
        })
    }

    /// The rows of a window (see [`Reader::range`]); `extra` are parameters ?5, ?6... of `columns`.
    #[allow(clippy::too_many_arguments)]
    fn window<T>(
        &self,
        columns: &str,
        t: &Target,
        prefix: &str,
        extra: &[&dyn rusqlite::ToSql],
        lower: Option<&str>,
        upper: Option<&str>,
        row: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        // Each bound is a plain comparison on the primary key, so SQLite seeks straight to the
        // window: an `?5 IS NULL OR ...` form would scan from the prefix every page (quadratic).
        // Parameters are numbered in the order they are bound.
        let mut p: Vec<&dyn rusqlite::ToSql> = vec![&t.spec, &t.endpoint, &t.bucket, &prefix];
        p.extend_from_slice(extra);
        let low = match &lower {
            Some(l) => {
                p.push(l);
                format!("dest_key > ?{}", p.len())
            }
            None => "dest_key >= ?4".to_string(),
        };
        let mut high = String::new();
        if let Some(u) = &upper {
            p.push(u);
            high = format!("AND dest_key <= ?{}", p.len());
        }
        // Keys between two keys under the prefix are under it too (byte order): only a window
        // whose top is not under it needs each key's prefix checked, and a bound at the end of
        // the prefix, so that SQLite stops there rather than read every row after it.
        let end = prefix_end(prefix);
        if !upper.is_some_and(|u| u.starts_with(prefix)) {
            if let Some(end) = &end {
                p.push(end);
                high += &format!(" AND dest_key < ?{}", p.len());
            }
            high += " AND substr(dest_key, 1, length(?4)) = ?4";
        }
        let sql = format!(
            "SELECT {columns} FROM objects
             WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3 AND {low} {high}
             ORDER BY dest_key"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(sqlite_err(&self.path))?;
        let rows = stmt.query_map(p.as_slice(), row).map_err(sqlite_err(&self.path))?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(sqlite_err(&self.path))
    }

    /// Where the spec's last complete listing said the next one can cut its parts
    /// ([`Writer::list_splits`]); `None` when none was recorded or it does not parse.
    pub fn list_splits(&self, spec: &str) -> Result<Option<ListSplits>> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT list_splits FROM feeds WHERE spec = ?1", [spec], |r| r.get(0))
            .optional()
            .map_err(sqlite_err(&self.path))?
            .flatten();
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Fixes what this connection reads to the manifest as it is now (a read transaction), so
    /// that a count taken later, on another thread, is of the rows the run started with.
    pub fn snapshot(self) -> Result<Reader> {
        self.conn
            .execute_batch("BEGIN")
            .and_then(|()| {
                self.conn
                    .query_row("SELECT count(*) FROM (SELECT 1 FROM objects LIMIT 1)", [], |_| Ok(()))
            })
            .map_err(sqlite_err(&self.path))?;
        Ok(self)
    }

    /// Source keys that cut the spec's rows under `prefix` into `parts` runs of equal size, in
    /// key order: where parallel listings of the source start. Fewer (or none) when the manifest
    /// holds less than a listing page (1,000 keys) per part.
    pub fn split_keys(&self, t: &Target, prefix: &str, parts: usize) -> Result<Vec<String>> {
        const WHERE: &str =
            "WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3 AND dest_key >= ?4 AND substr(dest_key, 1, length(?4)) = ?4";
        let args = [t.spec.as_str(), &t.endpoint, &t.bucket, prefix];
        let rows: u64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM objects {WHERE}"), args, |r| r.get::<_, i64>(0))
            .map_err(sqlite_err(&self.path))? as u64;
        let parts = crate::spec::list_ranges(parts, rows);
        if parts < 2 {
            return Ok(Vec::new());
        }
        let step = rows / parts;
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT source_key FROM objects {WHERE} ORDER BY dest_key"))
            .map_err(sqlite_err(&self.path))?;
        let keys = stmt
            .query_map(args, |r| r.get::<_, String>(0))
            .map_err(sqlite_err(&self.path))?
            .enumerate()
            .filter(|(i, _)| *i as u64 % step == step - 1)
            .take(parts as usize - 1)
            .map(|(_, k)| k)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sqlite_err(&self.path))?;
        Ok(keys)
    }

    /// Objects the manifest holds for the target.
    pub fn count_objects(&self, t: &Target) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM objects WHERE spec = ?1 AND dest_endpoint = ?2 AND dest_bucket = ?3",
                [&t.spec, &t.endpoint, &t.bucket],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sqlite_err(&self.path))
    }

    /// The last `limit` runs, newest first, optionally of one spec.
    pub fn runs(&self, spec: Option<&str>, limit: u32) -> Result<Vec<RunRow>> {
        self.all(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR spec = ?1) ORDER BY id DESC LIMIT ?2"),
            params![spec, limit],
            run_from_row,
        )
    }

    /// Every row `sql` returns, each made by `row`.
    pub(super) fn all<T>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let err = sqlite_err(&self.path);
        let mut stmt = self.conn.prepare(sql).map_err(&err)?;
        let rows = stmt.query_map(args, row).map_err(&err)?;
        rows.collect::<rusqlite::Result<Vec<T>>>().map_err(&err)
    }
}

pub(crate) const OBJECT_COLUMNS: &str = "spec, dest_endpoint, dest_bucket, dest_key, source_endpoint, source_bucket, source_key, size,
    etag, source_last_modified, copied_at, mode, run_id, dest_etag, verified, checksum, sha256, sidecar_mismatch";

pub(super) const RUN_COLUMNS: &str =
    "id, spec, started_at, finished_at, status, objects_listed, objects_copied, objects_skipped, objects_failed,
    objects_deleted, bytes_copied, bytes_through_host, requests, details, error";

pub(super) fn object_from_row(r: &rusqlite::Row) -> rusqlite::Result<ObjectRow> {
    Ok(ObjectRow {
        spec: r.get(0)?,
        dest_endpoint: r.get(1)?,
        dest_bucket: r.get(2)?,
        dest_key: r.get(3)?,
        source_endpoint: r.get(4)?,
        source_bucket: r.get(5)?,
        source_key: r.get(6)?,
        size: r.get::<_, i64>(7)? as u64,
        etag: r.get(8)?,
        source_last_modified: r.get(9)?,
        copied_at: r.get(10)?,
        mode: r.get::<_, ModeColumn>(11)?.0,
        run_id: r.get(12)?,
        dest_etag: r.get(13)?,
        verified: r.get(14)?,
        checksum: r.get(15)?,
        sha256: r.get(16)?,
        sidecar_mismatch: r.get(17)?,
        kept_previous: None,
    })
}

pub(super) fn run_from_row(r: &rusqlite::Row) -> rusqlite::Result<RunRow> {
    let u = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
    Ok(RunRow {
        id: r.get(0)?,
        spec: r.get(1)?,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        status: r.get(4)?,
        objects_listed: u(5)?,
        objects_copied: u(6)?,
        objects_skipped: u(7)?,
        objects_failed: u(8)?,
        objects_deleted: u(9)?,
        bytes_copied: u(10)?,
        bytes_through_host: u(11)?,
        requests: u(12)?,
        details: r.get(13)?,
        error: r.get(14)?,
    })
}

/// The least string above every string that starts with `prefix`: its last character one
/// code point up (UTF-8 keeps code point order in byte order), after dropping trailing
/// characters that have none above them. `None` for an empty prefix or one of only those.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_prefix_ends_at_its_last_character_one_up() {
        assert_eq!(prefix_end("a/b/").as_deref(), Some("a/b0"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("é").as_deref(), Some("ê"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        // Every key under the prefix sorts below its end, in SQLite's byte order as in Rust's.
        for key in ["a/b/", "a/b/\u{10FFFF}\u{10FFFF}", "a/b/zzz", "a/b/ÿ"] {
            assert!(key < prefix_end("a/b/").unwrap().as_str());
        }
    }
    use super::*;
    use crate::manifest::{now, Verified, Writer};
    use crate::spec::Mode;

    fn target(spec: &str) -> Target {
        Target {
            spec: spec.into(),
            endpoint: "e".into(),
            bucket: "b".into(),
        }
    }

    fn row(key: &str) -> ObjectRow {
        ObjectRow {
            spec: "s".into(),
            dest_endpoint: "e".into(),
            dest_bucket: "b".into(),
            source_endpoint: "e".into(),
            source_bucket: "src".into(),
            dest_key: key.into(),
            source_key: key.into(),
            size: 1,
            etag: None,
            source_last_modified: None,
            copied_at: now(),
            mode: Mode::Direct,
            run_id: 1,
            dest_etag: None,
            verified: Verified::Size,
            checksum: None,
            sha256: None,
            sidecar_mismatch: None,
            kept_previous: None,
        }
    }

    #[tokio::test]
    async fn range_honours_every_combination_of_bounds_and_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let w = Writer::open(&path, Duration::from_secs(1)).unwrap();
        for k in ["a/1", "p/1", "p/2", "p/3", "p/4", "q/1"] {
            w.upsert(row(k));
        }
        w.flush().await.unwrap();
        let r = Reader::open(&path).unwrap();
        let keys = |lo, hi| {
            r.range(&target("s"), "p/", lo, hi)
                .unwrap()
                .into_iter()
                .map(|x| x.dest_key)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(None, None), ["p/1", "p/2", "p/3", "p/4"]);
        assert_eq!(keys(None, Some("p/2")), ["p/1", "p/2"]);
        assert_eq!(keys(Some("p/2"), None), ["p/3", "p/4"]);
        assert_eq!(keys(Some("p/1"), Some("p/3")), ["p/2", "p/3"]);
        assert!(r.range(&target("other"), "p/", None, None).unwrap().is_empty());
        let elsewhere = Target {
            bucket: "moved".into(),
            ..target("s")
        };
        assert!(
            r.range(&elsewhere, "p/", None, None).unwrap().is_empty(),
            "rows of another destination"
        );
    }

    #[tokio::test]
    async fn plan_range_reads_the_planners_columns_and_which_source_each_row_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let w = Writer::open(&path, Duration::from_secs(1)).unwrap();
        w.upsert(ObjectRow {
            etag: Some("e1".into()),
            source_last_modified: Some("2024-01-01T00:00:00.000Z".into()),
            source_key: "data/p/1".into(),
            size: 7,
            ..row("p/1")
        });
        w.upsert(ObjectRow {
            source_bucket: "other".into(),
            ..row("p/2")
        });
        w.upsert(ObjectRow {
            source_endpoint: "elsewhere".into(),
            ..row("p/3")
        });
        w.flush().await.unwrap();
        let r = Reader::open(&path).unwrap();
        let rows = r
            .plan_range(&target("s"), &("e".into(), "src".into()), "p/", None, Some("p/3"))
            .unwrap();
        assert_eq!(
            rows[0],
            PlanRow {
                dest_key: "p/1".into(),
                source_key: "data/p/1".into(),
                size: 7,
                etag: Some("e1".into()),
                source_last_modified: Some("2024-01-01T00:00:00.000Z".into()),
                same_source: true,
            }
        );
        assert_eq!(rows.iter().map(|r| r.same_source).collect::<Vec<_>>(), [true, false, false]);
        let after = r
            .plan_range(&target("s"), &("e".into(), "src".into()), "p/", Some("p/1"), Some("p/2"))
            .unwrap();
        assert_eq!(after.iter().map(|r| r.dest_key.as_str()).collect::<Vec<_>>(), ["p/2"]);
    }
}
