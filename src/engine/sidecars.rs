//! Checksum sidecars that came after their object: after the copy stage, each sidecar this
//! run copied whose object an earlier run copied without it is checked against that object,
//! without copying its bytes again: the SHA-256 the manifest kept from the copy, else the one
//! the destination stores, else the destination's bytes read once. Agreeing, the object is
//! verified by SHA-256; contradicting, it fails in this run and its row keeps the sidecar's
//! value for `manifest verify`.

use super::Run;
use crate::manifest::{FailureRow, ObjectRow, Reader, Verified};
use crate::transfer::TransferError;
use futures::StreamExt;

/// Late sidecars checked at once.
const AT_ONCE: usize = 16;

/// What one late sidecar said of its object.
enum Late {
    Agrees(String),
    Contradicts { copied: String, sidecar: String },
}

impl Run {
    /// Remembers a copied object that is a sidecar, for [`Run::check_late_sidecars`].
    pub(super) fn note_sidecar(&self, source_key: &str) {
        if let Some(object) = self.spec.verify.object_of(source_key) {
            self.late_sidecars.lock().unwrap().push(object.to_string());
        }
    }

    /// Checks each object whose sidecar this run copied, when an earlier run copied the object
    /// and no sidecar verified it then.
    /// Runs interrupted since the last finished one may have copied sidecars they never
    /// checked: those are checked too.
    pub(super) async fn check_late_sidecars(&self) -> Result<(), super::EngineError> {
        let Some(suffix) = &self.spec.verify.checksum_sidecar else {
            return Ok(());
        };
        if self.opts.dry_run || self.stop.hard_stop.is_cancelled() {
            return Ok(());
        }
        let _ = self.engine.writer.flush().await;
        let reader = Reader::open(self.engine.writer.path())?;
        let mut objects = std::mem::take(&mut *self.late_sidecars.lock().unwrap());
        for sidecar in reader.sidecars_of_interrupted_runs(&self.spec.name, suffix)? {
            objects.extend(self.spec.verify.object_of(&sidecar).map(str::to_string));
        }
        objects.sort();
        objects.dedup();
        let mut rows = Vec::new();
        for key in objects {
            let Some(dest_key) = self.spec.dest_key(&key) else { continue };
            match reader.object(&self.target, &dest_key)? {
                Some(row) if row.run_id < self.run_id && row.verified != Verified::Sha256 => rows.push(row),
                _ => {}
            }
        }
        let checks = futures::stream::iter(rows)
            .map(|row| async move {
                let late = self.check_one(&row).await;
                (row, late)
            })
            .buffer_unordered(AT_ONCE);
        futures::pin_mut!(checks);
        while let Some((row, late)) = checks.next().await {
            self.record_late(row, late);
        }
        Ok(())
    }

    async fn check_one(&self, row: &ObjectRow) -> Result<Late, TransferError> {
        let t = &self.transferer;
        let (sidecar, sidecar_bytes) = t.sidecar_sha256(&row.source_key).await?;
        // The sidecar was copied a moment ago; gone since, it says nothing.
        let Some(sidecar) = sidecar else {
            return Err(TransferError::verify(
                "its checksum sidecar was removed upstream before it could be checked",
            ));
        };
        let (copied, read) = match &row.sha256 {
            Some(sha) => (sha.clone(), 0),
            None => t.dest_sha256(&row.dest_key).await?,
        };
        self.tally(|t| t.bytes_through_host += sidecar_bytes + read);
        Ok(match copied.eq_ignore_ascii_case(&sidecar) {
            true => Late::Agrees(sidecar),
            false => Late::Contradicts { copied, sidecar },
        })
    }

    fn record_late(&self, row: ObjectRow, late: Result<Late, TransferError>) {
        let (spec, writer) = (&self.spec.name, &self.engine.writer);
        let error = match late {
            Ok(Late::Agrees(sha)) => {
                writer.sidecar_checked(&self.target, &row.dest_key, &sha, true);
                return self.tally(|t| t.late_sidecars += 1);
            }
            Ok(Late::Contradicts { copied, sidecar }) => {
                writer.sidecar_checked(&self.target, &row.dest_key, &sidecar, false);
                self.tally(|t| {
                    t.late_sidecars += 1;
                    t.late_sidecar_mismatches += 1;
                });
                TransferError::verify(format!(
                    "sha256 {copied} of the copy (run {}) differs from the checksum sidecar's {sidecar}, which came later",
                    row.run_id
                ))
            }
            Err(e) => e,
        };
        crate::metrics::object_failed(spec);
        tracing::warn!(key = %row.source_key, error = %error, "a checksum sidecar that came later contradicts its object");
        self.tally(|t| t.failed(None, None));
        writer.failure(FailureRow {
            run_id: self.run_id,
            spec: spec.clone(),
            source_key: row.source_key,
            mode: Some(row.mode),
            kind: error.kind.as_str(),
            code: error.code_str(),
            message: error.to_string(),
        });
    }
}
