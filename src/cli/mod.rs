//! The command line: argument shapes (clap), the commands behind them, signals, and exit codes,
//! which belong here alone: 0 success, 1 some objects failed, 2 invalid command line / config /
//! spec, 3 the run could not be carried out at all.

mod backfill;
mod docs;
pub mod manifest;
mod progress;
mod signals;
mod summary;
mod verify;

pub use summary::summary;

use crate::engine::{self, Engine, Observer, RunOptions, Stop};
use crate::manifest::RunStatus;
use crate::spec::{self, Config, ModeChoice, Spec, SpecError};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED_OBJECTS: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
/// The run could not be carried out at all (manifest unreadable, state dir not writable...).
pub const EXIT_ERROR: i32 = 3;

/// `s3syncd --version`: the version, the commit it was built from and the compiler.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("S3SYNCD_GIT_COMMIT"),
    ", ",
    env!("S3SYNCD_RUSTC"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "s3syncd", version = VERSION, about = "Declarative S3-to-S3 sync daemon")]
pub struct Cli {
    /// Global config file.
    #[arg(long, global = true, env = "S3SYNCD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Loads the config, once for the whole command: the given file, else the default
    /// location (built-in defaults when no file is there).
    pub fn load_config(&self) -> Result<Config, SpecError> {
        match &self.config {
            Some(p) => Config::load(p, true),
            None => Config::load(Path::new(spec::DEFAULT_CONFIG_PATH), false),
        }
    }
}

