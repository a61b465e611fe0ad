//! Read-side queries for audits. They stream rows to a callback, so `ls` and `export` run in
//! constant memory over millions of rows.

use super::{object_from_row, run_from_row, sqlite_err, ObjectRow, Reader, Result, RunRow, OBJECT_COLUMNS, RUN_COLUMNS};
use rusqlite::{params, OptionalExtension};

/// Which objects `ls` and `export` show.
#[derive(Debug, Default, Clone)]
pub struct ObjectFilter {
    pub spec: Option<String>,
    pub prefix: Option<String>,
    /// RFC 3339 UTC, compared with `copied_at`.
    pub since: Option<String>,
    pub mode: Option<String>,
}

/// What `status` shows of one spec.
#[derive(Debug, Default, Clone)]
pub struct SpecStatus {
    pub objects: u64,
    pub bytes: u64,
    pub last_run: Option<RunRow>,
    pub last_success: Option<String>,
}

/// What `status` shows of a feed driven by events ([`Reader::events_state`]).
#[derive(Debug, Default, Clone)]
pub struct EventsState {
    pub runs: u64,
    pub copied: u64,
    pub last_finished: Option<String>,
    pub last_listing_missed: Option<u64>,
}

/// A row of the `failures` table, as the status page shows it.
#[derive(Debug, Clone)]
pub struct RecentFailure {
    pub at: String,
    pub spec: String,
    pub run_id: i64,
    pub source_key: String,
    pub message: String,
}

