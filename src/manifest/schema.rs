//! Schema and in-place upgrades, versioned by `PRAGMA user_version`. Each step upgrades from the
//! version before it inside one transaction; a new version appends a step and never edits one.

use super::{sqlite_err, ManifestError, Result};
use rusqlite::Connection;
use std::path::Path;

const STEPS: &[&str] = &[
    // 1: objects, runs, failures.
    "CREATE TABLE objects (
        spec                 TEXT NOT NULL,
        dest_key             TEXT NOT NULL,
        source_key           TEXT NOT NULL,
        size                 INTEGER NOT NULL,
        etag                 TEXT,
        source_last_modified TEXT,
        copied_at            TEXT NOT NULL,
        mode                 TEXT NOT NULL CHECK (mode IN ('direct', 'stream', 'staged')),
        run_id               INTEGER NOT NULL,
        dest_etag            TEXT,
        verified             TEXT NOT NULL DEFAULT 'size',
        PRIMARY KEY (spec, dest_key)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id                 INTEGER PRIMARY KEY,
        spec               TEXT NOT NULL,
        started_at         TEXT NOT NULL,
        finished_at        TEXT,
        status             TEXT NOT NULL,
        objects_listed     INTEGER NOT NULL DEFAULT 0,
        objects_copied     INTEGER NOT NULL DEFAULT 0,
        objects_skipped    INTEGER NOT NULL DEFAULT 0,
        objects_failed     INTEGER NOT NULL DEFAULT 0,
        objects_deleted    INTEGER NOT NULL DEFAULT 0,
        bytes_copied       INTEGER NOT NULL DEFAULT 0,
        bytes_through_host INTEGER NOT NULL DEFAULT 0,
        requests           INTEGER NOT NULL DEFAULT 0,
        details            TEXT NOT NULL DEFAULT '{}',
        error              TEXT
    );
    CREATE INDEX runs_by_spec ON runs (spec, id);
    CREATE TABLE failures (
        run_id     INTEGER NOT NULL,
        spec       TEXT NOT NULL,
        source_key TEXT NOT NULL,
        mode       TEXT,
        kind       TEXT NOT NULL,
        message    TEXT NOT NULL,
        at         TEXT NOT NULL
    );
    CREATE INDEX failures_by_run ON failures (run_id);
    CREATE TABLE deletions (
        run_id   INTEGER NOT NULL,
        spec     TEXT NOT NULL,
        dest_key TEXT NOT NULL,
        at       TEXT NOT NULL
    );
    CREATE INDEX deletions_by_run ON deletions (run_id);",
    // 2: multipart uploads in progress, so a run after a crash can abort what a killed one left
    //    (some servers have no ListMultipartUploads).
    "CREATE TABLE uploads (
        upload_id  TEXT PRIMARY KEY,
        spec       TEXT NOT NULL,
        bucket     TEXT NOT NULL,
        dest_key   TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX uploads_by_spec ON uploads (spec);",
    // 3: each object row names the destination (endpoint and bucket) it was copied to and the
    //    source it came from, and the checksum that verified it (rows verified by ETag get
    //    `md5:ETAG`; sidecar checks of old rows are not known again, so those stay NULL). The key grows by the destination, so that when a spec's
    //    destination changes, its earlier rows stay for the audit and the new place is filled.
    //    Rows from before keep '' until their spec's next run adopts them (engine::run).
    "CREATE TABLE objects_v3 (
        spec                 TEXT NOT NULL,
        dest_endpoint        TEXT NOT NULL,
        dest_bucket          TEXT NOT NULL,
        dest_key             TEXT NOT NULL,
        source_endpoint      TEXT NOT NULL,
        source_bucket        TEXT NOT NULL,
        source_key           TEXT NOT NULL,
        size                 INTEGER NOT NULL,
        etag                 TEXT,
        source_last_modified TEXT,
        copied_at            TEXT NOT NULL,
        mode                 TEXT NOT NULL CHECK (mode IN ('direct', 'stream', 'staged')),
        run_id               INTEGER NOT NULL,
        dest_etag            TEXT,
        verified             TEXT NOT NULL DEFAULT 'size',
        checksum             TEXT,
        PRIMARY KEY (spec, dest_endpoint, dest_bucket, dest_key)
    ) WITHOUT ROWID;
    INSERT INTO objects_v3
        SELECT spec, '', '', dest_key, '', '', source_key, size, etag, source_last_modified, copied_at, mode, run_id, dest_etag, verified,
               CASE verified WHEN 'etag' THEN 'md5:' || lower(etag) END
        FROM objects;
    DROP TABLE objects;
    ALTER TABLE objects_v3 RENAME TO objects;
    -- Each upload also records how to reach its destination, so that the daemon can abort the
    -- uploads of a feed that was removed and will never run again. NULL endpoint: AWS; NULL
    -- profile: the default credential chain.
    ALTER TABLE uploads ADD COLUMN endpoint TEXT;
    ALTER TABLE uploads ADD COLUMN region TEXT;
    ALTER TABLE uploads ADD COLUMN path_style INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE uploads ADD COLUMN profile TEXT;",
    // 4: the raw S3 error code of each failure (`AccessDenied`, `HTTP 404`), beside the message
    //    that explains it; NULL where no S3 answer came (a timeout, a verify failure).
    "ALTER TABLE failures ADD COLUMN code TEXT;",
    // 5: the lakehouse's records. `history` keeps every version that left `objects`: replaced
    //    by a changed upstream object, or deleted (with the copy kept under `keep_previous`).
    //    With the objects rows of a run, it gives the run's change feed: copied (new or
    //    changed) and deleted. `runs.delivered_at` marks runs whose delivery file is written
    //    (older runs count as delivered, so enabling deliveries sends no backlog); `feeds`
    //    holds per-feed state that must outlive the process (when it went stale).
    "CREATE TABLE history (
        spec                 TEXT NOT NULL,
        dest_endpoint        TEXT NOT NULL,
        dest_bucket          TEXT NOT NULL,
        dest_key             TEXT NOT NULL,
        source_key           TEXT NOT NULL,
        size                 INTEGER NOT NULL,
        etag                 TEXT,
        checksum             TEXT,
        source_last_modified TEXT,
        mode                 TEXT NOT NULL,
        copied_at            TEXT NOT NULL,
        run_id               INTEGER NOT NULL,
        replaced_at          TEXT NOT NULL,
        replaced_by_run      INTEGER NOT NULL,
        change               TEXT NOT NULL CHECK (change IN ('changed', 'deleted')),
        kept_key             TEXT
    );
    CREATE INDEX history_by_key ON history (spec, dest_key);
    CREATE INDEX history_by_run ON history (spec, replaced_by_run);
    CREATE INDEX history_by_copy ON history (spec, run_id);
    CREATE INDEX objects_by_run ON objects (spec, run_id);
    ALTER TABLE runs ADD COLUMN delivered_at TEXT;
    UPDATE runs SET delivered_at = coalesce(finished_at, started_at);
    CREATE TABLE feeds (
        spec        TEXT PRIMARY KEY,
        stale_since TEXT
    );",
    // 6: where the feed's last complete listing can be cut into parts of about equal size
    //    (JSON: the source it listed, the parts asked, the keys), so that the next run lists in
    //    parts at once without first scanning the manifest for its quantiles.
    "ALTER TABLE feeds ADD COLUMN list_splits TEXT;",
    // 7: the manifest's own identity, random and made once, in the names of delivery files: a
    //    wiped or rebuilt manifest restarts its run ids at 1, and its files must not take the
    //    names of the earlier ones.
    "CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO meta (name, value) VALUES ('manifest_id', lower(hex(randomblob(8))));",
    // 8: the checksum sidecar that came after its object: `sha256` is the SHA-256 of the bytes
    //    copied, where the copy saw them (stream, staged) or the server computed it (direct), so
    //    that a late sidecar is checked without reading them again; `sidecar_mismatch` holds the
    //    SHA-256 a late sidecar gave that contradicts them (NULL: none does).
    "ALTER TABLE objects ADD COLUMN sha256 TEXT;
    ALTER TABLE objects ADD COLUMN sidecar_mismatch TEXT;",
    // 9: objects and bytes held per spec, kept by triggers as rows come and go, so that the
    //    status page and `manifest status` read two numbers instead of counting every row (a
    //    feed of the whole archive holds 10^8).
    "CREATE TABLE held (
        spec    TEXT PRIMARY KEY,
        objects INTEGER NOT NULL,
        bytes   INTEGER NOT NULL
    );
    INSERT INTO held SELECT spec, count(*), sum(size) FROM objects GROUP BY spec;
    CREATE TRIGGER held_insert AFTER INSERT ON objects BEGIN
        INSERT INTO held (spec, objects, bytes) VALUES (new.spec, 1, new.size)
            ON CONFLICT (spec) DO UPDATE SET objects = objects + 1, bytes = bytes + new.size;
    END;
    CREATE TRIGGER held_delete AFTER DELETE ON objects BEGIN
        UPDATE held SET objects = objects - 1, bytes = bytes - old.size WHERE spec = old.spec;
    END;
    CREATE TRIGGER held_resize AFTER UPDATE OF size ON objects BEGIN
        UPDATE held SET bytes = bytes - old.size + new.size WHERE spec = new.spec;
    END;",
    // 10: the completeness of a `[series]` spec's series, kept between runs (JSON, see
    //     manifest::series), so that a run adds only the keys copied since.
    "ALTER TABLE feeds ADD COLUMN series_state TEXT;",
];

