//! The single writer: one thread owns the read-write connection and applies queued writes in
//! batches, one transaction per batch, so copy tasks never wait on SQLite and never contend.

use super::{open_rw, sqlite_err, ManifestError, ObjectRow, Result, RunRow};
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
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
        mode: Option<String>,
        kind: String,
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
                source: e,
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

    pub fn failure(&self, run_id: i64, spec: &str, source_key: &str, mode: Option<&str>, kind: &str, message: &str) {
        self.send(Op::Failure {
            run_id,
            spec: spec.into(),
            source_key: source_key.into(),
            mode: mode.map(Into::into),
            kind: kind.into(),
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
        let result = apply(&mut conn, &mut batch, path);
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = batch.len(), "manifest write failed; the objects of this batch will be copied again next run");
        }
        // Replies go out only after the commit, so a caller that saw Ok knows the data is durable.
        for op in batch {
            match op {
                Op::Flush(reply) => {
                    let _ = reply.send(result.as_ref().map(|_| ()).map_err(|_| ManifestError::WriterGone));
                }
                Op::StartRun { reply, .. } | Op::UploadStarted { reply, .. } => {
                    let _ = reply.send(Err(ManifestError::WriterGone));
                }
                _ => {}
            }
        }
    }
}

/// Applies a batch in one transaction. Run starts are answered here because they need their id.
fn apply(conn: &mut Connection, batch: &mut Vec<Op>, path: &Path) -> Result<()> {
    let err = sqlite_err(path);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(&err)?;
    let mut started = Vec::new();
    for (i, op) in batch.iter().enumerate() {
        match op {
            Op::Upsert(r) => {
                tx.prepare_cached(
                    "INSERT INTO objects (spec, dest_key, source_key, size, etag, source_last_modified, copied_at, mode, run_id, dest_etag, verified)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (spec, dest_key) DO UPDATE SET source_key = excluded.source_key, size = excluded.size, etag = excluded.etag,
                       source_last_modified = excluded.source_last_modified, copied_at = excluded.copied_at, mode = excluded.mode,
                       run_id = excluded.run_id, dest_etag = excluded.dest_etag, verified = excluded.verified",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        r.spec,
                        r.dest_key,
                        r.source_key,
                        r.size as i64,
                        r.etag,
                        r.source_last_modified,
                        r.copied_at,
                        r.mode,
                        r.run_id,
                        r.dest_etag,
                        r.verified
                    ])
                })
                .map_err(&err)?;
            }
            Op::Forget { spec, dest_key } => {
                tx.prepare_cached("DELETE FROM objects WHERE spec = ?1 AND dest_key = ?2")
                    .and_then(|mut s| s.execute(params![spec, dest_key]))
                    .map_err(&err)?;
            }
            Op::Deleted {
                run_id,
                spec,
                dest_key,
                at,
            } => {
                tx.prepare_cached("DELETE FROM objects WHERE spec = ?1 AND dest_key = ?2")
                    .and_then(|mut s| s.execute(params![spec, dest_key]))
                    .map_err(&err)?;
                tx.prepare_cached("INSERT INTO deletions (run_id, spec, dest_key, at) VALUES (?1, ?2, ?3, ?4)")
                    .and_then(|mut s| s.execute(params![run_id, spec, dest_key, at]))
                    .map_err(&err)?;
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
                )
                .and_then(|mut s| s.execute(params![run_id, spec, source_key, mode, kind, message, at]))
                .map_err(&err)?;
            }
            Op::StartRun { spec, started_at, .. } => {
                tx.execute(
                    "INSERT INTO runs (spec, started_at, status) VALUES (?1, ?2, 'running')",
                    params![spec, started_at],
                )
                .map_err(&err)?;
                started.push((i, tx.last_insert_rowid()));
            }
            Op::FinishRun(r) => {
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
                )
                .map_err(&err)?;
            }
            Op::UploadStarted {
                upload_id,
                spec,
                bucket,
                dest_key,
                ..
            } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO uploads (upload_id, spec, bucket, dest_key, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| s.execute(params![upload_id, spec, bucket, dest_key, super::now()]))
                .map_err(&err)?;
                started.push((i, 0));
            }
            Op::UploadEnded { upload_id } => {
                tx.prepare_cached("DELETE FROM uploads WHERE upload_id = ?1")
                    .and_then(|mut s| s.execute([upload_id]))
                    .map_err(&err)?;
            }
            Op::Flush(_) => {}
        }
    }
    tx.commit().map_err(&err)?;
    // Answer run and upload starts now that their rows are committed; drop them from the batch.
    for (i, id) in started.into_iter().rev() {
        if let Op::StartRun { reply, .. } | Op::UploadStarted { reply, .. } = batch.remove(i) {
            let _ = reply.send(Ok(id));
        }
    }
    Ok(())
}
