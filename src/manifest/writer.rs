//! The single writer: one thread owns the read-write connection and applies queued writes in
//! batches, one transaction per batch, so copy tasks never wait on SQLite and never contend.

use super::writes::{adopt, deleted, failure, finish_run, forget, set_feed, sidecar_checked, upload_started, upsert};
use super::{open_rw, sqlite_err, FailureRow, ManifestError, ObjectRow, Result, RunRow, Target};
use crate::spec::Side;
use rusqlite::{params, Connection, Transaction};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Largest number of queued writes applied in one transaction.
const BATCH: usize = 2048;

enum Op {
    Upsert(Box<ObjectRow>),
    /// The destination no longer holds the verified object (e.g. it was overwritten by a copy
    /// that then failed verification): forget it so that the next run copies it again.
    Forget {
        target: Target,
        dest_key: String,
    },
    Deleted {
        run_id: i64,
        target: Target,
        dest_key: String,
        at: String,
    },
    /// Rows from before schema 3 know no destination: the spec's current one is theirs.
    Adopt {
        target: Target,
        source_endpoint: String,
        source_bucket: String,
    },
    Failure(FailureRow, String),
    /// The series' completeness as a run left it (`feeds.series_state`).
    SeriesState {
        spec: String,
        state: String,
    },
    /// A checksum sidecar that came after its object was checked against it: agreeing, the
    /// object is verified by SHA-256; contradicting, the row keeps the sidecar's value.
    SidecarChecked {
        target: Target,
        dest_key: String,
        sha256: String,
        agrees: bool,
    },
    /// The run's delivery file is written (or it needs none).
    Delivered {
        run_id: i64,
        at: String,
    },
    /// The run's delivery file could not be written: an `ok` run becomes `partial`, and its
    /// error says why.
    DeliveryFailed {
        run_id: i64,
        reason: String,
    },
    /// The feed went stale at `since`, or (None) is fresh again.
    Stale {
        spec: String,
        since: Option<String>,
    },
    /// Where the next listing of the feed can cut its parts.
    ListSplits {
        spec: String,
        splits: String,
    },
    StartRun {
        spec: String,
        started_at: String,
        reply: oneshot::Sender<Result<i64>>,
    },
    FinishRun(Box<RunRow>),
    /// Closes the spec's runs left `running` by a process that died (the caller holds the spec's lock).
    CloseAbandoned {
        spec: String,
        at: String,
    },
    UploadStarted {
        upload_id: String,
        spec: String,
        side: Box<Side>,
        dest_key: String,
        reply: oneshot::Sender<Result<i64>>,
    },
    UploadEnded {
        upload_id: String,
    },
    Flush(oneshot::Sender<Result<()>>),
    /// Moves the WAL into the database file, so that a copy of `manifest.db` alone is whole.
    Checkpoint,
}

/// Handle to the writer thread; cheap to clone. The thread ends when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
    path: PathBuf,
    /// Object rows in batches the writer gave up on.
    lost: Arc<AtomicU64>,
}

impl Writer {
    /// Opens (creating or upgrading) the manifest and starts the writer thread. A batch that
    /// fails (the database busy or the disk full) is tried again until it commits, or until
    /// `give_up` of failed attempts has passed: then its object rows are counted as lost.
    pub fn open(path: &Path, give_up: Duration) -> Result<Writer> {
        let conn = open_rw(path)?;
        let (tx, rx) = mpsc::channel();
        let p = path.to_path_buf();
        let lost = Arc::new(AtomicU64::new(0));
        let l = lost.clone();
        std::thread::Builder::new()
            .name("manifest-writer".into())
            .spawn(move || writer_loop(conn, rx, &p, give_up, &l))
            .map_err(|e| ManifestError::Dir {
                path: path.to_path_buf(),
                source: Arc::new(e),
            })?;
        Ok(Writer {
            tx,
            path: path.to_path_buf(),
            lost,
        })
    }

