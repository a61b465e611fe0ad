//! The status page: one self-contained HTML file (no script, no font, no request to anywhere;
//! charts are inline SVG) of every feed, its last runs, its series and the recent failures,
//! read from the manifest and the specs. Every name and key is escaped: keys are data.

use crate::manifest::{Reader, Result, RunRow, RunStatus};
use crate::spec::series::SeriesGaps;
use crate::spec::Spec;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt::Write;

/// Runs shown per feed.
const RUNS: u32 = 30;
/// Days (or months) shown per series in the heatmap, ending today.
const PERIODS: i64 = 60;
/// Series rows in a feed's heatmap: those with holes or overdue first.
const SERIES_ROWS: usize = 200;

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page for `specs` at `now`.
pub fn page<S: Borrow<Spec>>(reader: &Reader, specs: &[S], now: DateTime<Utc>) -> Result<String> {
    let specs: Vec<&Spec> = specs.iter().map(Borrow::borrow).collect();
    let mut html = String::from(HEAD);
    let _ = write!(html, "<h1>s3syncd</h1><p class=\"when\">as of {}</p>", esc(&now.to_rfc3339()));
    html += "<table id=\"feeds\"><thead><tr><th>feed</th><th>schedule</th><th>next run</th><th>last run</th><th>status</th><th>fresh</th><th>objects</th><th>bytes</th><th>undelivered</th></tr></thead><tbody>";
    for spec in &specs {
        feed_row(&mut html, reader, spec, now)?;
    }
    html += "</tbody></table>";
    for spec in &specs {
        let runs = reader.runs(Some(&spec.name), RUNS)?;
        let _ = write!(html, "<section class=\"feed\" data-feed=\"{0}\"><h2>{0}</h2>", esc(&spec.name));
        runs_chart(&mut html, &runs);
        if let Some((series, _)) = reader.gaps(spec, now)? {
            let revised: HashSet<String> = reader
                .revised_keys(&spec.name)?
                .into_iter()
                .filter_map(|k| k.strip_prefix(&spec.destination.prefix).map(str::to_string))
                .collect();
            heatmap(&mut html, &series, &revised, now);
        }
        html += "</section>";
    }
    failures(&mut html, reader)?;
    html += "</body></html>\n";
    Ok(html)
}

fn feed_row(html: &mut String, reader: &Reader, spec: &Spec, now: DateTime<Utc>) -> Result<()> {
    let st = reader.spec_status(&spec.name)?;
    let schedule = spec.schedule.as_ref();
    let next = schedule.and_then(|s| s.next_after(now)).map(|t| t.to_rfc3339());
    let (last, status) = match &st.last_run {
        Some(r) => (r.started_at.clone(), r.status.as_str()),
        None => ("never".to_string(), "-"),
    };
    let stale = reader.stale_since(&spec.name)?;
    let undelivered = reader.undelivered(&spec.name)?.len();
    let _ = write!(
        html,
        "<tr data-feed=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"s-{status}\">{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{undelivered}</td></tr>",
        esc(&spec.name),
        esc(&spec.name),
        esc(schedule.map_or("manual", |s| s.expr.as_str())),
        esc(next.as_deref().unwrap_or("-")),
        esc(&last),
        esc(&stale.map_or("fresh".to_string(), |s| format!("STALE since {s}"))),
        st.objects,
        crate::spec::size::ByteSize(st.bytes),
    );
    Ok(())
}

/// Bars of objects copied per run (red: failed objects or a failed run), oldest first, with
/// each run's numbers in its tooltip.
fn runs_chart(html: &mut String, runs: &[RunRow]) {
    if runs.is_empty() {
        html.push_str("<p>no runs yet</p>");
        return;
    }
    let max = runs
        .iter()
        .map(|r| r.objects_copied.max(r.objects_failed))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (w, h) = (12.0, 80.0);
    let _ = write!(
        html,
        "<svg class=\"runs\" role=\"img\" aria-label=\"last runs\" width=\"{}\" height=\"{}\">",
        runs.len() as f64 * w,
        h + 2.0
    );
    for (i, r) in runs.iter().rev().enumerate() {
        let bad = r.objects_failed > 0 || matches!(r.status, RunStatus::Failed);
        let n = if bad { r.objects_failed.max(1) } else { r.objects_copied };
        let bar = (n as f64 / max * h).max(2.0);
        let secs = run_seconds(r).map_or("-".to_string(), |s| format!("{s:.1} s"));
        let _ = write!(
            html,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{bar}\" class=\"{}\"><title>run {} {}: {} copied, {} failed, {} bytes, {secs}</title></rect>",
            i as f64 * w,
            h - bar,
            w - 2.0,
            if bad { "bad" } else { "good" },
            r.id,
            r.status.as_str(),
            r.objects_copied,
            r.objects_failed,
            r.bytes_copied,
        );
    }
    html.push_str("</svg>");
}

