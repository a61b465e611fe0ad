//! AWS in production, on local servers: a role assumed per side through moto's STS (the proxy
//! shows which key signed each side), and a bucket in another region found through the 301 that
//! AWS answers (the proxy answers as AWS does).

use crate::util::*;
use s3syncd_testkit::{
    fs_server::S3Server,
    moto::Moto,
    proxy::{Fault, FaultProxy},
};

fn objects() -> Vec<(String, Vec<u8>)> {
    (0..5)
        .map(|i| (format!("data/2026-11-0{i}.csv"), format!("row {i}\n").into_bytes()))
        .collect()
}

/// A stream spec from `src-bucket/data/` to `dst-bucket/in/`, both sides through `proxy`.
fn streamed_through(proxy: &FaultProxy) -> String {
    spec_text(
        &proxy.endpoint,
        "src-bucket",
        "data/",
        &proxy.endpoint,
        "dst-bucket",
        "in/",
        "mode = \"stream\"",
    )
}

/// Each side signs with what its spec names: the source with the role it assumes over its
/// profile's keys (STS answered by moto), the destination with its profile's keys.
#[tokio::test(flavor = "multi_thread")]
async fn a_role_is_assumed_per_side_and_signs_only_that_side() {
    let moto = Moto::start();
    let c = moto.client();
    create_bucket(&c, "src-bucket").await;
    create_bucket(&c, "dst-bucket").await;
    put_all(&c, "src-bucket", objects()).await;
    let proxy = FaultProxy::start(&moto.endpoint, vec![]);
    let ws = Workspace::new(&[("src", "AKIABASESOURCE000001", "s"), ("dst", "AKIABASEDEST00000001", "s")]);
    let role = "role_arn = \"arn:aws:iam::123456789012:role/feed-reader\"\nexternal_id = \"partner-1234\"\nrole_session_name = \"s3syncd-test\"\nduration = \"1h\"\n";
    let spec_toml = streamed_through(&proxy).replace("profile = \"src\"\n", &format!("profile = \"src\"\n{role}"));
    let spec = ws.write_spec("roles", &spec_toml);
    let out = ws
        .command()
        .args(["run", spec.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL_STS", &moto.endpoint)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (key, body) in objects() {
        let dest = key.replace("data/", "in/");
        assert_eq!(get(&c, "dst-bucket", &dest).await.as_ref(), Some(&body), "{dest}");
    }
    let signers = proxy.signers();
    let keys = |bucket: &str| -> Vec<String> {
        let mut k: Vec<String> = signers
            .iter()
            .filter(|((b, ..), _)| b == bucket)
            .map(|((_, k, _), _)| k.clone())
            .collect();
        k.dedup();
        k
    };
    let (src, dst) = (keys("src-bucket"), keys("dst-bucket"));
    assert_eq!(src.len(), 1, "one assumed key signs the source: {signers:?}");
    assert!(
        src[0] != "AKIABASESOURCE000001" && src[0].starts_with("ASIA"),
        "the role's key, not the base key: {signers:?}"
    );
    assert_eq!(dst, ["AKIABASEDEST00000001"], "the destination signs with its profile: {signers:?}");
}

/// A bucket in another region than the spec says: the 301 names the region, the run uses it
/// and says which key to set; `region = "auto"` finds it without a warning.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_region_is_followed_through_the_301_answer() {
    let (server, c, ws) = seeded(&objects()).await;
    let proxy = FaultProxy::start(&server.endpoint, vec![]);
    proxy.set_bucket_region("src-bucket", "ap-northeast-1");
    proxy.set_bucket_region("dst-bucket", "eu-west-1");
    let spec_toml = streamed_through(&proxy)
        .replace("profile = \"src\"\n", "profile = \"src\"\nregion = \"us-west-2\"\n")
        .replace("profile = \"dst\"\n", "profile = \"dst\"\nregion = \"auto\"\n");
    let spec = ws.write_spec("regions", &spec_toml);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("source bucket src-bucket is in region ap-northeast-1, not us-west-2: set `region = \"ap-northeast-1\"` in [source]"),
        "{}",
        text(&out)
    );
    assert!(!stderr.contains("in [destination]"), "auto warns of nothing: {}", text(&out));
    for (key, body) in objects() {
        let dest = key.replace("data/", "in/");
        assert_eq!(get(&c, "dst-bucket", &dest).await.as_ref(), Some(&body), "{dest}");
    }
    // One request each was signed for the wrong region (the probe); all others for the right one.
    for ((bucket, _, region), n) in proxy.signers() {
        let right = if bucket == "src-bucket" { "ap-northeast-1" } else { "eu-west-1" };
        assert!(region == right || n == 1, "{bucket}: {n} requests signed for {region}");
    }
}

