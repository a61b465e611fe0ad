//! Semantic checks, one small function per rule, each with a constant message that says what to do.
//! They run after serde has accepted the shapes, and collect every problem of a file.

mod side;

use super::raw::{MaxDeleteRaw, RawConfig, RawSpec};
use super::{Config, Diagnostic, Filter, Locator, MaxDelete, Mode, ModeChoice, Schedule, Side, Spec, TransferOpts, VerifyOpts};
use side::check_side;
pub(super) use side::{check_role, RoleKeys};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use toml::Spanned;

pub(super) type Diags = Vec<Diagnostic>;

pub(super) fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    Some(s.span())
}

pub fn config(loc: &Locator, raw: RawConfig) -> Result<Config, Diags> {
    let mut d = Diags::new();
    let mut c = Config {
        path: Some(loc.path.to_path_buf()),
        ..Config::default()
    };
    let base = loc.path.parent().unwrap_or(Path::new("."));
    if let Some(p) = raw.spec_dir {
        c.spec_dir = base.join(p);
    }
    if let Some(p) = raw.state_dir {
        c.state_dir = base.join(p);
    }
    if let Some(v) = raw.max_running_specs {
        c.max_running_specs = in_range(loc, &mut d, &v, "max_running_specs", 1, 1024);
    }
    if let Some(v) = raw.max_transfers {
        c.max_transfers = in_range(loc, &mut d, &v, "max_transfers", 1, 65536);
    }
    if let Some(v) = raw.metrics_listen {
        match v.get_ref().parse() {
            Ok(a) => c.metrics_listen = Some(a),
            Err(_) => d.push(loc.at(span(&v), "metrics_listen must be an address and port, like \"127.0.0.1:9184\"")),
        }
    }
    c.log_format = raw.log_format.unwrap_or_default();
    if let Some(g) = raw.shutdown_grace {
        c.shutdown_grace = g.0;
    }
    if let Some(b) = raw.stream_buffer {
        if b.get_ref().0 < (16 << 20) {
            d.push(loc.at(span(&b), "stream_buffer must be at least 16MiB"));
        } else {
            c.stream_buffer = b.get_ref().0;
        }
    }
    if let Some(n) = raw.notify {
        c.notify = super::feed::check_notify(loc, &mut d, n, base);
    }
    if let Some(cost) = raw.cost {
        let dflt = c.cost;
        c.cost = super::CostTable {
            class_a_per_1000: cost.class_a_per_1000.unwrap_or(dflt.class_a_per_1000),
            class_b_per_1000: cost.class_b_per_1000.unwrap_or(dflt.class_b_per_1000),
            through_host_per_gib: cost.through_host_per_gib.unwrap_or(dflt.through_host_per_gib),
        };
    }
    if d.is_empty() {
        Ok(c)
    } else {
        Err(d)
    }
}

fn in_range(loc: &Locator, d: &mut Diags, v: &Spanned<i64>, key: &str, lo: i64, hi: i64) -> usize {
    let n = *v.get_ref();
    if n < lo || n > hi {
        d.push(loc.at(span(v), format!("{key} must be between {lo} and {hi}, got {n}")));
        return lo as usize;
    }
    n as usize
}

