//! What the lakehouse reads: the change records of runs (copied as new or changed, deleted),
//! each object's versions, and per-feed freshness. All derived from `objects` and `history`:
//! a run's objects rows and the history rows it copied or replaced are its change feed.

use super::{sqlite_err, Reader, Result};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::fmt;

/// One line of a change feed (the delivery file's object line, `manifest changes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub dest_key: String,
    pub source_key: String,
    pub size: u64,
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    pub source_last_modified: Option<String>,
    pub action: ChangeAction,
    pub mode: String,
    pub run_id: i64,
}

/// What a run did to a key (a change line's `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    /// Copied, with no earlier version held.
    New,
    /// Copied over an earlier version (republished upstream).
    Changed,
    /// Deleted at the destination.
    Deleted,
}

text_column!(ChangeAction,
    ChangeAction::New => "new",
    ChangeAction::Changed => "changed",
    ChangeAction::Deleted => "deleted",
);

/// Where one version of an object stands (`manifest history`'s `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// The version the destination holds now.
    Current,
    /// Replaced by a newer version.
    Changed,
    /// Deleted at the destination.
    Deleted,
}

text_column!(VersionState,
    VersionState::Current => "current",
    VersionState::Changed => "changed",
    VersionState::Deleted => "deleted",
);

/// A finished run whose delivery file is not written yet.
#[derive(Debug, Clone)]
pub struct Undelivered {
    pub run_id: i64,
    pub status: super::RunStatus,
    pub started_at: String,
    /// The series counts the run recorded (`[series]`): periods missing, series overdue.
    pub series: Option<(u64, u64)>,
}

/// One version of an object: the current one (`replaced_at` None) or one from history.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub spec: String,
    pub dest_key: String,
    pub source_key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub checksum: Option<String>,
    pub copied_at: String,
    pub run_id: i64,
    pub replaced_at: Option<String>,
    pub replaced_by_run: Option<i64>,
    pub state: VersionState,
    pub kept_key: Option<String>,
}

/// `changed` when the run replaced a version of the key, else `new`.
const ACTION: &str = "CASE WHEN EXISTS (SELECT 1 FROM history r WHERE r.spec = x.spec AND r.dest_key = x.dest_key
    AND r.replaced_by_run = x.run_id AND r.change = 'changed') THEN 'changed' ELSE 'new' END";

