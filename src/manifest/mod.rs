//! The SQLite manifest: what each spec holds at its destination, and the history of runs.
//!
//! WAL mode so that `sqlite3` and audits read while the daemon writes. All writes of a process go
//! through one writer thread ([`Writer`]) that groups queued writes into one transaction, as
//! garage's SQLite adapter does; readers open their own connections.

mod audit;
pub mod import;
mod read;
mod schema;
pub mod series;
mod writer;
mod writes;

pub use audit::ObjectFilter;
#[cfg(test)]
pub use lake::Change;
pub use lake::{ChangeAction, Undelivered};

pub use read::Reader;
use read::{object_from_row, run_from_row, OBJECT_COLUMNS, RUN_COLUMNS};
pub use writer::Writer;

use crate::spec::Mode;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::Connection;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Cloneable so that every caller waiting on one failed batch gets the real SQLite error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    #[error("manifest {path}: schema version {found} is newer than this s3syncd understands ({supported}); upgrade s3syncd")]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("manifest {path}: cannot create its directory: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("manifest writer stopped")]
    WriterGone,
    #[error("{}: {why}", path.display())]
    Refused { path: PathBuf, why: String },
}

pub type Result<T> = std::result::Result<T, ManifestError>;

/// Implements the text form a column stores, for enums kept as their documented names.
macro_rules! text_column {
    ($t:ty, $($variant:path => $s:literal),+ $(,)?) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $($variant => $s),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($variant),)+ _ => None }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }
        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                Self::parse(s).ok_or_else(|| FromSqlError::Other(format!("unknown value {s:?}").into()))
            }
        }
    };
}

// After the macro it uses.
mod lake;

/// The `status` column of `runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunStatus {
    #[default]
    Running,
    /// Everything listed was handled.
    Ok,
    /// The run finished, but some objects failed or deletions were refused over the cap.
    Partial,
    /// The source listing failed.
    Failed,
    /// Stopped by a signal or shutdown before the end.
    Interrupted,
}

text_column!(RunStatus,
    RunStatus::Running => "running",
    RunStatus::Ok => "ok",
    RunStatus::Partial => "partial",
    RunStatus::Failed => "failed",
    RunStatus::Interrupted => "interrupted",
);

/// The `verified` column of `objects`: the strongest check the object passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verified {
    Size,
    /// The bytes' MD5 equals the source's single-part ETag.
    Etag,
    /// The bytes' checksum equals the full-object checksum the source stores (CRC64NVME, ...).
    Checksum,
    /// The bytes' SHA-256 equals the checksum sidecar's.
    Sha256,
}

text_column!(Verified,
    Verified::Size => "size",
    Verified::Etag => "etag",
    Verified::Checksum => "checksum",
    Verified::Sha256 => "sha256",
);

/// The `mode` column: a [`Mode`] by its spec name.
struct ModeColumn(Mode);

impl FromSql for ModeColumn {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        match v.as_str()? {
            "direct" => Ok(ModeColumn(Mode::Direct)),
            "stream" => Ok(ModeColumn(Mode::Stream)),
            "staged" => Ok(ModeColumn(Mode::Staged)),
            s => Err(FromSqlError::Other(format!("unknown mode {s:?}").into())),
        }
    }
}

/// Where a spec's objects are held: the spec and its destination's endpoint and bucket. The
/// manifest vouches for an object only at the place it was copied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub spec: String,
    /// The endpoint's identity (`Side::endpoint_identity`: `aws`, or host:port).
    pub endpoint: String,
    pub bucket: String,
}

impl Target {
    pub fn of(spec: &crate::spec::Spec) -> Target {
        Target {
            spec: spec.name.clone(),
            endpoint: spec.destination.endpoint_identity(),
            bucket: spec.destination.bucket.clone(),
        }
    }
}

/// Where a feed's next listing can cut its parts, learnt from its last complete listing: valid
/// only for the same listing (`of`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListSplits {
    #[serde(flatten)]
    pub of: Listed,
    pub keys: Vec<String>,
}

