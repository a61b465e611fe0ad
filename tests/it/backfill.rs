//! Backfills past one machine: `s3syncd plan` cuts a run's copies into key files, shards copy
//! them as separate processes with manifests of their own (or an S3 Batch Operations copy job,
//! emulated in the testkit from its documented formats), and `manifest import` brings the
//! results home, so that the next ordinary run copies nothing that was imported.

use crate::util::*;
use s3syncd_testkit::batchops;

/// Keys a CSV must encode: a comma, a space, a plus, a quote, non-ASCII, percent signs; and a
/// 0-byte object and a folder marker.
fn objects(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut objects: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| {
            (
                format!("{prefix}klines/BTCUSDT-1m-2026-11-{:02}.zip", i + 1),
                vec![i as u8; 100 + i * 7],
            )
        })
        .collect();
    for key in [
        "a,b.zip",
        "a b+c.zip",
        "q\"uote.zip",
        "ü/é.zip",
        "100%25.zip",
        "folder/",
        "empty.zip",
    ] {
        let body = if key.ends_with('/') || key == "empty.zip" {
            Vec::new()
        } else {
            key.as_bytes().to_vec()
        };
        objects.push((format!("{prefix}odd/{key}"), body));
    }
    objects
}

fn copied_by_last_run(ws: &Workspace) -> i64 {
    ws.sqlite()
        .query_row("SELECT objects_copied FROM runs ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
        .unwrap()
}

fn plan_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_in_shards_runs_as_separate_processes_and_comes_home() {
    let objects = objects("data/");
    let (server, c, ws) = seeded(&objects).await;
    let spec = ws.seeded_spec("backfill", &server.endpoint, "bronze/", "");
    let spec = spec.to_str().unwrap();
    // s3s-fs keeps files, not folder markers: what it lists is what there is to copy.
    let objects: Vec<_> = {
        let listed: Vec<String> = list(&c, "src-bucket", "data/").await.into_iter().map(|(k, _)| k).collect();
        objects.into_iter().filter(|(k, _)| listed.contains(k)).collect()
    };
    let dir = ws.path().join("plan");
    let out = ws.run(&["plan", spec, "--out", dir.to_str().unwrap(), "--shards", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = plan_json(&dir);
    assert_eq!(plan["objects"], objects.len(), "{plan}");
    assert_eq!(plan["spec"], "backfill");
    let shards = plan["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    assert_eq!(
        shards.iter().map(|s| s["objects"].as_u64().unwrap()).sum::<u64>(),
        objects.len() as u64
    );
    let first = std::fs::read_to_string(dir.join("keys-0000.csv")).unwrap();
    assert!(first.lines().all(|l| l.starts_with("src-bucket,data/")), "{first}");
    let all: String = (0..3)
        .map(|i| std::fs::read_to_string(dir.join(format!("keys-{i:04}.csv"))).unwrap())
        .collect();
    assert!(
        all.contains("src-bucket,data/odd/a%2Cb.zip\n") && all.contains("data/odd/a%20b%2Bc.zip"),
        "{all}"
    );
    // The same listing gives the same files.
    let again = ws.path().join("plan-again");
    assert_eq!(
        ws.run(&["plan", spec, "--out", again.to_str().unwrap(), "--shards", "3"])
            .status
            .code(),
        Some(0)
    );
    for i in 0..3 {
        let f = format!("keys-{i:04}.csv");
        assert_eq!(std::fs::read(dir.join(&f)).unwrap(), std::fs::read(again.join(&f)).unwrap(), "{f}");
    }

    // Three processes at once, each with its own manifest.
    let shard_db = |i: usize| ws.path().join(format!("shards/{i}.db"));
    let children: Vec<_> = (0..3)
        .map(|i| {
            let keys = dir.join(format!("keys-{i:04}.csv"));
            ws.command()
                .args([
                    "run",
                    spec,
                    "--keys",
                    keys.to_str().unwrap(),
                    "--manifest",
                    shard_db(i).to_str().unwrap(),
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "shard {i}: {}", text(&out));
    }
    // Each shard listed only its key range and copied its own keys.
    for (i, shard) in shards.iter().enumerate() {
        let db = rusqlite::Connection::open(shard_db(i)).unwrap();
        let (listing, found, copied): (String, u64, u64) = db
            .query_row(
                "SELECT json_extract(details, '$.listing'), json_extract(details, '$.keys_found'), objects_copied FROM runs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (listing.as_str(), found, copied),
            ("keys", shard["objects"].as_u64().unwrap(), found),
            "shard {i}"
        );
    }
    for (key, body) in &objects {
        let dest = key.replacen("data/", "bronze/", 1);
        assert_eq!(get(&c, "dst-bucket", &dest).await.as_ref(), Some(body), "{dest}");
    }

    let dbs: Vec<String> = (0..3).map(|i| shard_db(i).to_str().unwrap().to_string()).collect();
    let mut args = vec!["manifest", "import", "--spec", "backfill"];
    args.extend(dbs.iter().map(String::as_str));
    let out = ws.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let added: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(": ").nth(2).unwrap().split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(added, objects.len() as u64, "{}", text(&out));
    // Importing again changes nothing; without --spec each shard names its own.
    let mut again = vec!["manifest", "import"];
    again.extend(dbs.iter().map(String::as_str));
    let out = ws.run(&again);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(": 0 added, 0 replaced, "), "{}", text(&out));
    let held: i64 = ws.sqlite().query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).unwrap();
    assert_eq!(held, objects.len() as i64);

    let out = ws.run(&["run", spec]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(copied_by_last_run(&ws), 0, "the next run copied what was imported: {}", text(&out));

    // A shard of another spec is refused whole.
    let foreign = ws.path().join("shards/foreign.db");
    std::fs::copy(shard_db(0), &foreign).unwrap();
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute("UPDATE objects SET spec = 'other'", [])
        .unwrap();
    let out = ws.run(&["manifest", "import", "--spec", "backfill", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("rows of spec \"other\"") && text(&out).contains("nothing imported"),
        "{}",
        text(&out)
    );
}

/// On moto, whose listings carry ETags: an import checks them.
#[tokio::test(flavor = "multi_thread")]
async fn batch_operations_reports_come_home_checked_against_both_sides() {
    let objects = objects("");
    let moto = s3syncd_testkit::moto::Moto::start();
    let c = moto.client();
    create_bucket(&c, "src-bucket").await;
    create_bucket(&c, "dst-bucket").await;
    put_all(&c, "src-bucket", objects.clone()).await;
    let ws = Workspace::new(&[("src", "moto-key", "moto-secret"), ("dst", "moto-key", "moto-secret")]);
    // S3 Batch Operations copies a key to TargetKeyPrefix + key: a spec of the whole bucket.
    let spec = ws.write_spec(
        "batch",
        &spec_text(&moto.endpoint, "src-bucket", "", &moto.endpoint, "dst-bucket", "bronze/", ""),
    );
    let spec = spec.to_str().unwrap();
    let dir = ws.path().join("plan");
    let out = ws.run(&["plan", spec, "--out", dir.to_str().unwrap(), "--shards", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A key gone from the source between plan and job: its task fails.
    let manifest0 = dir.join("keys-0000.csv");
    let mut keys = std::fs::read_to_string(&manifest0).unwrap();
    keys.push_str("src-bucket,klines/gone.zip\n");
    std::fs::write(&manifest0, keys).unwrap();
    let mut reports = Vec::new();
    for i in 0..2 {
        let report = ws.path().join(format!("report-{i}.csv"));
        batchops::copy_job(&c, &dir.join(format!("keys-{i:04}.csv")), "dst-bucket", "bronze/", &report).await;
        reports.push(report.to_str().unwrap().to_string());
    }
    // One copy is not what the source holds: same size, other bytes.
    let tampered = "bronze/klines/BTCUSDT-1m-2026-11-05.zip";
    put(&c, "dst-bucket", tampered, vec![0xee; 100 + 4 * 7]).await;

    // A completion report names no spec.
    let out = ws.run(&["manifest", "import", &reports[0]]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("a completion report names no spec: name it with --spec"),
        "{}",
        text(&out)
    );
    let mut args = vec!["manifest", "import", "--spec", "batch"];
    args.extend(reports.iter().map(String::as_str));
    let out = ws.run(&args);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("not imported: klines/gone.zip: the task failed: NoSuchKey"), "{said}");
    assert!(
        said.contains(&format!("not imported: klines/BTCUSDT-1m-2026-11-05.zip: {tampered} has ETag")),
        "{said}"
    );
    let held: i64 = ws.sqlite().query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).unwrap();
    assert_eq!(held, objects.len() as i64 - 1, "{said}");
    let verified: i64 = ws
        .sqlite()
        .query_row("SELECT count(*) FROM objects WHERE verified = 'etag'", [], |r| r.get(0))
        .unwrap();
    assert!(verified >= 24, "{verified} rows verified by ETag");

    // The next run copies only the object that did not check out, and repairs it.
    let out = ws.run(&["run", spec]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(copied_by_last_run(&ws), 1, "{}", text(&out));
    assert_eq!(get(&c, "dst-bucket", tampered).await, Some(vec![4u8; 100 + 4 * 7]));
}

/// The Kubernetes example passes the API's schemas (kubernetes-validate, offline, strict), and
/// the config and spec its ConfigMap holds pass `s3syncd validate`.
#[test]
fn the_kubernetes_example_is_valid_for_the_api_and_for_s3syncd() {
    let job = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/backfill-job.yaml");
    let validate = s3syncd_testkit::moto::pypi_tool("kubernetes-validate", "kubernetes-validate");
    let out = std::process::Command::new(validate).arg("--strict").arg(&job).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).matches(" passed for resource ").count(),
        3,
        "{}",
        text(&out)
    );

    // The ConfigMap's files, read with the PyYAML that kubernetes-validate brings.
    let python = s3syncd_testkit::moto::pypi_tool("kubernetes-validate", "python3");
    let script = "import sys, json, yaml\nfor d in yaml.safe_load_all(open(sys.argv[1])):\n    if d['kind'] == 'ConfigMap': print(json.dumps(d['data']))";
    let out = std::process::Command::new(python).args(["-c", script]).arg(&job).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let data: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ws = Workspace::new(&[]);
    let config = data["s3syncd.toml"].as_str().unwrap().replace("/etc/s3syncd/specs.d", "specs.d");
    std::fs::write(ws.config(), config).unwrap();
    ws.write_spec("binance-spot-klines-1m", data["binance-spot-klines-1m.toml"].as_str().unwrap());
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