/// `run`'s flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunFlags {
    /// Print the plan (counts, bytes, first keys) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Override the spec's mode for this run.
    #[arg(long, value_enum)]
    pub mode: Option<ModeChoice>,
    /// For a spec with [series]: list the whole source now (a reconcile run), whether its
    /// `reconcile` schedule is due or not.
    #[arg(long)]
    pub full: bool,
    /// Copy only the keys of this key file (`bucket,key` lines, as `s3syncd plan` writes):
    /// one shard of a backfill. Nothing is deleted.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// Record in this manifest instead of the state directory's (a shard's own; bring it home
    /// with `manifest import`). Its locks and staging files are kept beside it.
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run until SIGTERM: watch spec_dir, run each spec on its schedule.
    Daemon,
    /// Run one spec now, in the foreground, and print a summary.
    Run {
        /// A spec file, or the name of a spec in spec_dir.
        spec: String,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Write the copy plan of a run (what is new or changed) as key files for S3 Batch
    /// Operations or `run --keys`, and plan.json. Changes nothing.
    Plan {
        /// A spec file, or the name of a spec in spec_dir.
        spec: String,
        /// The directory to write keys-NNNN.csv and plan.json into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Key files to cut the plan into, at key quantiles.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        shards: u32,
    },
    /// Audits: copied objects, runs, exports, drift against the destination.
    Manifest {
        #[command(subcommand)]
        command: manifest::ManifestCommand,
    },
    /// Write the status page (feeds, their last runs, series heatmaps, recent failures) as one
    /// self-contained HTML file.
    Report {
        /// Only this spec (a file, or a name in spec_dir); default: every spec in spec_dir.
        #[arg(long)]
        spec: Option<String>,
        /// The HTML file to write.
        #[arg(long, value_name = "FILE.html")]
        out: PathBuf,
    },
    /// Check the config and spec files or directories (default: the config and its spec_dir).
    Validate {
        paths: Vec<PathBuf>,
        /// Say what each spec's `[series]` pattern reads from this source key (with or
        /// without `source.prefix`): its series, its fields and its period.
        #[arg(long, value_name = "KEY")]
        explain: Option<String>,
    },
    /// Preflight a feed against its servers (after `validate`): credentials resolve, each side
    /// lists, and whether `direct` can copy. Read-only unless --write.
    Check {
        /// Spec files or names in spec_dir (default: every spec in spec_dir).
        specs: Vec<String>,
        /// Also put and delete an empty probe object under the destination prefix.
        #[arg(long)]
        write: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (s3syncd(1), one per subcommand, s3syncd.toml(5)) into a directory.
    #[command(hide = true)]
    Man {
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

/// Runs the command with the config loaded once; returns the exit code.
pub fn dispatch(command: Command, config: Result<Config, SpecError>) -> i32 {
    match &command {
        Command::Validate { paths, explain } => return validate(config, paths, explain.as_deref()),
        Command::Completions { shell } => {
            docs::print_completions(*shell);
            return 0;
        }
        Command::Man { out } => {
            return match docs::write_man_pages(out) {
                Ok(pages) => {
                    println!("{}", pages.join("\n"));
                    0
                }
                Err(e) => {
                    eprintln!("s3syncd: error: cannot write man pages to {}: {e}", out.display());
                    EXIT_ERROR
                }
            };
        }
        _ => {}
    }
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            print_diagnostics(&e);
            return EXIT_INVALID;
        }
    };
    let result = block_on(async move {
        match command {
            Command::Run { spec, flags } => run(config, &spec, flags).await,
            Command::Plan { spec, out, shards } => backfill::plan(config, &spec, &out, shards as usize).await,
            Command::Daemon => daemon(config).await,
            Command::Manifest { command } => manifest::run(&config, command).await,
            Command::Check { specs, write } => Ok(check(&config, &specs, write).await),
            Command::Report { spec, out } => report(&config, spec.as_deref(), &out),
            Command::Validate { .. } | Command::Completions { .. } | Command::Man { .. } => unreachable!("handled above"),
        }
    });
    result.unwrap_or_else(|e| {
        eprintln!("s3syncd: error: {e:#}");
        EXIT_ERROR
    })
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

pub(crate) fn print_diagnostics(e: &SpecError) {
    for d in e.diagnostics() {
        eprintln!("{d}");
    }
}

/// `validate`: every error in every file, `FILE:LINE:COLUMN: message`; exit 2 if any. Specs are
/// loaded exactly as the daemon loads them, so the verdicts agree.
pub fn validate(config: Result<Config, SpecError>, paths: &[PathBuf], explain: Option<&str>) -> i32 {
    let targets = if paths.is_empty() {
        match config {
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
    for d in &set.errors {
        eprintln!("{d}");
    }
    for s in set.specs.values() {
        // Profiles are the host's, not the spec's: a missing one is worth a warning, and the
        // run says the same in one line, but it does not stop the other feeds from loading.
        for (side, x) in s.sides() {
            if let Some(why) = crate::s3::missing_profile(x) {
                eprintln!("{}: warning: [{side}] {why}", s.path.display());
            }
        }
        let schedule = s.schedule.as_ref().map_or("manual only", |x| x.expr.as_str());
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
        if let Some(key) = explain {
            println!("   {}", explain_key(s, key));
        }
    }
    if set.errors.is_empty() {
        EXIT_OK
    } else {
        eprintln!("{} error(s); nothing was changed", set.errors.len());
        EXIT_INVALID
    }
}

/// What a spec's `[series]` reads from `key`, in one line.
fn explain_key(s: &Spec, key: &str) -> String {
    let Some(series) = &s.series else {
        return format!("{key:?}: no [series] in this spec");
    };
    let rel = key.strip_prefix(&s.source.prefix).unwrap_or(key);
    match series.pattern.read(rel) {
        None => format!(
            "{rel:?} matches no series of {:?}: listed and copied as any key, counted as unmatched",
            series.pattern.as_str()
        ),
        Some(k) => {
            let fields: Vec<String> = k.fields.iter().map(|(n, v)| format!("{n}={v}")).collect();
            let due = k.period.end() + series.due_after;
            format!(
                "{rel:?}: series {:?} ({}), period {}, can exist from {}, overdue after {}",
                k.series,
                fields.join(", "),
                k.period,
                k.period.end().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        }
    }
}

/// Finds a spec by path, or by name in spec_dir.
/// `s3syncd report`: the status page of one spec or of every spec in spec_dir.
fn report(config: &Config, spec: Option<&str>, out: &Path) -> anyhow::Result<i32> {
    let path = config.manifest_path();
    if !path.exists() {
        anyhow::bail!("no manifest at {} yet: no run has been recorded with this config", path.display());
    }
    let specs: Vec<Spec> = match spec {
        Some(s) => vec![resolve_spec(config, s).map_err(|e| anyhow::anyhow!("{e}"))?],
        None => spec::load_dir(&config.spec_dir)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .specs
            .into_values()
            .collect(),
    };
    let reader = crate::manifest::Reader::open(&path)?;
    let html = crate::report::page(&reader, &specs, chrono::Utc::now())?;
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, html)
        .and_then(|()| std::fs::rename(&tmp, out))
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    println!("{}: {} feeds", out.display(), specs.len());
    Ok(EXIT_OK)
}

pub fn resolve_spec(config: &Config, arg: &str) -> Result<Spec, SpecError> {
    let p = Path::new(arg);
    if p.exists() || arg.ends_with(".toml") || arg.contains('/') {
        return Spec::load(p);
    }
    let set = spec::load_dir(&config.spec_dir)?;
    if let Some(s) = set.specs.get(arg) {
        return Ok(s.clone());
    }
    // Refused for a clash with another file (a duplicate name, an overlapping destination).
    if let Some(file) = set.refused.get(arg) {
        return Err(SpecError::Invalid(set.errors.into_iter().filter(|d| &d.path == file).collect()));
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
pub async fn run(mut config: Config, spec_arg: &str, flags: RunFlags) -> anyhow::Result<i32> {
    let spec = match resolve_spec(&config, spec_arg) {
        Ok(s) => s,
        Err(e) => {
            print_diagnostics(&e);
            return Ok(EXIT_INVALID);
        }
    };
    let keys = match flags.keys.as_deref().map(|f| crate::shard::read_keys(f, &spec)).transpose() {
        Ok(keys) => keys.map(Arc::new),
        Err(e) => {
            eprintln!("s3syncd: error: {e}");
            return Ok(EXIT_INVALID);
        }
    };
    config.own_manifest = flags.manifest;
    let RunFlags { dry_run, mode, full, .. } = flags;
    let grace = config.shutdown_grace;
    let engine = Engine::new(config)?;
    let stop = Stop::default();
    // Ctrl-C / SIGTERM: stop listing and starting copies, let in-flight ones finish for at most
    // `shutdown_grace`; a second signal, or the end of the grace, aborts them.
    signals::spawn(stop.clone(), None, Some(grace))?;
    let observer: Arc<dyn Observer> = if dry_run {
        Arc::new(engine::Quiet)
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Arc::new(progress::Bar::new())
    } else {
        Arc::new(crate::daemon::LogProgress::default())
    };
    let opts = RunOptions {
        dry_run,
        mode,
        full,
        keys,
        observer,
        ..RunOptions::default()
    };
    let report = engine::run(&engine, Arc::new(spec), opts, stop).await;
    engine.drain().await;
    let report = report?;
    print!("{}", summary(&report));
    Ok(if report.status == RunStatus::Ok {
        EXIT_OK
    } else {
        EXIT_FAILED_OBJECTS
    })
}

/// `check`: one line per check and spec; exit 0 when all pass (notes included), 1 when a
/// check fails, 2 when a spec is invalid.
async fn check(config: &Config, args: &[String], write: bool) -> i32 {
    use crate::engine::preflight::{self, Verdict};
    let specs: Vec<Spec> = if args.is_empty() {
        match spec::load_dir(&config.spec_dir) {
            Ok(set) if set.errors.is_empty() => set.specs.into_values().collect(),
            Ok(set) => {
                set.errors.iter().for_each(|d| eprintln!("{d}"));
                return EXIT_INVALID;
            }
            Err(e) => {
                print_diagnostics(&e);
                return EXIT_INVALID;
            }
        }
    } else {
        let mut specs = Vec::new();
        for a in args {
            match resolve_spec(config, a) {
                Ok(s) => specs.push(s),
                Err(e) => {
                    print_diagnostics(&e);
                    return EXIT_INVALID;
                }
            }
        }
        specs
    };
    let mut failed = false;
    for s in &specs {
        println!("{} ({})", s.name, s.path.display());
        for c in preflight::run(s, write).await {
            let tag = match c.verdict {
                Verdict::Pass => "ok  ",
                Verdict::Note => "note",
                Verdict::Fail => "fail",
            };
            failed |= c.verdict == Verdict::Fail;
            println!("  {tag}  {}: {}", c.name, c.detail);
        }
    }
    if failed {
        EXIT_FAILED_OBJECTS
    } else {
        EXIT_OK
    }
}

/// `daemon`: the service, with signals wired to its controls.
async fn daemon(config: Config) -> anyhow::Result<i32> {
    let controls = crate::daemon::Controls::default();
    signals::spawn(controls.stop.clone(), Some(controls.reloader()), None)?;
    match crate::daemon::run(config, controls).await {
        Ok(()) => Ok(EXIT_OK),
        Err(e @ (crate::daemon::DaemonError::SpecDir(_) | crate::daemon::DaemonError::Metrics(_))) => {
            eprintln!("{e}");
            Ok(EXIT_INVALID)
        }
        Err(e) => Err(e.into()),
    }
}