impl Reader {
    /// The change records of `spec`'s runs with `after < run_id <= upto`, by run then key.
    pub fn changes(&self, spec: &str, after: i64, upto: Option<i64>, mut each: impl FnMut(Change) -> bool) -> Result<()> {
        let sql = format!(
            "SELECT dest_key, source_key, size, etag, checksum, source_last_modified, action, mode, run_id FROM (
               SELECT x.dest_key, x.source_key, x.size, x.etag, x.checksum, x.source_last_modified, {ACTION} AS action, x.mode, x.run_id
                 FROM objects x WHERE x.spec = ?1 AND x.run_id > ?2 AND x.run_id <= ?3
               UNION ALL
               SELECT x.dest_key, x.source_key, x.size, x.etag, x.checksum, x.source_last_modified, {ACTION}, x.mode, x.run_id
                 FROM history x WHERE x.spec = ?1 AND x.run_id > ?2 AND x.run_id <= ?3
               UNION ALL
               SELECT dest_key, source_key, size, etag, checksum, source_last_modified, 'deleted', mode, replaced_by_run
                 FROM history WHERE spec = ?1 AND change = 'deleted' AND replaced_by_run > ?2 AND replaced_by_run <= ?3
             ) ORDER BY run_id, dest_key, action"
        );
        let err = sqlite_err(&self.path);
        let mut stmt = self.conn.prepare(&sql).map_err(&err)?;
        let rows = stmt
            .query_map(params![spec, after, upto.unwrap_or(i64::MAX)], |r| {
                Ok(Change {
                    dest_key: r.get(0)?,
                    source_key: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    etag: r.get(3)?,
                    checksum: r.get(4)?,
                    source_last_modified: r.get(5)?,
                    action: r.get(6)?,
                    mode: r.get(7)?,
                    run_id: r.get(8)?,
                })
            })
            .map_err(&err)?;
        for row in rows {
            if !each(row.map_err(&err)?) {
                break;
            }
        }
        Ok(())
    }

    /// Every version of destination key `key` (of `spec`, or of every spec), oldest first.
    pub fn history(&self, key: &str, spec: Option<&str>) -> Result<Vec<Version>> {
        self.all(
            "SELECT spec, dest_key, source_key, size, etag, checksum, copied_at, run_id, replaced_at, replaced_by_run, state, kept_key FROM (
               SELECT spec, dest_key, source_key, size, etag, checksum, copied_at, run_id, replaced_at, replaced_by_run, change AS state, kept_key
                 FROM history WHERE dest_key = ?1 AND (?2 IS NULL OR spec = ?2)
               UNION ALL
               SELECT spec, dest_key, source_key, size, etag, checksum, copied_at, run_id, NULL, NULL, 'current', NULL
                 FROM objects WHERE dest_key = ?1 AND (?2 IS NULL OR spec = ?2)
             ) ORDER BY spec, copied_at, run_id",
            params![key, spec],
            |r| {
                Ok(Version {
                    spec: r.get(0)?,
                    dest_key: r.get(1)?,
                    source_key: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    etag: r.get(4)?,
                    checksum: r.get(5)?,
                    copied_at: r.get(6)?,
                    run_id: r.get(7)?,
                    replaced_at: r.get(8)?,
                    replaced_by_run: r.get(9)?,
                    state: r.get(10)?,
                    kept_key: r.get(11)?,
                })
            },
        )
    }

    /// Versions run `run_id` replaced (upstream revisions): (dest_key, kept_key).
    pub fn revised(&self, spec: &str, run_id: i64) -> Result<Vec<(String, Option<String>)>> {
        self.all(
            "SELECT dest_key, kept_key FROM history WHERE spec = ?1 AND replaced_by_run = ?2 AND change = 'changed' ORDER BY dest_key",
            params![spec, run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Every destination key of `spec` whose file was republished upstream (a `changed`
    /// version in `history`), for the status page's heatmap.
    pub fn revised_keys(&self, spec: &str) -> Result<Vec<String>> {
        self.all(
            "SELECT DISTINCT dest_key FROM history WHERE spec = ?1 AND change = 'changed'",
            params![spec],
            |r| r.get(0),
        )
    }

    /// Finished runs of `spec` whose delivery file is not written, oldest first.
    pub fn undelivered(&self, spec: &str) -> Result<Vec<Undelivered>> {
        self.all(
            "SELECT id, status, started_at, json_extract(details, '$.series_missing'), json_extract(details, '$.series_overdue')
               FROM runs WHERE spec = ?1 AND delivered_at IS NULL AND status != 'running' ORDER BY id",
            [spec],
            |r| {
                let (missing, overdue): (Option<i64>, Option<i64>) = (r.get(3)?, r.get(4)?);
                Ok(Undelivered {
                    run_id: r.get(0)?,
                    status: r.get(1)?,
                    started_at: r.get(2)?,
                    series: missing.zip(overdue).map(|(m, o)| (m as u64, o as u64)),
                })
            },
        )
    }

    /// The manifest's own identity (random, made with it): in the names of delivery files.
    pub fn manifest_id(&self) -> Result<String> {
        self.conn
            .query_row("SELECT value FROM meta WHERE name = 'manifest_id'", [], |r| r.get(0))
            .map_err(sqlite_err(&self.path))
    }

    /// When the feed last got a new or changed object from the source (a copy of a version it
    /// did not hold), else when its first run started; and since when it is stale, if it is.
    pub fn freshness(&self, spec: &str) -> Result<(Option<String>, Option<String>)> {
        let err = sqlite_err(&self.path);
        let last_new: Option<String> = self
            .conn
            .query_row(
                "SELECT max(t) FROM (
                   SELECT max(copied_at) AS t FROM objects WHERE spec = ?1
                   UNION ALL SELECT max(copied_at) FROM history WHERE spec = ?1
                   UNION ALL SELECT min(started_at) FROM runs WHERE spec = ?1)",
                [spec],
                |r| r.get(0),
            )
            .map_err(&err)?;
        let stale_since: Option<String> = self
            .conn
            .query_row("SELECT stale_since FROM feeds WHERE spec = ?1", [spec], |r| r.get(0))
            .optional()
            .map_err(&err)?
            .flatten();
        Ok((last_new, stale_since))
    }
}
