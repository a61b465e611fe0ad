//! `s3syncd manifest ...`: audits of what was copied and of the runs, exports, and a check of
//! the manifest against the destination.

use super::{resolve_spec, EXIT_FAILED_OBJECTS, EXIT_INVALID, EXIT_OK};
use crate::manifest::{ObjectFilter, ObjectRow, Reader, RunRow};
use crate::s3::{self, RequestCounter};
use crate::spec::size::ByteSize;
use crate::spec::{Config, Mode};
use clap::{Subcommand, ValueEnum};
use std::io::Write;
use std::sync::Arc;

type Out<'a> = std::io::BufWriter<std::io::StdoutLock<'a>>;

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Copied objects, one line each: dest key, size, mode, copied at.
    Ls {
        #[arg(long)]
        spec: Option<String>,
        /// Only destination keys starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Only objects copied since: a date, an RFC 3339 time, or an age like 24h or 7d.
        #[arg(long, value_parser = parse_since)]
        since: Option<String>,
        #[arg(long, value_enum)]
        mode: Option<Mode>,
    },
    /// The run history, newest first.
    Runs {
        #[arg(long)]
        spec: Option<String>,
        #[arg(long, default_value_t = 20)]
        last: u32,
    },
    /// The whole objects table, streamed.
    Export {
        #[arg(long, value_enum)]
        format: Format,
        #[arg(long)]
        spec: Option<String>,
    },
    /// Lists the destination and reports drift from the manifest; exit 1 on drift.
    Verify {
        #[arg(long)]
        spec: String,
        /// Forget missing and different objects, so that the next run copies them again.
        #[arg(long)]
        repair: bool,
        /// Also HEAD each object (checksum mode) and compare its checksum with the one the
        /// manifest recorded: integrity proven without downloading a byte.
        #[arg(long)]
        checksums: bool,
    },
    /// One line per spec: schedule, next run, last run, objects held, last success, freshness.
    Status,
    /// The change records of a spec's runs after run N, as its delivery files hold them: one
    /// line per object copied (new, changed) or deleted.
    Changes {
        #[arg(long)]
        spec: String,
        /// Only runs after this one (0: all).
        #[arg(long, default_value_t = 0)]
        since_run: i64,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
    },
    /// Per series of a spec with `[series]`: first and last period, missing periods (holes),
    /// whether the next period is overdue, and files copied after they were due. Text shows
    /// the series with holes or overdue, then a summary; jsonl and csv every series.
    Gaps {
        /// One spec (default: every spec with `[series]`).
        #[arg(long)]
        spec: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: GapsFormat,
    },
    /// Bring copies made elsewhere home: shard manifests (`run --keys --manifest`) and S3
    /// Batch Operations completion reports (their succeeded copies checked by a listing of
    /// both sides). The newest row of each key wins; importing twice changes nothing.
    Import {
        /// The spec the files are for (default: the one spec a shard manifest holds; a
        /// completion report needs it).
        #[arg(long)]
        spec: Option<String>,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
    },
    /// Every version of a destination key: the current one and those that upstream
    /// revisions replaced or deletes removed, with where a kept copy is.
    History {
        /// The destination key.
        key: String,
        #[arg(long)]
        spec: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GapsFormat {
    Text,
    Jsonl,
    Csv,
}

/// `--since`: `2026-11-01`, `2026-11-01T08:30:00Z`, or an age (`90m`, `24h`, `7d`).
fn parse_since(s: &str) -> Result<String, String> {
    use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(fmt(t.with_timezone(&Utc)));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(fmt(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()));
    }
    let age = match s.strip_suffix('d') {
        Some(days) => days
            .parse::<u64>()
            .map(|d| std::time::Duration::from_secs(d * 86_400))
            .map_err(|e| e.to_string()),
        None => crate::spec::size::parse_duration(s),
    }
    .map_err(|_| format!("{s:?} is not a date (2026-11-01), an RFC 3339 time or an age (24h, 7d)"))?;
    Ok(fmt(Utc::now() - chrono::Duration::from_std(age).map_err(|e| e.to_string())?))
}

