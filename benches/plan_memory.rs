//! Benchmark (f): memory while planning over an N-key listing. A synthetic listing (sorted pages
//! of 1,000 keys, as ListObjectsV2 returns them) is merged by the real planner with a real
//! manifest holding every other key, so half the keys are "new" and half "unchanged".
//!
//!     cargo bench --bench plan_memory -- 1000000
//!
//! Run it under `/usr/bin/time -f %M` at several N: the peak RSS should not grow with N.

use s3syncd::bench::{Mode, ObjectRow, Planner, Reader, SourceObject, Spec, Verified, Writer};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args().nth(1).unwrap_or_else(|| "1000000".into()).parse()?;
    let dir = tempfile::tempdir()?;
    let spec = Spec::parse(
        std::path::Path::new("plan.toml"),
        b"[source]\nbucket = \"src-bucket\"\nprefix = \"data/\"\n[destination]\nbucket = \"dst-bucket\"\nprefix = \"bronze/\"\n",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let lm = "2024-01-01T00:00:00.000Z".to_string();
    // Zero-padded, so that key order is index order: pages are generated, never stored.
    let key = |i: u64| format!("spot/daily/klines/SYM{:05}/1m/SYM-1m-{:09}.zip", i / 1000, i);
    let db = dir.path().join("manifest.db");
    let writer = Writer::open(&db, std::time::Duration::from_secs(30))?;
    for i in (0..n).step_by(2) {
        writer.upsert(ObjectRow {
            dest_endpoint: spec.destination.endpoint_identity(),
            dest_bucket: spec.destination.bucket.clone(),
            source_endpoint: spec.source.endpoint_identity(),
            source_bucket: spec.source.bucket.clone(),
            spec: spec.name.clone(),
            dest_key: format!("bronze/{}", key(i)),
            source_key: format!("data/{}", key(i)),
            size: 1000,
            etag: Some("e".into()),
            source_last_modified: Some(lm.clone()),
            copied_at: lm.clone(),
            mode: Mode::Direct,
            run_id: 1,
            dest_etag: None,
            verified: Verified::Etag,
            checksum: None,
            sha256: None,
            sidecar_mismatch: None,
            kept_previous: None,
        });
        if i % 200_000 == 0 {
            writer.flush().await?; // keep the writer's queue short
        }
    }
    writer.flush().await?;
    drop(writer);
    let before = status_kib("VmHWM:");
    let start = std::time::Instant::now();
    let reader = Reader::open(&db)?;
    let mut planner = Planner::new(&spec);
    let (mut copies, mut skipped) = (0u64, 0u64);
    for first in (0..n).step_by(1000) {
        let page: Vec<SourceObject> = (first..(first + 1000).min(n))
            .map(|i| SourceObject {
                key: format!("data/{}", key(i)),
                size: 1000,
                etag: Some("e".into()),
                last_modified: Some(lm.clone()),
            })
            .collect();
        let plan = planner.plan_page(&reader, page)?;
        copies += plan.copies.len() as u64;
        skipped += plan.skipped;
    }
    assert_eq!((copies, skipped), (n / 2, n.div_ceil(2)));
    println!(
        "planned {n} keys in {:.2} s ({copies} to copy, {skipped} unchanged); peak RSS {} MiB before planning, {} MiB after",
        start.elapsed().as_secs_f64(),
        before / 1024,
        status_kib("VmHWM:") / 1024
    );
    Ok(())
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
