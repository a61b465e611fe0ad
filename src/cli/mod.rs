//! The command line: argument shapes (clap) and the commands behind them. Exit codes follow the
//! contract: 0 success, 1 some objects failed, 2 invalid command line / config / spec.

pub mod manifest;
mod summary;

pub use summary::{human_bytes, summary};

use crate::engine::{self, Engine, RunOptions, Stop};
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
    /// Audits: copied objects, runs, exports, drift against the destination.
    Manifest {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: manifest::ManifestCommand,
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

pub(crate) fn print_diagnostics(e: &SpecError) {
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
        let schedule = s.schedule.as_ref().map_or("manual only", |(e, _)| e.as_str());
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
pub async fn run(config: &ConfigArg, spec_arg: &str, dry_run: bool, mode: Option<Mode>) -> anyhow::Result<i32> {
    let (config, spec) = match config.load().and_then(|c| resolve_spec(&c, spec_arg).map(|s| (c, s))) {
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
    let progress = (!dry_run && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} objects, {msg} copied, {per_sec}, ETA {eta} [{wide_bar}]")
                .expect("valid template"),
        );
        bar
    });
    let opts = RunOptions { dry_run, mode, progress };
    let report = engine::run(&engine, Arc::new(spec), opts, stop).await?;
    print!("{}", summary(&report));
    Ok(if report.exit_code() == 0 { EXIT_OK } else { EXIT_FAILED_OBJECTS })
}
