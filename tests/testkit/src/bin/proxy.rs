//! The test suite's fault proxy as a standalone process, for benchmarks: forwards to a local
//! S3 server and answers 503 SlowDown beyond a request rate, as S3 does per prefix. Prints
//! `READY <endpoint>`, then, when stdin closes, the requests it capped and forwarded.
//!
//!     cargo run --release -p s3syncd-testkit --bin proxy -- --upstream http://127.0.0.1:19100 --cap 500

use s3syncd_testkit::proxy::FaultProxy;
use std::io::Read;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let upstream = arg("--upstream").ok_or_else(|| anyhow::anyhow!("--upstream URL is required"))?;
    let proxy = FaultProxy::start(&upstream, vec![]);
    if let Some(cap) = arg("--cap") {
        proxy.cap_rate(cap.parse()?);
    }
    println!("READY {}", proxy.endpoint);
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let (capped, forwarded) = proxy.capped();
    println!("capped {capped} forwarded {forwarded}");
    Ok(())
}