pub async fn run(cfg: &Config, cmd: ManifestCommand) -> anyhow::Result<i32> {
    if let ManifestCommand::Import { spec, files } = &cmd {
        return super::backfill::import(cfg, spec.as_deref(), files).await;
    }
    let path = cfg.manifest_path();
    if !path.exists() {
        anyhow::bail!("no manifest at {} yet: no run has been recorded with this config", path.display());
    }
    let reader = Reader::open(&path)?;
    if let ManifestCommand::Verify { spec, repair, checksums } = cmd {
        let spec = match resolve_spec(cfg, &spec) {
            Ok(s) => s,
            Err(e) => {
                super::print_diagnostics(&e);
                return Ok(EXIT_INVALID);
            }
        };
        let dst = s3::client(
            &spec.destination,
            crate::spec::Which::Destination,
            &spec.transfer,
            Arc::new(RequestCounter::default()),
        )
        .await;
        let drift = super::verify::verify(&spec, &dst, &reader, repair).await?;
        if !checksums {
            return Ok(drift);
        }
        return Ok(drift.max(super::verify::verify_checksums(&spec, &dst, &reader).await?));
    }
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    match cmd {
        ManifestCommand::Ls { spec, prefix, since, mode } => {
            let filter = ObjectFilter {
                spec,
                prefix,
                since,
                mode: mode.map(|m| m.as_str().to_string()),
            };
            each_line(&reader, &filter, &mut out, |r| {
                format!("{}\t{}\t{}\t{}\t{}", r.spec, r.dest_key, r.size, r.mode, r.copied_at)
            })?;
        }
        ManifestCommand::Runs { spec, last } => runs(&reader, spec.as_deref(), last, &mut out)?,
        ManifestCommand::Export { format, spec } => {
            let filter = ObjectFilter {
                spec,
                ..ObjectFilter::default()
            };
            match format {
                Format::Csv => {
                    writeln!(out, "{CSV_HEADER}")?;
                    each_line(&reader, &filter, &mut out, csv_line)?;
                }
                Format::Jsonl => each_line(&reader, &filter, &mut out, json_line)?,
            }
        }
        ManifestCommand::Status => status(cfg, &reader, &mut out)?,
        ManifestCommand::Changes { spec, since_run, format } => changes(&reader, &spec, since_run, format, &mut out)?,
        ManifestCommand::Gaps { spec, format } => gaps(cfg, &reader, spec.as_deref(), format, &mut out)?,
        ManifestCommand::History { key, spec } => {
            let versions = reader.history(&key, spec.as_deref())?;
            if versions.is_empty() {
                eprintln!("no version of {key:?} in the manifest");
                return Ok(EXIT_FAILED_OBJECTS);
            }
            for v in versions {
                writeln!(out, "{}", serde_json::to_string(&v)?)?;
            }
        }
        ManifestCommand::Verify { .. } | ManifestCommand::Import { .. } => unreachable!("answered above"),
    }
    ignore_broken_pipe(out.flush())?;
    Ok(EXIT_OK)
}

/// `manifest gaps`: the series of one spec, or of every spec with `[series]`.
fn gaps(cfg: &Config, reader: &Reader, spec: Option<&str>, format: GapsFormat, out: &mut Out) -> anyhow::Result<()> {
    let one = spec.is_some();
    let specs: Vec<crate::spec::Spec> = match spec {
        Some(s) => vec![resolve_spec(cfg, s).map_err(|e| anyhow::anyhow!("{e}"))?],
        None => crate::spec::load_dir(&cfg.spec_dir)
            .map(|s| s.specs.into_values().collect())
            .unwrap_or_default(),
    };
    if let GapsFormat::Csv = format {
        writeln!(out, "spec,series,first,last,periods,missing,overdue_since,overdue_periods,late")?;
    }
    for spec in specs {
        let Some((series, unmatched)) = reader.gaps(&spec, chrono::Utc::now())? else {
            if one && format_is_text(format) {
                writeln!(out, "{}: no [series] in its spec", spec.name)?;
            }
            continue;
        };
        for g in &series {
            match format {
                GapsFormat::Text if g.has_gaps() => writeln!(out, "{}: {}", spec.name, gaps_line(g))?,
                GapsFormat::Text => {}
                GapsFormat::Jsonl => {
                    let mut v = serde_json::to_value(g)?;
                    v["spec"] = spec.name.clone().into();
                    writeln!(out, "{v}")?;
                }
                GapsFormat::Csv => writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{}",
                    csv_field(&spec.name),
                    csv_field(&g.series),
                    g.first,
                    g.last,
                    g.periods,
                    g.missing.join(" "),
                    g.overdue_since.as_deref().unwrap_or(""),
                    g.overdue_periods,
                    g.late.join(" ")
                )?,
            }
        }
        if format_is_text(format) {
            let holes = series.iter().filter(|g| !g.missing.is_empty()).count();
            let missing: usize = series.iter().map(|g| g.missing.len()).sum();
            let overdue = series.iter().filter(|g| g.overdue_periods > 0).count();
            let late: usize = series.iter().map(|g| g.late.len()).sum();
            writeln!(
                out,
                "{}: {} series, {holes} with holes ({missing} periods missing), {overdue} overdue, {late} files late, {unmatched} keys in no series",
                spec.name,
                series.len()
            )?;
        }
    }
    Ok(())
}

