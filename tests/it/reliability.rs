//! Reliability: faults injected by a real proxy, listing failures and delete guards, SIGKILL at
//! random points, and keys that are data, not paths or URLs.

use crate::util::*;
use s3syncd_testkit::fixture::{generate, FixtureSpec};
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
    // Each rule faults the first attempt at one target (object, part, page) in N, chosen by a
    // seeded hash: no object meets more than one fault, so the default 5 retries always suffice.
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![
            Fault::once_per("*", 40, Action::Status(503, "SlowDown")),
            Fault::once_per("CopyObject", 33, Action::Status(500, "InternalError")),
            Fault::once_per("GetObject", 29, Action::ResetMidBody),
            Fault::once_per("GetObject", 31, Action::Truncate),
            Fault::once_per("PutObject", 37, Action::ResetMidBody),
            Fault::once_per("CopyObject", 43, Action::Truncate),
            Fault::once_per("*", 97, Action::Stall(Duration::from_millis(300))),
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
    // The rules add up to about 16% of first attempts at GetObject and CopyObject targets and
    // 3.5% of the others; retries dilute that. The choice is seeded, so this cannot vary by chance.
    assert!((0.04..0.20).contains(&rate), "{} of {seen} requests faulted", proxy.injected());
    assert_eq!(proxy.most_faults_per_target(), 1, "an object met more than one fault");
    assert_eq!(proxy.injected(), proxy.faulted_targets() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_or_truncated_listing_never_deletes() {
    let objects = fixture(3, 600);
    let (server, c, ws) = seeded(&objects).await;
    let extra = "delete = true\n[transfer]\nretries = 1\n";
    // One proxy for every run: the manifest keys rows by the destination's endpoint.
    let proxy = FaultProxy::start(&server.endpoint, vec![]);
    let spec = ws.seeded_spec("mirror", &proxy.endpoint, "m/", extra);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
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

    // The second source page fails (every ListObjectsV2 after the destination check and the
    // first page): no deletes.
    proxy.set_faults(vec![Fault::always("ListObjectsV2", Action::Status(500, "InternalError")).after(2)]);
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
    proxy.set_faults(vec![Fault::always("ListObjectsV2", Action::TruncatedListingWithoutToken)]);
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

    // A page out of key order (its first two entries swapped): no deletes.
    proxy.set_faults(vec![
        Fault::always("ListObjectsV2", Action::ReorderedListing).only_not_under("/dst-bucket")
    ]);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not in key order"),
        "{}",
        text(&out)
    );
    assert_eq!(
        list(&c, "dst-bucket", "m/").await.len(),
        dest_count,
        "deleted after a listing out of key order"
    );

    // A complete listing: exactly the five are deleted and recorded.
    proxy.set_faults(vec![]);
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

/// The crash test's seed: fixed, so a failure replays; `S3SYNCD_CRASH_SEED` picks another.
fn crash_seed() -> u64 {
    std::env::var("S3SYNCD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_128)
}

/// What the manifest and the staging directory held right after a kill.
#[derive(Debug, Default)]
struct Landed {
    pending: i64,
    uploads: i64,
    staging: usize,
}

/// Kills `s3syncd run` with SIGKILL when the run reaches a window that matters for crash
/// safety, read from what it did (manifest rows, requests the proxy saw), not from a clock.
struct Crash<'a> {
    ws: &'a Workspace,
    spec: std::path::PathBuf,
    proxy: &'a FaultProxy,
}

impl Crash<'_> {
    fn landed(&self) -> Landed {
        let staging = std::fs::read_dir(self.ws.path().join("state/staging/crash")).map_or(0, |d| d.count());
        let counts = rusqlite::Connection::open_with_flags(self.ws.manifest(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).and_then(|db| {
            db.query_row(
                "SELECT count(*) FILTER (WHERE upload_id LIKE 'pending:%'), count(*) FROM uploads",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        });
        let (pending, uploads) = counts.unwrap_or((0, 0));
        Landed { pending, uploads, staging }
    }

    async fn kill_when(&self, mode: &str, window: &str, delay_ms: u64, reached: impl Fn(&Landed) -> bool) -> Landed {
        let mut child = self
            .ws
            .command()
            .args(["run", self.spec.to_str().unwrap(), "--mode", mode])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !reached(&self.landed()) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the {mode} run ended before reaching window {window}"
            );
            assert!(std::time::Instant::now() < deadline, "window {window} not reached in 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        self.landed()
    }
}

/// Four kills, each in its own window: a pending upload row (the create was sent, its id not
/// yet known), a recorded upload id, parts being uploaded, a staging file. Each window is held
/// open at the proxy for seconds, longer than the random delay before the kill, so no kill can
/// miss it. Then a plain run must converge and leave nothing behind.
async fn crashes_land_in_each_window_then_a_run_converges(dest: &str, dc: &aws_sdk_s3::Client, dst_keys: (&str, &str), server: &S3Server) {
    let seed = crash_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut objects = fixture(6, 0);
    for i in 0..4u32 {
        let len = (6u32 << 20) + rng.u32(0..(2 << 20));
        let big: Vec<u8> = (0..len).map(|j| (j.wrapping_mul(2_654_435_761 + i) >> 11) as u8).collect();
        objects.push((format!("data/big/part-{i}.zip"), big));
    }
    let c = server.client();
    create_bucket(&c, "src-bucket").await;
    put_all(&c, "src-bucket", objects.clone()).await;
    create_bucket(dc, "dst-bucket").await;
    // The first CreateMultipartUpload of each key is answered 3 s late: the pending-row window.
    let proxy = FaultProxy::start(
        dest,
        vec![Fault::always("CreateMultipartUpload", Action::StallAfter(Duration::from_secs(3))).times(1)],
    );
    let ws = Workspace::new(&[("src", &server.access_key, &server.secret_key), ("dst", dst_keys.0, dst_keys.1)]);
    let tuning = "[transfer]\nconcurrency = 4\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\nparts_in_flight = 2\n";
    let spec = ws.write_spec(
        "crash",
        &spec_text(&server.endpoint, "src-bucket", "data/", &proxy.endpoint, "dst-bucket", "k/", tuning),
    );
    let crash = Crash {
        ws: &ws,
        spec: spec.clone(),
        proxy: &proxy,
    };
    let at = |what: &str, l: &Landed| eprintln!("seed {seed}: killed at {what}: {l:?}");
    let l = crash
        .kill_when("stream", "pending upload", rng.u64(0..100), |l| l.pending > 0)
        .await;
    at("a pending upload", &l);
    assert!(l.pending > 0, "the kill missed the pending-upload window: {l:?}");
    // The next two windows are held open while the kill lands: parts wait 3 s at the proxy, so
    // the recorded upload and the staging file are there for the whole random delay.
    let hold_parts = || vec![Fault::always("UploadPart", Action::Stall(Duration::from_secs(3)))];
    crash.proxy.set_faults(hold_parts());
    let l = crash
        .kill_when("staged", "recorded upload", rng.u64(0..50), |l| l.uploads > l.pending)
        .await;
    at("a recorded upload", &l);
    assert!(l.uploads > l.pending, "the kill missed the recorded-upload window: {l:?}");
    crash.proxy.set_faults(Vec::new());
    let parts = crash.proxy.seen("UploadPart") + rng.u64(1..=3);
    let l = crash
        .kill_when("stream", "parts uploaded", 0, |_| crash.proxy.seen("UploadPart") >= parts)
        .await;
    at("parts in flight", &l);
    assert!(l.uploads > 0, "the kill missed the upload: {l:?}");
    crash.proxy.set_faults(hold_parts());
    let l = crash.kill_when("staged", "staging file", rng.u64(0..50), |l| l.staging > 0).await;
    crash.proxy.set_faults(Vec::new());
    at("a staging file", &l);
    assert!(l.staging > 0, "the kill missed the staging window: {l:?}");

    let out = ws.run(&["run", spec.to_str().unwrap(), "--mode", "stream"]);
    assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", text(&out));
    assert_converged(dc, &ws, "crash", &objects, "k/").await;
    let staging = ws.path().join("state/staging/crash");
    assert_eq!(std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0), 0, "staging files left");
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM uploads"), 0, "uploads still recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_in_each_crash_window_then_a_run_converges_on_moto() {
    let moto = Moto::start();
    let server = S3Server::start();
    let mc = moto.client();
    crashes_land_in_each_window_then_a_run_converges(&moto.endpoint, &mc, ("moto-key", "moto-secret"), &server).await;
    // moto lists multipart uploads: nothing the killed runs started is left to bill.
    let open = mc.list_multipart_uploads().bucket("dst-bucket").send().await.unwrap();
    assert!(open.uploads().is_empty(), "incomplete multipart uploads left: {:?}", open.uploads());
}

/// s3s-fs has no ListMultipartUploads: recorded upload ids are all the next run has.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_in_each_crash_window_then_a_run_converges_on_s3s_fs() {
    let server = S3Server::start();
    let dst = S3Server::start();
    let keys = (dst.access_key.clone(), dst.secret_key.clone());
    crashes_land_in_each_window_then_a_run_converges(&dst.endpoint, &dst.client(), (&keys.0, &keys.1), &server).await;
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
    // A run at trace level that copies every object again, in both signed directions.
    let spec = ws.write_spec(
        "traced",
        &spec_text(
            &moto.endpoint,
            "src-bucket",
            "data/",
            &moto.endpoint,
            "dst-bucket",
            "trce/",
            "mode = \"stream\"\n",
        ),
    );
    let out = ws
        .command()
        .env("S3SYNCD_LOG", "trace")
        .args(["run", spec.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let copied = db_i64(&ws, "SELECT count(*) FROM objects WHERE spec = 'traced'");
    assert!(copied >= 12, "the traced run copied only {copied} objects");
    let logs = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(logs.len() > 10_000, "expected trace logs");
    for secret_part in [secret, token, "X-Amz-Signature=", "Signature=", "AKIAEXAMPLE"] {
        let line = logs.lines().find(|l| l.contains(secret_part));
        assert!(line.is_none(), "{secret_part:?} appears in the logs: {:.400}", line.unwrap_or(""));
    }
    assert!(
        !logs.to_ascii_lowercase().contains("authorization: aws4"),
        "an Authorization header appears in the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_listing_finds_every_change_and_a_failed_part_never_deletes() {
    let mut objects = fixture(3, 1500);
    objects.sort();
    let (server, c, ws) = seeded(&objects).await;
    let extra = "delete = true\n[transfer]\nretries = 1\nlist_partitions = 3\n";
    let proxy = FaultProxy::start(&server.endpoint, vec![]);
    let spec = ws.seeded_spec("parts", &proxy.endpoint, "p/", extra);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !text(&out).contains("key ranges"),
        "a first run has no manifest to split by: {}",
        text(&out)
    );
    // Its complete listing leaves where the next one cuts its three parts: at page ends (1,000
    // keys) just past a third and two thirds of the keys.
    let n = objects.len();
    assert_eq!(
        db_i64(
            &ws,
            "SELECT json_array_length(list_splits, '$.keys') FROM feeds WHERE spec = 'parts'"
        ),
        2
    );
    for j in 0..2 {
        let cut: String = ws
            .sqlite()
            .query_row(
                &format!("SELECT json_extract(list_splits, '$.keys[{j}]') FROM feeds WHERE spec = 'parts'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        let keys_up_to_cut = objects.iter().position(|(k, _)| *k == cut).unwrap() + 1;
        let third = (j + 1) * n / 3;
        assert!(
            keys_up_to_cut >= third && keys_up_to_cut - third < 1000,
            "cut {j} after {keys_up_to_cut} of {n} keys"
        );
    }

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

    // One part's listing fails (the destination check and two part listings pass): whatever
    // the other parts copied, nothing is deleted.
    proxy.set_faults(vec![Fault::always("ListObjectsV2", Action::Status(500, "InternalError")).after(3)]);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(r#"listing the source in key ranges at once partitions=3 cut_by="last listing""#),
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
    proxy.set_faults(vec![]);
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

/// One run per spec across processes: a second `s3syncd run` of a spec that is running exits 3
/// with a clear message and records nothing; the first finishes normally.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_of_a_running_spec_is_refused() {
    let objects = fixture(2, 0);
    let (server, c, ws) = seeded(&objects).await;
    // The first listing page is held 3 s: the first run is surely still going.
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::always("ListObjectsV2", Action::Stall(Duration::from_secs(3))).times(1)],
    );
    let spec = ws.seeded_spec("once", &proxy.endpoint, "o/", "");
    let first = ws.spawn_run(&spec);
    // The destination check, then the held first page of the source.
    until(20, "the first run lists the source", || proxy.seen("ListObjectsV2") >= 2).await;
    let second = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("spec once is already running in another s3syncd process"),
        "{}",
        text(&second)
    );
    let first = first.await.unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM runs"), 1, "the refused run recorded a run");
    assert_converged(&c, &ws, "once", &objects, "o/").await;
}

/// A copy that fails verification may have overwritten what the manifest vouched for: its old
/// row is dropped, so the manifest never claims an object it cannot prove, and the next run
/// copies it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_overwrite_drops_the_old_row() {
    let objects = fixture(2, 0);
    let (server, c, ws) = seeded(&objects).await;
    let spec = ws.seeded_spec(
        "sums",
        &server.endpoint,
        "s/",
        "mode = \"stream\"\n[verify]\nchecksum_sidecar = \".CHECKSUM\"\n",
    );
    assert_eq!(ws.run(&["run", spec.to_str().unwrap()]).status.code(), Some(0));
    let (key, body) = objects.iter().find(|(k, _)| k.ends_with(".zip")).unwrap();
    let dest = format!("s/{}", key.strip_prefix("data/").unwrap());
    let row = format!("SELECT count(*) FROM objects WHERE dest_key = '{dest}'");
    assert_eq!(db_i64(&ws, &row), 1);
    // Republished with other bytes of the same size; its sidecar still names the old ones.
    let mut other = body.clone();
    other[0] ^= 0xff;
    tokio::time::sleep(Duration::from_millis(1100)).await; // a new LastModified second (s3s-fs lists no ETag)
    put(&c, "src-bucket", key, other).await;
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(db_i64(&ws, &row), 0, "the manifest still vouches for {dest}");
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM failures"), 1);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("failed        1 objects"),
        "tried again: {}",
        text(&out)
    );
}

/// `delete = true` deletes only objects s3syncd copied (rows in its manifest), never an object
/// it did not write, and never after a failed object or an interrupted run.
#[tokio::test(flavor = "multi_thread")]
async fn deletes_spare_foreign_objects_and_wait_for_a_clean_complete_run() {
    let objects = fixture(3, 0);
    let (server, c, ws) = seeded(&objects).await;
    let extra = "name = \"mirror\"\ndelete = true\nmode = \"direct\"\nmax_delete = 10\n";
    let proxy = FaultProxy::start(&server.endpoint, vec![]);
    let spec = ws.seeded_spec("mirror", &proxy.endpoint, "m/", extra);
    assert_eq!(ws.run(&["run", spec.to_str().unwrap()]).status.code(), Some(0));
    put(&c, "dst-bucket", "m/foreign.txt", b"not s3syncd's".to_vec()).await;
    let gone = &objects[0].0;
    let gone_dest = format!("m/{}", gone.strip_prefix("data/").unwrap());
    c.delete_object().bucket("src-bucket").key(gone).send().await.unwrap();
    put(&c, "src-bucket", "data/new-1.zip", b"new one".to_vec()).await;

    // A failed object (its copy refused for good): nothing is deleted.
    proxy.set_faults(vec![
        Fault::always("CopyObject", Action::Status(412, "PreconditionFailed")).only("/new-1.zip")
    ]);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("refused: 1 objects failed in this run"),
        "{}",
        text(&out)
    );
    assert!(get(&c, "dst-bucket", &gone_dest).await.is_some(), "deleted after a failed object");

    // An interrupted run (SIGTERM while a copy is held): nothing is deleted.
    put(&c, "src-bucket", "data/new-2.zip", b"new two".to_vec()).await;
    proxy.set_faults(vec![
        Fault::always("CopyObject", Action::Stall(Duration::from_secs(4))).only("/new-2.zip")
    ]);
    let child = ws
        .command()
        .args(["run", spec.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    until(20, "the held copy starts", || proxy.seen("CopyObject") >= 2).await;
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(db_i64(&ws, "SELECT status = 'interrupted' FROM runs ORDER BY id DESC LIMIT 1"), 1);
    assert!(
        get(&c, "dst-bucket", &gone_dest).await.is_some(),
        "deleted after an interrupted run"
    );
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM deletions"), 0);

    // A clean run deletes exactly the object whose source is gone, and spares the foreign one.
    proxy.set_faults(vec![]);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(get(&c, "dst-bucket", &gone_dest).await.is_none());
    assert_eq!(get(&c, "dst-bucket", "m/foreign.txt").await.as_deref(), Some(&b"not s3syncd's"[..]));
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM deletions"), 1);
}

/// A manifest held by another process (an audit script's `BEGIN EXCLUSIVE`) delays recording,
/// but loses no row: the writer tries each batch again until the database takes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_manifest_delays_recording_but_loses_no_row() {
    let objects = fixture(3, 0);
    let (server, c, ws) = seeded(&objects).await;
    // Copies are held 2 s, so they end while the manifest is locked.
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::always("CopyObject", Action::Stall(Duration::from_secs(2)))],
    );
    let spec = ws.seeded_spec("busy", &proxy.endpoint, "b/", "");
    let run = ws.spawn_run(&spec);
    until(20, "a copy starts", || proxy.seen("CopyObject") > 0).await;
    let db = ws.sqlite();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // Copies end 2 s from now; their batch waits out the 10 s busy timeout, fails, is tried again.
    tokio::time::sleep(Duration::from_secs(17)).await;
    db.execute_batch("COMMIT").unwrap();
    let out = run.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("manifest write failed; trying again"),
        "{}",
        text(&out)
    );
    assert_converged(&c, &ws, "busy", &objects, "b/").await;
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM runs WHERE status = 'ok'"), 1);
}

