//! What a run lists: with an include filter whose globs start with literal text, only those
//! prefixes, never the whole source prefix; and deletes stay within what was listed.

use crate::util::*;
use s3syncd_testkit::proxy::FaultProxy;

/// 30 series folders of 4 daily files each, as the Binance archive is laid out.
fn archive() -> Vec<(String, Vec<u8>)> {
    (0..30)
        .flat_map(|s| {
            (1..=4).map(move |d| {
                (
                    format!("data/SYM{s:02}/1m/SYM{s:02}-1m-2026-11-0{d}.zip"),
                    format!("{s} {d}\n").into_bytes(),
                )
            })
        })
        .collect()
}

/// The `prefix=` of every ListObjectsV2 of the source bucket since the proxy's faults were set.
fn listed_prefixes(proxy: &FaultProxy) -> std::collections::BTreeSet<String> {
    proxy
        .targets("ListObjectsV2")
        .into_iter()
        .filter(|(t, _)| t.starts_with("/src-bucket"))
        .map(|(t, _)| {
            let q = t.split_once('?').map_or("", |(_, q)| q);
            let p = q.split('&').find_map(|kv| kv.strip_prefix("prefix=")).unwrap_or("");
            p.replace("%2F", "/")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_include_filter_lists_only_its_prefixes_and_deletes_within_them() {
    let (server, c, ws) = seeded(&archive()).await;
    let proxy = FaultProxy::start(&server.endpoint, vec![]);
    let spec_with = |include: &str| {
        ws.seeded_spec(
            "some",
            &proxy.endpoint,
            "bronze/",
            &format!("delete = true\nmax_delete = \"100%\"\n[filter]\ninclude = {include}\n"),
        )
    };
    let spec = spec_with(r#"["{SYM03,SYM17}/**", "SYM2*/1m/*.zip"]"#);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let held = list(&c, "dst-bucket", "bronze/").await;
    assert_eq!(held.len(), 12 * 4, "SYM03, SYM17 and SYM20 to SYM29: {held:?}");
    assert_eq!(
        listed_prefixes(&proxy),
        ["data/SYM03/", "data/SYM17/", "data/SYM2"].map(String::from).into(),
        "only the include's prefixes are listed"
    );
    let details: String = ws
        .sqlite()
        .query_row("SELECT details FROM runs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert!(
        details.contains("\"listing\":\"prefixes\"") && details.contains("\"list_parts\":3"),
        "{details}"
    );

    // Upstream withdraws a SYM03 file and adds a SYM17 day: one delete, one copy.
    c.delete_object()
        .bucket("src-bucket")
        .key("data/SYM03/1m/SYM03-1m-2026-11-01.zip")
        .send()
        .await
        .unwrap();
    put_all(
        &c,
        "src-bucket",
        vec![("data/SYM17/1m/SYM17-1m-2026-11-05.zip".into(), b"late\n".to_vec())],
    )
    .await;
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (copied, deleted): (i64, i64) = ws
        .sqlite()
        .query_row("SELECT objects_copied, objects_deleted FROM runs WHERE id = 2", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((copied, deleted), (1, 1));

    // The filter narrows to SYM03: the rows of the other series lie outside every listed
    // prefix and are never delete candidates.
    proxy.set_faults(vec![]);
    let spec = spec_with(r#"["SYM03/**"]"#);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(listed_prefixes(&proxy), ["data/SYM03/".to_string()].into());
    assert_eq!(
        list(&c, "dst-bucket", "bronze/").await.len(),
        12 * 4,
        "nothing outside the listing is deleted"
    );
}
