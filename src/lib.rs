//! s3syncd: declarative S3-to-S3 sync.
//!
//! The data path of a run is `spec` (what to sync) → `s3` listing → `plan` (merge with the
//! `manifest`) → `transfer` (direct / stream / staged with fallback) → `manifest` (record what
//! was verified). `engine` drives one run; `scheduler` and `daemon` run feeds on their
//! schedules; `cli` is the command line.
//!
//! Layers, lowest first; a module imports only from layers below its own (checked by the
//! `layers` test): `spec` · `s3`, `manifest`, `shard` · `plan`, `report`, `events` · `transfer` · `engine` · `scheduler` ·
//! `daemon` · `cli`. `metrics` and `speed` are leaves that import nothing of the crate.
//!
//! Public: `cli` (the binary and the demo), four words of `spec` (`Spec`, `Config`,
//! `LogFormat`, `ByteSize`) and `bench` (the memory benchmark's few paths), re-exported on
//! purpose. Every other module is crate-private, so the dead-code lint sees its items.

pub mod cli;
pub(crate) mod daemon;
pub(crate) mod engine;
pub(crate) mod events;
pub(crate) mod manifest;
pub(crate) mod metrics;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod s3;
pub(crate) mod scheduler;
pub(crate) mod shard;
pub(crate) mod spec;
pub(crate) mod speed;
pub(crate) mod transfer;

/// The words of specs and configs that the binary, the demo and the tests name.
pub use spec::{size::ByteSize, Config, LogFormat, Spec};

/// What the memory benchmark (`benches/plan_memory.rs`) drives directly: the planner over a
/// manifest, without a server. The rest of the crate is reached through `cli` and `spec`.
pub mod bench {
    pub use crate::manifest::{ObjectRow, Reader, Verified, Writer};
    pub use crate::plan::Planner;
    pub use crate::s3::SourceObject;
    pub use crate::spec::{Mode, Spec};
}