/// When the manifest stays unwritable for longer than `shutdown_grace`, the run stops starting
/// copies, says how many copied objects it could not record, and exits 3; the next run closes
/// the row the first could not, and records everything.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_stays_locked_stops_the_run_and_the_next_run_closes_its_row() {
    let objects = fixture(3, 0);
    let (server, c, ws) = seeded(&objects).await;
    write_private(
        &ws.config(),
        "spec_dir = \"specs.d\"\nstate_dir = \"state\"\nshutdown_grace = \"2s\"\n",
    );
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::always("CopyObject", Action::Stall(Duration::from_secs(1)))],
    );
    let spec = ws.seeded_spec("locked", &proxy.endpoint, "l/", "[transfer]\nconcurrency = 4\n");
    let run = ws.spawn_run(&spec);
    until(20, "a copy starts", || proxy.seen("CopyObject") > 0).await;
    let db = ws.sqlite();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = run.await.unwrap();
    db.execute_batch("COMMIT").unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("copied objects could not be recorded in the manifest"),
        "{}",
        text(&out)
    );
    let copied = list(&c, "dst-bucket", "l/").await.len();
    assert!(copied < objects.len(), "copies went on: {copied} of {}", objects.len());

    proxy.set_faults(vec![]);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        db_i64(&ws, "SELECT count(*) FROM runs WHERE status = 'running'"),
        0,
        "a run row left running"
    );
    assert_eq!(db_i64(&ws, "SELECT count(*) FROM runs"), 2);
    assert_converged(&c, &ws, "locked", &objects, "l/").await;
}

