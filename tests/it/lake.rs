//! Feeding the lakehouse, on real servers: each run's delivery file lists exactly what it
//! copied, replaced and deleted; a killed run's file is written later, marked incomplete;
//! notifications arrive signed and retried, and a dead receiver does not hold up the exit; a
//! quiet feed turns stale once and fresh again; a republished object leaves a history row
//! and, with `keep_previous`, its old bytes.

use crate::util::*;
use s3syncd_testkit::{
    moto::Moto,
    proxy::{Action, Fault, FaultProxy},
    receiver::Receiver,
};
use std::time::{Duration, Instant};

fn objects() -> Vec<(String, Vec<u8>)> {
    ["a.csv", "b.csv", "c.csv", "d.csv"]
        .iter()
        .map(|k| (format!("data/{k}"), format!("first version of {k}\n").into_bytes()))
        .collect()
}

/// The lines of a delivery file: the object lines (sorted by key and action) and the summary.
fn parse(text: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary = lines.pop().expect("a summary line");
    assert_eq!(summary["summary"], true, "the last line is the summary: {text}");
    (lines, summary)
}

fn actions(lines: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["dest_key"].as_str().unwrap().to_string(),
                l["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Whether a delivery file's name (or key) is run `run`'s: `{start}-{run:010}-{manifest id}.jsonl`.
pub fn is_run_file(name: &str, run: i64) -> bool {
    name.ends_with(".jsonl") && name.contains(&format!("-{run:010}-"))
}

/// The file of run `run` in a `[deliveries] dir`'s spec folder.
fn run_file(dir: &std::path::Path, run: i64) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| is_run_file(&p.file_name().unwrap().to_string_lossy(), run))
}

fn pair(k: &str, a: &str) -> (String, String) {
    (k.to_string(), a.to_string())
}

