//! A standalone local S3 server (s3s-fs) for benchmarks and manual trials: serves a directory on
//! 127.0.0.1, creates buckets and fills them with generated objects, prints `READY <endpoint>`,
//! and serves until killed.
//!
//!     cargo run --release -p s3syncd-testkit --bin serve -- --port 19100 --root /tmp/s3 --fill src-small:2000:65536
//!
//! Credentials: AKIATESTSERVER0001 / secret-key-for-s3s-fs-tests-0001.

use futures::StreamExt;
use s3syncd_testkit::{objects, S3Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let port: u16 = arg("--port").unwrap_or_else(|| "19100".into()).parse()?;
    let root = std::path::PathBuf::from(arg("--root").ok_or_else(|| anyhow::anyhow!("--root DIR is required"))?);
    let server = S3Server::start_in(port, root)?;
    let c = server.client();
    for (i, a) in args.iter().enumerate() {
        if a == "--bucket" || a == "--fill" {
            let spec = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{a} needs a value"))?;
            let mut parts = spec.split(':');
            let bucket = parts.next().unwrap_or_default().to_string();
            let _ = c.create_bucket().bucket(&bucket).send().await;
            if a == "--fill" {
                let count: usize = parts.next().unwrap_or("0").parse()?;
                let size: usize = parts.next().unwrap_or("0").parse()?;
                let have = objects::list(&c, &bucket, "").await.len();
                if have < count {
                    futures::stream::iter(0..count)
                        .map(|n| {
                            let (c, bucket) = (c.clone(), bucket.clone());
                            async move {
                                let body: Vec<u8> = (0..size).map(|j| (j as u64 * 31 + n as u64 * 7919) as u8).collect();
                                objects::put(&c, &bucket, &format!("{n:06}.bin"), body).await
                            }
                        })
                        .buffer_unordered(16)
                        .collect::<Vec<_>>()
                        .await;
                }
            }
        }
    }
    println!("READY {}", server.endpoint);
    std::future::pending::<()>().await;
    Ok(())
}
