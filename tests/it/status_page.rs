//! The status page in a real browser: headless Chromium loads what `s3syncd report` wrote, and
//! the DOM shows the feed, a hole in the series heatmap, and a hostile key as text; the page
//! logs no console error. The daemon serves the same page at `/` of `metrics_listen`, checked
//! the same way. A screenshot is kept in `target/test-artifacts/report.png`.

use crate::util::*;
use chrono::{Duration, Utc};
use std::path::Path;
use std::process::Command;

fn day(n: i64) -> String {
    (Utc::now().date_naive() - Duration::days(n)).format("%Y-%m-%d").to_string()
}

/// Chromium, or None where it is not installed (CI installs it and sets S3SYNCD_TESTS_TOOLS,
/// so that there this test can never pass by skipping).
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        assert!(std::env::var_os("S3SYNCD_TESTS_TOOLS").is_none(), "chromium is not installed");
        eprintln!("chromium not found: install Debian's chromium package to run this test");
    }
    found
}

fn headless(browser: &str, profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_renders_feeds_holes_and_hostile_keys_as_text_in_chromium() {
    let Some(browser) = chromium() else { return };
    let server = S3Server::start();
    let c = server.client();
    create_bucket(&c, "src-bucket").await;
    create_bucket(&c, "dst-bucket").await;
    let hostile = "<img src=x onerror=alert(1)>";
    let mut objects = Vec::new();
    for (sym, hole) in [("BTCUSDT", Some(3)), (hostile, None)] {
        for d in (1..=6).filter(|d| Some(*d) != hole) {
            objects.push((format!("data/{sym}/1m/{sym}-1m-{}.zip", day(d)), format!("{sym} {d}").into_bytes()));
        }
    }
    put_all(&c, "src-bucket", objects).await;
    let ws = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
    ]);
    let extra = "[series]\nkey = \"{symbol}/{interval}/{symbol}-{interval}-{date}.zip\"\n";
    let spec = ws.seeded_spec("klines", &server.endpoint, "bronze/", extra);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let page = ws.path().join("status.html");
    let out = ws.run(&["report", "--out", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains(hostile), "the hostile key is markup in the file");
    assert!(
        !html.contains("<script") && !html.contains("http://") && !html.contains("https://"),
        "self-contained"
    );

    let profile = ws.path().join("chromium");
    let url = format!("file://{}", page.display());
    check_dom(browser, &profile, &url, hostile);
    served_page_checks(&ws, browser, &profile, hostile).await;

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(
        browser,
        &profile,
        &[&format!("--screenshot={}", shot.display()), "--window-size=1280,900", &url],
    );
    assert!(out.status.success() && shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Chromium's DOM of `url`: the feed row, a hole in BTCUSDT's heatmap row, the hostile key as
/// text, and no console error.
fn check_dom(browser: &str, profile: &Path, url: &str, hostile: &str) {
    let dom = headless(browser, profile, &["--dump-dom", url]);
    let dom_text = String::from_utf8_lossy(&dom.stdout).into_owned();
    let log = String::from_utf8_lossy(&dom.stderr).into_owned();
    assert!(dom.status.success(), "{url}: {log}");
    assert!(dom_text.contains("<tr data-feed=\"klines\"><td>klines</td>"), "{url}: {dom_text}");
    let btc = dom_text
        .split("<tr data-series=\"BTCUSDT/1m/BTCUSDT-1m-{date}.zip\">")
        .nth(1)
        .expect("a heatmap row for BTCUSDT");
    let row = &btc[..btc.find("</tr>").unwrap()];
    assert!(row.contains(&format!("title=\"{} missing\"", day(3))), "{url}: {row}");
    assert_eq!(row.matches("class=\"present\"").count(), 5, "{url}: {row}");
    let escaped = hostile.replace('<', "&lt;").replace('>', "&gt;");
    assert!(dom_text.contains(&escaped), "{url}: the hostile key shows as text");
    assert!(!dom_text.contains("<img"), "{url}: no element was made of a key");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught")).collect();
    assert!(console.is_empty(), "{url}: console: {console:?}");
}

/// A daemon over the same manifest and spec serves the page at `/`; `/metrics` is still the
/// Prometheus text, any other path 404 and any other method 405.
async fn served_page_checks(ws: &Workspace, browser: &str, profile: &Path, hostile: &str) {
    let port = free_port();
    ws.daemon_config(port);
    let mut child = ws.command().arg("daemon").stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut home = String::new();
    for _ in 0..150 {
        home = http_get(port, "GET /").await.unwrap_or_default();
        if home.contains("data-feed=\"klines\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = http_get(port, "GET /metrics").await.unwrap_or_default();
    let missing = http_get(port, "GET /etc/passwd").await.unwrap_or_default();
    let post = http_get(port, "POST /").await.unwrap_or_default();
    check_dom(browser, profile, &format!("http://127.0.0.1:{port}/"), hostile);
    let _ = child.kill();
    let _ = child.wait();
    assert!(home.starts_with("HTTP/1.0 200") && home.contains("text/html"), "{home}");
    assert!(
        metrics.starts_with("HTTP/1.0 200") && metrics.contains("text/plain; version=0.0.4"),
        "{metrics}"
    );
    assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
    assert!(post.starts_with("HTTP/1.0 405"), "{post}");
}
