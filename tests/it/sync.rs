//! One-shot sync against a real S3 server (s3s-fs on 127.0.0.1) through the real binary:
//! bytes at the destination, manifest rows, exit codes, re-runs and changed objects.

use crate::util::*;
use s3syncd::fixture::{generate, FixtureSpec};

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

#[tokio::test(flavor = "multi_thread")]
async fn wrong_destination_credentials_fail_each_object_with_exit_1() {
    let s = setup("").await;
    std::fs::write(
        s.ws.path().join("aws-credentials"),
        format!("[src]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n[dst]\naws_access_key_id = {}\naws_secret_access_key = wrong-secret\n", s.server.access_key, s.server.secret_key, s.server.access_key),
    )
    .unwrap();
    let out = run(&s, &["--mode", "direct"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let db = s.ws.sqlite();
    let (status, failed): (String, i64) = db
        .query_row("SELECT status, objects_failed FROM runs", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((status.as_str(), failed as usize), ("partial", s.objects.len()));
    let rows: i64 = db.query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "no manifest row without a verified copy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("wrong-secret") && !stderr.contains(&s.server.secret_key),
        "secrets must not be logged"
    );
}
