//! The thin binary: parse arguments, set up logging, dispatch, map the outcome to an exit code.

use clap::Parser;
use s3syncd::cli::{self, Cli, Command, EXIT_ERROR};

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("S3SYNCD_LOG").unwrap_or_else(|_| EnvFilter::new("s3syncd=info,warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // journald stamps every line already; don't print a second timestamp under systemd.
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match (json, under_journal) {
        (true, _) => builder.json().flatten_event(true).init(),
        (false, true) => builder.without_time().with_ansi(false).init(),
        // Colour only on a terminal: piped or redirected logs stay plain text for grep.
        (false, false) => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}

fn main() {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Daemon { config } | Command::Run { config, .. } => config
            .load()
            .map(|c| c.log_format == s3syncd::spec::LogFormat::Json)
            .unwrap_or(false),
        _ => false,
    };
    init_tracing(json);
    let code = match cli.command {
        Command::Validate { config, paths } => cli::validate(&config, &paths),
        Command::Run {
            config,
            spec,
            dry_run,
            mode,
        } => block_on(cli::run(&config, &spec, dry_run, mode)),
        Command::Daemon { config } => block_on(s3syncd::daemon::run(&config)),
        Command::Manifest { config, command } => block_on(cli::manifest::run(&config, command)),
    };
    std::process::exit(code);
}

fn block_on(f: impl std::future::Future<Output = anyhow::Result<i32>>) -> i32 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(f) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("s3syncd: error: {e:#}");
            EXIT_ERROR
        }
    }
}