/// Whatever the umask, s3syncd's files are private: the manifest 0640, locks 0600, staging
/// directories 0700. After a run the WAL is checkpointed: a copy of manifest.db alone is whole.
#[tokio::test(flavor = "multi_thread")]
async fn files_are_private_under_any_umask_and_the_manifest_copies_whole() {
    use std::os::unix::fs::PermissionsExt;
    let objects = fixture(2, 0);
    let (server, _c, ws) = seeded(&objects).await;
    let spec = ws.seeded_spec("modes", &server.endpoint, "u/", "mode = \"staged\"\n");
    let bin = env!("CARGO_BIN_EXE_s3syncd");
    let out = std::process::Command::new("sh")
        .env_clear()
        .envs(ws.command().get_envs().filter_map(|(k, v)| Some((k, v?))))
        .args(["-c", &format!("umask 000; exec '{bin}' run '{}'", spec.display())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mode = |p: &str| std::fs::metadata(ws.path().join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("state/manifest.db"), 0o640);
    assert_eq!(mode("state/locks/modes.lock"), 0o600);
    assert_eq!(mode("state/staging"), 0o700);
    assert_eq!(mode("state/staging/modes"), 0o700);
    assert_eq!(mode("state") & 0o007, 0, "state_dir open to others");

    let copy = ws.path().join("alone.db");
    std::fs::copy(ws.manifest(), &copy).unwrap();
    let alone = rusqlite::Connection::open(&copy).unwrap();
    let rows: i64 = alone.query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).unwrap();
    assert_eq!(rows as usize, objects.len(), "manifest.db alone misses rows still in the WAL");
}

/// `sudo s3syncd run` on the daemon's state would leave root-owned files the daemon cannot use:
/// root is refused on a state_dir another user owns.
#[tokio::test(flavor = "multi_thread")]
async fn root_is_refused_on_another_users_state() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // CI runs as root and says so: there, a run as another user must not pass silently.
        assert!(
            std::env::var_os("S3SYNCD_TESTS_AS_ROOT").is_none(),
            "S3SYNCD_TESTS_AS_ROOT is set but the tests do not run as root"
        );
        eprintln!("not root: nothing to check here (CI runs as root)");
        return;
    }
    let objects = fixture(1, 0);
    let (server, _c, ws) = seeded(&objects).await;
    let spec = ws.seeded_spec("owned", &server.endpoint, "o/", "");
    let state = ws.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("and this is root"), "{}", text(&out));
    assert!(
        !ws.manifest().exists() && !state.join("locks").exists(),
        "root left files in another user's state"
    );
}
