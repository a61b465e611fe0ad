//! The global daemon config (`/etc/s3syncd/s3syncd.toml`) and the price table it carries.

use super::diag::{self, toml_message};
use super::{check, raw, Locator, LogFormat, Notifier, SpecError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The global daemon config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; `None` for built-in defaults.
    pub path: Option<PathBuf>,
    pub spec_dir: PathBuf,
    pub state_dir: PathBuf,
    pub max_running_specs: usize,
    pub max_transfers: usize,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    /// Bytes all streamed multipart uploads may buffer together.
    pub stream_buffer: u64,
    pub cost: CostTable,
    /// `[[notify]]` of the global config: told of every feed's events.
    pub notify: Vec<Notifier>,
    /// `run --manifest`: this process records in its own manifest (a shard of a backfill),
    /// with its locks and staging files beside it, not in the state directory's.
    pub own_manifest: Option<PathBuf>,
}

/// Prices for the run summary's cost estimate, in USD. Defaults: AWS S3 Standard list prices
/// (us-east-1): class A (PUT, COPY, POST, LIST) $0.005 per 1,000, class B (GET, HEAD) $0.0004 per
/// 1,000, and $0.09 per GiB for data that leaves the source's network through this host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostTable {
    pub class_a_per_1000: f64,
    pub class_b_per_1000: f64,
    pub through_host_per_gib: f64,
}

impl Default for CostTable {
    fn default() -> Self {
        CostTable {
            class_a_per_1000: 0.005,
            class_b_per_1000: 0.0004,
            through_host_per_gib: 0.09,
        }
    }
}

impl CostTable {
    /// (requests, data) cost of a run from its attempts of class A and B and its bytes through
    /// the host.
    pub fn estimate(&self, (a, b): (u64, u64), bytes_through_host: u64) -> (f64, f64) {
        let req = a as f64 / 1000.0 * self.class_a_per_1000 + b as f64 / 1000.0 * self.class_b_per_1000;
        (req, bytes_through_host as f64 / (1u64 << 30) as f64 * self.through_host_per_gib)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            spec_dir: PathBuf::from("/etc/s3syncd/specs.d"),
            state_dir: PathBuf::from("/var/lib/s3syncd"),
            max_running_specs: 4,
            max_transfers: 1024,
            metrics_listen: None,
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(30),
            stream_buffer: 256 << 20,
            cost: CostTable::default(),
            notify: Vec::new(),
            own_manifest: None,
        }
    }
}

impl Config {
    pub fn manifest_path(&self) -> PathBuf {
        self.own_manifest.clone().unwrap_or_else(|| self.state_dir.join("manifest.db"))
    }
    pub fn staging_dir(&self) -> PathBuf {
        self.beside_manifest("staging")
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.beside_manifest("locks")
    }
    /// `{state_dir}/NAME`, or `MANIFEST.NAME` beside a process's own manifest.
    fn beside_manifest(&self, name: &str) -> PathBuf {
        match &self.own_manifest {
            Some(m) => PathBuf::from(format!("{}.{name}", m.display())),
            None => self.state_dir.join(name),
        }
    }

    /// Loads the config file. A missing file at the default location (no `--config`, no
    /// `$S3SYNCD_CONFIG`) yields the built-in defaults; a missing file that was asked for is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, SpecError> {
        match std::fs::read(path) {
            Ok(bytes) => Config::parse(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Config::default()),
            Err(e) => Err(SpecError::single(path, format!("cannot read config file: {e}"))),
        }
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Config, SpecError> {
        let text = std::str::from_utf8(bytes).map_err(|e| SpecError::Invalid(vec![diag::utf8_error(path, bytes, &e)]))?;
        let loc = Locator { path, text };
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| SpecError::Invalid(vec![loc.at(e.span(), toml_message(&e))]))?;
        check::config(&loc, raw).map_err(SpecError::Invalid)
    }
}
