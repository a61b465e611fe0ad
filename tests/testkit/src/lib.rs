//! s3syncd's test ground, shared by the integration tests, the demo and the benchmark server:
//! real S3 servers on 127.0.0.1 (s3s-fs in-process with SigV4 keys; moto installed from PyPI on
//! first use), SDK helpers for set-up and checks, and a fault-injecting proxy. No SDK mocks.

pub mod batchops;
pub mod fixture;
pub mod fs_server;
pub mod moto;
pub mod objects;
pub mod proxy;
pub mod receiver;
pub mod sqs;

pub use fs_server::S3Server;
pub use objects::*;

/// A free port for a server that must be told one (moto, the daemon's metrics endpoint). Taken
/// below the kernel's ephemeral range (32768 and up), where the in-process servers' `bind(:0)`
/// never lands, from a per-process sequence, and checked free: no race with a parallel test.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((std::process::id() % 600) as u16 * 20 + n) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
