//! The series of a spec with `[series]`, as the manifest holds them. Their completeness is kept
//! between runs (`feeds.series_state`: every series' first and last period, holes and late
//! files, and the last run it counts), so that a run reads only the keys copied since rather
//! than every key held: a run with nothing due starts and ends in milliseconds whatever the
//! archive's size. A full listing's run reads them all again (deletes follow only full
//! listings), and so does any run after rows were forgotten.

use super::{sqlite_err, Reader, Result, Target};
use crate::spec::series::Gaps;
use crate::spec::Spec;
use rusqlite::{params, OptionalExtension};

/// The series of a spec, counted up to a run.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Kept {
    /// What they were read for: the pattern, `due_after`, the destination and its prefix. A
    /// state read for anything else is read again.
    of: String,
    /// The last run whose keys are counted.
    pub upto: i64,
    pub gaps: Gaps,
}

impl Kept {
    /// The state as `feeds.series_state` keeps it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a series state serializes")
    }
}

fn identity(spec: &Spec) -> String {
    let t = Target::of(spec);
    let opts = spec.series.as_ref().expect("a spec with [series]");
    format!(
        "{}|{}|{}|{}|{}",
        opts.pattern.as_str(),
        opts.due_after.as_secs(),
        t.endpoint,
        t.bucket,
        spec.destination.prefix
    )
}

impl Reader {
    /// The series of a spec with `[series]` (`None` without): the kept state with the keys
    /// copied since added, or every held key read in key order when `full`, when there is no
    /// state, or when it was kept for another pattern or destination.
    pub fn series(&self, spec: &Spec, full: bool) -> Result<Option<Kept>> {
        if spec.series.is_none() {
            return Ok(None);
        }
        let of = identity(spec);
        let state: Option<String> = self
            .conn
            .query_row("SELECT series_state FROM feeds WHERE spec = ?1", [&spec.name], |r| r.get(0))
            .optional()
            .map_err(sqlite_err(&self.path))?
            .flatten();
        let kept = state
            .filter(|_| !full)
            .and_then(|s| serde_json::from_str::<Kept>(&s).ok())
            .filter(|k| k.of == of);
        let mut kept = kept.unwrap_or(Kept {
            of,
            upto: -1,
            gaps: Gaps::default(),
        });
        self.add_since(spec, &mut kept)?;
        Ok(Some(kept))
    }

    /// Adds the keys of runs after `kept.upto` (all keys when it is -1), in key order; a key
    /// that replaced an earlier version (a republished file) holds a period already counted.
    fn add_since(&self, spec: &Spec, kept: &mut Kept) -> Result<()> {
        let opts = spec.series.as_ref().expect("a spec with [series]");
        let t = Target::of(spec);
        let prefix = &spec.destination.prefix;
        let err = sqlite_err(&self.path);
        // All rows: in key order along the primary key. Those of later runs only: through the
        // runs' index (the primary key would read every row of the spec to find them).
        let index = if kept.upto < 0 { "" } else { "INDEXED BY objects_by_run" };
        let sql = format!(
            "SELECT o.dest_key, o.copied_at, o.run_id FROM objects o {index}
             WHERE o.spec = ?1 AND o.run_id > ?5 AND o.dest_endpoint = ?2 AND o.dest_bucket = ?3 AND o.dest_key >= ?4
               AND substr(o.dest_key, 1, length(?4)) = ?4
               AND (?5 < 0 OR NOT EXISTS (SELECT 1 FROM history h
                      WHERE h.spec = o.spec AND h.dest_key = o.dest_key AND h.replaced_by_run = o.run_id))
             ORDER BY o.dest_key"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(&err)?;
        let mut rows = stmt.query(params![t.spec, t.endpoint, t.bucket, prefix, kept.upto]).map_err(&err)?;
        let mut upto = kept.upto.max(0);
        while let Some(r) = rows.next().map_err(&err)? {
            let key: String = r.get(0).map_err(&err)?;
            let copied: String = r.get(1).map_err(&err)?;
            let run_id: i64 = r.get(2).map_err(&err)?;
            let at = chrono::DateTime::parse_from_rfc3339(&copied)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc));
            kept.gaps.add(opts, &key[prefix.len()..], run_id, at);
            upto = upto.max(run_id);
        }
        kept.upto = upto;
        Ok(())
    }
}
