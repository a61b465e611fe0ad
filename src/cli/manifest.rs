//! `s3syncd manifest ...`: audits of what was copied and of the runs, exports, and a check of
//! the manifest against the destination.

use super::{resolve_spec, summary::human_bytes, ConfigArg, EXIT_FAILED_OBJECTS, EXIT_INVALID, EXIT_OK};
use crate::manifest::{ObjectFilter, ObjectRow, Reader, Writer};
use crate::s3::{self, Lister, RequestCounter};
use clap::{Subcommand, ValueEnum};
use std::io::Write;
use std::sync::Arc;

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
        #[arg(long, value_parser = ["direct", "stream", "staged"])]
        mode: Option<String>,
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
    },
    /// One line per spec: schedule, next run, last run, objects held, last success.
    Status,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
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

pub async fn run(config: &ConfigArg, cmd: ManifestCommand) -> anyhow::Result<i32> {
    let cfg = match config.load() {
        Ok(c) => c,
        Err(e) => {
            super::print_diagnostics(&e);
            return Ok(EXIT_INVALID);
        }
    };
    let path = cfg.manifest_path();
    if !path.exists() {
        anyhow::bail!("no manifest at {} yet: no run has been recorded with this config", path.display());
    }
    let reader = Reader::open(&path)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    match cmd {
        ManifestCommand::Ls { spec, prefix, since, mode } => {
            let mut io = Ok(());
            reader.each_object(&ObjectFilter { spec, prefix, since, mode }, |r| {
                io = writeln!(out, "{}\t{}\t{}\t{}\t{}", r.spec, r.dest_key, r.size, r.mode, r.copied_at);
                io.is_ok()
            })?;
            ignore_broken_pipe(io)?;
        }
        ManifestCommand::Runs { spec, last } => {
            writeln!(
                out,
                "{:>6}  {:<28} {:<11} {:<24} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10} {:>9}",
                "id", "spec", "status", "started", "seconds", "listed", "copied", "skipped", "failed", "bytes", "fallbacks"
            )?;
            for r in reader.runs(spec.as_deref(), last)? {
                let secs = duration(&r.started_at, r.finished_at.as_deref()).map_or("-".into(), |d| format!("{d:.1}"));
                let fallbacks: u64 = serde_json::from_str::<serde_json::Value>(&r.details)
                    .ok()
                    .and_then(|v| {
                        v.get("fallbacks")
                            .and_then(|f| f.as_object())
                            .map(|m| m.values().filter_map(|n| n.as_u64()).sum())
                    })
                    .unwrap_or(0);
                writeln!(
                    out,
                    "{:>6}  {:<28} {:<11} {:<24} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10} {:>9}",
                    r.id,
                    r.spec,
                    r.status,
                    r.started_at,
                    secs,
                    r.objects_listed,
                    r.objects_copied,
                    r.objects_skipped,
                    r.objects_failed,
                    human_bytes(r.bytes_copied),
                    fallbacks
                )?;
            }
        }
        ManifestCommand::Export { format, spec } => {
            let mut io = Ok(());
            if let Format::Csv = format {
                writeln!(
                    out,
                    "spec,dest_key,source_key,size,etag,source_last_modified,copied_at,mode,run_id,dest_etag,verified"
                )?;
            }
            reader.each_object(
                &ObjectFilter {
                    spec,
                    ..ObjectFilter::default()
                },
                |r| {
                    let line = match format {
                        Format::Csv => csv_line(&r),
                        Format::Jsonl => json_line(&r),
                    };
                    io = writeln!(out, "{line}");
                    io.is_ok()
                },
            )?;
            ignore_broken_pipe(io)?;
        }
        ManifestCommand::Verify { spec, repair } => {
            drop(out);
            return verify(&cfg, &reader, &spec, repair).await;
        }
        ManifestCommand::Status => {
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
                    Some(s) => s.schedule.as_ref().map_or("manual".to_string(), |(e, _)| format!("\"{e}\"")),
                };
                let next = spec
                    .filter(|s| s.enabled)
                    .and_then(|s| crate::scheduler::next_tick(s, chrono::Utc::now()))
                    .map_or("-".to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                let last = st.last_run.as_ref().map_or("never".to_string(), |r| {
                    format!("run {} {} {}", r.id, r.status, r.finished_at.as_deref().unwrap_or("(running)"))
                });
                writeln!(
                    out,
                    "{name}: schedule {schedule}, next {next}, last {last}, holds {} objects ({}), last success {}",
                    st.objects,
                    human_bytes(st.bytes),
                    st.last_success.as_deref().unwrap_or("never")
                )?;
            }
        }
    }
    ignore_broken_pipe(out.flush())?;
    Ok(EXIT_OK)
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

