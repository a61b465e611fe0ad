//! The integration tests, as one binary (ripgrep's `tests/tests.rs`): one link of the crate and
//! the servers, helpers compiled once. Each module is one area; every test drives the real
//! `s3syncd` binary against real S3 servers on 127.0.0.1.

mod audit;
mod aws;
mod backfill;
mod daemon;
mod events;
mod fixture;
mod hostile;
mod lake;
mod layers;
mod listing;
mod modes;
mod monitoring;
mod reliability;
mod reliability_doc;
mod series;
mod sidecars;
mod status_page;
mod sync;
mod util;
mod validate;
