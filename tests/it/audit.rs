//! Audits and observability: `manifest ls/runs/export/verify/status`, the run summary's counts,
//! and the Prometheus endpoint of a running daemon, against real servers.

use crate::util::*;
use s3syncd_testkit::fixture::{generate, FixtureSpec};
use s3syncd_testkit::moto::Moto;

fn fixture() -> Vec<(String, Vec<u8>)> {
    let mut f = FixtureSpec::small();
    f.days = 3;
    f.months = 1;
    generate(&f).into_iter().map(|o| (o.key, o.body)).collect()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_runs_export_and_verify_tell_what_happened() {
    let objects = fixture();
    let (server, c, ws) = seeded(&objects).await;
    // Feed a: direct; feed b: stream, with one corrupt sidecar so that one object fails.
    let a = ws.seeded_spec("a", &server.endpoint, "a/", "mode = \"direct\"\n");
    let victim = "data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-01-02.zip";
    put(
        &c,
        "src-bucket",
        &format!("{victim}.CHECKSUM"),
        format!("{}  x.zip\n", "f".repeat(64)).into_bytes(),
    )
    .await;
    let b = ws.seeded_spec(
        "b",
        &server.endpoint,
        "b/",
        "mode = \"stream\"\n[verify]\nchecksum_sidecar = \".CHECKSUM\"\n",
    );
    let out = ws.run(&["run", a.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = stdout(&out);
    let n = objects.len();
    for line in [
        format!("listed        {n} objects"),
        format!("copied        {n} objects"),
        "skipped       0 objects".into(),
        "failed        0 objects".into(),
        format!("(direct {n})"),
    ] {
        assert!(summary.contains(&line), "summary lacks {line:?}:\n{summary}");
    }
    assert!(
        summary.contains(&format!("CopyObject {n}")) && summary.contains("est. cost     $"),
        "{summary}"
    );
    let out = ws.run(&["run", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).contains(&format!("copied        {} objects", n - 1)), "{}", text(&out));

    // ls: one line per object with mode; filters by spec, mode and prefix.
    let ls = stdout(&ws.run(&["manifest", "ls", "--spec", "a"]));
    assert_eq!(ls.lines().count(), n);
    assert!(ls.lines().all(|l| l.starts_with("a\ta/") && l.contains("\tdirect\t")), "{ls}");
    let ls = stdout(&ws.run(&["manifest", "ls", "--mode", "stream", "--prefix", "b/spot/daily/klines/ETHUSDT/"]));
    assert!(
        !ls.is_empty() && ls.lines().all(|l| l.starts_with("b\tb/spot/daily/klines/ETHUSDT/")),
        "{ls}"
    );
    assert!(
        !ls.contains("ETHUSDT-1m-2024-01-02.zip\t"),
        "the failed object is not listed as copied:\n{ls}"
    );
    assert_eq!(stdout(&ws.run(&["manifest", "ls", "--since", "1h"])).lines().count(), 2 * n - 1);
    assert_eq!(stdout(&ws.run(&["manifest", "ls", "--since", "2999-01-01"])).lines().count(), 0);

    // runs: newest first, statuses and counts.
    let runs = stdout(&ws.run(&["manifest", "runs"]));
    let lines: Vec<&str> = runs.lines().collect();
    assert_eq!(lines.len(), 3, "{runs}");
    assert!(lines[1].contains(" b ") && lines[1].contains("partial"), "{runs}");
    assert!(lines[2].contains(" a ") && lines[2].contains(" ok "), "{runs}");

    // export: CSV with a header and quoting; JSON lines that parse.
    let csv = stdout(&ws.run(&["manifest", "export", "--format", "csv", "--spec", "a"]));
    assert!(csv.starts_with(
        "spec,dest_key,source_key,size,etag,source_last_modified,copied_at,mode,run_id,dest_etag,verified,dest_endpoint,dest_bucket,source_endpoint,source_bucket,checksum\n"
    ));
    assert_eq!(csv.lines().count(), n + 1);
    let jsonl = stdout(&ws.run(&["manifest", "export", "--format", "jsonl"]));
    let rows: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2 * n - 1);
    let (key, body) = &objects[0];
    let row = rows.iter().find(|r| r["spec"] == "a" && r["source_key"] == key.as_str()).unwrap();
    assert_eq!(row["size"].as_u64(), Some(body.len() as u64));

    // verify: clean, then drift after an out-of-band delete and an unknown object; --repair.
    let out = ws.run(&["manifest", "verify", "--spec", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let gone = format!("a/{}", objects[3].0.strip_prefix("data/").unwrap());
    c.delete_object().bucket("dst-bucket").key(&gone).send().await.unwrap();
    put(&c, "dst-bucket", "a/stray.bin", b"stray".to_vec()).await;
    let out = ws.run(&["manifest", "verify", "--spec", "a", "--repair"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = stdout(&out);
    assert!(report.contains(&format!("missing    {gone}")), "{report}");
    assert!(report.contains("unknown    a/stray.bin"), "{report}");
    assert!(
        report.contains(&format!(
            "{} objects match the manifest; 1 missing, 0 different or contradicted, 1 unknown",
            n - 1
        )),
        "{report}"
    );
    let out = ws.run(&["run", a.to_str().unwrap()]);
    assert!(stdout(&out).contains("copied        1 objects"), "{}", text(&out));
    assert!(get(&c, "dst-bucket", &gone).await.is_some());

    // status: one line per spec.
    let status = stdout(&ws.run(&["manifest", "status"]));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("a: schedule manual") && l.contains(&format!("holds {n} objects"))),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("b: ") && l.contains("partial") && l.contains("last success never")),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_serves_prometheus_metrics() {
    let objects = fixture();
    let (server, _c, ws) = seeded(&objects).await;
    let port = free_port();
    ws.seeded_spec("m", &server.endpoint, "m/", "schedule = \"*/2 * * * * *\"\n");
    ws.daemon_config(port);
    let mut child = ws.command().arg("daemon").stderr(std::process::Stdio::null()).spawn().unwrap();
    let n = objects.len() as f64;
    let mut body = String::new();
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        body = http_get(port, "GET /metrics").await.unwrap_or_default();
        if metric(&body, "s3syncd_objects_copied_total{spec=\"m\",mode=\"direct\"}") == Some(n)
            && metric(&body, "s3syncd_runs_total{spec=\"m\",status=\"ok\"}").is_some()
        {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        metric(&body, "s3syncd_objects_copied_total{spec=\"m\",mode=\"direct\"}"),
        Some(n),
        "{body}"
    );
    let bytes: usize = objects.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(
        metric(&body, "s3syncd_bytes_copied_total{spec=\"m\",mode=\"direct\"}"),
        Some(bytes as f64),
        "{body}"
    );
    assert!(
        metric(
            &body,
            "s3syncd_s3_requests_total{spec=\"m\",operation=\"CopyObject\",result=\"ok\"}"
        ) >= Some(n),
        "{body}"
    );
    assert!(
        metric(&body, "s3syncd_last_success_timestamp_seconds{spec=\"m\"}").is_some_and(|t| t > 1.7e9),
        "{body}"
    );
    assert!(body.contains("# TYPE s3syncd_objects_copied_total counter"), "{body}");
}

/// The value of one sample, by its exact name and labels.
fn metric(body: &str, sample: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
}

/// End-to-end checksums without a sidecar: the source's stored full-object checksum (read in
/// checksum mode) verifies the bytes as they pass and is recorded; `manifest verify
/// --checksums` then proves each object from a HEAD, and catches an object replaced out of band
/// by one of the same size.
#[tokio::test(flavor = "multi_thread")]
async fn stored_checksums_verify_copies_and_catch_a_same_size_replacement() {
    use aws_smithy_checksums::ChecksumAlgorithm;
    let moto = Moto::start();
    let server = S3Server::start();
    let mc = moto.client();
    create_bucket(&mc, "src-bucket").await;
    let crc_body = b"bytes with a stored crc32c".to_vec();
    let mut crc = "crc32c".parse::<ChecksumAlgorithm>().unwrap().into_impl();
    crc.update(&crc_body);
    let crc_b64 = aws_smithy_types::base64::encode(crc.finalize());
    mc.put_object()
        .bucket("src-bucket")
        .key("data/crc.bin")
        .body(crc_body.clone().into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C)
        .checksum_crc32_c(&crc_b64)
        .send()
        .await
        .unwrap();
    put(&mc, "src-bucket", "data/plain.bin", b"plain bytes, md5 etag".to_vec()).await;
    for (name, endpoint, dc, keys) in both_servers(&moto, &server) {
        create_bucket(&dc, "dst-bucket").await;
        let ws = Workspace::new(&[("src", "moto-key", "moto-secret"), ("dst", &keys.0, &keys.1)]);
        let spec = ws.write_spec(
            "sums",
            &spec_text(
                &moto.endpoint,
                "src-bucket",
                "data/",
                &endpoint,
                "dst-bucket",
                "c/",
                "mode = \"stream\"\n",
            ),
        );
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        let recorded: String = ws
            .sqlite()
            .query_row(
                "SELECT verified || ' ' || checksum FROM objects WHERE dest_key = 'c/crc.bin'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(recorded, format!("checksum crc32c:{crc_b64}"), "{name}");
        let out = ws.run(&["manifest", "verify", "--spec", "sums", "--checksums"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        assert!(stdout.contains("0 mismatched or missing"), "{name}: {stdout}");
        // Replaced out of band with other bytes of the same size.
        put(&dc, "dst-bucket", "c/plain.bin", b"PLAIN BYTES, MD5 ETAG".to_vec()).await;
        let out = ws.run(&["manifest", "verify", "--spec", "sums", "--checksums"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        assert!(stdout.contains("mismatch       c/plain.bin  (recorded md5:"), "{name}: {stdout}");
    }
}
