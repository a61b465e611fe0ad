//! The product tried as a hostile or careless operator would, on real servers: a stop under
//! throttling ends within the grace, a run that fails before copying is told and judged for
//! freshness, a change feed whose files cannot be written says so and keeps its order, and a
//! rebuilt manifest never overwrites an earlier file.

use crate::lake::is_run_file;
use crate::util::*;
use s3syncd_testkit::{
    proxy::{Action, Fault, FaultProxy},
    receiver::Receiver,
};
use std::time::{Duration, Instant};

fn small(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("data/{i:05}.csv"), format!("row {i}\n").into_bytes()))
        .collect()
}

fn grace(ws: &Workspace, grace: &str) {
    write_private(
        &ws.config(),
        &format!("spec_dir = \"specs.d\"\nstate_dir = \"state\"\nshutdown_grace = \"{grace}\"\n"),
    );
}

/// One SIGTERM to `s3syncd run` while half the PUT attempts meet SlowDown (a share that does
/// not move with the rate: the pace slows far down, and copies queue for their turn): the run
/// exits within `shutdown_grace` + 5 s (it took 57 s when queued copies ignored the stop),
/// `interrupted`, and every row it recorded is an object at the destination with its bytes.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_ends_a_throttled_run_within_the_grace() {
    let objects = small(1500);
    let (server, c, ws) = seeded(&objects).await;
    grace(&ws, "2s");
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::share("PutObject", 2, Action::Status(503, "SlowDown"))],
    );
    let extra = "mode = \"stream\"\n[transfer]\nconcurrency = 64\nretries = 5\n";
    let spec = ws.seeded_spec("storm", &proxy.endpoint, "in/", extra);
    let child = ws
        .command()
        .args(["run", spec.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    // Once 45 SlowDowns came back the pace has slowed to a few attempts a second, and most
    // copies wait for their turn in it.
    until(60, "copies recorded under throttling", || {
        ws.recorded() >= 20 && proxy.injected() >= 45
    })
    .await;
    let signalled = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(7),
        "exit took {took:?} after SIGTERM with a 2 s grace\n{}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let db = ws.sqlite();
    let status: String = db.query_row("SELECT status FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "interrupted");
    let mut stmt = db.prepare("SELECT dest_key, source_key FROM objects").unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(rows.len() < objects.len(), "the run was stopped before the end");
    for (dest, source) in &rows {
        let want = &objects.iter().find(|(k, _)| k == source).unwrap().1;
        assert_eq!(get(&c, "dst-bucket", dest).await.as_ref(), Some(want), "{dest}");
    }
}

/// Runs that fail before copying anything (no destination bucket) reach the same end as any
/// other: a `failed` notification with the cause, and the freshness check (`stale`).
#[tokio::test(flavor = "multi_thread")]
async fn a_run_failing_before_copying_is_told_and_turns_the_feed_stale() {
    let (server, _c, ws) = seeded(&small(3)).await;
    let receiver = Receiver::start(vec![200]);
    let extra = format!(
        "stale_after = \"1s\"\n[[notify]]\nurl = \"{}\"\nevents = [\"failed\", \"stale\"]\n",
        receiver.url
    );
    let text_spec = spec_text(
        &server.endpoint,
        "src-bucket",
        "data/",
        &server.endpoint,
        "no-such-bucket",
        "in/",
        &extra,
    );
    let spec = ws.write_spec("gone", &text_spec);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let got = receiver.received();
    assert_eq!(got.len(), 1, "one failed notification");
    let body = got[0].json();
    assert_eq!((body["event"].as_str(), body["status"].as_str()), (Some("failed"), Some("failed")));
    assert!(body["error"].as_str().unwrap().contains("no-such-bucket"), "{body}");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with("s3syncd: feed gone run 1 failed: destination s3://no-such-bucket/in/"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // Each notification is sent on its own: they may arrive in either order.
    let mut events: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    events.sort();
    assert_eq!(events, ["failed", "failed", "stale"], "a feed whose bucket vanished turns stale");
    let status = String::from_utf8_lossy(&ws.run(&["manifest", "status"]).stdout).into_owned();
    assert!(status.contains("STALE since"), "{status}");
}

/// The files of a feed's runs, as a consumer lists them, in name order.
async fn feed_files(c: &aws_sdk_s3::Client) -> Vec<String> {
    let mut names: Vec<String> = list(c, "dst-bucket", "_s3syncd/deliveries/feed/")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    names.sort();
    names
}

/// A consumer as docs/lakehouse.md says: keep the name of the last file loaded; load every
/// file whose name sorts after it, in name order. Returns the keys it loaded.
struct Consumer {
    last: String,
    loaded: Vec<String>,
}

impl Consumer {
    async fn poll(&mut self, c: &aws_sdk_s3::Client) {
        let last = self.last.clone();
        for name in feed_files(c).await.into_iter().filter(|n| *n > last) {
            let body = String::from_utf8(get(c, "dst-bucket", &name).await.unwrap()).unwrap();
            for line in body.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()) {
                if let Some(k) = line["dest_key"].as_str() {
                    self.loaded.push(k.to_string());
                }
            }
            self.last = name;
        }
    }
}

/// Delivery files refused by the destination: each run says so (`partial`, exit 1, a
/// `delivery_failed` notification, `manifest status`); no later file lands before an earlier
/// one, and a consumer that follows the documented protocol loads every object once.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_delivery_is_told_and_later_files_wait_for_it() {
    let (server, c, ws) = seeded(&small(3)).await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::always("PutObject", Action::Status(403, "AccessDenied")).only(".jsonl")],
    );
    let receiver = Receiver::start(vec![200]);
    let extra = format!(
        "mode = \"direct\"\n[deliveries]\nprefix = \"_s3syncd/deliveries/\"\n[[notify]]\nurl = \"{}\"\nevents = [\"delivery_failed\", \"partial\", \"ok\"]\n",
        receiver.url
    );
    let spec = ws.seeded_spec("feed", &proxy.endpoint, "in/", &extra);
    let run = |code: i32| {
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    };
    let mut consumer = Consumer {
        last: String::new(),
        loaded: Vec::new(),
    };
    run(1);
    put_all(&c, "src-bucket", vec![("data/late.csv".into(), b"late\n".to_vec())]).await;
    run(1);
    consumer.poll(&c).await;
    assert!(consumer.loaded.is_empty(), "no file lands while an earlier one cannot");
    let db = ws.sqlite();
    let rows: Vec<(String, String)> = db
        .prepare("SELECT status, error FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows[0].0, "partial");
    assert!(
        rows[0].1.contains("delivery file of run 1 not written") && rows[0].1.contains("AccessDenied"),
        "{rows:?}"
    );
    assert!(
        rows[1].1.contains("delivery file of run 1 not written") && rows[1].1.contains("2 runs' files wait"),
        "{rows:?}"
    );
    let status = String::from_utf8_lossy(&ws.run(&["manifest", "status"]).stdout).into_owned();
    assert!(status.contains("2 runs UNDELIVERED"), "{status}");
    let failed: Vec<serde_json::Value> = receiver
        .received()
        .iter()
        .map(|r| r.json())
        .filter(|b| b["event"] == "delivery_failed")
        .collect();
    assert_eq!(failed.len(), 2, "one delivery_failed per run");
    assert_eq!(
        (failed[1]["undelivered_run_id"].as_i64(), failed[1]["runs_waiting"].as_u64()),
        (Some(1), Some(2))
    );

    // The destination takes files again: the three land in run order, and the run is ok.
    proxy.set_faults(vec![]);
    put_all(&c, "src-bucket", vec![("data/later.csv".into(), b"later\n".to_vec())]).await;
    run(0);
    let files = feed_files(&c).await;
    assert_eq!(files.len(), 3, "{files:?}");
    for (i, f) in files.iter().enumerate() {
        assert!(is_run_file(f, i as i64 + 1), "file {i} is run {}'s: {files:?}", i + 1);
    }
    consumer.poll(&c).await;
    let mut loaded = consumer.loaded.clone();
    loaded.sort();
    let mut want: Vec<String> = (0..3).map(|i| format!("in/{i:05}.csv")).collect();
    want.extend(["in/late.csv".to_string(), "in/later.csv".to_string()]);
    want.sort();
    assert_eq!(loaded, want, "every object loaded once");
}

