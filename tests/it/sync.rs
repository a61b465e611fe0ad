//! One-shot sync against a real S3 server (s3s-fs on 127.0.0.1) through the real binary:
//! bytes at the destination, manifest rows, exit codes, re-runs and changed objects.

use crate::util::*;
use s3syncd_testkit::fixture::{generate, FixtureSpec};

struct Setup {
    server: S3Server,
    ws: Workspace,
    spec: std::path::PathBuf,
    objects: Vec<(String, Vec<u8>)>,
}

async fn setup(extra: &str) -> Setup {
    let server = S3Server::start();
    let ws = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
    ]);
    let c = server.client();
    create_bucket(&c, "data.binance.vision").await;
    create_bucket(&c, "bronze").await;
    let objects: Vec<(String, Vec<u8>)> = generate(&FixtureSpec::small()).into_iter().map(|o| (o.key, o.body)).collect();
    put_all(&c, "data.binance.vision", objects.clone()).await;
    let spec = ws.write_spec(
        "binance",
        &spec_text(
            &server.endpoint,
            "data.binance.vision",
            "data/",
            &server.endpoint,
            "bronze",
            "binance/archive/",
            extra,
        ),
    );
    Setup { server, ws, spec, objects }
}

fn run(s: &Setup, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", s.spec.to_str().unwrap()];
    args.extend_from_slice(extra);
    s.ws.run(&args)
}