impl Reader {
    /// Calls `each` for every matching object, in (spec, dest_key) order, until it returns false.
    pub fn each_object(&self, f: &ObjectFilter, mut each: impl FnMut(ObjectRow) -> bool) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {OBJECT_COLUMNS} FROM objects
                 WHERE (?1 IS NULL OR spec = ?1) AND (?2 IS NULL OR substr(dest_key, 1, length(?2)) = ?2)
                   AND (?3 IS NULL OR copied_at >= ?3) AND (?4 IS NULL OR mode = ?4)
                 ORDER BY spec, dest_endpoint, dest_bucket, dest_key"
            ))
            .map_err(sqlite_err(&self.path))?;
        let rows = stmt
            .query_map(params![f.spec, f.prefix, f.since, f.mode], object_from_row)
            .map_err(sqlite_err(&self.path))?;
        for row in rows {
            if !each(row.map_err(sqlite_err(&self.path))?) {
                break;
            }
        }
        Ok(())
    }

    pub fn spec_status(&self, spec: &str) -> Result<SpecStatus> {
        let err = sqlite_err(&self.path);
        let (objects, bytes): (i64, i64) = self
            .conn
            .query_row("SELECT objects, bytes FROM held WHERE spec = ?1", [spec], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(&err)?
            .unwrap_or((0, 0));
        let last_success: Option<String> = self
            .conn
            .query_row("SELECT max(finished_at) FROM runs WHERE spec = ?1 AND status = 'ok'", [spec], |r| {
                r.get(0)
            })
            .map_err(&err)?;
        let last_run = self
            .conn
            .prepare(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE spec = ?1 ORDER BY id DESC LIMIT 1"))
            .and_then(|mut s| s.query_map([spec], run_from_row)?.next().transpose())
            .map_err(&err)?;
        Ok(SpecStatus {
            objects: objects as u64,
            bytes: bytes as u64,
            last_run,
            last_success,
        })
    }

    /// A feed driven by events, as `status` shows it: runs of events since `since` (RFC 3339),
    /// the objects they copied, when the last ended, and how many objects the last listing run
    /// found that no event had brought.
    pub fn events_state(&self, spec: &str, since: &str) -> Result<EventsState> {
        let err = sqlite_err(&self.path);
        let (runs, copied, last): (i64, Option<i64>, Option<String>) = self
            .conn
            .query_row(
                "SELECT count(*), sum(objects_copied), max(finished_at) FROM runs
                  WHERE spec = ?1 AND started_at >= ?2 AND json_extract(details, '$.listing') = 'events'",
                params![spec, since],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(&err)?;
        let missed: Option<i64> = self
            .conn
            .query_row(
                "SELECT json_extract(details, '$.events_missed') FROM runs WHERE spec = ?1 AND status <> 'running'
                   AND json_extract(details, '$.listing') <> 'events' ORDER BY id DESC LIMIT 1",
                [spec],
                |r| r.get(0),
            )
            .optional()
            .map_err(&err)?
            .flatten();
        Ok(EventsState {
            runs: runs as u64,
            copied: copied.unwrap_or(0) as u64,
            last_finished: last,
            last_listing_missed: missed.map(|n| n as u64),
        })
    }

    /// Since when the feed is stale (`stale_after`), if it is.
    pub fn stale_since(&self, spec: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT stale_since FROM feeds WHERE spec = ?1", [spec], |r| r.get(0))
            .optional()
            .map(Option::flatten)
            .map_err(sqlite_err(&self.path))
    }

    /// The latest `limit` failures of every spec, newest first.
    pub fn recent_failures(&self, limit: u32) -> Result<Vec<RecentFailure>> {
        self.all(
            "SELECT at, spec, run_id, source_key, message FROM failures ORDER BY rowid DESC LIMIT ?1",
            [limit],
            |r| {
                Ok(RecentFailure {
                    at: r.get(0)?,
                    spec: r.get(1)?,
                    run_id: r.get(2)?,
                    source_key: r.get(3)?,
                    message: r.get(4)?,
                })
            },
        )
    }

    /// Multipart uploads a spec started and did not end: (bucket, key, upload id).
    pub fn open_uploads(&self, spec: &str) -> Result<Vec<(String, String, String)>> {
        self.all("SELECT bucket, dest_key, upload_id FROM uploads WHERE spec = ?1", [spec], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
    }

    /// Every recorded multipart upload, with the destination it was made at: (spec, side,
    /// key, upload id). The side's prefix is left empty.
    pub fn all_uploads(&self) -> Result<Vec<(String, crate::spec::Side, String, String)>> {
        self.all(
            "SELECT spec, bucket, endpoint, region, path_style, profile, dest_key, upload_id FROM uploads",
            [],
            |r| {
                let side = crate::spec::Side {
                    bucket: r.get(1)?,
                    prefix: String::new(),
                    endpoint: r.get(2)?,
                    region: r.get(3)?,
                    path_style: r.get(4)?,
                    profile: r.get(5)?,
                    ..crate::spec::Side::default()
                };
                Ok((r.get(0)?, side, r.get(6)?, r.get(7)?))
            },
        )
    }

    /// Specs with a run still `running`.
    pub fn running_specs(&self) -> Result<Vec<String>> {
        self.all("SELECT DISTINCT spec FROM runs WHERE status = 'running'", [], |r| r.get(0))
    }

    /// Specs that have objects or runs in the manifest.
    pub fn known_specs(&self) -> Result<Vec<String>> {
        self.all("SELECT spec FROM objects UNION SELECT spec FROM runs ORDER BY 1", [], |r| r.get(0))
    }
}

impl Reader {
    /// The completeness of each series of a spec with `[series]` at `now` (see
    /// [`Reader::series`]), and how many held keys match no series.
    pub fn gaps(
        &self,
        spec: &crate::spec::Spec,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<(Vec<crate::spec::series::SeriesGaps>, u64)>> {
        let (Some(opts), Some(kept)) = (&spec.series, self.series(spec, false)?) else {
            return Ok(None);
        };
        Ok(Some((kept.gaps.report(opts, now), kept.gaps.unmatched)))
    }

    /// The series counts (missing periods, overdue series) the last run of `spec` before
    /// `run_id` recorded; (0, 0) when none did.
    pub fn series_before(&self, spec: &str, run_id: i64) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT coalesce(json_extract(details, '$.series_missing'), 0), coalesce(json_extract(details, '$.series_overdue'), 0)
                   FROM runs WHERE spec = ?1 AND id < ?2 AND json_extract(details, '$.series_missing') IS NOT NULL
                   ORDER BY id DESC LIMIT 1",
                params![spec, run_id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(sqlite_err(&self.path))
    }

    /// When the spec's last run that listed the whole source (`details.listing` = `full`) and
    /// finished its listing started.
    pub fn last_full_listing(&self, spec: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT max(started_at) FROM runs WHERE spec = ?1 AND status IN ('ok', 'partial')
                   AND json_extract(details, '$.listing') = 'full'",
                [spec],
                |r| r.get(0),
            )
            .map_err(sqlite_err(&self.path))
    }
}
