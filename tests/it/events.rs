//! Feeds driven by S3 event notifications, on moto (which sends S3's notifications to SQS in
//! server mode): events alone bring uploads, overwrites and deletes; a message outlives a
//! daemon killed before its row commits; a purged queue is caught by the listing run and
//! counted as missed; a burst of events is coalesced; a source without notifications (s3s-fs)
//! is fed by S3-shaped events written to the queue; a stop under throttling keeps what it did
//! not copy in the queue.

use crate::daemon::{eventually, strict, write_spec, Daemon};
use crate::util::*;
use s3syncd_testkit::fs_server::S3Server;
use s3syncd_testkit::moto::Moto;
use s3syncd_testkit::proxy::{Action, Fault, FaultProxy};
use s3syncd_testkit::sqs::{s3_event, Sqs, TestQueue};
use std::time::Duration;

/// A feed from moto's `src/data/` to `dst/bronze/` (at `dst_endpoint`) that follows `queue_url`;
/// its schedule never comes in a test.
fn events_spec(moto: &str, dst_endpoint: &str, queue_url: &str, extra: &str, events_extra: &str) -> String {
    format!(
        "{}\n[source.events]\nqueue_url = \"{queue_url}\"\nprofile = \"src\"\nwindow = \"200ms\"\nvisibility = \"10s\"\n{events_extra}",
        spec_text(
            moto,
            "src",
            "data/",
            dst_endpoint,
            "dst",
            "bronze/",
            &format!("schedule = \"0 0 0 1 1 *\"\n{extra}")
        )
    )
}

fn moto_workspace() -> Workspace {
    let ws = Workspace::new(&[("src", "moto-key", "moto-secret"), ("dst", "moto-key", "moto-secret")]);
    strict(&ws);
    ws
}

/// moto with empty `src` and `dst` buckets, and a queue (its dead-letter queue after
/// `max_receives`) that `src`'s events reach when `notify` is set.
async fn ground(queue: &str, max_receives: u32, notify: bool) -> (Moto, aws_sdk_s3::Client, Sqs, TestQueue) {
    let moto = Moto::start();
    let (c, sqs) = (moto.client(), Sqs::of(&moto.endpoint));
    create_bucket(&c, "src").await;
    create_bucket(&c, "dst").await;
    let q = sqs.queue(queue, max_receives).await;
    if notify {
        sqs.notify(&c, "src", &q.arn).await;
    }
    (moto, c, sqs, q)
}

/// An s3s-fs server with empty `src` and `dst` buckets (s3s-fs sends no notifications: the
/// test writes S3's envelope to the queue), a queue on moto, and a workspace whose `src` and
/// `dst` profiles hold s3s-fs's keys and `queue` moto's.
async fn fs_ground(queue: &str, max_receives: u32) -> (Moto, S3Server, Sqs, TestQueue, Workspace) {
    let (moto, _, sqs, q) = ground(queue, max_receives, false).await;
    let server = S3Server::start();
    let c = server.client();
    create_bucket(&c, "src").await;
    create_bucket(&c, "dst").await;
    let ws = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
        ("queue", "moto-key", "moto-secret"),
    ]);
    strict(&ws);
    (moto, server, sqs, q, ws)
}

/// `events_spec` with the queue read through the `queue` profile.
fn fs_events_spec(src: &str, dst: &str, queue_url: &str, extra: &str) -> String {
    events_spec(src, dst, queue_url, extra, "").replace("profile = \"src\"\nwindow", "profile = \"queue\"\nwindow")
}

/// A daemon started on `ws`, once it follows its feed's queue.
async fn following(ws: &Workspace) -> Daemon {
    let d = Daemon::start(ws);
    assert!(
        eventually(30, || async { d.log().contains("following S3 events") }).await,
        "{}",
        d.log()
    );
    d
}

/// Runs that were not runs of events (the schedules of these tests never come).
const NOT_EVENTS_RUNS: &str = "SELECT count(*) FROM runs WHERE json_extract(details, '$.listing') <> 'events'";

