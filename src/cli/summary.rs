//! The run summary: one screen at the end of `s3syncd run`.

use crate::engine::RunReport;
use crate::spec::size::ByteSize;
use std::fmt::Write;

/// The one-screen summary printed at the end of `run`.
pub fn summary(r: &RunReport) -> String {
    if r.dry_run {
        dry_run(r)
    } else {
        finished(r)
    }
}

fn dry_run(r: &RunReport) -> String {
    let t = &r.tally;
    let mut s = String::new();
    let _ = writeln!(s, "dry run of {}: nothing was changed", r.spec);
    let _ = writeln!(s, "  listed        {} objects ({} excluded by filter)", t.listed, t.filtered);
    let _ = writeln!(s, "  would copy    {} objects, {}", t.copied, ByteSize(t.bytes_planned));
    let _ = writeln!(s, "  would skip    {} objects (unchanged since copied)", t.skipped);
    let deletes = if r.sample_deletes.is_empty() { 0 } else { r.deletes_planned };
    let _ = writeln!(s, "  would delete  {deletes} objects");
    for k in &t.sample_copies {
        let _ = writeln!(s, "    copy   {k}");
    }
    for k in &r.sample_deletes {
        let _ = writeln!(s, "    delete {k}");
    }
    if let Some(w) = &r.delete_refused {
        let _ = writeln!(s, "  deletes refused: {w}");
    }
    s
}

/// Which listing the run did, when not the whole source prefix.
fn listing(t: &crate::engine::Tally) -> String {
    use crate::engine::listing::Scope;
    match t.listing {
        Scope::Series => format!(
            "; series run: {} parts (due series after their last key or earliest recent hole, {} new folders)",
            t.list_parts, t.series_discovered
        ),
        Scope::Prefixes => format!("; {} prefixes of the include filter", t.list_parts),
        Scope::Keys => format!("; the key file's range, {} of its keys found", t.keys_found),
        Scope::Events => format!("; {} keys named by S3 events", t.list_parts),
        Scope::Full => String::new(),
    }
}

fn finished(r: &RunReport) -> String {
    let t = &r.tally;
    let mut s = String::new();
    let secs = r.wall.as_secs_f64().max(1e-9);
    let _ = writeln!(s, "s3syncd run {} (run {}): {} in {:.2} s", r.spec, r.run_id, r.status, secs);
    let _ = writeln!(
        s,
        "  listed        {} objects ({} excluded by filter){}",
        t.listed,
        t.filtered,
        listing(t)
    );
    let modes: Vec<String> = t.modes.iter().map(|(m, c)| format!("{m} {}", c.objects)).collect();
    let modes = if modes.is_empty() {
        String::new()
    } else {
        format!(" ({})", modes.join(", "))
    };
    let _ = writeln!(s, "  copied        {} objects, {}{modes}", t.copied, ByteSize(t.bytes_copied));
    let _ = writeln!(s, "  skipped       {} objects (unchanged since copied)", t.skipped);
    let _ = writeln!(s, "  failed        {} objects", t.failed);
    if t.held_for_sidecar + t.without_sidecar + t.late_sidecars > 0 {
        let _ = writeln!(
            s,
            "  sidecars      {} objects wait for theirs, {} copied without one, {} late ones checked ({} contradict their object)",
            t.held_for_sidecar, t.without_sidecar, t.late_sidecars, t.late_sidecar_mismatches
        );
    }
    if let Some(n) = t.events_missed {
        let _ = writeln!(s, "  events missed {n} objects copied by this listing that no event had brought");
    }
    if t.deleted > 0 || r.delete_refused.is_some() {
        let refused = r.delete_refused.as_ref().map(|w| format!(" (refused: {w})")).unwrap_or_default();
        let _ = writeln!(s, "  deleted       {} objects{refused}", t.deleted);
    }
    how(r, &mut s);
    s
}

/// How the run went about it: fallbacks, host traffic, concurrency, requests, rate, cost, and
/// what went wrong.
fn how(r: &RunReport, s: &mut String) {
    let t = &r.tally;
    let secs = r.wall.as_secs_f64().max(1e-9);
    let fallbacks: Vec<String> = t.fallbacks.iter().map(|(f, n)| format!("{f} x{n}")).collect();
    let fallbacks = if fallbacks.is_empty() {
        "none".to_string()
    } else {
        fallbacks.join("; ")
    };
    let _ = writeln!(s, "  fallbacks     {fallbacks}");
    let _ = writeln!(s, "  through host  {}", ByteSize(t.bytes_through_host));
    if t.concurrency > 0 {
        let how = if t.adaptive { "adaptive" } else { "fixed" };
        let _ = writeln!(s, "  concurrency   up to {} copies in flight ({how})", t.concurrency);
    }
    if !t.unsupported.is_empty() {
        let _ = writeln!(s, "  not copied    {} (the server does not support them)", t.unsupported.join(", "));
    }
    let reqs = t
        .requests_by_op()
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let retries = if t.retries > 0 {
        format!(", {} object retries", t.retries)
    } else {
        String::new()
    };
    let _ = writeln!(s, "  requests      {} ({reqs}){retries}", t.requests_total());
    let _ = writeln!(
        s,
        "  rate          {:.0} objects/s, {:.1} MiB/s",
        t.copied as f64 / secs,
        t.bytes_copied as f64 / secs / 1048576.0
    );
    let _ = writeln!(
        s,
        "  est. cost     ${:.4} (requests ${:.4} + data through host ${:.4}; prices: docs/operations.md)",
        r.cost_usd.0 + r.cost_usd.1,
        r.cost_usd.0,
        r.cost_usd.1
    );
    if let Some(e) = &r.listing_error {
        let _ = writeln!(s, "  error         {e}");
    }
    for (cause, n) in &t.causes {
        let _ = writeln!(s, "  likely cause  {cause} ({n} {})", if *n == 1 { "object" } else { "objects" });
    }
    if t.failed > 0 {
        let _ = writeln!(
            s,
            "  see failures  sqlite3 manifest.db \"SELECT source_key, kind, code, message FROM failures WHERE run_id = {}\"",
            r.run_id
        );
    }
}