fn dest_key(src: &str) -> String {
    format!("binance/archive/{}", src.strip_prefix("data/").unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_the_fixture_byte_exact_and_records_each_object() {
    let s = setup("").await;
    assert!(s.objects.len() >= 500);
    assert!(s.objects.iter().any(|(k, _)| k.contains(' ')) && s.objects.iter().any(|(k, _)| k.contains('+')));
    assert!(s.objects.iter().any(|(k, _)| k.contains('%')) && s.objects.iter().any(|(k, _)| !k.is_ascii()));

    let out = run(&s, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("copied        {} objects", s.objects.len())), "{stdout}");

    let c = s.server.client();
    for (key, body) in &s.objects {
        let got = get(&c, "bronze", &dest_key(key)).await;
        assert_eq!(got.as_deref(), Some(body.as_slice()), "destination bytes of {key}");
    }
    assert_eq!(
        list(&c, "bronze", "").await.len(),
        s.objects.len(),
        "nothing else at the destination"
    );

    let db = s.ws.sqlite();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM objects WHERE spec = 'binance' AND mode = 'direct'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(rows as usize, s.objects.len());
    for (key, body) in &s.objects {
        let (size, source_key): (i64, String) = db
            .query_row(
                "SELECT size, source_key FROM objects WHERE spec = 'binance' AND dest_key = ?1",
                [dest_key(key)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("manifest row for {key}: {e}"));
        assert_eq!((size as usize, source_key.as_str()), (body.len(), key.as_str()));
    }
    let (status, copied, through_host): (String, i64, i64) = db
        .query_row(
            "SELECT status, objects_copied, bytes_through_host FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((status.as_str(), copied as usize, through_host), ("ok", s.objects.len(), 0));

    // Second run: nothing new, nothing copied, a run row that says so.
    let out = run(&s, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (copied, skipped, listed): (i64, i64, i64) = db
        .query_row(
            "SELECT objects_copied, objects_skipped, objects_listed FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((copied, skipped as usize, listed as usize), (0, s.objects.len(), s.objects.len()));
    let runs: i64 = db.query_row("SELECT count(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(runs, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_objects_of_the_same_size_are_copied_again_and_only_they() {
    let s = setup("").await;
    let out = run(&s, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let c = s.server.client();
    let changed: Vec<&(String, Vec<u8>)> = s.objects.iter().filter(|(k, _)| k.ends_with(".zip")).step_by(50).take(3).collect();
    assert_eq!(changed.len(), 3);
    // A listing's LastModified has millisecond resolution; make sure the rewrite is later.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for (key, body) in &changed {
        let new: Vec<u8> = body.iter().map(|b| b.wrapping_add(1)).collect();
        put(&c, "data.binance.vision", key, new).await;
    }

    let out = run(&s, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let db = s.ws.sqlite();
    let (id, copied): (i64, i64) = db
        .query_row("SELECT id, objects_copied FROM runs ORDER BY id DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(copied, 3, "{}", text(&out));
    let mut stmt = db
        .prepare("SELECT source_key FROM objects WHERE run_id = ?1 ORDER BY source_key")
        .unwrap();
    let recopied: Vec<String> = stmt.query_map([id], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let mut want: Vec<String> = changed.iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(recopied, want);
    for (key, body) in &changed {
        let new: Vec<u8> = body.iter().map(|b| b.wrapping_add(1)).collect();
        assert_eq!(
            get(&c, "bronze", &dest_key(key)).await.unwrap(),
            new,
            "new content of {key} at the destination"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let s = setup("").await;
    let out = run(&s, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("would copy    {} objects", s.objects.len())), "{stdout}");
    assert!(stdout.contains("copy   binance/archive/"), "{stdout}");
    assert!(list(&s.server.client(), "bronze", "").await.is_empty());
    let runs: i64 = s.ws.sqlite().query_row("SELECT count(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(runs, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_select_keys_relative_to_the_source_prefix() {
    let s = setup("[filter]\ninclude = [\"spot/daily/klines/**\"]\nexclude = [\"**/*.CHECKSUM\"]\n").await;
    let out = run(&s, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let want: Vec<String> = s
        .objects
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with("data/spot/daily/klines/") && !k.ends_with(".CHECKSUM"))
        .map(|k| dest_key(&k))
        .collect();
    let mut got: Vec<String> = list(&s.server.client(), "bronze", "").await.into_iter().map(|(k, _)| k).collect();
    got.sort();
    let mut want = want;
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

/// A destination that can take no object (rejected credentials, no such bucket, no server)
/// stops the run at once with one clear error: no object is read from the source first, no
/// row is written, and the run row says why.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_destination_stops_the_run_at_once() {
    let s = setup("").await;
    let source_gets = |ws: &Workspace| -> i64 { ws.sqlite().query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).unwrap() };
    // Credentials the destination rejects.
    std::fs::write(
        s.ws.path().join("aws-credentials"),
        format!("[src]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n[dst]\naws_access_key_id = {}\naws_secret_access_key = wrong-secret\n", s.server.access_key, s.server.secret_key, s.server.access_key),
    )
    .unwrap();
    let out = run(&s, &["--mode", "stream"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("destination s3://bronze/binance/archive/ is unusable, so nothing was copied")
            && stderr.contains("SignatureDoesNotMatch"),
        "{}",
        text(&out)
    );
    assert!(
        !stderr.contains("wrong-secret") && !stderr.contains(&s.server.secret_key),
        "secrets must not be logged"
    );
    assert_eq!(source_gets(&s.ws), 0, "no manifest row without a verified copy");
    let (status, error): (String, String) =
        s.ws.sqlite()
            .query_row("SELECT status, error FROM runs ORDER BY id DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("is unusable"), "{error}");

    // A bucket that does not exist, and a port nobody listens on (one retry, to be quick).
    for (endpoint, bucket, why) in [
        (s.server.endpoint.clone(), "no-such-bucket", "NoSuchBucket"),
        ("http://127.0.0.1:9".to_string(), "bronze", "dispatch failure"),
    ] {
        let spec = s.ws.write_spec(
            "elsewhere",
            &spec_text(
                &s.server.endpoint,
                "data.binance.vision",
                "data/",
                &endpoint,
                bucket,
                "b/",
                "[transfer]\nretries = 1\n",
            ),
        );
        write_private(
            &s.ws.path().join("aws-credentials"),
            &format!("[src]\naws_access_key_id = {k}\naws_secret_access_key = {v}\n\n[dst]\naws_access_key_id = {k}\naws_secret_access_key = {v}\n", k = s.server.access_key, v = s.server.secret_key),
        );
        let started = std::time::Instant::now();
        let out = s.ws.run(&["run", spec.to_str().unwrap(), "--mode", "stream"]);
        assert_eq!(out.status.code(), Some(3), "{why}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{why}: {}", text(&out));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{why}: took {:?}",
            started.elapsed()
        );
    }
    assert!(
        s.ws.sqlite()
            .query_row("SELECT count(*) FROM failures", [], |r| r.get::<_, i64>(0))
            .unwrap()
            == 0
    );
}

/// The manifest knows where each object went. When a spec's destination changes, everything is
/// copied to the new place and the old rows stay, marked with their destination; the same
/// endpoint spelt another way is no change. A changed source skips only what size and ETag
/// prove equal (s3s-fs lists no ETag, so everything is copied again).
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_destination_is_filled_and_the_old_rows_stay() {
    let s = setup("").await;
    assert_eq!(run(&s, &[]).status.code(), Some(0));
    let n = s.objects.len() as i64;
    let c = s.server.client();
    create_bucket(&c, "bronze-two").await;
    let moved = |dst_endpoint: &str, dst_bucket: &str, src_bucket: &str| {
        s.ws.write_spec(
            "binance",
            &spec_text(
                &s.server.endpoint,
                src_bucket,
                "data/",
                dst_endpoint,
                dst_bucket,
                "binance/archive/",
                "",
            ),
        )
    };
    moved(&s.server.endpoint, "bronze-two", "data.binance.vision");
    let out = run(&s, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("copied        {n} objects")),
        "{}",
        text(&out)
    );
    assert_eq!(list(&c, "bronze-two", "binance/archive/").await.len() as i64, n);
    let per_bucket = |b: &str| -> i64 {
        s.ws.sqlite()
            .query_row("SELECT count(*) FROM objects WHERE dest_bucket = ?1", [b], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        (per_bucket("bronze"), per_bucket("bronze-two")),
        (n, n),
        "the old rows stay for the audit"
    );
    let out = s.ws.run(&["manifest", "verify", "--spec", "binance"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The same server spelt as localhost: nothing moved, nothing copied.
    let localhost = s.server.endpoint.replace("127.0.0.1", "localhost");
    moved(&localhost, "bronze-two", "data.binance.vision");
    let out = run(&s, &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("copied        0 objects"),
        "{}",
        text(&out)
    );

    // Another source with the same keys: no ETag in s3s-fs listings proves them equal.
    create_bucket(&c, "mirror-of-binance").await;
    put_all(&c, "mirror-of-binance", s.objects.clone()).await;
    moved(&s.server.endpoint, "bronze-two", "mirror-of-binance");
    let out = run(&s, &["--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(source changed)"), "{}", text(&out));
    let out = run(&s, &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("copied        {n} objects")),
        "{}",
        text(&out)
    );
    let from: String =
        s.ws.sqlite()
            .query_row(
                "SELECT DISTINCT source_bucket FROM objects WHERE dest_bucket = 'bronze-two'",
                [],
                |r| r.get(0),
            )
            .unwrap();
    assert_eq!(from, "mirror-of-binance");
}

/// A manifest of schema 2 (before rows knew their destination) is upgraded in place through
/// every later version, and its rows are adopted by their spec's destination: nothing is
/// copied again.
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_2_manifest_is_upgraded_and_its_rows_adopted() {
    let s = setup("").await;
    assert_eq!(run(&s, &[]).status.code(), Some(0));
    // Turn the manifest back into schema 2, rows and all.
    let db = s.ws.sqlite();
    db.execute_batch(
        "CREATE TABLE objects_v2 (spec TEXT NOT NULL, dest_key TEXT NOT NULL, source_key TEXT NOT NULL, size INTEGER NOT NULL,
           etag TEXT, source_last_modified TEXT, copied_at TEXT NOT NULL, mode TEXT NOT NULL, run_id INTEGER NOT NULL,
           dest_etag TEXT, verified TEXT NOT NULL DEFAULT 'size', PRIMARY KEY (spec, dest_key)) WITHOUT ROWID;
         INSERT INTO objects_v2 SELECT spec, dest_key, source_key, size, etag, source_last_modified, copied_at, mode, run_id, dest_etag, verified FROM objects;
         DROP TABLE objects; ALTER TABLE objects_v2 RENAME TO objects;
         DROP TABLE uploads;
         CREATE TABLE uploads (upload_id TEXT PRIMARY KEY, spec TEXT NOT NULL, bucket TEXT NOT NULL, dest_key TEXT NOT NULL, created_at TEXT NOT NULL);
         CREATE INDEX uploads_by_spec ON uploads (spec);
         ALTER TABLE failures DROP COLUMN code;
         DROP TABLE history; DROP TABLE feeds; DROP TABLE meta; DROP TABLE held; ALTER TABLE runs DROP COLUMN delivered_at;
         PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(db);
    let out = run(&s, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("copied        0 objects"),
        "{}",
        text(&out)
    );
    let db = s.ws.sqlite();
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert!(version >= 3);
    let unadopted: i64 = db
        .query_row("SELECT count(*) FROM objects WHERE dest_bucket != 'bronze'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(unadopted, 0);
}

/// A spec naming a profile that no AWS file defines: `validate` warns with the spec's file,
/// and a run stops at once with one line that says what to do, not a credential-chain dump.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_profile_is_one_clear_line() {
    let s = setup("").await;
    let spec = s.ws.write_spec(
        "binance",
        &spec_text(
            &s.server.endpoint,
            "data.binance.vision",
            "data/",
            &s.server.endpoint,
            "bronze",
            "x/",
            "",
        )
        .replace("profile = \"dst\"", "profile = \"silver\""),
    );
    let out = s.ws.run(&["validate", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "{}: warning: [destination] profile \"silver\" is not defined in",
            spec.display()
        )),
        "{}",
        text(&out)
    );
    let out = run(&s, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("destination: profile \"silver\" is not defined in"),
        "{}",
        text(&out)
    );
    assert!(stderr.lines().count() < 10, "more than one clear line:\n{stderr}");
}

/// `profile = "X"` signs with profile X and nothing else, even when the environment holds
/// another account's keys (the SDK's default chain would put those first).
#[tokio::test(flavor = "multi_thread")]
async fn a_named_profile_wins_over_keys_in_the_environment() {
    let s = setup("").await;
    let out =
        s.ws.command()
            .args(["run", s.spec.to_str().unwrap()])
            .env("AWS_ACCESS_KEY_ID", "AKIAOTHERACCOUNT0001")
            .env("AWS_SECRET_ACCESS_KEY", "the-other-accounts-secret")
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let c = s.server.client();
    for (key, body) in &s.objects {
        assert_eq!(get(&c, "bronze", &dest_key(key)).await.as_ref(), Some(body), "{key}");
    }
    let rows: i64 = s.ws.sqlite().query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).unwrap();
    assert_eq!(rows as usize, s.objects.len());
}