fn format_is_text(f: GapsFormat) -> bool {
    matches!(f, GapsFormat::Text)
}

/// One series with holes or overdue, for the text format: the first ten missing periods.
fn gaps_line(g: &crate::spec::series::SeriesGaps) -> String {
    let mut line = format!("{} {}..{} ({} periods)", g.series, g.first, g.last, g.periods);
    if !g.missing.is_empty() {
        let more = g.missing.len().saturating_sub(10);
        line += &format!(", missing {}", g.missing.iter().take(10).cloned().collect::<Vec<_>>().join(" "));
        if more > 0 {
            line += &format!(" and {more} more");
        }
    }
    if let Some(since) = &g.overdue_since {
        line += &format!(", OVERDUE since {since} ({} periods)", g.overdue_periods);
    }
    line
}

const CHANGES_HEADER: &str = "run_id,action,dest_key,source_key,size,etag,checksum,source_last_modified,mode";

fn changes(reader: &Reader, spec: &str, since_run: i64, format: Format, out: &mut Out) -> anyhow::Result<()> {
    if let Format::Csv = format {
        writeln!(out, "{CHANGES_HEADER}")?;
    }
    let mut io = Ok(());
    reader.changes(spec, since_run, None, |c| {
        let line = match format {
            Format::Jsonl => serde_json::to_string(&c).expect("a change serializes"),
            Format::Csv => [
                c.run_id.to_string(),
                c.action.to_string(),
                csv_field(&c.dest_key),
                csv_field(&c.source_key),
                c.size.to_string(),
                c.etag.clone().unwrap_or_default(),
                c.checksum.clone().unwrap_or_default(),
                c.source_last_modified.clone().unwrap_or_default(),
                c.mode.clone(),
            ]
            .join(","),
        };
        io = writeln!(out, "{line}");
        io.is_ok()
    })?;
    Ok(ignore_broken_pipe(io)?)
}

/// Streams the matching objects, one formatted line each.
fn each_line(reader: &Reader, filter: &ObjectFilter, out: &mut Out, line: impl Fn(&ObjectRow) -> String) -> anyhow::Result<()> {
    let mut io = Ok(());
    reader.each_object(filter, |r| {
        io = writeln!(out, "{}", line(&r));
        io.is_ok()
    })?;
    Ok(ignore_broken_pipe(io)?)
}

/// One line of the `runs` table; the header and the rows share the widths.
macro_rules! runs_line {
    ($($col:expr),+) => {
        format!("{:>6}  {:<28} {:<11} {:<24} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10} {:>9}", $($col),+)
    };
}

