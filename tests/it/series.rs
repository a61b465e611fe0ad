//! `[series]` on real servers: `validate --explain` reads a key as its series and period;
//! after a run, `manifest gaps` names the planted holes and the overdue series, and nothing
//! else, in every format.

use crate::util::*;
use chrono::{Duration, Utc};

/// `src-bucket` holding the archive, and an empty `dst-bucket`.
async fn seed(c: &aws_sdk_s3::Client) {
    create_bucket(c, "src-bucket").await;
    create_bucket(c, "dst-bucket").await;
    put_all(c, "src-bucket", archive()).await;
}

/// The day `n` days before today (UTC), as the archive's keys write it.
fn day(n: i64) -> String {
    (Utc::now().date_naive() - Duration::days(n)).format("%Y-%m-%d").to_string()
}

/// Three daily series with their sidecars, dated back from today: A complete to the day
/// before yesterday; B with a hole 8 days ago and stopped 5 days ago (overdue); C with two
/// holes; and a key in no series.
fn archive() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (sym, days) in [
        ("A", (2..=10).collect::<Vec<i64>>()),
        ("B", (5..=10).filter(|d| *d != 8).collect()),
        ("C", (2..=10).filter(|d| *d != 6 && *d != 7).collect()),
    ] {
        for d in days {
            let zip = format!("data/{sym}USDT/1m/{sym}USDT-1m-{}.zip", day(d));
            out.push((format!("{zip}.CHECKSUM"), format!("{d}  x.zip\n").into_bytes()));
            out.push((zip, format!("{sym} {d}\n").into_bytes()));
        }
    }
    out.push(("data/README.txt".into(), b"not a series\n".to_vec()));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn gaps_name_the_planted_holes_and_overdue_series_on_both_servers() {
    let moto = moto::Moto::start();
    let server = S3Server::start();
    for (name, endpoint, c, keys) in both_servers(&moto, &server) {
        seed(&c).await;
        let ws = Workspace::new(&[("src", &keys.0, &keys.1), ("dst", &keys.0, &keys.1)]);
        let receiver = s3syncd_testkit::receiver::Receiver::start(vec![200]);
        let deliveries = ws.path().join("deliveries");
        let extra = format!(
            "[deliveries]\ndir = \"{}\"\n[[notify]]\nurl = \"{}\"\nevents = [\"gap\"]\n[series]\nkey = \"{{symbol}}/{{interval}}/{{symbol}}-{{interval}}-{{date}}.zip\"\ndue_after = \"1d\"\n",
            deliveries.display(),
            receiver.url
        );
        let spec = ws.seeded_spec("klines", &endpoint, "bronze/", &extra);

        let key = format!("data/BUSDT/1m/BUSDT-1m-{}.zip", day(3));
        let out = ws.run(&["validate", spec.to_str().unwrap(), "--explain", &key]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            said.contains(&format!(
                "series \"BUSDT/1m/BUSDT-1m-{{date}}.zip\" (symbol=BUSDT, interval=1m), period {}",
                day(3)
            )),
            "{name}: {said}"
        );
        let out = ws.run(&["validate", spec.to_str().unwrap(), "--explain", "data/README.txt"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("matches no series"),
            "{name}: {}",
            text(&out)
        );

        for _ in 0..2 {
            let out = ws.run(&["run", spec.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        }
        // The first run's change file says the counts on its summary line.
        let files: Vec<_> = std::fs::read_dir(deliveries.join("klines"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{name}: {files:?}");
        let file = std::fs::read_to_string(&files[0]).unwrap();
        let summary: serde_json::Value = serde_json::from_str(file.lines().last().unwrap()).unwrap();
        assert_eq!(
            (summary["series_missing"].as_u64(), summary["series_overdue"].as_u64()),
            (Some(3), Some(1)),
            "{name}: {summary}"
        );
        // One `gap` notification, when the holes and the overdue series were first found.
        let told: Vec<serde_json::Value> = receiver.received().iter().map(|r| r.json()).collect();
        assert_eq!(told.len(), 1, "{name}: {told:?}");
        assert_eq!(
            (told[0]["series_missing"].as_u64(), told[0]["series_overdue"].as_u64()),
            (Some(3), Some(1)),
            "{name}"
        );
        let named: Vec<&str> = told[0]["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["series"].as_str().unwrap())
            .collect();
        assert_eq!(named, ["BUSDT/1m/BUSDT-1m-{date}.zip", "CUSDT/1m/CUSDT-1m-{date}.zip"], "{name}");
        let out = ws.run(&["manifest", "gaps", "--spec", "klines"]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines.len(), 3, "{name}: B, C and the summary:\n{said}");
        assert!(
            lines[0].starts_with(&format!(
                "klines: BUSDT/1m/BUSDT-1m-{{date}}.zip {}..{} (5 periods), missing {}, OVERDUE since",
                day(10),
                day(5),
                day(8)
            )),
            "{name}: {said}"
        );
        assert!(lines[0].ends_with("(3 periods)"), "{name}: days 4, 3 and 2 are past due: {said}");
        assert!(
            lines[1].starts_with(&format!(
                "klines: CUSDT/1m/CUSDT-1m-{{date}}.zip {}..{} (7 periods), missing {} {}",
                day(10),
                day(2),
                day(7),
                day(6)
            )),
            "{name}: {said}"
        );
        assert!(!lines[1].contains("OVERDUE"), "{name}: {said}");
        assert_eq!(
            lines[2], "klines: 3 series, 2 with holes (3 periods missing), 1 overdue, 0 files late, 22 keys in no series",
            "{name}"
        );
        let out = ws.run(&["manifest", "gaps", "--format", "jsonl"]);
        let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 3, "{name}: every series, and only the spec with [series]");
        assert_eq!(
            (rows[0]["missing"].as_array().unwrap().len(), rows[0]["overdue_periods"].as_u64()),
            (0, Some(0))
        );
        assert_eq!(rows[1]["spec"], "klines");
        let out = ws.run(&["manifest", "gaps", "--spec", "klines", "--format", "csv"]);
        let csv = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(csv.lines().count(), 4, "{name}: {csv}");
        assert!(
            csv.lines().nth(3).unwrap().contains(&format!(",{} {},", day(7), day(6))),
            "{name}: {csv}"
        );
    }
}

/// The `prefix=` and `start-after=` of every ListObjectsV2 of the source since the faults were set.
fn source_listings(proxy: &s3syncd_testkit::proxy::FaultProxy) -> Vec<(String, String)> {
    let field = |q: &str, name: &str| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(name))
            .unwrap_or("")
            .replace("%2F", "/")
            .replace("%7B", "{")
            .replace("%7D", "}")
    };
    proxy
        .targets("ListObjectsV2")
        .into_iter()
        .filter(|(t, _)| t.starts_with("/src-bucket"))
        .map(|(t, _)| {
            let q = t.split_once('?').map_or(String::new(), |(_, q)| q.to_string());
            (field(&q, "prefix="), field(&q, "start-after="))
        })
        .collect()
}

/// Between reconcile runs a run lists only what can be new: each series whose next day has
/// ended, after its last held key or from its earliest recent hole, and the symbols' folders with a
/// delimiter to discover a new series (listed whole). It copies exactly the new day, the late
/// hole and the new series; a republished old file waits for the full listing (`run --full`),
/// which finds it; a series run deletes nothing. The series' completeness kept between runs
/// equals a count of every held key.
#[tokio::test(flavor = "multi_thread")]
async fn a_series_run_lists_only_what_can_be_new_and_the_full_run_the_rest() {
    let moto = moto::Moto::start();
    let server = S3Server::start();
    for (name, endpoint, c, keys) in both_servers(&moto, &server) {
        seed(&c).await;
        let proxy = s3syncd_testkit::proxy::FaultProxy::start(&endpoint, vec![]);
        let ws = Workspace::new(&[("src", &keys.0, &keys.1), ("dst", &keys.0, &keys.1)]);
        let extra = "mode = \"stream\"\ndelete = true\nmax_delete = \"100%\"\n[series]\nkey = \"{symbol}/{interval}/{symbol}-{interval}-{date}.zip\"\n";
        let spec = ws.seeded_spec("klines", &proxy.endpoint, "bronze/", extra);
        let run = |args: &[&str]| {
            let mut a = vec!["run", spec.to_str().unwrap()];
            a.extend_from_slice(args);
            let out = ws.run(&a);
            assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        };
        let last_run = || -> (i64, String) {
            ws.sqlite()
                .query_row("SELECT objects_copied, details FROM runs ORDER BY id DESC LIMIT 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap()
        };
        run(&[]); // the first run lists everything
        assert!(last_run().1.contains("\"listing\":\"full\""), "{name}");

        // Upstream: A's next day, C's late hole (day 6), a republished old A file, a new
        // series D, and an A file withdrawn.
        let zip = |s: &str, d: i64| format!("data/{s}USDT/1m/{s}USDT-1m-{}.zip", day(d));
        put_all(
            &c,
            "src-bucket",
            vec![
                (zip("A", 1), b"A 1\n".to_vec()),
                (format!("{}.CHECKSUM", zip("A", 1)), b"1  x.zip\n".to_vec()),
                (zip("C", 6), b"C 6 late\n".to_vec()),
                (zip("A", 9), b"A 9 republished\n".to_vec()),
                (zip("D", 3), b"D 3\n".to_vec()),
            ],
        )
        .await;
        c.delete_object().bucket("src-bucket").key(zip("A", 10)).send().await.unwrap();
        proxy.set_faults(vec![]);
        run(&[]);
        let (copied, details) = last_run();
        assert!(details.contains("\"listing\":\"series\""), "{name}: {details}");
        assert_eq!(copied, 4, "{name}: A's new day with its sidecar, C's late day, D's first");
        assert!(details.contains("\"series_discovered\":1"), "{name}: {details}");
        let lists = source_listings(&proxy);
        let folder = |s: &str| format!("data/{s}USDT/1m/");
        // A folder with a recent hole is listed from just before its earliest one (the key
        // less its last character): one request finds the late day and the new ones.
        let before = |key: String| key[..key.len() - 1].to_string();
        let mut want = vec![
            (folder("A"), zip("A", 2)),
            (folder("B"), before(zip("B", 8))),
            (folder("C"), before(zip("C", 7))),
            ("data/".to_string(), String::new()),
            (folder("D").replace("1m/", ""), String::new()),
        ];
        want.sort();
        let mut got = lists.clone();
        got.sort();
        assert_eq!(
            got, want,
            "{name}: three due folders after their last key or earliest hole, the symbols by delimiter, the new symbol"
        );
        assert_eq!(
            get(&c, "dst-bucket", &zip("A", 9).replace("data/", "bronze/")).await.as_deref(),
            Some(&b"A 9\n"[..]),
            "{name}"
        );
        assert!(
            get(&c, "dst-bucket", &zip("A", 10).replace("data/", "bronze/")).await.is_some(),
            "{name}: a series run deletes nothing"
        );

        // Right after: A's next day cannot exist yet, so A costs nothing.
        proxy.set_faults(vec![]);
        run(&[]);
        assert!(
            source_listings(&proxy).iter().all(|(p, _)| *p != folder("A")),
            "{name}: {:?}",
            source_listings(&proxy)
        );

        // The full listing finds what series runs cannot: the republished file and the
        // withdrawn file.
        run(&["--full"]);
        let (copied, details) = last_run();
        assert!(details.contains("\"listing\":\"full\""), "{name}: {details}");
        assert_eq!(copied, 1, "{name}: A's republished day");
        assert_eq!(
            get(&c, "dst-bucket", &zip("A", 9).replace("data/", "bronze/")).await.as_deref(),
            Some(&b"A 9 republished\n"[..]),
            "{name}"
        );
        assert!(
            get(&c, "dst-bucket", &zip("A", 10).replace("data/", "bronze/")).await.is_none(),
            "{name}: deleted after the full listing"
        );

        // A series run after the full one adds its keys to the kept state: the same as a
        // count of every held key.
        put(&c, "src-bucket", &zip("B", 8), b"B 8 late\n".to_vec()).await;
        run(&[]);
        let gaps = || text(&ws.run(&["manifest", "gaps", "--format", "jsonl"]));
        let kept = gaps();
        assert!(kept.contains("BUSDT"), "{name}: {kept}");
        let states: i64 = ws
            .sqlite()
            .query_row("SELECT count(*) FROM feeds WHERE series_state LIKE '%\"upto\":%'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(states, 1, "{name}: the state is kept");
        ws.sqlite().execute("UPDATE feeds SET series_state = NULL", []).unwrap();
        assert_eq!(kept, gaps(), "{name}: the kept state and a full count differ");
    }
}

/// A stop ends a series run while its search for new series is still waiting for the server
/// (a delimiter listing held 60 s): the run ends at once, `interrupted`, and its row counts
/// what it recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_does_not_wait_for_a_slow_search_for_new_series() {
    use s3syncd_testkit::proxy::{Action, Fault, FaultProxy};
    let server = S3Server::start();
    let c = server.client();
    seed(&c).await;
    let proxy = FaultProxy::start(&server.endpoint, vec![]);
    let ws = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
    ]);
    let extra = "mode = \"stream\"\n[series]\nkey = \"{symbol}/{interval}/{symbol}-{interval}-{date}.zip\"\n";
    let spec = ws.seeded_spec("klines", &proxy.endpoint, "bronze/", extra);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let zip = format!("data/AUSDT/1m/AUSDT-1m-{}.zip", day(1));
    put_all(
        &c,
        "src-bucket",
        vec![
            (zip.clone(), b"A 1\n".to_vec()),
            (format!("{zip}.CHECKSUM"), b"1  x.zip\n".to_vec()),
        ],
    )
    .await;
    // Only the search for new series lists `data/` itself.
    proxy.set_faults(vec![Fault::always(
        "ListObjectsV2",
        Action::Stall(std::time::Duration::from_secs(60)),
    )
    .only("?prefix=data%2F")]);
    let mut child = ws
        .command()
        .arg("run")
        .arg(&spec)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    until(30, "the search for new series to be held", || {
        proxy.targets("ListObjectsV2").iter().any(|(t, _)| t.ends_with("?prefix=data%2F"))
    })
    .await;
    until(30, "the new day to be copied", || proxy.seen("PutObject") == 2).await;
    let t0 = std::time::Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    let took = t0.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "the stop waited {took:?} for the held listing"
    );
    assert!(!status.success());
    let db = ws.sqlite();
    let (status, copied): (String, i64) = db
        .query_row("SELECT status, objects_copied FROM runs ORDER BY id DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM objects WHERE run_id = (SELECT max(id) FROM runs)", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(status, "interrupted");
    assert_eq!(rows, copied, "the run row and the objects it recorded disagree");
}