    /// Object rows lost so far: copied objects the manifest could not record.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, op: Op) {
        // A send fails only after the thread died, which it logs; nothing more to do here.
        let _ = self.tx.send(op);
    }

    pub fn upsert(&self, row: ObjectRow) {
        self.send(Op::Upsert(Box::new(row)));
    }

    /// Records what a checksum sidecar that came after its object said of it (`sha256`).
    pub fn sidecar_checked(&self, target: &Target, dest_key: &str, sha256: &str, agrees: bool) {
        self.send(Op::SidecarChecked {
            target: target.clone(),
            dest_key: dest_key.into(),
            sha256: sha256.into(),
            agrees,
        });
    }

    pub fn forget(&self, target: &Target, dest_key: &str) {
        self.send(Op::Forget {
            target: target.clone(),
            dest_key: dest_key.into(),
        });
    }

    pub fn deleted(&self, run_id: i64, target: &Target, dest_key: &str) {
        self.send(Op::Deleted {
            run_id,
            target: target.clone(),
            dest_key: dest_key.into(),
            at: super::now(),
        });
    }

    /// Gives the spec's rows from before schema 3 (no destination recorded) its current
    /// destination and source: they were copied there, unless the spec changed since.
    pub fn adopt(&self, target: &Target, source_endpoint: &str, source_bucket: &str) {
        self.send(Op::Adopt {
            target: target.clone(),
            source_endpoint: source_endpoint.into(),
            source_bucket: source_bucket.into(),
        });
    }

    /// Marks run `run_id`'s delivery as done.
    pub fn delivered(&self, run_id: i64) {
        self.send(Op::Delivered { run_id, at: super::now() });
    }

    /// Records that run `run_id`'s delivery file could not be written (`reason`).
    pub fn delivery_failed(&self, run_id: i64, reason: String) {
        self.send(Op::DeliveryFailed { run_id, reason });
    }

    /// Records when the feed went stale (`Some`), or that it is fresh (`None`).
    pub fn set_stale(&self, spec: &str, since: Option<String>) {
        self.send(Op::Stale { spec: spec.into(), since });
    }

    /// Records where the feed's next listing can cut its parts.
    pub fn list_splits(&self, spec: &str, splits: &super::ListSplits) {
        self.send(Op::ListSplits {
            spec: spec.into(),
            splits: serde_json::to_string(splits).expect("list splits serialize"),
        });
    }

    /// Keeps the series' completeness for the next run (see `manifest::series`).
    pub fn series_state(&self, spec: &str, kept: &super::series::Kept) {
        self.send(Op::SeriesState {
            spec: spec.into(),
            state: kept.to_json(),
        });
    }

    /// Records an object that failed.
    pub fn failure(&self, row: FailureRow) {
        self.send(Op::Failure(row, super::now()));
    }

    /// Inserts a `running` row and returns its id.
    pub async fn start_run(&self, spec: &str) -> Result<i64> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::StartRun {
            spec: spec.into(),
            started_at: super::now(),
            reply,
        });
        rx.await.map_err(|_| ManifestError::WriterGone)?
    }

    pub fn finish_run(&self, row: RunRow) {
        self.send(Op::FinishRun(Box::new(row)));
    }

    /// Closes the spec's runs still `running`: their process died. Only under the spec's lock.
    pub fn close_abandoned(&self, spec: &str) {
        self.send(Op::CloseAbandoned {
            spec: spec.into(),
            at: super::now(),
        });
    }

    /// Records a multipart upload at `side` (the destination: bucket, endpoint, credentials'
    /// profile) before any part is sent; returns once it is committed.
    pub async fn upload_started(&self, upload_id: &str, spec: &str, side: &Side, dest_key: &str) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::UploadStarted {
            upload_id: upload_id.into(),
            spec: spec.into(),
            side: Box::new(side.clone()),
            dest_key: dest_key.into(),
            reply,
        });
        rx.await.map_err(|_| ManifestError::WriterGone)?.map(|_| ())
    }

    /// The upload was completed or aborted.
    pub fn upload_ended(&self, upload_id: &str) {
        self.send(Op::UploadEnded {
            upload_id: upload_id.into(),
        });
    }

    /// Checkpoints the WAL after what is queued (best effort: readers may hold part of it).
    pub fn checkpoint(&self) {
        self.send(Op::Checkpoint);
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Flush(reply));
        rx.await.map_err(|_| ManifestError::WriterGone)?
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Op>, path: &Path, give_up: Duration, lost: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = apply_until(&mut conn, &batch, path, give_up);
        if result.is_ok() && batch.iter().any(|op| matches!(op, Op::Checkpoint)) {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "manifest checkpoint deferred");
            }
        }
        if let Err(e) = &result {
            let rows = batch.iter().filter(|op| matches!(op, Op::Upsert(_))).count() as u64;
            lost.fetch_add(rows, Ordering::Relaxed);
            tracing::error!(error = %e, writes = batch.len(), objects = rows, "manifest write failed for good; these objects will be copied again next run");
        }
        // Replies go out only after the commit, so a caller that saw Ok knows the data is
        // durable; after a failure each waiter gets the real error.
        let mut ids = result.as_ref().map(|ids| ids.iter().copied());
        for op in batch {
            match op {
                Op::Flush(reply) => {
                    let _ = reply.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
                }
                Op::StartRun { reply, .. } | Op::UploadStarted { reply, .. } => {
                    let id = match &mut ids {
                        Ok(ids) => Ok(ids.next().unwrap_or(0)),
                        Err(e) => Err(e.clone()),
                    };
                    let _ = reply.send(id);
                }
                _ => {}
            }
        }
    }
}