/// Whether every object of `src/data/` is at `dst/bronze/` with its bytes.
async fn arrived<K: AsRef<str>>(c: &aws_sdk_s3::Client, objects: &[(K, Vec<u8>)]) -> bool {
    for (k, b) in objects {
        if get(c, "dst", &k.as_ref().replacen("data/", "bronze/", 1)).await.as_ref() != Some(b) {
            return false;
        }
    }
    true
}

/// Whether the queue empties (nothing waiting, nothing in flight) within `secs` seconds.
async fn drained(sqs: &Sqs, url: &str, secs: u64) -> bool {
    eventually(secs, || async { sqs.counts(url).await == (0, 0) }).await
}

fn count(ws: &Workspace, sql: &str) -> i64 {
    ws.sqlite().query_row(sql, [], |r| r.get(0)).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_overwrites_and_deletes_arrive_through_events_alone() {
    let (moto, c, sqs, q) = ground("bronze-events", 3, true).await;
    let ws = moto_workspace();
    write_spec(
        &ws,
        "feed",
        &events_spec(&moto.endpoint, &moto.endpoint, &q.url, "delete = true\nmax_delete = \"100%\"\n", ""),
    );
    let d = following(&ws).await;
    let keys = ["data/a.bin", "data/b c+d%.bin", "data/x/ü.bin", "data/empty"];
    for (i, k) in keys.iter().enumerate() {
        put(&c, "src", k, if *k == "data/empty" { Vec::new() } else { vec![i as u8; 100 + i] }).await;
    }
    put(&c, "src", "other/outside.bin", b"not ours".to_vec()).await;
    let arrived = || async {
        let mut all = true;
        for (i, k) in keys.iter().enumerate() {
            let want = if *k == "data/empty" { Vec::new() } else { vec![i as u8; 100 + i] };
            all &= get(&c, "dst", &k.replacen("data/", "bronze/", 1)).await == Some(want);
        }
        all
    };
    assert!(eventually(30, arrived).await, "uploads did not arrive\n{}", d.log());
    put(&c, "src", "data/a.bin", b"second version".to_vec()).await;
    c.delete_object().bucket("src").key("data/b c+d%.bin").send().await.unwrap();
    let changed = || async {
        get(&c, "dst", "bronze/a.bin").await.as_deref() == Some(b"second version".as_slice())
            && get(&c, "dst", "bronze/b c+d%.bin").await.is_none()
    };
    assert!(
        eventually(30, changed).await,
        "the overwrite and the delete did not arrive\n{}",
        d.log()
    );
    assert!(drained(&sqs, &q.url, 30).await, "messages left: {:?}", sqs.counts(&q.url).await);
    assert!(list(&c, "dst", "other/").await.is_empty() && list(&c, "dst", "bronze/other").await.is_empty());
    // Every run was a run of events (the schedule never came), and the manifest holds each key once.
    assert_eq!(count(&ws, NOT_EVENTS_RUNS), 0, "every run was a run of events");
    assert!(count(&ws, "SELECT count(*) FROM runs") >= 2);
    assert_eq!(count(&ws, "SELECT count(*) FROM objects"), 3);
    assert_eq!(count(&ws, "SELECT size FROM objects WHERE source_key = 'data/a.bin'"), 14);
    assert_eq!(count(&ws, "SELECT count(*) FROM objects WHERE source_key = 'data/b c+d%.bin'"), 0);
    assert!(d.log().contains("events run done"), "{}", d.log());
}

/// An events run copies through the same paths as a listing run: in `staged`, every size
/// boundary of the single-part and multipart paths and a folder marker arrive byte for byte,
/// each recorded once, and a second round of the same events copies nothing.
#[tokio::test(flavor = "multi_thread")]
async fn staged_copies_every_size_boundary_and_a_folder_marker_through_events() {
    const MIB5: usize = 5 << 20;
    let (moto, c, sqs, q) = ground("bronze-boundaries", 3, true).await;
    let ws = moto_workspace();
    let tuning = "mode = \"staged\"\n[transfer]\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\n";
    write_spec(&ws, "feed", &events_spec(&moto.endpoint, &moto.endpoint, &q.url, tuning, ""));
    let d = following(&ws).await;
    let body = |n: usize| -> Vec<u8> { (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect() };
    let mut objects: Vec<(String, Vec<u8>)> = [0, 1, MIB5 - 1, MIB5, MIB5 + 1, 2 * MIB5 + 1]
        .iter()
        .map(|&n| (format!("data/size-{n}.bin"), body(n)))
        .collect();
    objects.push(("data/day=1/".to_string(), Vec::new()));
    for (k, b) in &objects {
        put(&c, "src", k, b.clone()).await;
    }
    assert!(
        eventually(60, || arrived(&c, &objects)).await,
        "not every object arrived\n{}",
        d.log()
    );
    assert!(drained(&sqs, &q.url, 30).await, "messages left: {:?}", sqs.counts(&q.url).await);
    assert_eq!(count(&ws, "SELECT count(*) FROM objects"), objects.len() as i64);
    assert_eq!(count(&ws, "SELECT count(*) FROM objects WHERE mode <> 'staged'"), 0);
    let copied = "SELECT coalesce(sum(objects_copied), 0) FROM runs";
    assert_eq!(count(&ws, copied), objects.len() as i64);
    // The same events again (S3 may deliver twice): coalesced, or listed and found current;
    // nothing is copied again.
    let keys: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    let again = s3_event("src", &keys, "ObjectCreated:Put", chrono::Utc::now());
    sqs.send(&q.url, &[again]).await;
    assert!(drained(&sqs, &q.url, 30).await, "the repeated events were not settled\n{}", d.log());
    assert_eq!(count(&ws, copied), objects.len() as i64, "{}", d.log());
    assert_eq!(count(&ws, NOT_EVENTS_RUNS), 0, "every run was a run of events");
}

/// A source with no notifications of its own (s3s-fs) fed by events an application writes to
/// the queue: the same envelope, the same runs. Uploads (a 0-byte object and keys that need
/// encoding included) and a delete reach the destination; s3s-fs lists no ETags, so a repeated
/// event finds its key current by size and time and copies nothing.
#[tokio::test(flavor = "multi_thread")]
async fn events_written_to_the_queue_drive_a_feed_from_s3s_fs() {
    let (_moto, server, sqs, q, ws) = fs_ground("fs-events", 3).await;
    let c = server.client();
    let spec = fs_events_spec(&server.endpoint, &server.endpoint, &q.url, "delete = true\nmax_delete = \"100%\"\n");
    write_spec(&ws, "feed", &spec);
    let d = following(&ws).await;
    let objects: Vec<(&str, Vec<u8>)> = vec![
        ("data/a.bin", vec![1; 300]),
        ("data/b c+d%.bin", vec![2; 7]),
        ("data/x/ü.bin", vec![3; 1 << 20]),
        ("data/empty", Vec::new()),
    ];
    for (k, b) in &objects {
        put(&c, "src", k, b.clone()).await;
    }
    let keys: Vec<&str> = objects.iter().map(|(k, _)| *k).collect();
    sqs.send(&q.url, &[s3_event("src", &keys, "ObjectCreated:Put", chrono::Utc::now())])
        .await;
    assert!(
        eventually(30, || arrived(&c, &objects)).await,
        "uploads did not arrive\n{}",
        d.log()
    );
    c.delete_object().bucket("src").key("data/b c+d%.bin").send().await.unwrap();
    // S3 orders a key's events by their sequencer: the delete comes after the upload's.
    let gone = s3_event("src", &["data/b c+d%.bin"], "ObjectRemoved:Delete", chrono::Utc::now())
        .replace("\"sequencer\":\"0000000000000000\"", "\"sequencer\":\"00000000000000FF\"");
    assert!(gone.contains("00000000000000FF"), "{gone}");
    let again = s3_event("src", &["data/a.bin"], "ObjectCreated:Put", chrono::Utc::now());
    sqs.send(&q.url, &[gone, again]).await;
    assert!(
        eventually(30, || async { get(&c, "dst", "bronze/b c+d%.bin").await.is_none() }).await,
        "the delete did not arrive\n{}",
        d.log()
    );
    assert!(
        drained(&sqs, &q.url, 30).await,
        "messages left: {:?}\n{}",
        sqs.counts(&q.url).await,
        d.log()
    );
    assert_eq!(count(&ws, "SELECT coalesce(sum(objects_copied), 0) FROM runs"), 4, "{}", d.log());
    assert_eq!(count(&ws, "SELECT count(*) FROM objects"), 3);
    assert_eq!(count(&ws, NOT_EVENTS_RUNS), 0, "every run was a run of events");
}

/// One SIGTERM to a daemon whose events run is throttled (half the PUT attempts meet
/// SlowDown, so copies queue in the pace): the daemon exits within `shutdown_grace` + 5 s, the
/// run is `interrupted`, every row it recorded is an object with its bytes, and the messages
/// of the keys it did not copy stay in the queue: the next daemon copies them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_ends_a_throttled_events_run_and_its_messages_stay() {
    let (_moto, server, sqs, q, ws) = fs_ground("storm-events", 5).await;
    let c = server.client();
    let objects: Vec<(String, Vec<u8>)> = (0..600)
        .map(|i| (format!("data/o-{i:04}.bin"), vec![(i % 251) as u8; 1024]))
        .collect();
    for (k, b) in &objects {
        put(&c, "src", k, b.clone()).await;
    }
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::share("PutObject", 2, Action::Status(503, "SlowDown"))],
    );
    write_private(
        &ws.config(),
        "spec_dir = \"specs.d\"\nstate_dir = \"state\"\nshutdown_grace = \"2s\"\n",
    );
    let extra = "mode = \"stream\"\n[transfer]\nconcurrency = 64\nretries = 5\n";
    let spec = fs_events_spec(&server.endpoint, &proxy.endpoint, &q.url, extra);
    write_spec(&ws, "feed", &spec);
    let mut d = following(&ws).await;
    let bodies: Vec<String> = objects
        .chunks(10)
        .map(|chunk| {
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            s3_event("src", &keys, "ObjectCreated:Put", chrono::Utc::now())
        })
        .collect();
    sqs.send(&q.url, &bodies).await;
    until(60, "copies recorded under throttling", || {
        ws.recorded() >= 20 && proxy.injected() >= 45
    })
    .await;
    let signalled = std::time::Instant::now();
    d.signal("TERM");
    let exited = eventually(15, || {
        let done = d.child.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    let took = signalled.elapsed();
    assert!(
        exited && took < Duration::from_secs(7),
        "exit took {took:?} with a 2 s grace\n{}",
        d.log()
    );
    let recorded = ws.recorded();
    assert!(recorded < objects.len() as i64, "the run was stopped before its end");
    assert!(
        count(&ws, "SELECT count(*) FROM runs WHERE status = 'interrupted'") >= 1,
        "{}",
        d.log()
    );
    let rows: Vec<(String, String)> = {
        let db = ws.sqlite();
        let mut stmt = db.prepare("SELECT dest_key, source_key FROM objects").unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(Result::unwrap).collect()
    };
    for (dest, source) in &rows {
        let want = &objects.iter().find(|(k, _)| k == source).unwrap().1;
        assert_eq!(get(&c, "dst", dest).await.as_ref(), Some(want), "{dest}");
    }
    let (waiting, held) = sqs.counts(&q.url).await;
    assert!(waiting + held > 0, "the messages of the keys not copied were deleted");
    // Without the fault, the next daemon gets those messages back and copies the rest.
    proxy.set_faults(Vec::new());
    drop(d);
    let d = Daemon::start(&ws);
    assert!(
        eventually(60, || async {
            ws.recorded() == objects.len() as i64 && sqs.counts(&q.url).await == (0, 0)
        })
        .await,
        "recorded {} of {}, queue {:?}\n{}",
        ws.recorded(),
        objects.len(),
        sqs.counts(&q.url).await,
        d.log()
    );
    for (k, b) in objects.iter().step_by(37) {
        assert_eq!(get(&c, "dst", &k.replacen("data/", "bronze/", 1)).await.as_ref(), Some(b), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_between_copy_and_commit_loses_and_doubles_nothing() {
    let (moto, c, sqs, q) = ground("held-events", 5, true).await;
    // The destination has the object, the daemon does not know yet: the window of a kill.
    let proxy = FaultProxy::start(
        &moto.endpoint,
        vec![Fault::always("PutObject", Action::StallAfter(Duration::from_secs(60)))],
    );
    let ws = moto_workspace();
    write_spec(
        &ws,
        "feed",
        &events_spec(&moto.endpoint, &proxy.endpoint, &q.url, "mode = \"stream\"\n", ""),
    );
    let mut d = Daemon::start(&ws);
    // S3's test event, sent when the notification was configured, is read and deleted first.
    assert!(drained(&sqs, &q.url, 30).await, "{}", d.log());
    put(&c, "src", "data/k.bin", vec![7; 1000]).await;
    assert!(
        eventually(30, || async { proxy.seen("PutObject") >= 1 }).await,
        "no copy started\n{}",
        d.log()
    );
    assert!(eventually(10, || async { get(&c, "dst", "bronze/k.bin").await.is_some() }).await);
    d.signal("KILL");
    let _ = d.child.wait();
    assert_eq!(count(&ws, "SELECT count(*) FROM objects"), 0, "recorded before the copy returned");
    let (waiting, in_flight) = sqs.counts(&q.url).await;
    assert_eq!(waiting + in_flight, 1, "the message was deleted before its row committed");
    proxy.set_faults(Vec::new());
    let d = Daemon::start(&ws);
    // The message comes again after its visibility timeout (10 s): the object is copied once more
    // and recorded once.
    assert!(
        eventually(60, || async { count(&ws, "SELECT count(*) FROM objects") == 1 }).await,
        "the event was lost\n{}",
        d.log()
    );
    assert!(drained(&sqs, &q.url, 30).await);
    assert_eq!(count(&ws, "SELECT count(*) FROM history"), 0, "a second version was recorded");
    assert_eq!(count(&ws, "SELECT sum(objects_copied) FROM runs WHERE status = 'ok'"), 1);
    assert_eq!(get(&c, "dst", "bronze/k.bin").await, Some(vec![7; 1000]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purged_queue_is_caught_by_the_listing_run_and_counted_missed() {
    let (moto, c, sqs, q) = ground("lost-events", 3, true).await;
    let ws = moto_workspace();
    let spec = ws.write_spec(
        "feed",
        &events_spec(&moto.endpoint, &moto.endpoint, &q.url, "", "missed_after = \"0s\"\n"),
    );
    put(&c, "src", "data/m1.bin", vec![1; 10]).await;
    put(&c, "src", "data/m2.bin", vec![2; 10]).await;
    sqs.purge(&q.url).await;
    let check = ws.run(&["check", spec.to_str().unwrap()]);
    let check = String::from_utf8_lossy(&check.stdout);
    assert!(check.contains("event queue") && check.contains("0 messages waiting"), "{check}");
    let gone = q.url.replace("lost-events", "no-such-queue");
    let wrong = ws.write_spec("wrong", &events_spec(&moto.endpoint, &moto.endpoint, &gone, "", ""));
    let check = ws.run(&["check", wrong.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert_ne!(check.status.code(), Some(0));
    assert!(said.contains("SQS GetQueueAttributes on") && said.contains("HTTP 400"), "{said}");
    std::fs::remove_file(wrong).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // LastModified has whole seconds on moto
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("events missed 2 objects"), "{stdout}");
    assert_eq!(get(&c, "dst", "bronze/m2.bin").await, Some(vec![2; 10]));
    assert_eq!(count(&ws, "SELECT json_extract(details, '$.events_missed') FROM runs"), 2);
    let status = ws.run(&["manifest", "status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("events: 0 runs copied 0 objects in 24 h, last ended never, the last listing found 2 objects no event had brought"),
        "{status}"
    );
    // The next listing finds nothing new, so nothing missed.
    let again = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("events missed 0 objects"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_ten_thousand_events_for_a_thousand_keys_is_coalesced() {
    // No notification: the objects are there before the events, which the test sends itself.
    let (moto, c, sqs, q) = ground("burst-events", 3, false).await;
    let keys: Vec<String> = (0..1000).map(|i| format!("data/k{i:04}")).collect();
    put_all(&c, "src", keys.iter().map(|k| (k.clone(), k.as_bytes().to_vec())).collect()).await;
    // 1,000 messages of 10 events each, from a minute ago: every key named ten times, in ten
    // messages spread over the queue.
    let at = chrono::Utc::now() - chrono::TimeDelta::minutes(1);
    let bodies: Vec<String> = (0..1000)
        .map(|m| {
            let named: Vec<&str> = (0..10).map(|j| keys[(m * 10 + j * 101) % 1000].as_str()).collect();
            s3_event("src", &named, "ObjectCreated:Put", at)
        })
        .collect();
    sqs.send(&q.url, &bodies).await;
    let ws = moto_workspace();
    write_spec(&ws, "feed", &events_spec(&moto.endpoint, &moto.endpoint, &q.url, "", ""));
    let d = Daemon::start(&ws);
    assert!(
        drained(&sqs, &q.url, 120).await,
        "messages left: {:?}\n{}",
        sqs.counts(&q.url).await,
        d.log()
    );
    assert_eq!(list(&c, "dst", "bronze/").await.len(), 1000);
    assert_eq!(count(&ws, "SELECT count(*) FROM objects"), 1000);
    assert_eq!(count(&ws, "SELECT sum(objects_copied) FROM runs"), 1000, "a key was copied twice");
    // Each key listed once: its later events are covered by that listing.
    assert_eq!(count(&ws, "SELECT sum(json_extract(details, '$.list_parts')) FROM runs"), 1000);
    let runs = count(&ws, "SELECT count(*) FROM runs");
    assert!((1..=100).contains(&runs), "{runs} runs for 1,000 messages");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_that_fails_keeps_its_message_until_it_is_copied() {
    let (moto, c, sqs, q) = ground("denied-events", 5, true).await;
    let proxy = FaultProxy::start(&moto.endpoint, vec![Fault::status("PutObject", 1, 403, "AccessDenied")]);
    let ws = moto_workspace();
    write_spec(
        &ws,
        "feed",
        &events_spec(&moto.endpoint, &proxy.endpoint, &q.url, "mode = \"stream\"\n", ""),
    );
    let d = Daemon::start(&ws);
    assert!(drained(&sqs, &q.url, 30).await, "{}", d.log());
    put(&c, "src", "data/denied.bin", vec![3; 300]).await;
    assert!(
        eventually(30, || async { count(&ws, "SELECT count(*) FROM failures") >= 1 }).await,
        "the copy did not fail\n{}",
        d.log()
    );
    let (waiting, in_flight) = sqs.counts(&q.url).await;
    assert_eq!(waiting + in_flight, 1, "the message of a failed key was deleted");
    proxy.set_faults(Vec::new());
    // It comes again after its visibility timeout (10 s) and is listed again, not taken as current.
    assert!(
        eventually(60, || async { get(&c, "dst", "bronze/denied.bin").await == Some(vec![3; 300]) }).await,
        "{}",
        d.log()
    );
    assert!(drained(&sqs, &q.url, 30).await);
    assert_eq!(count(&ws, "SELECT count(*) FROM objects"), 1);
}