/// A wiped state directory restarts run ids at 1: the new manifest's files take new names
/// (no file is overwritten) that sort after the earlier ones.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuilt_manifest_never_overwrites_a_delivery_file() {
    let (server, c, ws) = seeded(&small(2)).await;
    let extra = "[deliveries]\nprefix = \"_s3syncd/deliveries/\"\n";
    let spec = ws.seeded_spec("feed", &server.endpoint, "in/", extra);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = feed_files(&c).await;
    assert_eq!(first.len(), 1);
    let first_body = get(&c, "dst-bucket", &first[0]).await.unwrap();
    std::fs::remove_dir_all(ws.path().join("state")).unwrap();
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let files = feed_files(&c).await;
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0], first[0], "the earlier file sorts first");
    assert!(is_run_file(&files[1], 1), "the new manifest's run 1: {files:?}");
    assert_eq!(
        get(&c, "dst-bucket", &first[0]).await.unwrap(),
        first_body,
        "the earlier file is untouched"
    );
}

/// AWS_PROFILE naming a profile that no file defines, for sides without `profile`: one line
/// that names it (not the SDK's chain dump), exit 3, in the run row too.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_profile_from_the_environment_is_named_in_one_line() {
    let (server, _c, ws) = seeded(&small(1)).await;
    let spec = ws.write_spec(
        "ghost",
        &format!(
            "[source]\nbucket = \"src-bucket\"\nendpoint = \"{0}\"\n[destination]\nbucket = \"dst-bucket\"\nprefix = \"in/\"\nendpoint = \"{0}\"\n",
            server.endpoint
        ),
    );
    let out = ws
        .command()
        .env("AWS_PROFILE", "ghost")
        .args(["run", spec.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("profile \"ghost\" (from AWS_PROFILE) is not defined in"),
        "{}",
        text(&out)
    );
    let error: String = ws.sqlite().query_row("SELECT error FROM runs", [], |r| r.get(0)).unwrap();
    assert!(error.contains("(from AWS_PROFILE)") && error.len() < 400, "{error}");
}