pub const VERSION: i64 = STEPS.len() as i64;

pub fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let err = sqlite_err(path);
    loop {
        // Re-read the version inside the write lock: another process may have upgraded meanwhile.
        conn.execute_batch("BEGIN IMMEDIATE").map_err(&err)?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(&err)?;
        if found >= VERSION {
            conn.execute_batch("COMMIT").map_err(&err)?;
            if found > VERSION {
                return Err(ManifestError::TooNew {
                    path: path.to_path_buf(),
                    found,
                    supported: VERSION,
                });
            }
            return Ok(());
        }
        // A new manifest takes every step at once, in one transaction (one log line); an old
        // one upgrades a step at a time, each committed.
        let target = if found == 0 { VERSION } else { found + 1 };
        let steps = STEPS[found as usize..target as usize].join(";\n");
        if let Err(e) = conn.execute_batch(&format!("{steps}; PRAGMA user_version = {target}; COMMIT;")) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(err(e));
        }
        if found == 0 {
            tracing::info!(manifest = %path.display(), version = target, "manifest created");
        } else {
            tracing::info!(manifest = %path.display(), version = target, "manifest schema upgraded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    /// A manifest of `version`, built by its own steps, holding one verified object and one run.
    fn at_version(version: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        let steps = STEPS[..version as usize].join(";\n");
        conn.execute_batch(&format!("{steps}; PRAGMA user_version = {version};")).unwrap();
        if version < 3 {
            conn.execute(
                "INSERT INTO objects (spec, dest_key, source_key, size, etag, copied_at, mode, run_id, verified)
                 VALUES ('feed', 'b/a.zip', 'a/a.zip', 3, 'abc', '2026-11-01T00:00:00.000Z', 'direct', 1, 'etag')",
                [],
            )
        } else {
            conn.execute(
                "INSERT INTO objects (spec, dest_endpoint, dest_bucket, dest_key, source_endpoint, source_bucket, source_key, size, etag,
                   copied_at, mode, run_id, verified, checksum)
                 VALUES ('feed', 'loopback:9000', 'dst', 'b/a.zip', 'loopback:9000', 'src', 'a/a.zip', 3, 'abc',
                   '2026-11-01T00:00:00.000Z', 'direct', 1, 'etag', 'md5:abc')",
                [],
            )
        }
        .unwrap();
        conn.execute(
            "INSERT INTO runs (spec, started_at, finished_at, status) VALUES ('feed', '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:01.000Z', 'ok')",
            [],
        )
        .unwrap();
        conn
    }

    #[test]
    fn every_past_version_upgrades_with_its_rows_and_a_newer_one_is_refused() {
        for version in 1..VERSION {
            let conn = at_version(version);
            migrate(&conn, Path::new("manifest.db")).unwrap();
            let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
            assert_eq!(found, VERSION, "from {version}");
            let (key, checksum): (String, Option<String>) = conn
                .query_row("SELECT dest_key, checksum FROM objects WHERE spec = 'feed'", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!((key.as_str(), checksum.as_deref()), ("b/a.zip", Some("md5:abc")), "from {version}");
            let delivered: Option<String> = conn.query_row("SELECT delivered_at FROM runs", [], |r| r.get(0)).unwrap();
            // Runs from before deliveries existed count as delivered (no backlog); later ones
            // keep their state.
            assert_eq!(delivered.is_some(), version < 5, "from {version}");
            let id: String = conn
                .query_row("SELECT value FROM meta WHERE name = 'manifest_id'", [], |r| r.get(0))
                .unwrap();
            assert_eq!(id.len(), 16, "from {version}");
            let held: (i64, i64) = conn
                .query_row("SELECT objects, bytes FROM held", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            assert_eq!(held, (1, 3), "from {version}");
        }
        let conn = at_version(VERSION);
        conn.execute_batch(&format!("PRAGMA user_version = {};", VERSION + 1)).unwrap();
        assert!(matches!(
            migrate(&conn, Path::new("manifest.db")),
            Err(ManifestError::TooNew { found, .. }) if found == VERSION + 1
        ));
    }

    /// The counts held per spec follow every insert, replacement, resize and delete.
    #[test]
    fn held_counts_follow_the_rows() {
        let conn = at_version(VERSION);
        let upsert = |key: &str, size: i64| {
            conn.execute(
                "INSERT INTO objects (spec, dest_endpoint, dest_bucket, dest_key, source_endpoint, source_bucket, source_key, size,
                   copied_at, mode, run_id) VALUES ('feed', 'loopback:9000', 'dst', ?1, 'loopback:9000', 'src', ?1, ?2, 'now', 'direct', 1)
                 ON CONFLICT (spec, dest_endpoint, dest_bucket, dest_key) DO UPDATE SET size = excluded.size",
                params![key, size],
            )
            .unwrap();
        };
        let held = || -> (i64, i64) {
            conn.query_row("SELECT objects, bytes FROM held WHERE spec = 'feed'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        let counted = || -> (i64, i64) {
            conn.query_row("SELECT count(*), sum(size) FROM objects WHERE spec = 'feed'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        upsert("b/x", 10);
        upsert("b/y", 0);
        assert_eq!(held(), (3, 13));
        upsert("b/x", 4);
        assert_eq!(held(), (3, 7));
        conn.execute("DELETE FROM objects WHERE dest_key = 'b/a.zip'", []).unwrap();
        assert_eq!(held(), (2, 4));
        assert_eq!(held(), counted());
    }
}
