//! s3syncd: declarative S3-to-S3 sync.
//!
//! The data path of a run is `spec` (what to sync) → `s3` listing → `plan` (merge with the
//! `manifest`) → `transfer` (direct / stream / staged with fallback) → `manifest` (record what
//! was verified). `engine` drives one run; `scheduler` and `daemon` run feeds on their
//! schedules; `cli` is the command line.
//!
//! Layers, lowest first; a module imports only from layers below its own (checked by the
//! `layers` test): `spec` · `s3`, `manifest`, `shard` · `plan`, `report`, `events` · `transfer` · `engine` · `scheduler` ·
//! `daemon` · `cli`. `metrics` is a leaf that imports nothing of the crate.

pub mod cli;
pub(crate) mod daemon;
pub(crate) mod engine;
pub(crate) mod events;
pub mod manifest;
pub(crate) mod metrics;
pub mod plan;
pub(crate) mod report;
pub mod s3;
pub(crate) mod scheduler;
pub(crate) mod shard;
pub mod spec;
pub(crate) mod transfer;