/// What a listing's cuts depend on: the source listed and the number of parts asked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listed {
    pub source_endpoint: String,
    pub source_bucket: String,
    pub source_prefix: String,
    pub parts: usize,
}

impl Listed {
    pub fn of(spec: &crate::spec::Spec) -> Listed {
        Listed {
            source_endpoint: spec.source.endpoint_identity(),
            source_bucket: spec.source.bucket.clone(),
            source_prefix: spec.source.prefix.clone(),
            parts: spec.transfer.list_partitions,
        }
    }
}

/// What the planner reads of a manifest row ([`Reader::plan_range`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    pub dest_key: String,
    pub source_key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub source_last_modified: Option<String>,
    /// Copied from the spec's current source (endpoint identity and bucket).
    pub same_source: bool,
}

/// One row of `objects`: an object held at the destination, verified when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    pub spec: String,
    pub dest_endpoint: String,
    pub dest_bucket: String,
    pub dest_key: String,
    /// The source it was copied from: endpoint identity and bucket.
    pub source_endpoint: String,
    pub source_bucket: String,
    pub source_key: String,
    pub size: u64,
    /// The source ETag as listed (or as returned by the copy when the listing had none).
    pub etag: Option<String>,
    pub source_last_modified: Option<String>,
    pub copied_at: String,
    pub mode: Mode,
    pub run_id: i64,
    /// The ETag the destination returned.
    pub dest_etag: Option<String>,
    pub verified: Verified,
    /// The strongest checksum that verified the object: `sha256:HEX`, `crc64nvme:BASE64`,
    /// `md5:HEX`...; none when only the size was checked.
    pub checksum: Option<String>,
    /// The SHA-256 (hex) of the bytes copied, when the copy saw them or the server computed it
    /// (kept for a spec with checksum sidecars, to check a sidecar that comes later).
    pub sha256: Option<String>,
    /// The SHA-256 a sidecar that came later gave, when it contradicts the bytes copied.
    pub sidecar_mismatch: Option<String>,
    /// Where the version this row replaces was kept (`keep_previous`), for its history row.
    pub kept_previous: Option<String>,
}

/// A row of the `failures` table.
#[derive(Debug, Clone)]
pub struct FailureRow {
    pub run_id: i64,
    pub spec: String,
    pub source_key: String,
    pub mode: Option<Mode>,
    /// The error kind's documented name (`retryable`, `cant-use-mode`, `fatal`, `delete`).
    pub kind: &'static str,
    /// The raw S3 error code, when S3 answered.
    pub code: Option<String>,
    /// The error, and its likely cause when one is known.
    pub message: String,
}

/// Counters of a run, as stored in `runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunRow {
    pub id: i64,
    pub spec: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: RunStatus,
    pub objects_listed: u64,
    pub objects_copied: u64,
    pub objects_skipped: u64,
    pub objects_failed: u64,
    pub objects_deleted: u64,
    pub bytes_copied: u64,
    pub bytes_through_host: u64,
    pub requests: u64,
    /// JSON: objects and bytes per mode, fallbacks, requests by operation.
    pub details: String,
    pub error: Option<String>,
}

/// Current time as RFC 3339 UTC with milliseconds: the manifest's one time format.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> ManifestError + '_ {
    move |source| ManifestError::Sqlite {
        path: path.to_path_buf(),
        source: Arc::new(source),
    }
}

/// Opens (creating and migrating) the manifest for writing. Only the writer thread keeps this one.
pub(crate) fn open_rw(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ManifestError::Dir {
            path: path.to_path_buf(),
            source: Arc::new(source),
        })?;
    }
    let conn = Connection::open(path).map_err(sqlite_err(path))?;
    // Readable by the service's group (auditors), by nobody else; SQLite gives the -wal and
    // -shm files the database's mode.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640));
    conn.busy_timeout(Duration::from_secs(10)).map_err(sqlite_err(path))?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite_err(path))?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite_err(path))?;
    schema::migrate(&conn, path)?;
    Ok(conn)
}