fn csv_line(r: &ObjectRow) -> String {
    let o = |v: &Option<String>| v.as_deref().map(csv_field).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{}",
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
        r.verified
    )
}

fn json_line(r: &ObjectRow) -> String {
    serde_json::json!({
        "spec": r.spec, "dest_key": r.dest_key, "source_key": r.source_key, "size": r.size, "etag": r.etag,
        "source_last_modified": r.source_last_modified, "copied_at": r.copied_at, "mode": r.mode, "run_id": r.run_id,
        "dest_etag": r.dest_etag, "verified": r.verified,
    })
    .to_string()
}

/// Lists the spec's destination prefix and merges it with the manifest, both in key order.
async fn verify(cfg: &crate::spec::Config, reader: &Reader, spec_name: &str, repair: bool) -> anyhow::Result<i32> {
    let spec = match resolve_spec(cfg, spec_name) {
        Ok(s) => s,
        Err(e) => {
            super::print_diagnostics(&e);
            return Ok(EXIT_INVALID);
        }
    };
    let dst = s3::client(&spec.destination, &spec.transfer, Arc::new(RequestCounter::default())).await;
    let mut lister = Lister::new(dst, &spec.destination.bucket, &spec.destination.prefix);
    let (mut checked, mut missing, mut different, mut unknown) = (0u64, Vec::new(), Vec::new(), 0u64);
    let mut last: Option<String> = None;
    let report_missing = |rows: Vec<ObjectRow>, missing: &mut Vec<ObjectRow>| {
        for r in rows {
            println!(
                "missing    {}  (manifest: {} bytes, copied {} by run {})",
                r.dest_key, r.size, r.copied_at, r.run_id
            );
            missing.push(r);
        }
    };
    while let Some(page) = lister.next_page().await? {
        let Some(upper) = page.last().map(|o| o.key.clone()) else {
            continue;
        };
        let rows = reader.range(&spec.name, &spec.destination.prefix, last.as_deref(), Some(&upper))?;
        let mut rows = rows.into_iter().peekable();
        for obj in page {
            let before: Vec<ObjectRow> = std::iter::from_fn(|| rows.next_if(|r| r.dest_key.as_bytes() < obj.key.as_bytes())).collect();
            report_missing(before, &mut missing);
            match rows.next_if(|r| r.dest_key == obj.key) {
                Some(r) if r.size != obj.size => {
                    println!(
                        "different  {}  (manifest: {} bytes, destination: {} bytes)",
                        obj.key, r.size, obj.size
                    );
                    different.push(r);
                }
                Some(_) => checked += 1,
                None => {
                    println!("unknown    {}  ({} bytes, not in the manifest)", obj.key, obj.size);
                    unknown += 1;
                }
            }
        }
        report_missing(rows.collect(), &mut missing);
        last = Some(upper);
    }
    report_missing(
        reader.range(&spec.name, &spec.destination.prefix, last.as_deref(), None)?,
        &mut missing,
    );
    println!(
        "{}: {checked} objects match the manifest; {} missing, {} different, {unknown} unknown at s3://{}/{}",
        spec.name,
        missing.len(),
        different.len(),
        spec.destination.bucket,
        spec.destination.prefix
    );
    if repair && !(missing.is_empty() && different.is_empty()) {
        let writer = Writer::open(reader.path())?;
        for r in missing.iter().chain(&different) {
            writer.forget(&r.spec, &r.dest_key);
        }
        writer.flush().await?;
        println!(
            "repair: {} objects forgotten; the next run copies them again",
            missing.len() + different.len()
        );
    }
    let drift = !missing.is_empty() || !different.is_empty() || unknown > 0;
    Ok(if drift { EXIT_FAILED_OBJECTS } else { EXIT_OK })
}
