//! The single writer: one thread owns the read-write connection and applies queued writes in
//! batches, one transaction per batch, so copy tasks never wait on SQLite and never contend.

use super::{open_rw, sqlite_err, ManifestError, ObjectRow, Result, RunRow};
use crate::spec::Mode;
use rusqlite::{params, Connection, Transaction};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Largest number of queued writes applied in one transaction.
const BATCH: usize = 2048;

enum Op {
    Upsert(ObjectRow),
    /// The destination no longer holds the verified object (e.g. it was overwritten by a copy
    /// that then failed verification): forget it so that the next run copies it again.
    Forget {
        spec: String,
        dest_key: String,
    },
    Deleted {
        run_id: i64,
        spec: String,
        dest_key: String,
        at: String,
    },
    Failure {
        run_id: i64,
        spec: String,
        source_key: String,
        mode: Option<Mode>,
        kind: &'static str,
        message: String,
        at: String,
    },
    StartRun {
        spec: String,
        started_at: String,
        reply: oneshot::Sender<Result<i64>>,
    },
    FinishRun(Box<RunRow>),
    UploadStarted {
        upload_id: String,
        spec: String,
        bucket: String,
        dest_key: String,
        reply: oneshot::Sender<Result<i64>>,
    },
    UploadEnded {
        upload_id: String,
    },
    Flush(oneshot::Sender<Result<()>>),
}

/// Handle to the writer thread; cheap to clone. The thread ends when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
    path: PathBuf,
}

impl Writer {
    /// Opens (creating or upgrading) the manifest and starts the writer thread.
    pub fn open(path: &Path) -> Result<Writer> {
        let conn = open_rw(path)?;
        let (tx, rx) = mpsc::channel();
        let p = path.to_path_buf();
        std::thread::Builder::new()
            .name("manifest-writer".into())
            .spawn(move || writer_loop(conn, rx, &p))
            .map_err(|e| ManifestError::Dir {
                path: path.to_path_buf(),
                source: Arc::new(e),
            })?;
        Ok(Writer {
            tx,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, op: Op) {
        // A send fails only after the thread died, which it logs; nothing more to do here.
        let _ = self.tx.send(op);
    }

    pub fn upsert(&self, row: ObjectRow) {
        self.send(Op::Upsert(row));
    }

    pub fn forget(&self, spec: &str, dest_key: &str) {
        self.send(Op::Forget {
            spec: spec.into(),
            dest_key: dest_key.into(),
        });
    }

    pub fn deleted(&self, run_id: i64, spec: &str, dest_key: &str) {
        self.send(Op::Deleted {
            run_id,
            spec: spec.into(),
            dest_key: dest_key.into(),
            at: super::now(),
        });
    }

    /// Records an object that failed; `kind` is the error kind's documented name.
    pub fn failure(&self, run_id: i64, spec: &str, source_key: &str, mode: Option<Mode>, kind: &'static str, message: &str) {
        self.send(Op::Failure {
            run_id,
            spec: spec.into(),
            source_key: source_key.into(),
            mode,
            kind,
            message: message.into(),
            at: super::now(),
        });
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

    /// Records a multipart upload before any part is sent; returns once it is committed.
    pub async fn upload_started(&self, upload_id: &str, spec: &str, bucket: &str, dest_key: &str) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::UploadStarted {
            upload_id: upload_id.into(),
            spec: spec.into(),
            bucket: bucket.into(),
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

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Flush(reply));
        rx.await.map_err(|_| ManifestError::WriterGone)?
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Op>, path: &Path) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = apply(&mut conn, &batch, path);
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = batch.len(), "manifest write failed; the objects of this batch will be copied again next run");
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
        Op::Forget { spec, dest_key } => {
            tx.prepare_cached("DELETE FROM objects WHERE spec = ?1 AND dest_key = ?2")?
                .execute(params![spec, dest_key])?;
        }
        Op::Deleted {
            run_id,
            spec,
            dest_key,
            at,
        } => {
            tx.prepare_cached("DELETE FROM objects WHERE spec = ?1 AND dest_key = ?2")?
                .execute(params![spec, dest_key])?;
            tx.prepare_cached("INSERT INTO deletions (run_id, spec, dest_key, at) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![run_id, spec, dest_key, at])?;
        }
        Op::Failure {
            run_id,
            spec,
            source_key,
            mode,
            kind,
            message,
            at,
        } => {
            tx.prepare_cached(
                "INSERT INTO failures (run_id, spec, source_key, mode, kind, message, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![run_id, spec, source_key, mode.map(Mode::as_str), kind, message, at])?;
        }
        Op::StartRun { spec, started_at, .. } => {
            tx.execute(
                "INSERT INTO runs (spec, started_at, status) VALUES (?1, ?2, 'running')",
                params![spec, started_at],
            )?;
            return Ok(Some(tx.last_insert_rowid()));
        }
        Op::FinishRun(r) => finish_run(tx, r)?,
        Op::UploadStarted {
            upload_id,
            spec,
            bucket,
            dest_key,
            ..
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO uploads (upload_id, spec, bucket, dest_key, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![upload_id, spec, bucket, dest_key, super::now()])?;
            return Ok(Some(0));
        }
        Op::UploadEnded { upload_id } => {
            tx.prepare_cached("DELETE FROM uploads WHERE upload_id = ?1")?
                .execute([upload_id])?;
        }
        Op::Flush(_) => {}
    }
    Ok(None)
}

fn upsert(tx: &Transaction, r: &ObjectRow) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO objects (spec, dest_key, source_key, size, etag, source_last_modified, copied_at, mode, run_id, dest_etag, verified)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (spec, dest_key) DO UPDATE SET source_key = excluded.source_key, size = excluded.size, etag = excluded.etag,
           source_last_modified = excluded.source_last_modified, copied_at = excluded.copied_at, mode = excluded.mode,
           run_id = excluded.run_id, dest_etag = excluded.dest_etag, verified = excluded.verified",
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
        r.verified
    ])?;
    Ok(())
}

fn finish_run(tx: &Transaction, r: &RunRow) -> rusqlite::Result<()> {
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