fn run_seconds(r: &RunRow) -> Option<f64> {
    let (a, b) = (
        DateTime::parse_from_rfc3339(&r.started_at).ok()?,
        DateTime::parse_from_rfc3339(r.finished_at.as_deref()?).ok()?,
    );
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

/// What one cell of the heatmap shows. `revised`: the keys (relative to the prefix) whose
/// file was republished upstream.
fn cell(g: &SeriesGaps, period: &str, revised: &HashSet<String>) -> &'static str {
    let key = || g.series.replacen("{date}", period, 1).replacen("{month}", period, 1);
    if g.missing.iter().any(|m| m == period) {
        "missing"
    } else if g.late.iter().any(|m| m == period) {
        "late"
    } else if period < g.first.as_str() {
        "none"
    } else if period <= g.last.as_str() && revised.contains(&key()) {
        "revised"
    } else if period <= g.last.as_str() {
        "present"
    } else if g.overdue_periods > 0 {
        "overdue"
    } else {
        "none"
    }
}

/// Series × the last `PERIODS` periods: present, revised, late, missing, overdue. Series with
/// holes or overdue come first; complete ones after, up to `SERIES_ROWS` rows in all.
fn heatmap(html: &mut String, series: &[SeriesGaps], revised: &HashSet<String>, now: DateTime<Utc>) {
    let monthly = series.first().is_some_and(|g| g.last.len() == 7);
    let periods: Vec<String> = (0..PERIODS)
        .rev()
        .map(|i| match monthly {
            true => first_of_month(now)
                .checked_sub_months(chrono::Months::new(i as u32))
                .map_or(String::new(), |d| d.format("%Y-%m").to_string()),
            false => (now - Duration::days(i)).format("%Y-%m-%d").to_string(),
        })
        .collect();
    let mut rows: Vec<&SeriesGaps> = series.iter().filter(|g| g.has_gaps()).collect();
    rows.extend(series.iter().filter(|g| !g.has_gaps()));
    let gapped = series.iter().filter(|g| g.has_gaps()).count();
    let _ = write!(
        html,
        "<h3>series: {} of {} with holes or overdue, {} to {}</h3><table class=\"heatmap\"><tbody>",
        gapped,
        series.len(),
        esc(periods.first().map_or("", String::as_str)),
        esc(periods.last().map_or("", String::as_str)),
    );
    for g in rows.iter().take(SERIES_ROWS) {
        let _ = write!(html, "<tr data-series=\"{0}\"><th>{0}</th>", esc(&g.series));
        for p in &periods {
            let c = cell(g, p, revised);
            let _ = write!(html, "<td class=\"{c}\" title=\"{} {c}\"></td>", esc(p));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    if rows.len() > SERIES_ROWS {
        let _ = write!(
            html,
            "<p>{} more series not shown (`s3syncd manifest gaps` lists all)</p>",
            rows.len() - SERIES_ROWS
        );
    }
}

fn failures(html: &mut String, reader: &Reader) -> Result<()> {
    html.push_str("<h2>recent failures</h2><table id=\"failures\"><thead><tr><th>when</th><th>feed</th><th>run</th><th>key</th><th>cause</th></tr></thead><tbody>");
    for f in reader.recent_failures(50)? {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"key\">{}</td><td>{}</td></tr>",
            esc(&f.at),
            esc(&f.spec),
            f.run_id,
            esc(&f.source_key),
            esc(&f.message)
        );
    }
    html.push_str("</tbody></table>");
    Ok(())
}

fn first_of_month(now: DateTime<Utc>) -> NaiveDate {
    use chrono::Datelike;
    now.date_naive().with_day(1).expect("every month has a first day")
}

const HEAD: &str = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>s3syncd status</title>\
<meta name=\"viewport\" content=\"width=device-width\"><style>\
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}\
#feeds td,#feeds th,#failures td,#failures th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}\
.s-ok{color:#17803d}.s-partial{color:#b36b00}.s-failed,.s-interrupted{color:#c62828;font-weight:bold}\
.runs .good{fill:#4c8bf5}.runs .bad{fill:#c62828}\
.heatmap th{font-weight:normal;text-align:right;padding-right:.5em;white-space:nowrap}\
.heatmap td{width:9px;height:9px;padding:0;border:1px solid #fff}\
.present{background:#4caf50}.late{background:#ffb300}.missing{background:#c62828}.revised{background:#1e88e5}.overdue{background:#8e24aa}.none{background:#eee}\
.key{font-family:monospace}.when{color:#666}</style></head><body>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_and_keys_is_text() {
        assert_eq!(esc("<img src=x onerror=alert(1)>"), "&lt;img src=x onerror=alert(1)&gt;");
        assert_eq!(esc("a\"b'c&d"), "a&quot;b&#39;c&amp;d");
    }

    #[test]
    fn cells_say_present_revised_late_missing_and_overdue() {
        let g = SeriesGaps {
            series: "A".into(),
            first: "2026-11-01".into(),
            last: "2026-11-05".into(),
            periods: 4,
            missing: vec!["2026-11-03".into()],
            overdue_since: Some("2026-11-07T00:00:00Z".into()),
            overdue_periods: 1,
            late: vec!["2026-11-04".into()],
        };
        let got: Vec<_> = ["2026-10-31", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-06"]
            .iter()
            .map(|p| cell(&g, p, &HashSet::new()))
            .collect();
        assert_eq!(got, ["none", "present", "missing", "late", "overdue"]);
        let g = SeriesGaps {
            series: "A-{date}".into(),
            ..g
        };
        let revised = HashSet::from(["A-2026-11-02".to_string()]);
        assert_eq!(cell(&g, "2026-11-02", &revised), "revised");
        assert_eq!(cell(&g, "2026-11-05", &revised), "present");
    }
}
