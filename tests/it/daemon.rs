//! The real daemon binary with a temporary config and spec dir, against a real local S3 server:
//! feeds appear, change, break, disappear and shut down while files and signals come and go.

use crate::util::*;
use s3syncd_testkit::fixture::{generate, FixtureSpec};
use s3syncd_testkit::moto::Moto;
use s3syncd_testkit::proxy::{Action, Fault, FaultProxy};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Daemon {
    pub(crate) child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    pub(crate) fn start(ws: &Workspace) -> Daemon {
        let log = ws.path().join("daemon.log");
        let child = ws
            .command()
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub(crate) fn signal(&self, sig: &str) {
        assert!(std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` for up to `secs` seconds.
pub(crate) async fn eventually<F: std::future::Future<Output = bool>>(secs: u64, mut cond: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

pub(crate) fn strict(ws: &Workspace) {
    std::fs::set_permissions(ws.spec_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub(crate) fn write_spec(ws: &Workspace, name: &str, text: &str) {
    // Write-then-rename, as editors and config management do.
    let tmp = ws.spec_dir().join(format!(".{name}.toml.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, ws.spec_dir().join(format!("{name}.toml"))).unwrap();
}

/// A feed from `src-bucket/data/` to `dst-bucket/{prefix}` on one server, every 2 seconds.
fn every_two_seconds(endpoint: &str, prefix: &str) -> String {
    spec_text(
        endpoint,
        "src-bucket",
        "data/",
        endpoint,
        "dst-bucket",
        prefix,
        "schedule = \"*/2 * * * * *\"\n",
    )
}

fn runs(ws: &Workspace, spec: &str) -> i64 {
    if !ws.manifest().exists() {
        return 0;
    }
    ws.sqlite()
        .query_row("SELECT count(*) FROM runs WHERE spec = ?1", [spec], |r| r.get(0))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn feeds_follow_the_spec_directory() {
    let server = S3Server::start();
    let c = server.client();
    create_bucket(&c, "src-bucket").await;
    create_bucket(&c, "dst-bucket").await;
    let mut f = FixtureSpec::small();
    f.days = 2;
    f.months = 0;
    let objects: Vec<(String, Vec<u8>)> = generate(&f).into_iter().map(|o| (o.key, o.body)).collect();
    put_all(&c, "src-bucket", objects.clone()).await;
    let ws = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
    ]);
    strict(&ws);
    let mut d = Daemon::start(&ws);
    assert!(eventually(10, || async { d.log().contains("daemon started") }).await, "{}", d.log());

    // A new feed with an every-2-seconds schedule: its objects arrive.
    let spec = |prefix: &str| every_two_seconds(&server.endpoint, prefix);
    write_spec(&ws, "feed", &spec("one/"));
    let n = objects.len();
    assert!(
        eventually(20, || async { list(&c, "dst-bucket", "one/").await.len() == n }).await,
        "objects did not arrive\n{}",
        d.log()
    );

    // Edited: a new destination prefix takes effect without a restart.
    write_spec(&ws, "feed", &spec("two/"));
    assert!(
        eventually(20, || async { list(&c, "dst-bucket", "two/").await.len() == n }).await,
        "edit did not take effect\n{}",
        d.log()
    );

    // Broken: logged with file and line; the daemon keeps running the last good version.
    write_spec(&ws, "feed", "schedule = \"*/2 * * * * *\"\n[source\nbucket = 1\n");
    let file = ws.spec_dir().join("feed.toml");
    assert!(
        eventually(10, || async { d.log().contains(&format!("{}:2:", file.display())) }).await,
        "{}",
        d.log()
    );
    let before = runs(&ws, "feed");
    assert!(
        eventually(10, || async { runs(&ws, "feed") >= before + 2 }).await,
        "last good version stopped running\n{}",
        d.log()
    );
    assert!(d.alive());
    assert!(d.log().contains("keeping the last good version"));

    // SIGHUP reloads through the same path.
    d.signal("HUP");
    assert!(
        eventually(10, || async { d.log().contains("SIGHUP: reloading specs") }).await,
        "{}",
        d.log()
    );
    assert!(d.alive());

    // Removed: runs stop.
    std::fs::remove_file(&file).unwrap();
    assert!(
        eventually(10, || async { d.log().contains("spec removed: no longer scheduled") }).await,
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = runs(&ws, "feed");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(runs(&ws, "feed"), settled, "a removed spec kept running\n{}", d.log());

    // Group-writable spec files are refused.
    write_spec(&ws, "loose", &spec("three/"));
    std::fs::set_permissions(ws.spec_dir().join("loose.toml"), std::fs::Permissions::from_mode(0o666)).unwrap();
    d.signal("HUP");
    assert!(
        eventually(10, || async { d.log().contains("loose.toml is writable by group or others") }).await,
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(list(&c, "dst-bucket", "three/").await.is_empty());

    d.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let s = d.child.wait().unwrap();
        (s, d)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "{}", status.1.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_run_records_it_as_interrupted_and_nothing_false() {
    let server = S3Server::start();
    let c = server.client();
    create_bucket(&c, "src-bucket").await;
    create_bucket(&c, "dst-bucket").await;
    let objects: Vec<(String, Vec<u8>)> = generate(&FixtureSpec::small().with_big_folder(400))
        .into_iter()
        .map(|o| (o.key, o.body))
        .collect();
    put_all(&c, "src-bucket", objects.clone()).await;
    let ws = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
    ]);
    strict(&ws);
    // Slow on purpose: one object at a time, streamed, so the run is still going when SIGTERM comes.
    write_spec(
        &ws,
        "big",
        &spec_text(
            &server.endpoint,
            "src-bucket",
            "data/",
            &server.endpoint,
            "dst-bucket",
            "x/",
            "schedule = \"*/2 * * * * *\"\nmode = \"stream\"\n[transfer]\nconcurrency = 1\n",
        ),
    );
    let mut d = Daemon::start(&ws);
    assert!(
        eventually(20, || async { list(&c, "dst-bucket", "x/").await.len() >= 20 }).await,
        "{}",
        d.log()
    );
    d.signal("TERM");
    let (status, d) = tokio::task::spawn_blocking(move || (d.child.wait().unwrap(), d)).await.unwrap();
    assert_eq!(status.code(), Some(0), "{}", d.log());
    let db = ws.sqlite();
    let (status, copied): (String, i64) = db
        .query_row("SELECT status, objects_copied FROM runs ORDER BY id DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(status, "interrupted", "{}", d.log());
    assert!(copied > 0 && (copied as usize) < objects.len());
    let mut stmt = db.prepare("SELECT dest_key FROM objects").unwrap();
    let rows: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert_eq!(rows.len() as i64, copied);
    let sources: std::collections::HashMap<String, &Vec<u8>> = objects
        .iter()
        .map(|(k, b)| (format!("x/{}", k.strip_prefix("data/").unwrap()), b))
        .collect();
    for key in rows {
        assert_eq!(
            get(&c, "dst-bucket", &key).await.as_ref(),
            Some(sources[&key]),
            "manifest row {key} without its bytes at the destination"
        );
    }
}

/// One permission rule in spec loading: `validate` (systemd's ExecStartPre and ExecReload),
/// `run` and the daemon give the same verdict on a world-writable spec and spec directory.
#[tokio::test(flavor = "multi_thread")]
async fn validate_run_and_the_daemon_agree_on_file_permissions() {
    let ws = Workspace::new(&[]);
    strict(&ws);
    // No schedule and no endpoint: nothing here ever sends a request.
    let spec = "[source]\nbucket = \"src-bucket\"\n[destination]\nbucket = \"dst-bucket\"\n";
    write_spec(&ws, "good", spec);
    write_spec(&ws, "open", &spec.replace("dst-bucket", "other-bucket"));
    let open = ws.spec_dir().join("open.toml");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = format!(
        "{}:1:1: {} is writable by group or others (mode 666)",
        open.display(),
        open.display()
    );

    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&refused), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok good ("), "{}", text(&out));
    for arg in [open.to_str().unwrap(), "open"] {
        let out = ws.run(&["run", arg]);
        assert_eq!(out.status.code(), Some(2), "run {arg}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(&refused), "run {arg}: {}", text(&out));
    }
    assert!(!ws.manifest().exists(), "nothing ran");

    let mut d = Daemon::start(&ws);
    assert!(eventually(10, || async { d.log().contains("daemon started") }).await, "{}", d.log());
    assert!(d.log().contains(&refused), "{}", d.log());
    assert!(d.log().contains("spec added") && d.log().contains("spec=good"), "{}", d.log());
    assert!(!d.log().contains("spec=open"), "the refused spec was scheduled\n{}", d.log());
    d.signal("TERM");
    let (status, d) = tokio::task::spawn_blocking(move || (d.child.wait().unwrap(), d)).await.unwrap();
    assert_eq!(status.code(), Some(0), "{}", d.log());

    // A spec directory others may write: validate refuses it, and the daemon does not start.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(ws.spec_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir_refused = format!("{} is writable by group or others (mode 777)", ws.spec_dir().display());
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&dir_refused), "{}", text(&out));
    let out = ws.run(&["daemon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&dir_refused), "{}", text(&out));
    let out = ws.run(&["run", "good"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// When `shutdown_grace` is over, in-flight copies are aborted: the daemon exits promptly, the
/// run is `interrupted`, nothing unverified is recorded, and no multipart upload is left open.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_grace_expiry_aborts_in_flight_uploads() {
    let moto = Moto::start();
    let server = S3Server::start();
    let (c, mc) = (server.client(), moto.client());
    create_bucket(&c, "src-bucket").await;
    create_bucket(&mc, "dst-bucket").await;
    for i in 0..2u32 {
        let big: Vec<u8> = (0..(11u32 << 20)).map(|j| (j.wrapping_mul(2_654_435_761 + i) >> 9) as u8).collect();
        put(&c, "src-bucket", &format!("data/big-{i}.bin"), big).await;
    }
    // Every part upload is held 60 s: copies are surely in flight when the grace period ends.
    let proxy = FaultProxy::start(
        &moto.endpoint,
        vec![Fault::always("UploadPart", Action::Stall(Duration::from_secs(60)))],
    );
    let ws = Workspace::new(&[("src", &server.access_key, &server.secret_key), ("dst", "moto-key", "moto-secret")]);
    strict(&ws);
    write_private(
        &ws.config(),
        "spec_dir = \"specs.d\"\nstate_dir = \"state\"\nshutdown_grace = \"1s\"\n",
    );
    write_spec(
        &ws,
        "held",
        &spec_text(
            &server.endpoint,
            "src-bucket",
            "data/",
            &proxy.endpoint,
            "dst-bucket",
            "h/",
            "schedule = \"*/2 * * * * *\"\nmode = \"stream\"\n[transfer]\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\n",
        ),
    );
    let mut d = Daemon::start(&ws);
    assert!(
        eventually(30, || async { proxy.seen("UploadPart") >= 2 }).await,
        "no part upload started\n{}",
        d.log()
    );
    let t0 = Instant::now();
    d.signal("TERM");
    let (status, d) = tokio::task::spawn_blocking(move || (d.child.wait().unwrap(), d)).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert!(
        took < Duration::from_secs(15),
        "shutdown took {took:?}: the grace period was not enforced\n{}",
        d.log()
    );
    assert!(d.log().contains("grace period over: aborting in-flight transfers"), "{}", d.log());
    let db = ws.sqlite();
    let status: String = db
        .query_row("SELECT status FROM runs ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "interrupted");
    let rows: i64 = db.query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "an unfinished object was recorded");
    let recorded: i64 = db.query_row("SELECT count(*) FROM uploads", [], |r| r.get(0)).unwrap();
    assert_eq!(recorded, 0, "uploads still recorded as open");
    let open = mc.list_multipart_uploads().bucket("dst-bucket").send().await.unwrap();
    assert!(open.uploads().is_empty(), "uploads left open: {:?}", open.uploads());
    assert!(list(&mc, "dst-bucket", "h/").await.is_empty());
}

/// A feed removed while an upload of a killed run was still recorded never runs again to clean
/// it: the daemon aborts it, at the destination recorded with the upload.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_aborts_uploads_that_removed_feeds_left_open() {
    let moto = Moto::start();
    let server = S3Server::start();
    let (c, mc) = (server.client(), moto.client());
    create_bucket(&c, "src-bucket").await;
    create_bucket(&mc, "dst-bucket").await;
    let big: Vec<u8> = (0..(11u32 << 20)).map(|j| (j.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    put(&c, "src-bucket", "data/big.bin", big).await;
    let proxy = FaultProxy::start(
        &moto.endpoint,
        vec![Fault::always("UploadPart", Action::Stall(Duration::from_secs(60)))],
    );
    let ws = Workspace::new(&[("src", &server.access_key, &server.secret_key), ("dst", "moto-key", "moto-secret")]);
    strict(&ws);
    // A one-off run of a spec file outside the spec directory, killed with its upload open.
    let spec = ws.path().join("gone.toml");
    write_private(
        &spec,
        &spec_text(
            &server.endpoint,
            "src-bucket",
            "data/",
            &proxy.endpoint,
            "dst-bucket",
            "g/",
            "mode = \"stream\"\n[transfer]\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\n",
        ),
    );
    let mut child = ws
        .command()
        .args(["run", spec.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(30, || async { proxy.seen("UploadPart") >= 1 }).await,
        "no part upload started"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let open = mc.list_multipart_uploads().bucket("dst-bucket").send().await.unwrap();
    assert_eq!(open.uploads().len(), 1, "the killed run left its upload");

    let mut d = Daemon::start(&ws);
    assert!(
        eventually(20, || async { d.log().contains("aborted multipart uploads of removed feeds") }).await,
        "{}",
        d.log()
    );
    let open = mc.list_multipart_uploads().bucket("dst-bucket").send().await.unwrap();
    assert!(open.uploads().is_empty(), "uploads left open: {:?}", open.uploads());
    let recorded: i64 = ws.sqlite().query_row("SELECT count(*) FROM uploads", [], |r| r.get(0)).unwrap();
    assert_eq!(recorded, 0);
    assert!(d.alive());
}

/// A spec directory that is deleted and created again is watched again: a spec written into
/// the new directory is scheduled without a signal.
#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_spec_directory_is_watched_again() {
    let ws = Workspace::new(&[]);
    strict(&ws);
    let mut d = Daemon::start(&ws);
    assert!(eventually(10, || async { d.log().contains("daemon started") }).await, "{}", d.log());
    std::fs::remove_dir(ws.spec_dir()).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::create_dir(ws.spec_dir()).unwrap();
    strict(&ws);
    // No schedule and no endpoint: scheduling it sends nothing anywhere.
    let spec = "[source]\nbucket = \"src-bucket\"\n[destination]\nbucket = \"dst-bucket\"\n";
    tokio::time::sleep(Duration::from_secs(1)).await;
    write_spec(&ws, "later", spec);
    assert!(
        eventually(20, || async { d.log().contains("spec added spec=later") }).await,
        "the new directory is not watched\n{}",
        d.log()
    );
    assert!(d.alive());
}

/// A spec that is a symbolic link (configuration management keeps the files elsewhere): an
/// edit of its target is a reload, as an edit in the spec directory is.
#[tokio::test(flavor = "multi_thread")]
async fn an_edit_to_the_target_of_a_linked_spec_is_reloaded() {
    let (server, c, ws) = seeded(&[("data/a.csv".to_string(), b"a\n".to_vec())]).await;
    strict(&ws);
    let real = ws.path().join("managed");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let spec = |prefix: &str| every_two_seconds(&server.endpoint, prefix);
    write_private(&real.join("feed.toml"), &spec("one/"));
    std::os::unix::fs::symlink(real.join("feed.toml"), ws.spec_dir().join("feed.toml")).unwrap();
    let d = Daemon::start(&ws);
    assert!(
        eventually(20, || async { list(&c, "dst-bucket", "one/").await.len() == 1 }).await,
        "{}",
        d.log()
    );
    write_private(&real.join("feed.toml"), &spec("two/"));
    assert!(
        eventually(20, || async { list(&c, "dst-bucket", "two/").await.len() == 1 }).await,
        "the edit of the link's target was not noticed\n{}",
        d.log()
    );
}

/// Runs that a dead process left `running` are closed by the daemon at start (`interrupted`,
/// with why), so that audits never show a run going on that is not.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_closes_runs_a_dead_process_left_running() {
    let (server, _c, ws) = seeded(&[("data/a.csv".to_string(), b"a\n".to_vec())]).await;
    strict(&ws);
    let spec = ws.seeded_spec("feed", &server.endpoint, "in/", "");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    ws.sqlite()
        .execute(
            "INSERT INTO runs (spec, started_at, status) VALUES ('feed', '2026-01-01T00:00:00.000Z', 'running')",
            [],
        )
        .unwrap();
    let d = Daemon::start(&ws);
    assert!(eventually(10, || async { d.log().contains("daemon started") }).await, "{}", d.log());
    let (status, error): (String, String) = ws
        .sqlite()
        .query_row("SELECT status, error FROM runs WHERE id = 2", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(status, "interrupted", "{}", d.log());
    assert!(error.contains("ended before it could record its end"), "{error}");
}
