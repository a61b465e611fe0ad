//! s3syncd's test ground, shared by the integration tests, the demo and the benchmark server:
//! real S3 servers on 127.0.0.1 (s3s-fs in-process with SigV4 keys; moto installed from PyPI on
//! first use), SDK helpers for set-up and checks, and a fault-injecting proxy. No SDK mocks.

pub mod fs_server;
pub mod moto;
pub mod objects;
pub mod proxy;

pub use fs_server::S3Server;
pub use objects::*;
