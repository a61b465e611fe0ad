//! The long-running service: signals, spec reloads, schedules, systemd notifications.

pub mod signals;

use crate::cli::ConfigArg;

/// `s3syncd daemon`.
pub async fn run(_config: &ConfigArg) -> anyhow::Result<i32> {
    anyhow::bail!("the daemon is not built yet")
}