pub fn spec(loc: &Locator, raw: RawSpec, fingerprint: u64) -> Result<Spec, Diags> {
    let mut d = Diags::new();
    let name = check_name(loc, &mut d, raw.name.as_ref());
    let name_at = raw
        .name
        .as_ref()
        .map_or((1, 1), |n| super::diag::line_col(loc.text, n.span().start));
    let schedule = raw.schedule.as_ref().and_then(|s| check_schedule(loc, &mut d, s));
    let mode = raw.mode.unwrap_or(ModeChoice::Auto);
    let fallback = check_fallback(loc, &mut d, mode, raw.fallback.as_ref());
    let mut raw_source = raw.source;
    let events = raw_source.events.take().and_then(|e| super::events::check_events(loc, &mut d, e));
    if let Some(e) = raw.destination.events.as_ref() {
        d.push(loc.at(
            span(&e.queue_url),
            "events come from the source's bucket: move this table to [source.events]",
        ));
    }
    let source = check_side(loc, &mut d, "source", raw_source);
    let destination = check_side(loc, &mut d, "destination", raw.destination);
    let dest_at = destination.1.as_ref().map_or((1, 1), |s| super::diag::line_col(loc.text, s.start));
    check_overlap(loc, &mut d, &source, &destination);
    let delete = raw.delete.as_ref().is_some_and(|v| *v.get_ref());
    if let Some(del) = raw.delete.as_ref().filter(|v| *v.get_ref()) {
        check_delete_prefixes(loc, &mut d, del, &source.0, &destination.0);
    }
    let max_delete = raw
        .max_delete
        .as_ref()
        .map_or(MaxDelete::Percent(10), |m| check_max_delete(loc, &mut d, m));
    let filter = check_filter(loc, &mut d, raw.filter);
    let feed = super::feed::check_feed(
        loc,
        &mut d,
        super::feed::RawFeed {
            stale_after: raw.stale_after,
            keep_previous: raw.keep_previous,
            deliveries: raw.deliveries,
            notify: raw.notify.unwrap_or_default(),
        },
        &destination.0,
        &source.0,
    );
    let transfer = check_transfer(loc, &mut d, raw.transfer);
    let series = raw.series.and_then(|r| check_series(loc, &mut d, r));
    let verify = check_verify(loc, &mut d, raw.verify);
    if !d.is_empty() {
        return Err(d);
    }
    Ok(Spec {
        name,
        path: loc.path.to_path_buf(),
        schedule,
        enabled: raw.enabled.unwrap_or(true),
        mode,
        fallback,
        delete,
        max_delete,
        source: source.0,
        destination: destination.0,
        filter,
        transfer,
        verify,
        series,
        events,
        feed,
        fingerprint,
        name_at,
        dest_at,
    })
}

const NAME_RULE: &str = "use only letters, digits, '.', '_' and '-' (at most 128 characters, not only dots)";

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.chars().all(|c| c == '.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_name(loc: &Locator, d: &mut Diags, name: Option<&Spanned<String>>) -> String {
    match name {
        Some(n) => {
            if !valid_name(n.get_ref()) {
                d.push(loc.at(span(n), format!("invalid spec name {:?}: {NAME_RULE}", n.get_ref())));
            }
            n.get_ref().clone()
        }
        None => {
            let stem = loc.path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
            if !valid_name(&stem) {
                d.push(loc.at(
                    None,
                    format!("the file name {stem:?} is not a valid spec name: set `name` or rename the file; {NAME_RULE}"),
                ));
            }
            stem
        }
    }
}

/// Accepts 5-field (minute first) and 6-field (seconds first) cron, always UTC.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let normalized = match fields {
        5 => format!("0 {expr}"),
        6 => expr.to_string(),
        n => {
            return Err(format!(
                "cron expression {expr:?} has {n} fields; use 5 (min hour day month weekday) or 6 (sec min hour day month weekday)"
            ))
        }
    };
    cron::Schedule::from_str(&normalized).map_err(|e| format!("invalid cron expression {expr:?}: {e}"))
}

fn check_schedule(loc: &Locator, d: &mut Diags, s: &Spanned<String>) -> Option<Schedule> {
    match Schedule::parse(s.get_ref()) {
        Ok(sched) => Some(sched),
        Err(m) => {
            d.push(loc.at(span(s), m));
            None
        }
    }
}

fn check_fallback(loc: &Locator, d: &mut Diags, mode: ModeChoice, fb: Option<&Spanned<Vec<Spanned<ModeChoice>>>>) -> Vec<Mode> {
    let Some(list) = fb else {
        return if mode == ModeChoice::Auto {
            vec![Mode::Stream, Mode::Staged]
        } else {
            Vec::new()
        };
    };
    let first = mode.first();
    let mut out = Vec::new();
    for m in list.get_ref() {
        let choice = *m.get_ref();
        let v = choice.first();
        if choice == ModeChoice::Auto {
            d.push(loc.at(span(m), "`auto` cannot be a fallback: list concrete modes (direct, stream, staged)"));
        } else if v == first || out.contains(&v) {
            d.push(loc.at(span(m), format!("mode {v} appears twice in the mode order; list each mode once")));
        } else {
            out.push(v);
        }
    }
    out
}

fn check_overlap(loc: &Locator, d: &mut Diags, src: &(Side, Option<Range<usize>>), dst: &(Side, Option<Range<usize>>)) {
    let (s, _) = src;
    let (t, t_span) = dst;
    if s.overlaps(t) {
        d.push(loc.at(
            t_span.clone(),
            format!(
                "source and destination overlap (bucket {:?}, prefixes {:?} and {:?}): a sync would copy its own output; use disjoint prefixes or another bucket",
                t.bucket, s.prefix, t.prefix
            ),
        ));
    }
}