/// Applies a batch, again and again while it fails, until `give_up` of failed attempts.
fn apply_until(conn: &mut Connection, batch: &[Op], path: &Path, give_up: Duration) -> Result<Vec<i64>> {
    let started = Instant::now();
    loop {
        match apply(conn, batch, path) {
            Ok(ids) => return Ok(ids),
            Err(e) if started.elapsed() < give_up => {
                tracing::warn!(error = %e, writes = batch.len(), "manifest write failed; trying again");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Applies a batch in one transaction. Returns the row id of each run or upload start, in
/// batch order, for their replies.
fn apply(conn: &mut Connection, batch: &[Op], path: &Path) -> Result<Vec<i64>> {
    let err = sqlite_err(path);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(&err)?;
    let mut ids = Vec::new();
    for op in batch {
        if let Some(id) = apply_one(&tx, op).map_err(&err)? {
            ids.push(id);
        }
    }
    tx.commit().map_err(&err)?;
    Ok(ids)
}

/// One write; returns the new row id for the writes whose caller waits for it.
fn apply_one(tx: &Transaction, op: &Op) -> rusqlite::Result<Option<i64>> {
    match op {
        Op::Upsert(r) => upsert(tx, r)?,
        Op::Forget { target, dest_key } => forget(tx, target, dest_key)?,
        Op::Deleted {
            run_id,
            target,
            dest_key,
            at,
        } => deleted(tx, target, dest_key, *run_id, at)?,
        Op::Adopt {
            target,
            source_endpoint,
            source_bucket,
        } => adopt(tx, target, source_endpoint, source_bucket)?,
        Op::SidecarChecked {
            target,
            dest_key,
            sha256,
            agrees,
        } => sidecar_checked(tx, target, dest_key, sha256, *agrees)?,
        Op::Failure(f, at) => failure(tx, f, at)?,
        Op::Delivered { run_id, at } => {
            tx.prepare_cached("UPDATE runs SET delivered_at = ?2 WHERE id = ?1")?
                .execute(params![run_id, at])?;
        }
        Op::DeliveryFailed { run_id, reason } => {
            tx.prepare_cached(
                "UPDATE runs SET status = CASE status WHEN 'ok' THEN 'partial' ELSE status END,
                   error = coalesce(error || '; ', '') || ?2 WHERE id = ?1",
            )?
            .execute(params![run_id, reason])?;
        }
        Op::Stale { spec, since } => set_feed(tx, spec, "stale_since", since.as_deref())?,
        Op::SeriesState { spec, state } => set_feed(tx, spec, "series_state", Some(state))?,
        Op::ListSplits { spec, splits } => set_feed(tx, spec, "list_splits", Some(splits))?,
        Op::StartRun { spec, started_at, .. } => {
            tx.execute(
                "INSERT INTO runs (spec, started_at, status) VALUES (?1, ?2, 'running')",
                params![spec, started_at],
            )?;
            return Ok(Some(tx.last_insert_rowid()));
        }
        Op::FinishRun(r) => finish_run(tx, r)?,
        Op::CloseAbandoned { spec, at } => {
            tx.prepare_cached(
                "UPDATE runs SET status = 'interrupted', finished_at = ?2,
                   error = 'the process running it ended before it could record its end; closed by a later run'
                 WHERE spec = ?1 AND status = 'running'",
            )?
            .execute(params![spec, at])?;
        }
        Op::UploadStarted {
            upload_id,
            spec,
            side,
            dest_key,
            ..
        } => {
            upload_started(tx, upload_id, spec, side, dest_key)?;
            return Ok(Some(0));
        }
        Op::UploadEnded { upload_id } => {
            tx.prepare_cached("DELETE FROM uploads WHERE upload_id = ?1")?
                .execute([upload_id])?;
        }
        Op::Flush(_) | Op::Checkpoint => {}
    }
    Ok(None)
}