/// `check --write` probes every place a run writes: a delivery prefix and `keep_previous` that
/// refuse writes fail the check, though the destination prefix takes them.
#[tokio::test(flavor = "multi_thread")]
async fn check_write_probes_the_delivery_prefix_and_keep_previous() {
    let (server, c, ws) = seeded(&small(1)).await;
    let proxy = FaultProxy::start(&server.endpoint, vec![]);
    let extra = "keep_previous = \"_previous/\"\n[deliveries]\nprefix = \"_s3syncd/deliveries/\"\n";
    let spec = ws.seeded_spec("feed", &proxy.endpoint, "in/", extra);
    let out = ws.run(&["check", spec.to_str().unwrap(), "--write"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "ok    destination writes: put and deleted \"in/.s3syncd-check-",
        "ok    delivery writes: put and deleted \"_s3syncd/deliveries/feed/.s3syncd-check-",
        "ok    keep_previous writes: put and deleted \"_previous/.s3syncd-check-",
    ] {
        assert!(said.contains(want), "{want:?} in\n{said}");
    }
    // Writes refused outside the destination prefix (a policy that grants `in/*` only).
    proxy.set_faults(vec![
        Fault::always("PutObject", Action::Status(403, "AccessDenied")).only_not_under("/dst-bucket/in/")
    ]);
    let out = ws.run(&["check", spec.to_str().unwrap(), "--write"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("ok    destination writes"), "{said}");
    assert!(
        said.contains("fail  delivery writes: PutObject \"_s3syncd/deliveries/feed/.s3syncd-check-"),
        "{said}"
    );
    assert!(
        said.contains("fail  keep_previous writes: PutObject \"_previous/.s3syncd-check-"),
        "{said}"
    );
    assert!(list(&c, "dst-bucket", "").await.is_empty(), "no probe left");
}

/// A clock the destination refuses (RequestTimeTooSkewed) fails the run at once, exit 3, with
/// the cause: no object is read from the source to fail one by one.
#[tokio::test(flavor = "multi_thread")]
async fn a_skewed_clock_fails_the_run_at_once() {
    let (server, c, ws) = seeded(&small(5)).await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::always("*", Action::Status(403, "RequestTimeTooSkewed")).only_not_under("/src-bucket")],
    );
    let spec = ws.seeded_spec("skew", &proxy.endpoint, "in/", "");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let error: String = ws.sqlite().query_row("SELECT error FROM runs", [], |r| r.get(0)).unwrap();
    assert!(error.contains("RequestTimeTooSkewed") && error.contains("is unusable"), "{error}");
    let read: Vec<_> = proxy
        .targets("GetObject")
        .into_iter()
        .filter(|(t, _)| t.len() > "/src-bucket/".len() && t.starts_with("/src-bucket/"))
        .collect();
    assert!(read.is_empty(), "no object was read: {read:?}");
    assert!(list(&c, "dst-bucket", "in/").await.is_empty());
}