/// Credentials a server rejects, a bucket that does not exist, and an object the source will
/// not serve: each run says why in one line (log, summary, run row), and each failure row keeps
/// the raw S3 code.
#[tokio::test(flavor = "multi_thread")]
async fn each_common_failure_says_its_cause_and_fix() {
    let (server, _c, _) = seeded(&objects()).await;
    // The source's profile holds a secret the server does not know.
    let ws = Workspace::new(&[
        ("src", &server.access_key, "not-the-secret"),
        ("dst", &server.access_key, &server.secret_key),
    ]);
    let spec = ws.seeded_spec("creds", &server.endpoint, "in/", "");
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        said.contains("the source's credentials (profile \"src\") were rejected at http://127.0.0.1"),
        "{said}"
    );
    assert!(!said.contains("not-the-secret"), "no secret in the output");
    let row: String = ws.sqlite().query_row("SELECT error FROM runs", [], |r| r.get(0)).unwrap();
    assert!(row.contains("Likely cause: the source's credentials"), "{row}");

    // A destination bucket that does not exist fails the run before any copy.
    let ws = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
    ]);
    let spec = ws.write_spec(
        "nobucket",
        &spec_text(
            &server.endpoint,
            "src-bucket",
            "data/",
            &server.endpoint,
            "no-such-bucket",
            "in/",
            "",
        ),
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bucket no-such-bucket does not exist at http://127.0.0.1"),
        "{}",
        text(&out)
    );

    // An object the source refuses: the run goes on, the summary and the row say why.
    let proxy = FaultProxy::start(
        &server.endpoint,
        vec![Fault::status("GetObject", 1, 403, "AccessDenied").only("2026-11-03.csv")],
    );
    let spec = ws.write_spec(
        "denied",
        &spec_text(
            &proxy.endpoint,
            "src-bucket",
            "data/",
            &proxy.endpoint,
            "dst-bucket",
            "denied/",
            "mode = \"stream\"",
        ),
    );
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("likely cause  profile \"src\" may not read s3://src-bucket/data/: the bucket may be requester-pays (set `requester_pays = true` in [source])"),
        "{}",
        text(&out)
    );
    let (code, message): (String, String) = ws
        .sqlite()
        .query_row("SELECT code, message FROM failures WHERE spec = 'denied'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(code, "AccessDenied");
    assert!(message.contains("Likely cause:") && message.contains("s3:GetObject"), "{message}");
    let copied: i64 = ws
        .sqlite()
        .query_row("SELECT count(*) FROM objects WHERE spec = 'denied'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(copied as usize, objects().len() - 1, "the other objects are copied");
}

fn lines(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `s3syncd check` on both servers: every check passes for a good feed, `--write` leaves no
/// probe behind, and rejected credentials fail with their cause.
#[tokio::test(flavor = "multi_thread")]
async fn check_passes_a_good_feed_and_names_what_fails_on_both_servers() {
    let moto = Moto::start();
    let server = S3Server::start();
    for (name, endpoint, c, keys) in both_servers(&moto, &server) {
        create_bucket(&c, "src-bucket").await;
        create_bucket(&c, "dst-bucket").await;
        put_all(&c, "src-bucket", objects()).await;
        let ws = Workspace::new(&[("src", &keys.0, &keys.1), ("dst", &keys.0, &keys.1)]);
        let spec = ws.seeded_spec("feed", &endpoint, "in/", "");
        let out = ws.run(&["check", spec.to_str().unwrap(), "--write"]);
        let said = lines(&out);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        let tail = &keys.0[keys.0.len() - 4..];
        for want in [
            format!("ok    source credentials: profile \"src\": resolved by ProfileFile (key id ...{tail})"),
            "ok    source lists: s3://src-bucket/data/: first key \"data/2026-11-00.csv\"".to_string(),
            "ok    destination lists: s3://dst-bucket/in/: empty".to_string(),
            "ok    direct (server-side copy): the destination's credentials can read \"data/2026-11-00.csv\" at the source".to_string(),
            "ok    destination writes: put and deleted \"in/.s3syncd-check-".to_string(),
        ] {
            assert!(said.contains(&want), "{name}: {want:?} in\n{said}");
        }
        assert!(!said.contains(&keys.1), "{name}: no secret printed");
        assert!(list(&c, "dst-bucket", "in/").await.is_empty(), "{name}: the probe is deleted");
        assert!(
            list(&c, "dst-bucket", "").await.is_empty(),
            "{name}: nothing written without --write either"
        );
    }
    // Rejected credentials (s3s-fs checks signatures): a failed check, its cause, exit 1.
    let ws = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, "wrong"),
    ]);
    let spec = ws.seeded_spec("feed", &server.endpoint, "in/", "");
    let out = ws.run(&["check", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        lines(&out).contains("fail  destination lists: s3://dst-bucket/in/: ListObjectsV2 failed")
            && lines(&out).contains("the destination's credentials (profile \"dst\") were rejected"),
        "{}",
        text(&out)
    );
    // A profile no file defines fails that spec's credentials check; the next spec is still
    // checked in full.
    let good = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
    ]);
    let nobody = spec_text(&server.endpoint, "src-bucket", "data/", &server.endpoint, "dst-bucket", "m/", "")
        .replace("profile = \"src\"", "profile = \"nobody\"");
    let missing_spec = good.write_spec("missing", &nobody);
    let good_spec = good.seeded_spec("good", &server.endpoint, "g/", "");
    let out = good.run(&["check", missing_spec.to_str().unwrap(), good_spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = lines(&out);
    assert!(
        said.contains("fail  source credentials: profile \"nobody\" is not defined"),
        "{said}"
    );
    assert!(
        said.contains("ok    destination lists: s3://dst-bucket/g/"),
        "the second spec is checked: {said}"
    );
}

/// `direct` refused: a note when `auto` will stream, a failure when the spec insists on
/// `direct`; different endpoints can never copy server-side. An invalid spec exits 2.
#[tokio::test(flavor = "multi_thread")]
async fn check_says_whether_direct_can_copy() {
    let (server, _c, ws) = seeded(&objects()).await;
    let proxy = FaultProxy::start(&server.endpoint, vec![Fault::status("HeadObject", 1, 403, "AccessDenied")]);
    let auto = ws.seeded_spec("auto", &proxy.endpoint, "auto/", "");
    let out = ws.run(&["check", auto.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        lines(&out).contains("note  direct (server-side copy): the destination's credentials cannot read the source (HTTP 403): they need s3:GetObject on s3://src-bucket/data/*; auto will stream"),
        "{}",
        text(&out)
    );
    let direct = ws.seeded_spec("direct", &proxy.endpoint, "direct/", "mode = \"direct\"");
    let out = ws.run(&["check", direct.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(lines(&out).contains("fail  direct (server-side copy)"), "{}", text(&out));
    let apart = ws.write_spec(
        "apart",
        &spec_text(&server.endpoint, "src-bucket", "data/", &proxy.endpoint, "dst-bucket", "apart/", ""),
    );
    let out = ws.run(&["check", apart.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        lines(&out)
            .contains("note  direct (server-side copy): not possible: source and destination are on different endpoints; auto will stream"),
        "{}",
        text(&out)
    );
    let bad = ws.write_spec("bad", "[source]\nbucket = \"x\"\n");
    assert_eq!(ws.run(&["check", bad.to_str().unwrap()]).status.code(), Some(2));
}