fn check_delete_prefixes(loc: &Locator, d: &mut Diags, del: &Spanned<bool>, src: &Side, dst: &Side) {
    if src.prefix.is_empty() || dst.prefix.is_empty() {
        d.push(loc.at(
            span(del),
            "`delete = true` needs a non-empty source.prefix and destination.prefix, so that a mistake cannot empty a whole bucket",
        ));
    }
}

fn check_max_delete(loc: &Locator, d: &mut Diags, m: &Spanned<MaxDeleteRaw>) -> MaxDelete {
    let bad = |d: &mut Diags| d.push(loc.at(span(m), "max_delete must be a count (like 100) or a percentage (like \"10%\")"));
    match m.get_ref() {
        MaxDeleteRaw::Count(n) if *n >= 0 => MaxDelete::Count(*n as u64),
        MaxDeleteRaw::Text(t) => match t.strip_suffix('%').and_then(|p| p.trim().parse::<u8>().ok()).filter(|p| *p <= 100) {
            Some(p) => MaxDelete::Percent(p),
            None => {
                bad(d);
                MaxDelete::Count(0)
            }
        },
        _ => {
            bad(d);
            MaxDelete::Count(0)
        }
    }
}

fn check_filter(loc: &Locator, d: &mut Diags, raw: Option<super::raw::RawFilter>) -> Filter {
    let build = |d: &mut Diags, globs: Option<Vec<Spanned<String>>>| -> Option<globset::GlobSet> {
        let globs = globs?;
        let mut b = globset::GlobSetBuilder::new();
        for g in &globs {
            match globset::GlobBuilder::new(g.get_ref()).literal_separator(true).build() {
                Ok(glob) => {
                    b.add(glob);
                }
                Err(e) => d.push(loc.at(span(g), format!("invalid glob {:?}: {}", g.get_ref(), e.kind()))),
            }
        }
        b.build().ok()
    };
    let (inc, exc) = raw.map_or((None, None), |f| (f.include, f.exclude));
    let list_prefixes = inc
        .as_ref()
        .map(|globs| super::list_prefixes(globs.iter().map(|g| g.get_ref().as_str())))
        .unwrap_or_default();
    Filter {
        include: build(d, inc),
        exclude: build(d, exc),
        list_prefixes,
    }
}

/// `[series]`: the key pattern, when a file is overdue, when the whole source is listed.
fn check_series(loc: &Locator, d: &mut Diags, raw: super::raw::RawSeries) -> Option<super::series::SeriesOpts> {
    let pattern = super::series::Pattern::parse(raw.key.get_ref())
        .map_err(|m| d.push(loc.at(span(&raw.key), format!("series.key {:?}: {m}", raw.key.get_ref()))))
        .ok();
    let due_after = match &raw.due_after {
        None => Some(std::time::Duration::from_secs(86_400)),
        Some(v) => super::size::parse_duration(v.get_ref())
            .map_err(|m| d.push(loc.at(span(v), format!("series.due_after: {m}"))))
            .ok(),
    };
    let reconcile = match &raw.reconcile {
        None => Some(super::Schedule::parse("0 0 4 * * Sun").expect("the default cron parses")),
        Some(v) => check_schedule(loc, d, v),
    };
    Some(super::series::SeriesOpts {
        pattern: pattern?,
        due_after: due_after?,
        reconcile: reconcile?,
    })
}