fn runs(reader: &Reader, spec: Option<&str>, last: u32, out: &mut Out) -> anyhow::Result<()> {
    let head = runs_line!(
        "id",
        "spec",
        "status",
        "started",
        "seconds",
        "listed",
        "copied",
        "skipped",
        "failed",
        "bytes",
        "fallbacks"
    );
    writeln!(out, "{head}")?;
    for r in reader.runs(spec, last)? {
        let secs = duration(&r.started_at, r.finished_at.as_deref()).map_or("-".into(), |d| format!("{d:.1}"));
        let line = runs_line!(
            r.id,
            r.spec,
            r.status.as_str(),
            r.started_at,
            secs,
            r.objects_listed,
            r.objects_copied,
            r.objects_skipped,
            r.objects_failed,
            ByteSize(r.bytes_copied).to_string(),
            fallbacks(&r)
        );
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Objects that fell back in a run, from its `details`.
fn fallbacks(r: &RunRow) -> u64 {
    serde_json::from_str::<serde_json::Value>(&r.details)
        .ok()
        .and_then(|v| v.get("fallbacks")?.as_object().map(|m| m.values().filter_map(|n| n.as_u64()).sum()))
        .unwrap_or(0)
}

fn status(cfg: &Config, reader: &Reader, out: &mut Out) -> anyhow::Result<()> {
    let specs = crate::spec::load_dir(&cfg.spec_dir).map(|s| s.specs).unwrap_or_default();
    let mut names: Vec<String> = specs.keys().cloned().collect();
    for n in reader.known_specs()? {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    for name in names {
        let st = reader.spec_status(&name)?;
        let spec = specs.get(&name);
        let schedule = match spec {
            None => "(no spec file)".to_string(),
            Some(s) if !s.enabled => "disabled".to_string(),
            Some(s) => s.schedule.as_ref().map_or("manual".to_string(), |x| format!("\"{}\"", x.expr)),
        };
        let next = spec
            .filter(|s| s.enabled)
            .and_then(|s| s.schedule.as_ref()?.next_after(chrono::Utc::now()))
            .map_or("-".to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let last = st.last_run.as_ref().map_or("never".to_string(), |r| {
            format!("run {} {} {}", r.id, r.status, r.finished_at.as_deref().unwrap_or("(running)"))
        });
        let fresh = match (spec.and_then(|s| s.feed.stale_after), reader.freshness(&name)?) {
            (None, _) => String::new(),
            (Some(_), (_, Some(since))) => format!(", STALE since {since}"),
            (Some(_), (last, None)) => format!(", fresh (last new object {})", last.as_deref().unwrap_or("never")),
        };
        let undelivered = match reader.undelivered(&name)?.len() {
            0 => String::new(),
            n => format!(", {n} runs UNDELIVERED (their change feed files wait; see `manifest runs`)"),
        };
        let events = match spec.filter(|s| s.events.is_some()) {
            None => String::new(),
            Some(_) => {
                let day_ago = (chrono::Utc::now() - chrono::TimeDelta::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let e = reader.events_state(&name, &day_ago)?;
                let missed = e.last_listing_missed.map_or(String::new(), |n| {
                    format!(", the last listing found {n} objects no event had brought")
                });
                format!(
                    ", events: {} runs copied {} objects in 24 h, last ended {}{missed}",
                    e.runs,
                    e.copied,
                    e.last_finished.as_deref().unwrap_or("never")
                )
            }
        };
        writeln!(
            out,
            "{name}: schedule {schedule}, next {next}, last {last}, holds {} objects ({}), last success {}{fresh}{undelivered}{events}",
            st.objects,
            ByteSize(st.bytes),
            st.last_success.as_deref().unwrap_or("never")
        )?;
    }
    Ok(())
}

/// `| head` closing the pipe is not an error.
fn ignore_broken_pipe(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn duration(start: &str, end: Option<&str>) -> Option<f64> {
    let s = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let e = chrono::DateTime::parse_from_rfc3339(end?).ok()?;
    Some((e - s).num_milliseconds() as f64 / 1000.0)
}

/// RFC 4180: quote fields holding a comma, a quote or a line break (keys may hold all three).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const CSV_HEADER: &str =
    "spec,dest_key,source_key,size,etag,source_last_modified,copied_at,mode,run_id,dest_etag,verified,dest_endpoint,dest_bucket,source_endpoint,source_bucket,checksum";

fn csv_line(r: &ObjectRow) -> String {
    let o = |v: &Option<String>| v.as_deref().map(csv_field).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        csv_field(&r.spec),
        csv_field(&r.dest_key),
        csv_field(&r.source_key),
        r.size,
        o(&r.etag),
        o(&r.source_last_modified),
        r.copied_at,
        r.mode,
        r.run_id,
        o(&r.dest_etag),
        r.verified,
        csv_field(&r.dest_endpoint),
        csv_field(&r.dest_bucket),
        csv_field(&r.source_endpoint),
        csv_field(&r.source_bucket),
        o(&r.checksum)
    )
}

fn json_line(r: &ObjectRow) -> String {
    serde_json::json!({
        "spec": r.spec, "dest_key": r.dest_key, "source_key": r.source_key, "size": r.size, "etag": r.etag,
        "source_last_modified": r.source_last_modified, "copied_at": r.copied_at, "mode": r.mode.as_str(), "run_id": r.run_id,
        "dest_etag": r.dest_etag, "verified": r.verified.as_str(), "dest_endpoint": r.dest_endpoint,
        "dest_bucket": r.dest_bucket, "source_endpoint": r.source_endpoint, "source_bucket": r.source_bucket, "checksum": r.checksum,
        "sha256": r.sha256, "sidecar_mismatch": r.sidecar_mismatch,
    })
    .to_string()
}