/// Deliveries in the destination bucket, history, `keep_previous`, `manifest changes` and
/// `history`, and signed notifications (the receiver fails the first post: it is retried).
#[tokio::test(flavor = "multi_thread")]
async fn each_run_delivers_what_it_changed_and_keeps_what_upstream_replaced() {
    let moto = Moto::start();
    let c = moto.client();
    create_bucket(&c, "src-bucket").await;
    create_bucket(&c, "dst-bucket").await;
    // Besides the CSVs, an empty object under a key that is data, never a path or a URL.
    let tricky = "data/z é+%#?.csv";
    put_all(&c, "src-bucket", objects()).await;
    put_all(&c, "src-bucket", vec![(tricky.into(), Vec::new())]).await;
    let receiver = Receiver::start(vec![500, 200]);
    let ws = Workspace::new(&[("src", "k", "s"), ("dst", "k", "s")]);
    let secret = ws.path().join("notify.secret");
    write_private(&secret, "hook-secret\n");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let extra = format!(
        "delete = true\nmax_delete = 10\nkeep_previous = \"_previous/\"\n\
         [deliveries]\nprefix = \"_s3syncd/deliveries/\"\n\
         [[notify]]\nurl = \"{}\"\nevents = [\"ok\", \"partial\", \"failed\", \"revised\"]\nsecret_file = \"../notify.secret\"\n",
        receiver.url
    );
    let spec = ws.seeded_spec("lake", &moto.endpoint, "in/", &extra);
    let run = |ws: &Workspace| {
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    };
    let delivery = |run: i64| {
        let c = c.clone();
        async move {
            let files = list(&c, "dst-bucket", "_s3syncd/deliveries/lake/").await;
            let key = files.into_iter().map(|(k, _)| k).find(|k| is_run_file(k, run))?;
            get(&c, "dst-bucket", &key).await
        }
    };
    run(&ws);
    let (lines, summary) = parse(&String::from_utf8(delivery(1).await.expect("run 1's delivery")).unwrap());
    let mut want: Vec<_> = ["a", "b", "c", "d"].map(|k| pair(&format!("in/{k}.csv"), "new")).to_vec();
    want.push(pair("in/z é+%#?.csv", "new"));
    assert_eq!(actions(&lines), want);
    assert_eq!(
        (summary["complete"].as_bool(), summary["new"].as_u64(), summary["run_id"].as_i64()),
        (Some(true), Some(5), Some(1))
    );
    assert_eq!(lines[0]["source_key"], "data/a.csv");
    assert_eq!(
        (lines[4]["source_key"].as_str(), lines[4]["size"].as_u64()),
        (Some(tricky), Some(0))
    );
    assert!(lines[..4]
        .iter()
        .all(|l| l["size"].as_u64().unwrap() > 0 && l["etag"].is_string() && l["mode"].is_string()));

    // Upstream: a.csv republished (other bytes), b.csv withdrawn, e.csv published.
    put_all(
        &c,
        "src-bucket",
        vec![("data/a.csv".into(), b"second version of a.csv, corrected\n".to_vec())],
    )
    .await;
    c.delete_object().bucket("src-bucket").key("data/b.csv").send().await.unwrap();
    put_all(&c, "src-bucket", vec![("data/e.csv".into(), b"e\n".to_vec())]).await;
    put_all(&c, "src-bucket", vec![(tricky.into(), b"no longer empty\n".to_vec())]).await;
    run(&ws);
    let (lines, summary) = parse(&String::from_utf8(delivery(2).await.expect("run 2's delivery")).unwrap());
    assert_eq!(
        actions(&lines),
        [
            pair("in/a.csv", "changed"),
            pair("in/b.csv", "deleted"),
            pair("in/e.csv", "new"),
            pair("in/z é+%#?.csv", "changed")
        ]
    );
    assert_eq!(
        (summary["new"].as_u64(), summary["changed"].as_u64(), summary["deleted"].as_u64()),
        (Some(1), Some(2), Some(1))
    );
    assert_eq!(
        get(&c, "dst-bucket", "_previous/run-2/in/z é+%#?.csv").await.as_deref(),
        Some(&b""[..]),
        "the empty version of the tricky key is kept under its own name"
    );
    // The replaced bytes are kept, under a name no other key can take.
    assert_eq!(
        get(&c, "dst-bucket", "_previous/run-2/in/a.csv").await.as_deref(),
        Some(&b"first version of a.csv\n"[..])
    );
    let history = ws.run(&["manifest", "history", "in/a.csv", "--spec", "lake"]);
    let versions: Vec<serde_json::Value> = String::from_utf8_lossy(&history.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(versions.len(), 2, "{}", text(&history));
    assert_eq!(
        (versions[0]["state"].as_str(), versions[0]["size"].as_u64()),
        (Some("changed"), Some(23))
    );
    assert_eq!(versions[0]["kept_key"], "_previous/run-2/in/a.csv");
    assert_eq!(
        (versions[1]["state"].as_str(), versions[1]["run_id"].as_i64()),
        (Some("current"), Some(2))
    );
    // `manifest changes` gives the same records as the files.
    let since = ws.run(&["manifest", "changes", "--spec", "lake", "--since-run", "1"]);
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&since.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records, lines, "{}", text(&since));

    // Nothing new: no file.
    run(&ws);
    assert_eq!(delivery(3).await, None, "a run that changed nothing delivers nothing");

    // Notifications: ok (x3), revised; the first post met a 500 and was sent again.
    let got = receiver.received();
    let events: Vec<String> = got.iter().map(|r| r.json()["event"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(events.iter().filter(|e| *e == "ok").count(), 4, "{events:?}"); // 3 runs + the retried first
    assert_eq!(got[0].answered, Some(500));
    assert_eq!(got[0].body, got[1].body, "the retry sends the same body");
    let revised = got.iter().find(|r| r.json()["event"] == "revised").expect("a revised event");
    assert_eq!(revised.json()["revised"][0]["dest_key"], "in/a.csv");
    for r in &got {
        let want = s3syncd_sign(b"hook-secret", &r.body);
        assert_eq!(r.header("x-s3syncd-signature"), Some(want.as_str()));
        assert!(r.json()["text"].as_str().unwrap().starts_with("s3syncd: feed lake"));
    }
}

/// HMAC-SHA256 as a receiver computes it, from the RFC's definition (not s3syncd's code).
fn s3syncd_sign(key: &[u8], body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(body).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    format!("sha256={}", hex::encode(outer))
}

/// A run killed outright: its file is written when the next run starts, marked incomplete,
/// with exactly the objects it recorded; the next run's file has the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_gets_an_incomplete_delivery_with_what_it_recorded() {
    let (server, _c, ws) = seeded(&objects()).await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::always("GetObject", Action::Stall(Duration::from_secs(60))).only("d.csv")],
    );
    let dir = ws.path().join("deliveries");
    let extra = format!("mode = \"stream\"\n[deliveries]\ndir = \"{}\"\n", dir.display());
    let spec = ws.seeded_spec("killed", &proxy.endpoint, "in/", &extra);
    let mut child = ws
        .command()
        .args(["run", spec.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until(60, "three objects recorded", || ws.recorded() == 3).await;
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    assert!(run_file(&dir.join("killed"), 1).is_none(), "a killed run writes nothing itself");
    proxy.set_faults(vec![]);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (lines, summary) = parse(&std::fs::read_to_string(run_file(&dir.join("killed"), 1).unwrap()).unwrap());
    assert_eq!(actions(&lines), ["a", "b", "c"].map(|k| pair(&format!("in/{k}.csv"), "new")));
    assert_eq!(
        (summary["complete"].as_bool(), summary["status"].as_str()),
        (Some(false), Some("interrupted"))
    );
    let (lines, summary) = parse(&std::fs::read_to_string(run_file(&dir.join("killed"), 2).unwrap()).unwrap());
    assert_eq!(actions(&lines), [pair("in/d.csv", "new")]);
    assert_eq!(summary["complete"], true);
    let left: Vec<_> = std::fs::read_dir(dir.join("killed"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no temporary file stays: {left:?}");
}

/// A receiver that never answers holds `s3syncd run` for the grace period at most.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_receiver_does_not_hold_up_the_exit() {
    let (server, _c, ws) = seeded(&objects()).await;
    let receiver = Receiver::start(vec![]);
    write_private(
        &ws.config(),
        "spec_dir = \"specs.d\"\nstate_dir = \"state\"\nshutdown_grace = \"2s\"\n",
    );
    let extra = format!("[[notify]]\nurl = \"{}\"\nevents = [\"ok\"]\n", receiver.url);
    let spec = ws.seeded_spec("dead", &server.endpoint, "in/", &extra);
    let started = Instant::now();
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(receiver.received().len(), 1, "the post was sent");
    // Without the bound: 4 attempts of 5 s and their backoff, over 20 s.
    assert!(took < Duration::from_secs(10), "exit took {took:?} with a 2 s grace");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notifications still unsent at exit"),
        "{}",
        text(&out)
    );
}

/// `stale_after`: no new object within the window turns the feed stale once (one warning, one
/// notification, `manifest status`), and a new object makes it fresh again.
#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_feed_turns_stale_once_and_recovers() {
    let (server, c, ws) = seeded(&objects()).await;
    let receiver = Receiver::start(vec![200]);
    let extra = format!(
        "stale_after = \"2s\"\n[[notify]]\nurl = \"{}\"\nevents = [\"stale\"]\n",
        receiver.url
    );
    let spec = ws.seeded_spec("quiet", &server.endpoint, "in/", &extra);
    let run = || {
        let out = ws.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let status = || String::from_utf8_lossy(&ws.run(&["manifest", "status"]).stdout).into_owned();
    assert!(!run().contains("is stale"));
    assert!(status().contains("fresh (last new object"), "{}", status());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(run().contains("feed quiet is stale: nothing new from the source since"));
    assert!(status().contains("STALE since"), "{}", status());
    assert!(!run().contains("is stale"), "one warning per stale period");
    let stale: Vec<_> = receiver.received().into_iter().filter(|r| r.json()["event"] == "stale").collect();
    assert_eq!(stale.len(), 1, "one stale notification");
    assert!(stale[0].json()["last_new_object_at"].is_string());
    put_all(&c, "src-bucket", vec![("data/new.csv".into(), b"new\n".to_vec())]).await;
    assert!(run().contains("feed is fresh again"));
    assert!(status().contains("fresh (last new object"), "{}", status());
}