/// A destination that refuses to list (a write-only role) is no reason to stop: the run goes
/// on, copies everything, and says why it could not list.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_only_destination_goes_on() {
    let objects = small(5);
    let (server, c, ws) = seeded(&objects).await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::always("ListObjectsV2", Action::Status(403, "AccessDenied")).only_not_under("/src-bucket")],
    );
    let spec = ws.seeded_spec("wo", &proxy.endpoint, "in/", "");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot list the destination; going on"),
        "{}",
        text(&out)
    );
    assert_eq!(list(&c, "dst-bucket", "in/").await.len(), objects.len());
}

/// `keep_previous` refused: the republished object fails and is not overwritten; the
/// destination and the manifest keep the version they had, and the next run tries again.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_keep_previous_leaves_the_object_untouched() {
    let (server, c, ws) = seeded(&small(2)).await;
    let proxy = FaultProxy::start(&server.endpoint, vec![]);
    let spec = ws.seeded_spec(
        "keep",
        &proxy.endpoint,
        "in/",
        "mode = \"stream\"\nkeep_previous = \"_previous/\"\n",
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    put_all(&c, "src-bucket", vec![("data/00000.csv".into(), b"republished\n".to_vec())]).await;
    proxy.set_faults(vec![Fault::always("CopyObject", Action::Status(403, "AccessDenied"))]);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        get(&c, "dst-bucket", "in/00000.csv").await.as_deref(),
        Some(&b"row 0\n"[..]),
        "not overwritten"
    );
    let run_id: i64 = ws
        .sqlite()
        .query_row("SELECT run_id FROM objects WHERE dest_key = 'in/00000.csv'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(run_id, 1, "the manifest keeps the version it had");
    proxy.set_faults(vec![]);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(get(&c, "dst-bucket", "in/00000.csv").await.as_deref(), Some(&b"republished\n"[..]));
    assert_eq!(
        get(&c, "dst-bucket", "_previous/run-3/in/00000.csv").await.as_deref(),
        Some(&b"row 0\n"[..])
    );
}

/// A new manifest is made at the current schema in one step: one log line, not one per
/// upgrade.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_manifest_is_created_in_one_step() {
    let (server, _c, ws) = seeded(&small(1)).await;
    let spec = ws.seeded_spec("fresh", &server.endpoint, "in/", "");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("manifest created").count(), 1, "{log}");
    assert!(!log.contains("schema upgraded"), "{log}");
    let version: i64 = ws.sqlite().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert!(version >= 7, "{version}");
}

/// Symbolic links planted in the staging directory, named as the run's staging files would be
/// and pointing at a file of the host: the run removes them without following them, copies
/// every object, and the file they pointed at keeps its bytes.
#[tokio::test(flavor = "multi_thread")]
async fn links_planted_in_staging_are_removed_not_followed() {
    let objects = small(3);
    let (server, c, ws) = seeded(&objects).await;
    let victim = ws.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let staging = ws.path().join("state/staging/planted");
    std::fs::create_dir_all(&staging).unwrap();
    for n in 0..3 {
        std::os::unix::fs::symlink(&victim, staging.join(format!("1-{n}.part"))).unwrap();
    }
    let spec = ws.seeded_spec("planted", &server.endpoint, "in/", "mode = \"staged\"\n");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(list(&c, "dst-bucket", "in/").await.len(), objects.len());
    let left: Vec<_> = std::fs::read_dir(&staging).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
}