fn check_transfer(loc: &Locator, d: &mut Diags, raw: Option<super::raw::RawTransfer>) -> TransferOpts {
    let mut t = TransferOpts::default();
    let Some(raw) = raw else { return t };
    if let Some(v) = &raw.concurrency {
        t.concurrency = Some(in_range(loc, d, v, "transfer.concurrency", 1, 4096));
    }
    if let Some(v) = &raw.parts_in_flight {
        t.parts_in_flight = in_range(loc, d, v, "transfer.parts_in_flight", 1, 64);
    }
    if let Some(v) = &raw.list_partitions {
        t.list_partitions = in_range(loc, d, v, "transfer.list_partitions", 1, 64);
    }
    if let Some(v) = &raw.retries {
        t.retries = in_range(loc, d, v, "transfer.retries", 0, 20) as u32;
    }
    t.preserve_tags = raw.preserve_tags.unwrap_or(false);
    const MIN_PART: u64 = 5 << 20;
    const MAX_PART: u64 = 5 << 30;
    if let Some(v) = &raw.part_size {
        let n = v.get_ref().0;
        if !(MIN_PART..=MAX_PART).contains(&n) {
            d.push(loc.at(
                span(v),
                "transfer.part_size must be between 5MiB and 5GiB (the S3 multipart limits)",
            ));
        } else {
            t.part_size = n;
        }
    }
    for (v, key, slot) in [
        (&raw.multipart_threshold, "transfer.multipart_threshold", &mut t.multipart_threshold),
        (&raw.copy_threshold, "transfer.copy_threshold", &mut t.copy_threshold),
    ] {
        if let Some(v) = v {
            let n = v.get_ref().0;
            if !(MIN_PART..=MAX_PART).contains(&n) {
                d.push(loc.at(
                    span(v),
                    format!("{key} must be between 5MiB and 5GiB: S3 takes single requests up to 5GiB and parts of at least 5MiB"),
                ));
            } else {
                *slot = n;
            }
        }
    }
    t
}

/// `[verify]`: how objects are compared, their checksum sidecars and how long to wait for one.
fn check_verify(loc: &Locator, d: &mut Diags, raw: Option<super::raw::RawVerify>) -> VerifyOpts {
    let Some(raw) = raw else { return VerifyOpts::default() };
    let sidecar_wait = raw.sidecar_wait.as_ref().map_or(VerifyOpts::SIDECAR_WAIT, |v| {
        super::size::parse_duration(v.get_ref())
            .map_err(|m| d.push(loc.at(span(v), format!("verify.sidecar_wait: {m}"))))
            .unwrap_or_default()
    });
    VerifyOpts {
        compare: raw.compare.unwrap_or_default(),
        checksum_sidecar: raw.checksum_sidecar.and_then(|s| check_sidecar(loc, d, s)),
        sidecar_wait,
    }
}

fn check_sidecar(loc: &Locator, d: &mut Diags, s: Spanned<String>) -> Option<String> {
    if s.get_ref().is_empty() || s.get_ref().contains('/') {
        d.push(loc.at(
            span(&s),
            "verify.checksum_sidecar must be a key suffix like \".CHECKSUM\" without '/'",
        ));
        return None;
    }
    Some(s.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_five_and_six_fields() {
        assert!(parse_cron("30 8 * * *").is_ok());
        assert!(parse_cron("*/2 * * * * *").is_ok());
        assert!(parse_cron("* * *").unwrap_err().contains("has 3 fields"));
        assert!(parse_cron("0 61 * * * *").unwrap_err().contains("invalid cron expression"));
    }

    #[test]
    fn a_percentage_cap_allows_at_least_one_deletion() {
        assert_eq!(MaxDelete::Percent(10).limit(5), 1);
        assert_eq!(MaxDelete::Percent(10).limit(0), 0);
        assert_eq!(MaxDelete::Percent(10).limit(250), 25);
        assert_eq!(MaxDelete::Percent(0).limit(250), 0);
        assert_eq!(MaxDelete::Count(3).limit(1), 3);
    }

    #[test]
    fn endpoint_identity_sees_through_spellings_of_one_server() {
        let side = |e: Option<&str>| Side {
            bucket: "b".into(),
            endpoint: e.map(Into::into),
            path_style: true,
            ..Side::default()
        };
        let id = |e| side(Some(e)).endpoint_identity();
        assert_eq!(id("http://127.0.0.1:9000"), id("http://LOCALHOST:9000/"));
        assert_eq!(id("http://[::1]:9000"), id("http://127.0.0.1:9000"));
        assert_eq!(id("http://minio.local"), id("http://minio.local:80"));
        assert_eq!(id("https://s3.example.com"), id("https://S3.example.com:443/"));
        assert_ne!(id("http://127.0.0.1:9000"), id("http://127.0.0.1:9001"));
        assert_ne!(id("https://s3.example.com"), id("http://s3.example.com"));
        assert_eq!(side(None).endpoint_identity(), "aws");
    }

    #[test]
    fn fallback_order() {
        assert_eq!(
            super::super::chain(ModeChoice::Auto, &[Mode::Stream, Mode::Staged]),
            vec![Mode::Direct, Mode::Stream, Mode::Staged]
        );
        assert_eq!(super::super::chain(ModeChoice::Stream, &[]), vec![Mode::Stream]);
    }
}
