//! The thin binary: parse arguments, load the config once, set up logging, dispatch, exit with
//! the code the command returned.

use clap::Parser;
use s3syncd::cli::{self, Cli};
use s3syncd::spec::LogFormat;

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
    let config = cli.load_config();
    init_tracing(config.as_ref().is_ok_and(|c| c.log_format == LogFormat::Json));
    std::process::exit(cli::dispatch(cli.command, config));
}
