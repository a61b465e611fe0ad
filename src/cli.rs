//! The command line: argument shapes (clap) and the commands behind them. Exit codes follow the
//! contract: 0 success, 1 some objects failed, 2 invalid command line / config / spec.

use crate::engine::{self, Engine, RunOptions, RunReport, Stop};
use crate::spec::{self, Config, Mode, Spec, SpecError};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED_OBJECTS: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
/// The run could not be carried out at all (manifest unreadable, state dir not writable...).
pub const EXIT_ERROR: i32 = 3;

#[derive(Debug, Parser)]
#[command(name = "s3syncd", version, about = "Declarative S3-to-S3 sync daemon")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Global config file.
    #[arg(long, global = true, env = "S3SYNCD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> Result<Config, SpecError> {
        match &self.config {
            Some(p) => Config::load(p, true),
            None => Config::load(Path::new(spec::DEFAULT_CONFIG_PATH), false),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run until SIGTERM: watch spec_dir, run each spec on its schedule.
    Daemon {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run one spec now, in the foreground, and print a summary.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// A spec file, or the name of a spec in spec_dir.
        spec: String,
        /// Print the plan (counts, bytes, first keys) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Override the spec's mode for this run.
        #[arg(long, value_parser = parse_mode)]
        mode: Option<Mode>,
    },
    /// Check the config and spec files or directories (default: the config and its spec_dir).
    Validate {
        #[command(flatten)]
        config: ConfigArg,
        paths: Vec<PathBuf>,
    },
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    Mode::parse(s).ok_or_else(|| format!("unknown mode {s:?}: use auto, direct, stream or staged"))
}

fn print_diagnostics(e: &SpecError) {
    for d in e.diagnostics() {
        eprintln!("{d}");
    }
}

/// `validate`: every error in every file, `FILE:LINE:COLUMN: message`; exit 2 if any.
pub fn validate(config: &ConfigArg, paths: &[PathBuf]) -> i32 {
    let mut errors = Vec::new();
    let targets = if paths.is_empty() {
        match config.load() {
            Ok(c) => vec![c.spec_dir],
            Err(e) => {
                print_diagnostics(&e);
                return EXIT_INVALID;
            }
        }
    } else {
        paths.to_vec()
    };
    let set = spec::load_paths(&targets);
    errors.extend(set.errors);
    for d in &errors {
        eprintln!("{d}");
    }
    for s in set.specs.values() {
        let schedule = s
            .schedule
            .as_ref()
            .map_or("manual only", |(e, _)| e.as_str());
        println!(
            "ok {} ({}): s3://{}/{} -> s3://{}/{} mode {} schedule \"{}\"{}",
            s.name,
            s.path.display(),
            s.source.bucket,
            s.source.prefix,
            s.destination.bucket,
            s.destination.prefix,
            s.mode,
            schedule,
            if s.enabled { "" } else { " (disabled)" }
        );
    }
    if errors.is_empty() {
        EXIT_OK
    } else {
        eprintln!("{} error(s); nothing was changed", errors.len());
        EXIT_INVALID
    }
}

/// Finds a spec by path, or by name in spec_dir.
pub fn resolve_spec(config: &Config, arg: &str) -> Result<Spec, SpecError> {
    let p = Path::new(arg);
    if p.exists() || arg.ends_with(".toml") || arg.contains('/') {
        return Spec::load(p);
    }
    let set = spec::load_dir(&config.spec_dir)?;
    if let Some(s) = set.specs.get(arg) {
        return Ok(s.clone());
    }
    let file = config.spec_dir.join(format!("{arg}.toml"));
    if set.failed_files.contains(&file) {
        return Spec::load(&file);
    }
    Err(SpecError::Invalid(vec![spec::Diagnostic {
        path: config.spec_dir.clone(),
        line: 1,
        column: 1,
        message: format!("no spec named {arg:?} in this directory (and no file {arg:?}); `s3syncd validate` lists the specs"),
    }]))
}

