//! The run summary: one screen at the end of `s3syncd run`, also logged by the daemon.

use crate::engine::RunReport;

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The one-screen summary printed at the end of `run`.
pub fn summary(r: &RunReport) -> String {
    use std::fmt::Write;
    let row = &r.row;
    let mut s = String::new();
    let secs = r.wall.as_secs_f64().max(1e-9);
    if r.dry_run {
        let _ = writeln!(s, "dry run of {}: nothing was changed", row.spec);
        let _ = writeln!(
            s,
            "  listed        {} objects ({} excluded by filter)",
            row.objects_listed, r.filtered
        );
        let _ = writeln!(
            s,
            "  would copy    {} objects, {}",
            row.objects_copied,
            human_bytes(r.bytes_planned)
        );
        let _ = writeln!(s, "  would skip    {} objects (unchanged since copied)", row.objects_skipped);
        let _ = writeln!(
            s,
            "  would delete  {}",
            if r.sample_deletes.is_empty() {
                "0 objects".to_string()
            } else {
                format!("{} objects", r.deletes_planned)
            }
        );
        for k in &r.sample_copies {
            let _ = writeln!(s, "    copy   {k}");
        }
        for k in &r.sample_deletes {
            let _ = writeln!(s, "    delete {k}");
        }
        if let Some(w) = &r.delete_refused {
            let _ = writeln!(s, "  deletes refused: {w}");
        }
        return s;
    }
    let _ = writeln!(s, "s3syncd run {} (run {}): {} in {:.2} s", row.spec, row.id, row.status, secs);
    let _ = writeln!(
        s,
        "  listed        {} objects ({} excluded by filter)",
        row.objects_listed, r.filtered
    );
    let modes: Vec<String> = r.stats.modes.iter().map(|(m, c)| format!("{m} {}", c.objects)).collect();
    let _ = writeln!(
        s,
        "  copied        {} objects, {}{}",
        row.objects_copied,
        human_bytes(row.bytes_copied),
        if modes.is_empty() {
            String::new()
        } else {
            format!(" ({})", modes.join(", "))
        }
    );
    let _ = writeln!(s, "  skipped       {} objects (unchanged since copied)", row.objects_skipped);
    let _ = writeln!(s, "  failed        {} objects", row.objects_failed);
    if row.objects_deleted > 0 || r.delete_refused.is_some() {
        let _ = writeln!(
            s,
            "  deleted       {} objects{}",
            row.objects_deleted,
            r.delete_refused.as_ref().map(|w| format!(" (refused: {w})")).unwrap_or_default()
        );
    }
    let fallbacks: Vec<String> = r.stats.fallbacks.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    let _ = writeln!(
        s,
        "  fallbacks     {}",
        if fallbacks.is_empty() {
            "none".to_string()
        } else {
            fallbacks.join("; ")
        }
    );
    let _ = writeln!(s, "  through host  {}", human_bytes(row.bytes_through_host));
    let reqs: Vec<String> = r.stats.requests.iter().map(|(op, n)| format!("{op} {n}")).collect();
    let _ = writeln!(
        s,
        "  requests      {} ({}){}",
        row.requests,
        reqs.join(", "),
        if r.stats.retries > 0 {
            format!(", {} object retries", r.stats.retries)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "  rate          {:.0} objects/s, {:.1} MiB/s",
        row.objects_copied as f64 / secs,
        row.bytes_copied as f64 / secs / 1048576.0
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
    if row.objects_failed > 0 {
        let _ = writeln!(
            s,
            "  see failures  sqlite3 manifest.db \"SELECT source_key, kind, message FROM failures WHERE run_id = {}\"",
            row.id
        );
    }
    s
}
