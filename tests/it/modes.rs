//! Transfer modes against real servers: direct, stream, staged, fallback through a fault proxy,
//! anonymous public sources, multipart paths and checksum sidecars.

use crate::util::*;
use s3syncd::fixture::{generate, FixtureSpec};
use s3syncd_testkit::moto::Moto;
use s3syncd_testkit::proxy::{Fault, FaultProxy};

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
    let proxy = FaultProxy::start(&server.endpoint, vec![Fault::status("CopyObject", 3, 503, "SlowDown")]);
    let spec = ws.seeded_spec("slow", &proxy.endpoint, "x/", "");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(proxy.injected() >= objects.len() as u64 / 4, "injected {}", proxy.injected());
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

#[tokio::test(flavor = "multi_thread")]
async fn staged_keys_with_dot_dot_stay_inside_the_staging_directory() {
    let moto = Moto::start();
    let server = S3Server::start();
    let mc = moto.client();
    create_bucket(&mc, "src-bucket").await;
    let objects = vec![
        ("data/../../escape.zip".to_string(), b"escape attempt".to_vec()),
        ("data/a/../../../etc/passwd".to_string(), b"not a passwd".to_vec()),
        ("data/plain.zip".to_string(), b"plain".to_vec()),
    ];
    put_all(&mc, "src-bucket", objects.clone()).await;
    create_bucket(&server.client(), "dst-bucket").await;
    let ws = Workspace::new(&[("src", "moto-key", "moto-secret"), ("dst", &server.access_key, &server.secret_key)]);
    let spec = ws.write_spec(
        "staged",
        &spec_text(
            &moto.endpoint,
            "src-bucket",
            "data/",
            &server.endpoint,
            "dst-bucket",
            "x/",
            "mode = \"staged\"\n",
        ),
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    let staging = ws.path().join("state/staging/staged");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0, "staging left files");
    assert!(!ws.path().join("state/escape.zip").exists() && !ws.path().join("escape.zip").exists() && !ws.path().join("etc").exists());
    // The plain key is copied; the dot-dot keys are data: copied if the destination server accepts them.
    assert_eq!(
        get(&server.client(), "dst-bucket", "x/plain.zip").await.as_deref(),
        Some(&b"plain"[..]),
        "{}",
        text(&out)
    );
    let rows: i64 = db_value(&ws, "SELECT count(*) FROM objects WHERE mode = 'staged'");
    let failed: i64 = db_value(&ws, "SELECT count(*) FROM failures");
    assert_eq!(rows + failed, 3, "{}", text(&out));
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
