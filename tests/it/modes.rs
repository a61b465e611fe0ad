//! Transfer modes against real servers: direct, stream, staged, fallback through a fault proxy,
//! anonymous public sources, multipart paths and checksum sidecars.

use crate::util::*;
use s3syncd_testkit::fixture::{generate, FixtureSpec};
use s3syncd_testkit::moto::Moto;
use s3syncd_testkit::proxy::{Action, Fault, FaultProxy};

fn small_fixture() -> Vec<(String, Vec<u8>)> {
    let mut f = FixtureSpec::small();
    f.days = 3;
    f.months = 1;
    generate(&f).into_iter().map(|o| (o.key, o.body)).collect()
}

fn signed_ws(server: &S3Server) -> Workspace {
    Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
    ])
}

fn db_value<T: rusqlite::types::FromSql>(ws: &Workspace, sql: &str) -> T {
    ws.sqlite()
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn assert_copied(c: &aws_sdk_s3::Client, bucket: &str, prefix: &str, objects: &[(String, Vec<u8>)]) {
    for (key, body) in objects {
        let dest = format!("{prefix}{}", key.strip_prefix("data/").unwrap());
        assert_eq!(get(c, bucket, &dest).await.as_deref(), Some(body.as_slice()), "bytes of {dest}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_public_source_streams_into_a_signed_destination() {
    let moto = Moto::start();
    let server = S3Server::start();
    let mc = moto.client();
    mc.create_bucket()
        .bucket("data.binance.vision")
        .acl(aws_sdk_s3::types::BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let objects = small_fixture();
    for (k, b) in &objects {
        mc.put_object()
            .bucket("data.binance.vision")
            .key(k)
            .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
            .body(b.clone().into())
            .send()
            .await
            .unwrap();
    }
    create_bucket(&server.client(), "bronze").await;
    let ws = Workspace::new(&[("dst", &server.access_key, &server.secret_key)]);
    let spec = ws.write_spec(
        "public",
        &format!(
            "mode = \"auto\"\n[source]\nbucket = \"data.binance.vision\"\nprefix = \"data/\"\nendpoint = \"{}\"\nanonymous = true\n\
             [destination]\nbucket = \"bronze\"\nprefix = \"b/\"\nendpoint = \"{}\"\nprofile = \"dst\"\n[verify]\nchecksum_sidecar = \".CHECKSUM\"\n",
            moto.endpoint, server.endpoint
        ),
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("WARN"),
        "expected, so no warning: {}",
        text(&out)
    );
    assert_copied(&server.client(), "bronze", "b/", &objects).await;
    assert_eq!(
        db_value::<i64>(&ws, "SELECT count(*) FROM objects WHERE mode = 'stream'") as usize,
        objects.len()
    );
    // moto lists ETags: every archive is checked against its sidecar, every sidecar by MD5.
    let zips = objects
        .iter()
        .filter(|(k, _)| k.ends_with(".zip") && !k.contains("awkward"))
        .count() as i64;
    assert_eq!(db_value::<i64>(&ws, "SELECT count(*) FROM objects WHERE verified = 'sha256'"), zips);
    assert_eq!(db_value::<i64>(&ws, "SELECT count(*) FROM objects WHERE verified = 'size'"), 0);
    let details: String = db_value(&ws, "SELECT details FROM runs");
    assert!(details.contains("different endpoints"), "{details}");
    let through: i64 = db_value(&ws, "SELECT bytes_through_host FROM runs");
    assert!(through >= objects.iter().map(|(_, b)| b.len() as i64).sum::<i64>());
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_refused_with_access_denied_falls_back_to_stream_once_per_run() {
    let objects = small_fixture();
    let (server, c, ws) = seeded(&objects).await;
    let proxy = FaultProxy::start(&server.endpoint, vec![Fault::status("CopyObject", 1, 403, "AccessDenied")]);
    let spec = ws.seeded_spec("denied", &proxy.endpoint, "x/", "[transfer]\nconcurrency = 4\n");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_copied(&c, "dst-bucket", "x/", &objects).await;
    assert_eq!(
        db_value::<i64>(&ws, "SELECT count(*) FROM objects WHERE mode = 'stream'") as usize,
        objects.len()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("direct -> stream (AccessDenied)"), "{stdout}");
    // The mode is given up for the run after the first refusals, not retried per object.
    assert!(proxy.seen("CopyObject") <= 4, "CopyObject tried {} times", proxy.seen("CopyObject"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slowdown_is_retried_and_nothing_falls_back() {
    let objects = small_fixture();
    let (server, c, ws) = seeded(&objects).await;
    // One object in three meets SlowDown on its first two CopyObject attempts: within the
    // default 5 retries, so no object can fail, whatever the timing.
    let proxy = FaultProxy::start(&server.endpoint, vec![Fault::status("CopyObject", 3, 503, "SlowDown").times(2)]);
    let spec = ws.seeded_spec("slow", &proxy.endpoint, "x/", "");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let slowed = proxy.faulted_targets();
    assert!(
        (objects.len() / 5..=objects.len() / 2).contains(&slowed),
        "{slowed} of {} objects slowed down",
        objects.len()
    );
    assert_eq!(
        proxy.injected(),
        2 * slowed as u64,
        "each chosen object meets exactly two SlowDowns"
    );
    assert_eq!(proxy.seen("CopyObject"), objects.len() as u64 + 2 * slowed as u64);
    assert_copied(&c, "dst-bucket", "x/", &objects).await;
    assert_eq!(
        db_value::<i64>(&ws, "SELECT count(*) FROM objects WHERE mode = 'direct'") as usize,
        objects.len()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("fallbacks     none"),
        "{}",
        text(&out)
    );
}

/// A server that answers SlowDown beyond 200 requests a second (an S3 prefix limit): the run
/// slows down (the client paces its requests, the concurrency limit falls) and, with the
/// default retries, no object fails. The summary shows the concurrency the limit reached.
#[tokio::test(flavor = "multi_thread")]
async fn a_slowdown_storm_slows_the_run_and_fails_nothing() {
    let objects: Vec<(String, Vec<u8>)> = (0..600).map(|i| (format!("data/o{i:04}.bin"), vec![i as u8; 64])).collect();
    let (server, c, ws) = seeded(&objects).await;
    let proxy = FaultProxy::start(&server.endpoint, vec![]);
    proxy.cap_rate(200);
    let spec = ws.seeded_spec("storm", &proxy.endpoint, "x/", "");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (capped, forwarded) = proxy.capped();
    eprintln!("{}\ncapped {capped} forwarded {forwarded}", text(&out));
    assert!(capped > 0, "the cap was reached ({forwarded} forwarded)");
    // The run slowed: the pace engaged, and most attempts were admitted.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the server throttled: copies were paced"),
        "{}",
        text(&out)
    );
    assert!(
        capped < forwarded,
        "{capped} refused beside {forwarded} admitted: the run did not slow down"
    );
    assert_copied(&c, "dst-bucket", "x/", &objects).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("failed        0 objects"), "{stdout}");
    assert!(stdout.contains("copies in flight (adaptive)"), "{stdout}");
    let concurrency: i64 = db_value(&ws, "SELECT json_extract(details, '$.concurrency') FROM runs");
    assert!((1..=1024).contains(&concurrency), "{concurrency}");
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_copy_and_stream_with_5mib_parts() {
    let server = S3Server::start();
    let c = server.client();
    create_bucket(&c, "src-bucket").await;
    create_bucket(&c, "dst-bucket").await;
    let big: Vec<u8> = (0..12u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let objects = vec![
        ("data/big/BTCUSDT-trades-2024-01.zip".to_string(), big),
        ("data/big/small.zip".to_string(), b"tiny".to_vec()),
    ];
    put_all(&c, "src-bucket", objects.clone()).await;
    let ws = signed_ws(&server);
    let tuning = "[transfer]\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\ncopy_threshold = \"5MiB\"\n";
    for (mode, prefix, part_op) in [
        ("direct", "d/", "UploadPartCopy"),
        ("stream", "s/", "UploadPart"),
        ("staged", "g/", "UploadPart"),
    ] {
        let spec = ws.seeded_spec(mode, &server.endpoint, prefix, &format!("mode = \"{mode}\"\n{tuning}"));
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", text(&out));
        assert_copied(&c, "dst-bucket", prefix, &objects).await;
        let details: String = db_value(&ws, "SELECT details FROM runs ORDER BY id DESC LIMIT 1");
        assert!(details.contains(&format!("\"{part_op}\":3")), "{mode}: {details}");
        assert_eq!(
            db_value::<i64>(&ws, &format!("SELECT count(*) FROM objects WHERE mode = '{mode}'")),
            2
        );
    }
    assert!(list(&c, "dst-bucket", "").await.len() == 6);
    let staging = ws.path().join("state/staging/staged");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0, "staging directory left files");
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn staged_keys_with_dot_dot_stay_inside_the_staging_directory() {
    // moto keeps keys verbatim on both sides, so every dot-dot key must be copied as data.
    let moto = Moto::start();
    let mc = moto.client();
    create_bucket(&mc, "src-bucket").await;
    create_bucket(&mc, "dst-bucket").await;
    let objects = vec![
        ("data/../../escape.zip".to_string(), b"escape attempt 7f3a".to_vec()),
        ("data/a/../../../etc/passwd".to_string(), b"not a passwd 7f3a".to_vec()),
        ("data/plain.zip".to_string(), b"plain 7f3a".to_vec()),
    ];
    put_all(&mc, "src-bucket", objects.clone()).await;
    let ws = Workspace::new(&[("src", "moto-key", "moto-secret"), ("dst", "moto-key", "moto-secret")]);
    let spec = ws.seeded_spec("staged", &moto.endpoint, "x/", "mode = \"staged\"\n");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (key, body) in &objects {
        let dest = format!("x/{}", key.strip_prefix("data/").unwrap());
        assert_eq!(get(&mc, "dst-bucket", &dest).await.as_deref(), Some(body.as_slice()), "{dest}");
    }
    assert_eq!(db_value::<i64>(&ws, "SELECT count(*) FROM objects WHERE mode = 'staged'"), 3);
    // Nothing anywhere in the workspace (config, state, staging, manifest) holds a copied body
    // or bears a name from a key.
    let mut files = Vec::new();
    walk(ws.path(), &mut files);
    assert!(files.len() >= 5, "walked only {files:?}");
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(
            name != "escape.zip" && name != "passwd" && name != "plain.zip",
            "{} escaped",
            f.display()
        );
        let content = std::fs::read(f).unwrap();
        assert!(
            !content.windows(4).any(|w| w == b"7f3a") || name.starts_with("manifest.db"),
            "{} holds object bytes",
            f.display()
        );
    }
    assert_eq!(
        std::fs::read_dir(ws.path().join("state/staging/staged")).unwrap().count(),
        0,
        "staging left files"
    );
}

/// A source body corrupted on its way (one byte flipped, same length) fails verification before
/// CompleteMultipartUpload: the upload is aborted, and no object appears, in stream and staged.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_multipart_body_never_becomes_an_object() {
    use sha2::Digest;
    let moto = Moto::start();
    let server = S3Server::start();
    let (c, mc) = (server.client(), moto.client());
    create_bucket(&c, "src-bucket").await;
    create_bucket(&mc, "dst-bucket").await;
    let big: Vec<u8> = (0..(12u32 << 20) + 17)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sum = format!("{}  big.bin\n", hex::encode(sha2::Sha256::digest(&big)));
    put(&c, "src-bucket", "data/big.bin", big).await;
    put(&c, "src-bucket", "data/big.bin.CHECKSUM", sum.into_bytes()).await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::always("GetObject", Action::Corrupt).only("/data/big.bin")],
    );
    let ws = Workspace::new(&[("src", &server.access_key, &server.secret_key), ("dst", "moto-key", "moto-secret")]);
    let tuning = "[verify]\nchecksum_sidecar = \".CHECKSUM\"\n[transfer]\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\n";
    for mode in ["stream", "staged"] {
        let spec = ws.write_spec(
            mode,
            &spec_text(
                &proxy.endpoint,
                "src-bucket",
                "data/",
                &moto.endpoint,
                "dst-bucket",
                &format!("{mode}/"),
                &format!("mode = \"{mode}\"\n{tuning}"),
            ),
        );
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", text(&out));
        let msg: String = db_value(&ws, &format!("SELECT message FROM failures WHERE spec = '{mode}'"));
        assert!(msg.contains("differs from the checksum sidecar"), "{mode}: {msg}");
        assert!(
            get(&mc, "dst-bucket", &format!("{mode}/big.bin")).await.is_none(),
            "{mode}: the corrupt object landed"
        );
        assert!(
            get(&mc, "dst-bucket", &format!("{mode}/big.bin.CHECKSUM")).await.is_some(),
            "{mode}: the sidecar is copied"
        );
    }
    assert!(proxy.injected() >= 2);
    let open = mc.list_multipart_uploads().bucket("dst-bucket").send().await.unwrap();
    assert!(open.uploads().is_empty(), "uploads left open: {:?}", open.uploads());
    assert_eq!(db_value::<i64>(&ws, "SELECT count(*) FROM uploads"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_mismatch_fails_that_object_only() {
    let server = S3Server::start();
    let c = server.client();
    create_bucket(&c, "src-bucket").await;
    create_bucket(&c, "dst-bucket").await;
    let mut objects = small_fixture();
    let victim = objects
        .iter()
        .position(|(k, _)| k.ends_with("BTCUSDT-1m-2024-01-02.zip.CHECKSUM"))
        .unwrap();
    objects[victim].1 = format!("{}  BTCUSDT-1m-2024-01-02.zip\n", "0".repeat(64)).into_bytes();
    put_all(&c, "src-bucket", objects.clone()).await;
    let ws = signed_ws(&server);
    let spec = ws.seeded_spec(
        "sums",
        &server.endpoint,
        "x/",
        "mode = \"stream\"\n[verify]\nchecksum_sidecar = \".CHECKSUM\"\n",
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let bad_key = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip";
    let msg: String = db_value(&ws, "SELECT message FROM failures");
    assert!(msg.contains("differs from the checksum sidecar"), "{msg}");
    assert_eq!(db_value::<String>(&ws, "SELECT source_key FROM failures"), bad_key);
    assert_eq!(
        db_value::<i64>(&ws, &format!("SELECT count(*) FROM objects WHERE source_key = '{bad_key}'")),
        0
    );
    assert_eq!(db_value::<i64>(&ws, "SELECT count(*) FROM objects") as usize, objects.len() - 1);
    assert!(
        get(&c, "dst-bucket", "x/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip")
            .await
            .is_none(),
        "the bad object must not land"
    );
}

/// Empty objects are everywhere in a lakehouse (`_SUCCESS` markers, empty partitions). An empty
/// GET from moto into a PUT to s3s-fs once failed in `stream` (the PUT never read the empty
/// body, so nothing verified it): every mode that can cross servers must copy and record them.
#[tokio::test(flavor = "multi_thread")]
async fn empty_and_one_byte_objects_copy_across_servers_in_every_mode() {
    let moto = Moto::start();
    let server = S3Server::start();
    let mc = moto.client();
    create_bucket(&mc, "src-bucket").await;
    create_bucket(&server.client(), "dst-bucket").await;
    let objects = vec![
        ("data/_SUCCESS".to_string(), Vec::new()),
        ("data/part=1/empty.csv".to_string(), Vec::new()),
        ("data/one.bin".to_string(), vec![7u8]),
        ("data/two.bin".to_string(), vec![1u8, 2]),
    ];
    put_all(&mc, "src-bucket", objects.clone()).await;
    let ws = Workspace::new(&[("src", "moto-key", "moto-secret"), ("dst", &server.access_key, &server.secret_key)]);
    for mode in ["stream", "staged", "auto"] {
        let spec = ws.write_spec(
            mode,
            &spec_text(
                &moto.endpoint,
                "src-bucket",
                "data/",
                &server.endpoint,
                "dst-bucket",
                &format!("{mode}/"),
                &format!("mode = \"{mode}\"\n"),
            ),
        );
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", text(&out));
        for (key, body) in &objects {
            let dest = format!("{mode}/{}", key.strip_prefix("data/").unwrap());
            assert_eq!(
                get(&server.client(), "dst-bucket", &dest).await.as_ref(),
                Some(body),
                "{mode}: {dest}"
            );
        }
        let rows: i64 = db_value(&ws, &format!("SELECT count(*) FROM objects WHERE spec = '{mode}'"));
        assert_eq!(rows as usize, objects.len(), "{mode}: rows");
        let empty_verified: String = db_value(
            &ws,
            &format!("SELECT verified FROM objects WHERE spec = '{mode}' AND size = 0 LIMIT 1"),
        );
        assert_eq!(empty_verified, "etag", "{mode}: moto's empty ETag is the MD5 of nothing");
        let again = ws.run(&["run", spec.to_str().unwrap()]);
        assert!(
            String::from_utf8_lossy(&again.stdout).contains("copied        0 objects"),
            "{mode}: {}",
            text(&again)
        );
    }
}

/// What a HEAD shows of an object besides its bytes.
async fn head_headers(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<(&'static str, Option<String>)> {
    let h = c
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"));
    let mut meta: Vec<(String, String)> = h.metadata().cloned().unwrap_or_default().into_iter().collect();
    meta.sort();
    vec![
        ("content-type", h.content_type().map(Into::into)),
        ("content-encoding", h.content_encoding().map(Into::into)),
        ("content-disposition", h.content_disposition().map(Into::into)),
        ("content-language", h.content_language().map(Into::into)),
        ("cache-control", h.cache_control().map(Into::into)),
        ("expires", h.expires_string().map(Into::into)),
        ("website-redirect-location", h.website_redirect_location().map(Into::into)),
        ("x-amz-meta-*", (!meta.is_empty()).then(|| format!("{meta:?}"))),
    ]
}

/// Content headers, user metadata (non-ASCII values RFC 2047-encoded, as S3 returns them) and
/// the website redirect arrive with the bytes on every path: single part and multipart, in
/// direct, stream and staged, on s3s-fs and on moto. A `.csv.gz` keeps `Content-Encoding:
/// gzip` and its compressed bytes. Where a server stores less, both sides show the same.
#[tokio::test(flavor = "multi_thread")]
async fn headers_and_metadata_arrive_on_every_path_and_server() {
    let moto = Moto::start();
    let server = S3Server::start();
    for (name, endpoint, c, keys) in both_servers(&moto, &server) {
        create_bucket(&c, "src-bucket").await;
        create_bucket(&c, "dst-bucket").await;
        // A website bucket, where redirects take effect: `direct` then reads each one (moto
        // keeps the configuration; s3s-fs has none, and its CopyObject copies the redirect).
        let index = aws_sdk_s3::types::IndexDocument::builder().suffix("index.html").build().unwrap();
        let website = aws_sdk_s3::types::WebsiteConfiguration::builder().index_document(index).build();
        let _ = c
            .put_bucket_website()
            .bucket("src-bucket")
            .website_configuration(website)
            .send()
            .await;
        let small = b"\x1f\x8b\x08\x00gzip-bytes-not-to-be-inflated".to_vec();
        let big: Vec<u8> = (0..(6u32 << 20) + 3).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
        for (key, body) in [("data/small.csv.gz", small), ("data/big.csv.gz", big)] {
            c.put_object()
                .bucket("src-bucket")
                .key(key)
                .body(body.into())
                .content_type("text/csv")
                .content_encoding("gzip")
                .content_disposition("attachment; filename=\"klines.csv.gz\"")
                .content_language("en")
                .cache_control("max-age=3600")
                .expires(aws_smithy_types::DateTime::from_secs(1_900_000_000))
                .metadata("origin", "binance")
                .metadata("note", "=?UTF-8?B?w6lsw6h2ZQ==?=")
                .website_redirect_location("/elsewhere")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{name}: put {key}: {e:?}"));
        }
        let source = head_headers(&c, "src-bucket", "data/big.csv.gz").await;
        eprintln!(
            "{name} keeps: {:?}",
            source.iter().filter(|(_, v)| v.is_some()).map(|(h, _)| *h).collect::<Vec<_>>()
        );
        if name == "moto" {
            assert!(source.iter().all(|(_, v)| v.is_some()), "moto keeps every header: {source:?}");
        }
        let ws = Workspace::new(&[("src", &keys.0, &keys.1), ("dst", &keys.0, &keys.1)]);
        let tuning = "[transfer]\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\ncopy_threshold = \"5MiB\"\n";
        for mode in ["direct", "stream", "staged"] {
            let spec = ws.seeded_spec(mode, &endpoint, &format!("{mode}/"), &format!("mode = \"{mode}\"\n{tuning}"));
            let out = ws.run(&["run", spec.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(0), "{name} {mode}: {}", text(&out));
            for key in ["small.csv.gz", "big.csv.gz"] {
                let (src, dst) = (format!("data/{key}"), format!("{mode}/{key}"));
                assert_eq!(
                    get(&c, "dst-bucket", &dst).await,
                    get(&c, "src-bucket", &src).await,
                    "{name} {mode} {key}: bytes"
                );
                assert_eq!(
                    head_headers(&c, "dst-bucket", &dst).await,
                    head_headers(&c, "src-bucket", &src).await,
                    "{name} {mode} {key}: headers"
                );
            }
        }
    }
}

/// Every size boundary, in every mode, on both servers, with every threshold and the part size
/// at 5 MiB: 0 and 1 byte, one below and one above the multipart threshold, two parts and a
/// byte. Folder markers (keys ending in `/`) too where the server lists them (s3s-fs does not).
#[tokio::test(flavor = "multi_thread")]
async fn every_size_boundary_and_folder_markers_copy_in_every_mode() {
    const MIB5: usize = 5 << 20;
    let moto = Moto::start();
    let server = S3Server::start();
    let body = |n: usize| -> Vec<u8> { (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect() };
    let mut objects: Vec<(String, Vec<u8>)> = [0, 1, MIB5 - 1, MIB5 + 1, 2 * MIB5 + 1]
        .iter()
        .map(|&n| (format!("data/size-{n}.bin"), body(n)))
        .collect();
    objects.push(("data/day=1/".to_string(), Vec::new()));
    for (name, endpoint, c, keys) in both_servers(&moto, &server) {
        create_bucket(&c, "src-bucket").await;
        create_bucket(&c, "dst-bucket").await;
        put_all(&c, "src-bucket", objects.clone()).await;
        let listed: Vec<String> = list(&c, "src-bucket", "data/").await.into_iter().map(|(k, _)| k).collect();
        let expected: Vec<&(String, Vec<u8>)> = objects.iter().filter(|(k, _)| listed.contains(k)).collect();
        assert!(expected.len() >= 5, "{name} lists {listed:?}");
        if name == "moto" {
            assert_eq!(expected.len(), objects.len(), "moto lists folder markers");
        }
        let ws = Workspace::new(&[("src", &keys.0, &keys.1), ("dst", &keys.0, &keys.1)]);
        let tuning = "[transfer]\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\ncopy_threshold = \"5MiB\"\n";
        for mode in ["direct", "stream", "staged", "auto"] {
            let spec = ws.seeded_spec(mode, &endpoint, &format!("{mode}/"), &format!("mode = \"{mode}\"\n{tuning}"));
            let out = ws.run(&["run", spec.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(0), "{name} {mode}: {}", text(&out));
            for (key, body) in &expected {
                let dest = format!("{mode}/{}", key.strip_prefix("data/").unwrap());
                assert_eq!(get(&c, "dst-bucket", &dest).await.as_ref(), Some(body), "{name} {mode}: {dest}");
            }
            let rows: i64 = db_value(&ws, &format!("SELECT count(*) FROM objects WHERE spec = '{mode}'"));
            assert_eq!(rows as usize, expected.len(), "{name} {mode}: rows");
            let again = ws.run(&["run", spec.to_str().unwrap()]);
            assert!(
                String::from_utf8_lossy(&again.stdout).contains("copied        0 objects"),
                "{name} {mode}: {}",
                text(&again)
            );
        }
    }
}

/// The checksum the source stores verifies every path without a sidecar: streamed and staged
/// bytes as they pass, a multipart server-side copy through the upload's full-object checksum,
/// and a single-part copy of a multipart source (whose ETag is no MD5) through the checksum the
/// copy reports. Multipart uploads carry the source's full-object checksum, so the destination
/// stores it. s3s-fs keeps no checksums on multipart uploads: there those rows say `size`.
#[tokio::test(flavor = "multi_thread")]
async fn stored_checksums_verify_every_path_and_travel_with_multipart_uploads() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart};
    const MIB5: usize = 5 << 20;
    // CRC32: moto without its optional crc32c module computes CRC32 where CRC32C is asked.
    let moto = Moto::start();
    let server = S3Server::start();
    let crc = |b: &[u8]| {
        let mut c = "crc32".parse::<aws_smithy_checksums::ChecksumAlgorithm>().unwrap().into_impl();
        c.update(b);
        aws_smithy_types::base64::encode(c.finalize())
    };
    let big: Vec<u8> = (0..2 * MIB5 + 1).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let small: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    for (name, endpoint, c, keys) in both_servers(&moto, &server) {
        create_bucket(&c, "src-bucket").await;
        create_bucket(&c, "dst-bucket").await;
        c.put_object()
            .bucket("src-bucket")
            .key("data/big.bin")
            .body(big.clone().into())
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_crc32(crc(&big))
            .send()
            .await
            .unwrap();
        // A one-part multipart upload: its ETag ends in "-1", its checksum is full-object.
        let mp = c
            .create_multipart_upload()
            .bucket("src-bucket")
            .key("data/mp.bin")
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_type(ChecksumType::FullObject)
            .send()
            .await
            .unwrap();
        let id = mp.upload_id().unwrap();
        let part = c
            .upload_part()
            .bucket("src-bucket")
            .key("data/mp.bin")
            .upload_id(id)
            .part_number(1)
            .body(small.clone().into())
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_crc32(crc(&small))
            .send()
            .await
            .unwrap();
        let done = CompletedPart::builder()
            .part_number(1)
            .set_e_tag(part.e_tag().map(str::to_string))
            .set_checksum_crc32(part.checksum_crc32().map(str::to_string))
            .build();
        c.complete_multipart_upload()
            .bucket("src-bucket")
            .key("data/mp.bin")
            .upload_id(id)
            .multipart_upload(CompletedMultipartUpload::builder().parts(done).build())
            .checksum_type(ChecksumType::FullObject)
            .checksum_crc32(crc(&small))
            .send()
            .await
            .unwrap();
        let ws = Workspace::new(&[("src", &keys.0, &keys.1), ("dst", &keys.0, &keys.1)]);
        let tuning = "[transfer]\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\ncopy_threshold = \"5MiB\"\n";
        for mode in ["direct", "stream", "staged"] {
            let spec = ws.seeded_spec(mode, &endpoint, &format!("{mode}/"), &format!("mode = \"{mode}\"\n{tuning}"));
            let out = ws.run(&["run", spec.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(0), "{name} {mode}: {}", text(&out));
            for (key, body) in [("big.bin", &big), ("mp.bin", &small)] {
                let dest = format!("{mode}/{key}");
                assert_eq!(get(&c, "dst-bucket", &dest).await.as_ref(), Some(body), "{name} {mode}: {dest}");
                let row: String = db_value(
                    &ws,
                    &format!("SELECT verified || ' ' || ifnull(checksum, '-') FROM objects WHERE dest_key = '{dest}'"),
                );
                let proven = format!("checksum crc32:{}", crc(body));
                let want = match (name, mode, key) {
                    ("moto", ..) | (_, "stream" | "staged", "big.bin") => proven,
                    // s3s-fs keeps no checksum of a multipart upload, nor returns one on a copy.
                    _ => "size -".to_string(),
                };
                assert_eq!(row, want, "{name} {mode}: {dest}");
                if name == "moto" {
                    let head = c
                        .head_object()
                        .bucket("dst-bucket")
                        .key(&dest)
                        .checksum_mode(ChecksumMode::Enabled)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        head.checksum_crc32(),
                        Some(crc(body).as_str()),
                        "{name} {mode}: {dest} stores the checksum"
                    );
                }
            }
        }
    }
}

/// The destination's write options (storage class, SSE-KMS with a key, a canned ACL) apply the
/// same way on every path, and `requester_pays` sends the header on every request of its side.
/// Under SSE-KMS no ETag is compared as an MD5.
#[tokio::test(flavor = "multi_thread")]
async fn write_options_and_requester_pays_apply_in_every_mode() {
    let moto = Moto::start();
    let mc = moto.client();
    create_bucket(&mc, "src-bucket").await;
    create_bucket(&mc, "dst-bucket").await;
    let big: Vec<u8> = (0..(6u32 << 20) + 5).map(|i| (i.wrapping_mul(2_654_435_761) >> 5) as u8).collect();
    let objects = vec![("data/small.bin".to_string(), b"small".to_vec()), ("data/big.bin".to_string(), big)];
    put_all(&mc, "src-bucket", objects.clone()).await;
    let proxy = FaultProxy::start(&moto.endpoint, vec![]);
    let ws = Workspace::new(&[("src", "moto-key", "moto-secret"), ("dst", "moto-key", "moto-secret")]);
    let tuning = "[transfer]\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\ncopy_threshold = \"5MiB\"\n";
    for mode in ["direct", "stream", "staged"] {
        let spec = spec_text(&proxy.endpoint, "src-bucket", "data/", &proxy.endpoint, "dst-bucket", &format!("{mode}/"), &format!("mode = \"{mode}\"\n{tuning}"))
            .replace("profile = \"src\"", "profile = \"src\"\nrequester_pays = true")
            .replace(
                "profile = \"dst\"",
                "profile = \"dst\"\nstorage_class = \"STANDARD_IA\"\nsse = \"aws:kms\"\nsse_kms_key_id = \"alias/bronze\"\nacl = \"bucket-owner-full-control\"",
            );
        let spec = ws.write_spec(mode, &spec);
        let before = (
            proxy.seen_header("x-amz-request-payer"),
            proxy.seen("GetObject") + proxy.seen("ListObjectsV2"),
        );
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", text(&out));
        for (key, body) in &objects {
            let dest = format!("{mode}/{}", key.strip_prefix("data/").unwrap());
            assert_eq!(get(&mc, "dst-bucket", &dest).await.as_ref(), Some(body), "{mode}: {dest}");
            let h = mc.head_object().bucket("dst-bucket").key(&dest).send().await.unwrap();
            assert_eq!(h.storage_class().map(|s| s.as_str()), Some("STANDARD_IA"), "{mode}: {dest}");
            assert_eq!(h.server_side_encryption().map(|s| s.as_str()), Some("aws:kms"), "{mode}: {dest}");
            assert!(
                h.ssekms_key_id().is_some_and(|k| k.contains("alias/bronze")),
                "{mode}: {dest}: {:?}",
                h.ssekms_key_id()
            );
        }
        let sent = proxy.seen_header("x-amz-request-payer") - before.0;
        let source_requests = proxy.seen("GetObject") + proxy.seen("ListObjectsV2") - before.1;
        assert!(
            sent > 0 && sent >= source_requests - 1,
            "{mode}: {sent} requests carried x-amz-request-payer"
        );
    }
}

/// The tags of an object's key, sorted.
async fn tags_of(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<(String, String)> {
    let out = c.get_object_tagging().bucket(bucket).key(key).send().await.unwrap();
    let mut tags: Vec<(String, String)> = out.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect();
    tags.sort();
    tags
}

/// Tags follow `preserve_tags` on every path: copied when true (single part and multipart, in
/// direct, stream and staged), none at the destination when false. A server without tagging
/// (s3s-fs) never stops a copy or disables a mode: the summary says tags were not copied.
#[tokio::test(flavor = "multi_thread")]
async fn tags_follow_preserve_tags_on_every_path() {
    let moto = Moto::start();
    let mc = moto.client();
    create_bucket(&mc, "src-bucket").await;
    create_bucket(&mc, "dst-bucket").await;
    let big: Vec<u8> = (0..(6u32 << 20) + 9).map(|i| (i.wrapping_mul(2_654_435_761) >> 3) as u8).collect();
    for (key, body) in [("data/small.bin", b"tagged".to_vec()), ("data/big.bin", big)] {
        mc.put_object()
            .bucket("src-bucket")
            .key(key)
            .body(body.into())
            .tagging("owner=market%20data&tier=bronze")
            .send()
            .await
            .unwrap();
    }
    let want = vec![
        ("owner".to_string(), "market data".to_string()),
        ("tier".to_string(), "bronze".to_string()),
    ];
    let ws = Workspace::new(&[("src", "moto-key", "moto-secret"), ("dst", "moto-key", "moto-secret")]);
    for (preserve, modes) in [(true, ["direct", "stream", "staged"]), (false, ["direct", "stream", "staged"])] {
        for mode in modes {
            let prefix = format!("{mode}-{preserve}/");
            let extra = format!(
                "mode = \"{mode}\"\n[transfer]\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\ncopy_threshold = \"5MiB\"\npreserve_tags = {preserve}\n"
            );
            let spec = ws.seeded_spec(&format!("{mode}-{preserve}"), &moto.endpoint, &prefix, &extra);
            let out = ws.run(&["run", spec.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(0), "{mode} {preserve}: {}", text(&out));
            for key in ["small.bin", "big.bin"] {
                let got = tags_of(&mc, "dst-bucket", &format!("{prefix}{key}")).await;
                let expected = if preserve { want.clone() } else { Vec::new() };
                assert_eq!(got, expected, "{mode} preserve_tags = {preserve}: {key}");
            }
        }
    }

    // s3s-fs has no tagging: the copy goes on, in its mode, and the summary says so.
    let objects = small_fixture();
    let (server, c, ws) = seeded(&objects).await;
    let spec = ws.seeded_spec(
        "notags",
        &server.endpoint,
        "n/",
        "mode = \"stream\"\n[transfer]\npreserve_tags = true\n",
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not copied    tags (the server does not support them)"), "{stdout}");
    assert!(stdout.contains("fallbacks     none"), "{stdout}");
    assert_copied(&c, "dst-bucket", "n/", &objects).await;
}
