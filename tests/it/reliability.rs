//! Reliability: faults injected by a real proxy, listing failures and delete guards, SIGKILL at
//! random points, and keys that are data, not paths or URLs.

use crate::util::*;
use s3syncd::fixture::{generate, FixtureSpec};
use s3syncd_testkit::moto::Moto;
use s3syncd_testkit::proxy::{Action, Fault, FaultProxy};
use std::collections::BTreeMap;
use std::time::Duration;

fn fixture(days: u32, big_folder: u32) -> Vec<(String, Vec<u8>)> {
    let mut f = FixtureSpec::small().with_big_folder(big_folder);
    f.days = days;
    generate(&f).into_iter().map(|o| (o.key, o.body)).collect()
}

fn db_i64(ws: &Workspace, sql: &str) -> i64 {
    ws.sqlite()
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The destination equals the source under the prefixes, and the manifest equals the destination.
async fn assert_converged(c: &aws_sdk_s3::Client, ws: &Workspace, spec: &str, objects: &[(String, Vec<u8>)], prefix: &str) {
    let at_dest: BTreeMap<String, i64> = list(c, "dst-bucket", prefix).await.into_iter().collect();
    assert_eq!(at_dest.len(), objects.len(), "object count at the destination");
    for (key, body) in objects {
        let dest = format!("{prefix}{}", key.strip_prefix("data/").unwrap());
        assert_eq!(
            get(c, "dst-bucket", &dest).await.as_deref(),
            Some(body.as_slice()),
            "bytes of {dest}"
        );
    }
    let db = ws.sqlite();
    let mut stmt = db.prepare("SELECT dest_key, size FROM objects WHERE spec = ?1").unwrap();
    let rows: BTreeMap<String, i64> = stmt
        .query_map([spec], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, at_dest, "manifest rows against the destination");
}

#[tokio::test(flavor = "multi_thread")]
async fn about_five_percent_faults_still_copy_everything_exactly() {
    // The documented full-size run sets S3SYNCD_FAULT_DAYS=400 (about 10,000 objects).
    let days = std::env::var("S3SYNCD_FAULT_DAYS").ok().and_then(|d| d.parse().ok()).unwrap_or(12);
    let objects = fixture(days, 0);
    let (server, c, ws) = seeded(&objects).await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![
            Fault::status("*", 40, 503, "SlowDown"),
            Fault::status("CopyObject", 33, 500, "InternalError"),
            Fault {
                op: "GetObject",
                every: 29,
                after: 0,
                action: Action::ResetMidBody,
            },
            Fault {
                op: "GetObject",
                every: 31,
                after: 0,
                action: Action::Truncate,
            },
            Fault {
                op: "PutObject",
                every: 37,
                after: 0,
                action: Action::ResetMidBody,
            },
            Fault {
                op: "CopyObject",
                every: 43,
                after: 0,
                action: Action::Truncate,
            },
            Fault {
                op: "*",
                every: 97,
                after: 0,
                action: Action::Stall(Duration::from_millis(300)),
            },
        ],
    );
    for (mode, prefix) in [("auto", "a/"), ("stream", "s/")] {
        let spec = ws.seeded_spec(mode, &proxy.endpoint, prefix, &format!("mode = \"{mode}\"\n"));
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", text(&out));
        assert_converged(&c, &ws, mode, &objects, prefix).await;
    }
    let seen: u64 = ["GetObject", "PutObject", "CopyObject", "ListObjectsV2"]
        .iter()
        .map(|op| proxy.seen(op))
        .sum();
    let rate = proxy.injected() as f64 / seen as f64;
    eprintln!(
        "{} objects per mode; {} of {seen} requests faulted ({:.1}%)",
        objects.len(),
        proxy.injected(),
        rate * 100.0
    );
    assert!(rate > 0.04, "only {} of {seen} requests faulted", proxy.injected());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_or_truncated_listing_never_deletes() {
    let objects = fixture(3, 600);
    let (server, c, ws) = seeded(&objects).await;
    let extra = "delete = true\n[transfer]\nretries = 1\n";
    let direct = ws.seeded_spec("mirror", &server.endpoint, "m/", extra);
    let out = ws.run(&["run", direct.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let gone: Vec<&String> = objects
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains("2024-01-02.zip"))
        .take(5)
        .collect();
    assert_eq!(gone.len(), 5);
    for k in &gone {
        c.delete_object().bucket("src-bucket").key(*k).send().await.unwrap();
    }
    let dest_count = list(&c, "dst-bucket", "m/").await.len();

    // The second listing page fails (every ListObjectsV2 after the first): no deletes.
    let failing = FaultProxy::start(
        &server.endpoint,
        vec![Fault {
            op: "ListObjectsV2",
            every: 1,
            after: 1,
            action: Action::Status(500, "InternalError"),
        }],
    );
    let via = |proxy: &FaultProxy| {
        spec_text(
            &proxy.endpoint,
            "src-bucket",
            "data/",
            &proxy.endpoint,
            "dst-bucket",
            "m/",
            &format!("name = \"mirror\"\n{extra}"),
        )
    };
    let spec = ws.write_spec("mirror", &via(&failing));
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("listing s3://src-bucket/data/ failed"),
        "{}",
        text(&out)
    );
    assert_eq!(
        list(&c, "dst-bucket", "m/").await.len(),
        dest_count,
        "deleted after a failed listing"
    );
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM deletions"), 0);
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM runs WHERE status = 'failed'"), 1);

    // A page that says it is truncated but carries no token: no deletes.
    let lying = FaultProxy::start(
        &server.endpoint,
        vec![Fault {
            op: "ListObjectsV2",
            every: 1,
            after: 0,
            action: Action::TruncatedListingWithoutToken,
        }],
    );
    ws.write_spec("mirror", &via(&lying));
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated without a continuation token"),
        "{}",
        text(&out)
    );
    assert_eq!(
        list(&c, "dst-bucket", "m/").await.len(),
        dest_count,
        "deleted after a truncated listing"
    );

    // A complete listing: exactly the five are deleted and recorded.
    ws.seeded_spec("mirror", &server.endpoint, "m/", &format!("name = \"mirror\"\n{extra}"));
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(list(&c, "dst-bucket", "m/").await.len(), dest_count - 5);
    for k in &gone {
        assert!(get(&c, "dst-bucket", &format!("m/{}", k.strip_prefix("data/").unwrap()))
            .await
            .is_none());
    }
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM deletions"), 5);
    assert_eq!(db_i64(&ws, "SELECT objects_deleted FROM runs ORDER BY id DESC LIMIT 1"), 5);
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM objects") as usize, dest_count - 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_above_max_delete_are_refused_whole() {
    let objects = fixture(3, 0);
    let (server, c, ws) = seeded(&objects).await;
    let spec = ws.seeded_spec("mirror", &server.endpoint, "m/", "delete = true\n");
    assert_eq!(ws.run(&["run", spec.to_str().unwrap()]).status.code(), Some(0));
    let doomed: Vec<&String> = objects.iter().map(|(k, _)| k).step_by(5).collect(); // 20% > the default 10%
    for k in &doomed {
        c.delete_object().bucket("src-bucket").key(*k).send().await.unwrap();
    }
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains(&format!(
            "deleted       0 objects (refused: {} deletions exceed max_delete",
            doomed.len()
        )),
        "{summary}"
    );
    assert_eq!(list(&c, "dst-bucket", "m/").await.len(), objects.len());
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM deletions"), 0);
    // Raising the cap lets them go.
    ws.seeded_spec("mirror", &server.endpoint, "m/", "delete = true\nmax_delete = \"25%\"\n");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(list(&c, "dst-bucket", "m/").await.len(), objects.len() - doomed.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_points_then_a_rerun_converges() {
    let moto = Moto::start();
    let mut objects = fixture(6, 0);
    for i in 0..4u32 {
        let big: Vec<u8> = (0..(6u32 << 20) + i * 999_983)
            .map(|j| (j.wrapping_mul(2_654_435_761 + i) >> 11) as u8)
            .collect();
        objects.push((format!("data/big/part-{i}.zip"), big));
    }
    let (server, c, _) = seeded(&objects).await;
    let mc = moto.client();
    create_bucket(&mc, "dst-bucket").await;
    let ws = Workspace::new(&[("src", &server.access_key, &server.secret_key), ("dst", "moto-key", "moto-secret")]);
    let tuning = "[transfer]\nconcurrency = 4\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\nparts_in_flight = 2\n";
    let spec = ws.write_spec(
        "crash",
        &spec_text(&server.endpoint, "src-bucket", "data/", &moto.endpoint, "dst-bucket", "k/", tuning),
    );
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    for (i, mode) in ["stream", "staged", "stream", "staged"].iter().enumerate() {
        let mut child = ws
            .command()
            .args(["run", spec.to_str().unwrap(), "--mode", mode])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let wait = rng.u64(150..1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        eprintln!("seed {seed}: kill {i} ({mode}) after {wait} ms");
    }
    let out = ws.run(&["run", spec.to_str().unwrap(), "--mode", "stream"]);
    assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", text(&out));
    assert_converged(&mc, &ws, "crash", &objects, "k/").await;
    let staging = ws.path().join("state/staging/crash");
    assert_eq!(std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0), 0, "staging files left");
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM uploads"), 0, "uploads still recorded");
    let open = mc.list_multipart_uploads().bucket("dst-bucket").send().await.unwrap();
    assert!(
        open.uploads().is_empty(),
        "seed {seed}: incomplete multipart uploads left: {:?}",
        open.uploads()
    );
    drop(c);
}

/// Keys that break naive code: URL-special characters, encodings, paths, long keys.
fn tricky_keys() -> Vec<String> {
    let long = format!("data/long/{}/{}/{}", "a".repeat(300), "b".repeat(300), "c".repeat(412));
    let mut keys: Vec<String> = [
        "data/with space.zip",
        "data/plus+sign.zip",
        "data/encoded%2Fslash.zip",
        "data/percent%25.zip",
        "data/question?mark.zip",
        "data/hash#tag.zip",
        "data/amp&and=eq.zip",
        "data/ünïcödé/€uro.zip",
        "data/combining-e\u{301}-e\u{301}.zip",
        "data/emoji-📈.zip",
        "data/../dotdot.zip",
        "data/a/./b/../c.zip",
        "data//double-slash.zip",
        "data/trailing-space .zip",
        "data/tab\there.zip",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(long.len(), 1024, "S3's key limit, exactly");
    keys.push(long);
    keys
}

async fn tricky_keys_on(endpoint: &str, c: &aws_sdk_s3::Client, ws: &Workspace) {
    create_bucket(c, "src-bucket").await;
    create_bucket(c, "dst-bucket").await;
    // A key counts only if the server stores it as that key (listed verbatim, readable); keys a
    // server refuses or aliases (s3s-fs maps keys to file paths, so "a/../b" becomes "b") are
    // reported, not silently dropped from the check.
    let mut uploaded = Vec::new();
    for (i, k) in tricky_keys().into_iter().enumerate() {
        let body = format!("object {i}: {k}").into_bytes();
        if c.put_object()
            .bucket("src-bucket")
            .key(&k)
            .body(body.clone().into())
            .send()
            .await
            .is_ok()
        {
            uploaded.push((k, body));
        }
    }
    let listed: Vec<String> = list(c, "src-bucket", "").await.into_iter().map(|(k, _)| k).collect();
    let mut stored = Vec::new();
    for (k, body) in uploaded {
        if listed.contains(&k) && get(c, "src-bucket", &k).await.as_deref() == Some(&body[..]) {
            stored.push((k, body));
        } else {
            eprintln!("{endpoint}: the server does not store key {k:?} as such");
        }
    }
    assert!(stored.len() >= 12, "{endpoint} stored only {} tricky keys", stored.len());
    for mode in ["direct", "stream", "staged"] {
        // Same-length prefixes keep the 1,024-byte key within the limit at the destination.
        let prefix = format!("{}/", &mode[..4]);
        let spec = ws.write_spec(
            mode,
            &spec_text(
                endpoint,
                "src-bucket",
                "data/",
                endpoint,
                "dst-bucket",
                &prefix,
                &format!("mode = \"{mode}\"\n"),
            ),
        );
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{endpoint} {mode}: {}", text(&out));
        for (k, body) in &stored {
            let dest = format!("{prefix}{}", k.strip_prefix("data/").unwrap());
            assert_eq!(
                get(c, "dst-bucket", &dest).await.as_deref(),
                Some(body.as_slice()),
                "{endpoint} {mode}: {dest:?}"
            );
        }
        // Every listed source object has its row, aliased ones included.
        let rows = db_i64(
            ws,
            &format!("SELECT count(*) FROM objects WHERE spec = '{mode}' AND mode = '{mode}'"),
        );
        assert_eq!(
            rows as usize,
            listed.iter().filter(|k| k.starts_with("data/")).count(),
            "{endpoint} {mode}"
        );
    }
    assert_eq!(std::fs::read_dir(ws.path().join("state/staging/staged")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tricky_keys_copy_byte_exact_in_every_mode_on_s3s_fs() {
    let server = S3Server::start();
    let ws = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
    ]);
    tricky_keys_on(&server.endpoint, &server.client(), &ws).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tricky_keys_copy_byte_exact_in_every_mode_on_moto_and_no_secret_is_logged() {
    let moto = Moto::start();
    let ws = Workspace::new(&[]);
    // Session credentials: neither the secret nor the token may appear in any log line.
    let (secret, token) = ("wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN");
    std::fs::write(
        ws.path().join("aws-credentials"),
        format!("[src]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = {secret}\naws_session_token = {token}\n\n[dst]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = {secret}\naws_session_token = {token}\n"),
    )
    .unwrap();
    tricky_keys_on(&moto.endpoint, &moto.client(), &ws).await;
    let spec = ws.spec_dir().join("stream.toml");
    let out = ws
        .command()
        .env("S3SYNCD_LOG", "trace")
        .args(["run", spec.to_str().unwrap()])
        .output()
        .unwrap();
    let logs = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(logs.len() > 1000, "expected trace logs");
    assert!(!logs.contains(secret) && !logs.contains(token), "a credential appears in the logs");
    assert!(!logs.contains("X-Amz-Signature="), "a signed URL appears in the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_listing_finds_every_change_and_a_failed_part_never_deletes() {
    let mut objects = fixture(3, 1500);
    objects.sort();
    let (server, c, ws) = seeded(&objects).await;
    let extra = "delete = true\n[transfer]\nretries = 1\nlist_partitions = 3\n";
    let spec = ws.seeded_spec("parts", &server.endpoint, "p/", extra);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !text(&out).contains("key ranges"),
        "a first run has no manifest to split by: {}",
        text(&out)
    );

    // Changes at the start, the middle and the end of the key order, so every part has some.
    let n = objects.len();
    let picks: Vec<String> = [1, n / 3, n / 2, 2 * n / 3, n - 2].iter().map(|&i| objects[i].0.clone()).collect();
    for k in [&picks[0], &picks[2], &picks[4]] {
        c.delete_object().bucket("src-bucket").key(k).send().await.unwrap();
    }
    objects.retain(|(k, _)| ![&picks[0], &picks[2], &picks[4]].contains(&k));
    for (k, body) in objects.iter_mut().filter(|(k, _)| *k == picks[1] || *k == picks[3]) {
        *body = format!("rewritten {k}").into_bytes();
        put(&c, "src-bucket", k, body.clone()).await;
    }
    for k in &picks {
        let (key, body) = (format!("{k}.new"), format!("added after {k}").into_bytes());
        put(&c, "src-bucket", &key, body.clone()).await;
        objects.push((key, body));
    }

    // One part's listing fails: whatever the other parts copied, nothing is deleted.
    let failing = FaultProxy::start(
        &server.endpoint,
        vec![Fault {
            op: "ListObjectsV2",
            every: 1,
            after: 2,
            action: Action::Status(500, "InternalError"),
        }],
    );
    let via_proxy = spec_text(
        &failing.endpoint,
        "src-bucket",
        "data/",
        &failing.endpoint,
        "dst-bucket",
        "p/",
        &format!("name = \"parts\"\n{extra}"),
    );
    ws.write_spec("parts", &via_proxy);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("listing the source in key ranges at once partitions=3"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("listing s3://src-bucket/data/ failed"), "{}", text(&out));
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM deletions"), 0);
    for k in [&picks[0], &picks[2], &picks[4]] {
        let dest = format!("p/{}", k.strip_prefix("data/").unwrap());
        assert!(
            get(&c, "dst-bucket", &dest).await.is_some(),
            "{dest} deleted after a failed listing"
        );
    }

    // A complete partitioned listing: the destination and the manifest equal the source.
    ws.seeded_spec("parts", &server.endpoint, "p/", &format!("name = \"parts\"\n{extra}"));
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("partitions=3"), "{}", text(&out));
    assert_converged(&c, &ws, "parts", &objects, "p/").await;
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM deletions"), 3);
    assert_eq!(db_i64(&ws, "SELECT sum(objects_copied) FROM runs WHERE id > 1"), 2 + 5);
    assert_eq!(
        db_i64(&ws, "SELECT objects_listed FROM runs ORDER BY id DESC LIMIT 1") as usize,
        objects.len()
    );
}
