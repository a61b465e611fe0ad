//! Raw serde shapes of the config and spec files: exactly what the TOML says, with spans kept for
//! the values that later checks may reject. Unknown keys are errors (`deny_unknown_fields`).

use super::size::{ByteSize, HumanDuration};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub spec_dir: Option<String>,
    pub state_dir: Option<String>,
    pub max_running_specs: Option<Spanned<i64>>,
    pub max_transfers: Option<Spanned<i64>>,
    pub metrics_listen: Option<Spanned<String>>,
    pub log_format: Option<LogFormat>,
    pub shutdown_grace: Option<HumanDuration>,
    pub stream_buffer: Option<Spanned<ByteSize>>,
    pub cost: Option<RawCost>,
    pub notify: Option<Vec<RawNotify>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub url: Spanned<String>,
    pub events: Option<Spanned<Vec<Spanned<String>>>>,
    pub format: Option<Spanned<String>>,
    pub secret_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeliveries {
    pub prefix: Option<Spanned<String>>,
    pub dir: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    pub class_a_per_1000: Option<f64>,
    pub class_b_per_1000: Option<f64>,
    pub through_host_per_gib: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub name: Option<Spanned<String>>,
    pub schedule: Option<Spanned<String>>,
    pub enabled: Option<bool>,
    pub mode: Option<super::ModeChoice>,
    pub fallback: Option<Spanned<Vec<Spanned<super::ModeChoice>>>>,
    pub delete: Option<Spanned<bool>>,
    pub max_delete: Option<Spanned<MaxDeleteRaw>>,
    pub source: RawSide,
    pub destination: RawSide,
    pub filter: Option<RawFilter>,
    pub transfer: Option<RawTransfer>,
    pub verify: Option<RawVerify>,
    pub stale_after: Option<Spanned<String>>,
    pub keep_previous: Option<Spanned<String>>,
    pub deliveries: Option<RawDeliveries>,
    pub notify: Option<Vec<RawNotify>>,
    pub series: Option<RawSeries>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSeries {
    pub key: Spanned<String>,
    pub due_after: Option<Spanned<String>>,
    pub reconcile: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MaxDeleteRaw {
    Count(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSide {
    pub bucket: Spanned<String>,
    pub prefix: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub endpoint: Option<Spanned<String>>,
    pub path_style: Option<bool>,
    pub anonymous: Option<bool>,
    pub profile: Option<Spanned<String>>,
    pub requester_pays: Option<bool>,
    pub role_arn: Option<Spanned<String>>,
    pub external_id: Option<Spanned<String>>,
    pub role_session_name: Option<Spanned<String>>,
    pub duration: Option<Spanned<String>>,
    pub storage_class: Option<Spanned<String>>,
    pub sse: Option<Spanned<String>>,
    pub sse_kms_key_id: Option<Spanned<String>>,
    pub acl: Option<Spanned<String>>,
    /// `[source.events]`
    pub events: Option<RawEvents>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    pub queue_url: Spanned<String>,
    pub region: Option<Spanned<String>>,
    pub endpoint: Option<Spanned<String>>,
    pub profile: Option<Spanned<String>>,
    pub role_arn: Option<Spanned<String>>,
    pub external_id: Option<Spanned<String>>,
    pub role_session_name: Option<Spanned<String>>,
    pub duration: Option<Spanned<String>>,
    pub window: Option<Spanned<String>>,
    pub visibility: Option<Spanned<String>>,
    pub missed_after: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    pub include: Option<Vec<Spanned<String>>>,
    pub exclude: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransfer {
    pub concurrency: Option<Spanned<i64>>,
    pub part_size: Option<Spanned<ByteSize>>,
    pub multipart_threshold: Option<Spanned<ByteSize>>,
    pub copy_threshold: Option<Spanned<ByteSize>>,
    pub parts_in_flight: Option<Spanned<i64>>,
    pub list_partitions: Option<Spanned<i64>>,
    pub preserve_tags: Option<bool>,
    pub retries: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub compare: Option<super::Compare>,
    pub checksum_sidecar: Option<Spanned<String>>,
    pub sidecar_wait: Option<Spanned<String>>,
}
