//! Checksum sidecars in either order, on both servers and in `stream` and `direct`: an object
//! whose sidecar is not listed yet waits `sidecar_wait`, then goes without; a sidecar that comes
//! later is checked against the copy without copying it again, fails the object when it
//! contradicts it (run, `failures`, notification, `manifest verify`), and verifies it when a
//! corrected sidecar comes.

use crate::util::*;
use sha2::{Digest, Sha256};

fn sidecar(body: &[u8]) -> Vec<u8> {
    format!("{}  x.zip\n", hex::encode(Sha256::digest(body))).into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn late_sidecars_are_waited_for_then_checked_against_the_copy() {
    let moto = moto::Moto::start();
    let server = S3Server::start();
    for (name, endpoint, c, keys) in both_servers(&moto, &server) {
        for mode in ["stream", "direct"] {
            let (src, dst) = (format!("src-{mode}"), format!("dst-{mode}"));
            create_bucket(&c, &src).await;
            create_bucket(&c, &dst).await;
            let (early, late) = (b"day one\n".to_vec(), b"day two\n".to_vec());
            put_all(
                &c,
                &src,
                vec![
                    ("data/A/A-1.zip".into(), early.clone()),
                    ("data/A/A-2.zip".into(), late.clone()),
                    ("data/A/A-2.zip.CHECKSUM".into(), sidecar(&late)),
                ],
            )
            .await;
            let ws = Workspace::new(&[("src", &keys.0, &keys.1), ("dst", &keys.0, &keys.1)]);
            let receiver = s3syncd_testkit::receiver::Receiver::start(vec![200]);
            let spec = |wait: &str| {
                let extra = format!(
                    "mode = \"{mode}\"\n[[notify]]\nurl = \"{}\"\nevents = [\"partial\"]\n[verify]\nchecksum_sidecar = \".CHECKSUM\"\nsidecar_wait = \"{wait}\"\n",
                    receiver.url
                );
                let text = spec_text(&endpoint, &src, "data/", &endpoint, &dst, "bronze/", &extra);
                ws.write_spec("feed", &text)
            };
            let run = |spec: &std::path::Path| ws.run(&["run", spec.to_str().unwrap()]);
            let details = || -> serde_json::Value {
                let d: String = ws
                    .sqlite()
                    .query_row("SELECT details FROM runs ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
                    .unwrap();
                serde_json::from_str(&d).unwrap()
            };
            let row = || -> (String, Option<String>) {
                ws.sqlite()
                    .query_row(
                        "SELECT verified, sidecar_mismatch FROM objects WHERE dest_key = 'bronze/A/A-1.zip'",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .unwrap()
            };

            // A-1's sidecar is not listed and A-1 is new: it waits.
            let out = run(&spec("1h"));
            assert_eq!(out.status.code(), Some(0), "{name} {mode}: {}", text(&out));
            assert_eq!(details()["held_for_sidecar"], 1, "{name} {mode}");
            assert_eq!(get(&c, &dst, "bronze/A/A-1.zip").await, None, "{name} {mode}: held back");
            assert_eq!(get(&c, &dst, "bronze/A/A-2.zip").await, Some(late.clone()), "{name} {mode}");

            // Its wait is over: copied without a sidecar.
            let out = run(&spec("0s"));
            assert_eq!(out.status.code(), Some(0), "{name} {mode}: {}", text(&out));
            assert_eq!(details()["without_sidecar"], 1, "{name} {mode}");
            assert_eq!(get(&c, &dst, "bronze/A/A-1.zip").await, Some(early.clone()), "{name} {mode}");
            assert_ne!(row().0, "sha256", "{name} {mode}");

            // A sidecar comes that contradicts the copy: the object fails, nothing is copied again.
            put_all(&c, &src, vec![("data/A/A-1.zip.CHECKSUM".into(), sidecar(b"other bytes"))]).await;
            let out = run(&spec("0s"));
            assert_eq!(out.status.code(), Some(1), "{name} {mode}: {}", text(&out));
            let d = details();
            assert_eq!(
                (d["late_sidecars"].as_u64(), d["late_sidecar_mismatches"].as_u64()),
                (Some(1), Some(1)),
                "{name} {mode}"
            );
            let (failed, message): (String, String) = ws
                .sqlite()
                .query_row("SELECT source_key, message FROM failures ORDER BY rowid DESC LIMIT 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!(failed, "data/A/A-1.zip", "{name} {mode}");
            assert!(message.contains("differs from the checksum sidecar"), "{name} {mode}: {message}");
            assert_eq!(row().1, Some(hex::encode(Sha256::digest(b"other bytes"))), "{name} {mode}");
            let told = receiver.received();
            let last = told.last().map(|r| r.json()).expect("a partial notification");
            assert_eq!(last["failures"][0]["key"], "data/A/A-1.zip", "{name} {mode}: {last}");
            let out = ws.run(&["manifest", "verify", "--spec", "feed"]);
            assert_eq!(out.status.code(), Some(1), "{name} {mode}: {}", text(&out));
            assert!(
                text(&out).contains("contradicted bronze/A/A-1.zip"),
                "{name} {mode}: {}",
                text(&out)
            );

            // The publisher corrects the sidecar: the copy is verified by it.
            put_all(&c, &src, vec![("data/A/A-1.zip.CHECKSUM".into(), sidecar(&early))]).await;
            let out = run(&spec("0s"));
            assert_eq!(out.status.code(), Some(0), "{name} {mode}: {}", text(&out));
            assert_eq!(row(), ("sha256".to_string(), None), "{name} {mode}");
            let out = ws.run(&["manifest", "verify", "--spec", "feed"]);
            assert_eq!(out.status.code(), Some(0), "{name} {mode}: {}", text(&out));
        }
    }
}