/// `run`: one run of one spec in the foreground.
pub async fn run(
    config: &ConfigArg,
    spec_arg: &str,
    dry_run: bool,
    mode: Option<Mode>,
) -> anyhow::Result<i32> {
    let (config, spec) = match config
        .load()
        .and_then(|c| resolve_spec(&c, spec_arg).map(|s| (c, s)))
    {
        Ok(v) => v,
        Err(e) => {
            print_diagnostics(&e);
            return Ok(EXIT_INVALID);
        }
    };
    let engine = Engine::new(config)?;
    let stop = Stop::default();
    // Ctrl-C / SIGTERM: stop listing and starting copies, let in-flight ones finish; a second one aborts.
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::daemon::signals::wait_terminate().await;
            tracing::warn!("stopping: finishing in-flight copies (send again to abort them)");
            stop.stop.cancel();
            crate::daemon::signals::wait_terminate().await;
            stop.hard_stop.cancel();
        });
    }
    let opts = RunOptions {
        dry_run,
        mode,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = engine::run(&engine, Arc::new(spec), opts, stop).await?;
    print!("{}", summary(&report));
    Ok(if report.exit_code() == 0 {
        EXIT_OK
    } else {
        EXIT_FAILED_OBJECTS
    })
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The one-screen summary printed at the end of `run`.
pub fn summary(r: &RunReport) -> String {
    use std::fmt::Write;
    let row = &r.row;
    let mut s = String::new();
    let secs = r.wall.as_secs_f64().max(1e-9);
    if r.dry_run {
        let _ = writeln!(s, "dry run of {}: nothing was changed", row.spec);
        let _ = writeln!(
            s,
            "  listed        {} objects ({} excluded by filter)",
            row.objects_listed, r.filtered
        );
        let _ = writeln!(
            s,
            "  would copy    {} objects, {}",
            row.objects_copied,
            human_bytes(r.bytes_planned)
        );
        let _ = writeln!(
            s,
            "  would skip    {} objects (unchanged since copied)",
            row.objects_skipped
        );
        let _ = writeln!(
            s,
            "  would delete  {}",
            if r.sample_deletes.is_empty() {
                "0 objects".to_string()
            } else {
                format!("{} objects", r.deletes_planned)
            }
        );
        for k in &r.sample_copies {
            let _ = writeln!(s, "    copy   {k}");
        }
        for k in &r.sample_deletes {
            let _ = writeln!(s, "    delete {k}");
        }
        if let Some(w) = &r.delete_refused {
            let _ = writeln!(s, "  deletes refused: {w}");
        }
        return s;
    }
    let _ = writeln!(
        s,
        "s3syncd run {} (run {}): {} in {:.2} s",
        row.spec, row.id, row.status, secs
    );
    let _ = writeln!(
        s,
        "  listed        {} objects ({} excluded by filter)",
        row.objects_listed, r.filtered
    );
    let modes: Vec<String> = r
        .stats
        .modes
        .iter()
        .map(|(m, c)| format!("{m} {}", c.objects))
        .collect();
    let _ = writeln!(
        s,
        "  copied        {} objects, {}{}",
        row.objects_copied,
        human_bytes(row.bytes_copied),
        if modes.is_empty() {
            String::new()
        } else {
            format!(" ({})", modes.join(", "))
        }
    );
    let _ = writeln!(
        s,
        "  skipped       {} objects (unchanged since copied)",
        row.objects_skipped
    );
    let _ = writeln!(s, "  failed        {} objects", row.objects_failed);
    if row.objects_deleted > 0 || r.delete_refused.is_some() {
        let _ = writeln!(
            s,
            "  deleted       {} objects{}",
            row.objects_deleted,
            r.delete_refused
                .as_ref()
                .map(|w| format!(" (refused: {w})"))
                .unwrap_or_default()
        );
    }
    let fallbacks: Vec<String> = r
        .stats
        .fallbacks
        .iter()
        .map(|(k, n)| format!("{k} x{n}"))
        .collect();
    let _ = writeln!(
        s,
        "  fallbacks     {}",
        if fallbacks.is_empty() {
            "none".to_string()
        } else {
            fallbacks.join("; ")
        }
    );
    let _ = writeln!(s, "  through host  {}", human_bytes(row.bytes_through_host));
    let reqs: Vec<String> = r
        .stats
        .requests
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect();
    let _ = writeln!(
        s,
        "  requests      {} ({}){}",
        row.requests,
        reqs.join(", "),
        if r.stats.retries > 0 {
            format!(", {} object retries", r.stats.retries)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "  rate          {:.0} objects/s, {:.1} MiB/s",
        row.objects_copied as f64 / secs,
        row.bytes_copied as f64 / secs / 1048576.0
    );
    if let Some(e) = &r.listing_error {
        let _ = writeln!(s, "  error         {e}");
    }
    if row.objects_failed > 0 {
        let _ = writeln!(s, "  see failures  sqlite3 manifest.db \"SELECT source_key, kind, message FROM failures WHERE run_id = {}\"", row.id);
    }
    s
}
