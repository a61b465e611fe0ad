//! The thin binary: parse arguments, load the config once, set up logging, dispatch, exit with
//! the code the command returned.

use clap::Parser;
use s3syncd::cli::{self, Cli};
use s3syncd::LogFormat;

/// A run allocates a few small strings per listed key (key, ETag, time, the manifest row's),
/// and glibc's malloc and free were a sixth of a no-op run's CPU; mimalloc serves them from
/// per-thread pages. Built without transparent huge pages, which took a no-op run over a
/// million keys from 31 to 77 MiB of RSS (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The SDK's own debug and trace logs print credentials (the access key id, in the debug
/// form of a provider chain or a resolved identity), and its profile provider does so at info:
/// they are held at these levels whatever `S3SYNCD_LOG` asks, so that no credential appears at
/// any level. s3syncd's own targets log keys, codes and messages, never credentials.
const QUIET_TARGETS: &[&str] = &[
    "aws_config=warn",
    "aws_credential_types=info",
    "aws_runtime=info",
    "aws_sdk_s3=info",
    "aws_sdk_sso=info",
    "aws_sdk_ssooidc=info",
    "aws_sdk_sts=info",
    "aws_sigv4=info",
    "aws_smithy_runtime=info",
    "aws_smithy_runtime_api=info",
];

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_env("S3SYNCD_LOG").unwrap_or_else(|_| EnvFilter::new("s3syncd=info,warn"));
    for t in QUIET_TARGETS {
        filter = filter.add_directive(t.parse().expect("a valid directive"));
    }
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

/// Up to `max_transfers` copies in flight hold a connection each (two when streamed): the
/// common soft limit of 1,024 open files would cut them short. Raised to the hard limit.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct passed; nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max.min(65_536) {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() {
    // As the systemd unit's UMask=0027, for `s3syncd run` from any shell too: what s3syncd
    // creates (state, manifest, locks, staging) is never readable by other users.
    // SAFETY: umask has no preconditions and this runs before any other thread exists.
    unsafe {
        libc::umask(0o027);
    }
    raise_open_files_limit();
    let cli = Cli::parse();
    let config = cli.load_config();
    init_tracing(config.as_ref().is_ok_and(|c| c.log_format == LogFormat::Json));
    std::process::exit(cli::dispatch(cli.command, config));
}
