//! `[series]`: keys that form dated series, as the Binance archive's do
//! (`{symbol}/{interval}/{symbol}-{interval}-{date}.zip`). A pattern of literal text and
//! `{NAME}` fields, each field within one path segment; the fields other than the one date
//! field name a series, the date field orders it by period (a day or a month).

use super::Schedule;
use chrono::{DateTime, Datelike, Duration as Days, NaiveDate, TimeZone, Utc};
use std::time::Duration;

/// The spec's `[series]`.
#[derive(Debug, Clone)]
pub struct SeriesOpts {
    pub pattern: Pattern,
    /// How long after its period ends a file is overdue.
    pub due_after: Duration,
    /// When a run lists the whole source.
    pub reconcile: Schedule,
}

/// A period of a series: one day or one month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Period {
    Day(NaiveDate),
    /// The first day of the month.
    Month(NaiveDate),
}

impl Period {
    /// The period after this one.
    pub fn next(self) -> Period {
        match self {
            Period::Day(d) => Period::Day(d + Days::days(1)),
            Period::Month(d) => Period::Month(first_of_next_month(d)),
        }
    }

    /// When the period ends (UTC): the first moment a file of it can exist.
    pub fn end(self) -> DateTime<Utc> {
        let next = match self.next() {
            Period::Day(d) | Period::Month(d) => d,
        };
        Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0).expect("midnight exists"))
    }

    /// The period that holds `at` (of the same kind as `self`).
    pub fn containing(self, at: DateTime<Utc>) -> Period {
        let d = at.date_naive();
        match self {
            Period::Day(_) => Period::Day(d),
            Period::Month(_) => Period::Month(d.with_day(1).expect("day 1 exists")),
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Period::Day(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Period::Month(d) => write!(f, "{}", d.format("%Y-%m")),
        }
    }
}

fn first_of_next_month(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).expect("the first of a month exists")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// A field that names the series.
    Field(String),
    /// The one date field: `{date}` (daily) or `{month}` (monthly).
    Date {
        monthly: bool,
    },
}

/// A parsed `series.key` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    parts: Vec<Part>,
}

/// One key read through a pattern: its series (the key with its date replaced by the date
/// field's name) and its period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesKey {
    pub series: String,
    pub period: Period,
    /// The fields that name the series, in pattern order.
    pub fields: Vec<(String, String)>,
}

impl Pattern {
    /// Parses a pattern; the error says what is wrong, for a located diagnostic.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let close = rest.find('}').ok_or("a `{` without its `}`")?;
                    let name = &rest[1..close];
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!("field {{{name}}}: names are letters, digits and _"));
                    }
                    if matches!(parts.last(), Some(Part::Field(_) | Part::Date { .. })) {
                        return Err(format!(
                            "field {{{name}}} follows another field with nothing between: where one ends is unknowable"
                        ));
                    }
                    parts.push(match name {
                        "date" => Part::Date { monthly: false },
                        "month" => Part::Date { monthly: true },
                        n => Part::Field(n.to_string()),
                    });
                    rest = &rest[close + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    if rest[..end].contains('}') {
                        return Err("a `}` without its `{`".into());
                    }
                    parts.push(Part::Literal(rest[..end].to_string()));
                    rest = &rest[end..];
                }
            }
        }
        match parts.iter().filter(|p| matches!(p, Part::Date { .. })).count() {
            1 => {}
            0 => return Err("no date field: use {date} (YYYY-MM-DD, daily) or {month} (YYYY-MM, monthly) once".into()),
            _ => return Err("more than one date field: a series is ordered by exactly one of {date} or {month}".into()),
        }
        if text.starts_with('/') {
            return Err("a pattern is relative to source.prefix: no leading '/'".into());
        }
        Ok(Pattern {
            text: text.to_string(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The literal folders before the first field, when that field names a folder (a `/`
    /// follows it): new series show up as new folders there (`"spot/"` of
    /// `"spot/{symbol}/{symbol}-{date}.zip"`, `""` of `"{symbol}/..."`).
    pub fn folder_prefix(&self) -> Option<&str> {
        let first = self.text.find('{')?;
        let literal = self.text[..first].rfind('/').map_or(0, |i| i + 1);
        self.text[first..].contains('/').then(|| &self.text[..literal])
    }

    /// Reads `key` (relative to `source.prefix`); `None` when it does not match.
    pub fn read(&self, key: &str) -> Option<SeriesKey> {
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut period = None;
        let mut series = String::with_capacity(key.len());
        let mut rest = key;
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(l) => {
                    rest = rest.strip_prefix(l.as_str())?;
                    series.push_str(l);
                }
                Part::Date { monthly } => {
                    let n = if *monthly { 7 } else { 10 };
                    let text = rest.get(..n)?;
                    period = Some(parse_period(text, *monthly)?);
                    series.push_str(if *monthly { "{month}" } else { "{date}" });
                    rest = &rest[n..];
                }
                Part::Field(name) => {
                    // Up to the first occurrence of the text after it, within one segment.
                    let segment_end = rest.find('/').unwrap_or(rest.len());
                    let end = match self.parts.get(i + 1) {
                        Some(Part::Literal(l)) => rest.find(l.as_str()).filter(|&e| e <= segment_end)?,
                        _ => segment_end,
                    };
                    let value = &rest[..end];
                    if value.is_empty() || value.contains('/') {
                        return None;
                    }
                    if let Some((_, seen)) = fields.iter().find(|(n, _)| n == name) {
                        if seen != value {
                            return None;
                        }
                    } else {
                        fields.push((name.clone(), value.to_string()));
                    }
                    series.push_str(value);
                    rest = &rest[end..];
                }
            }
        }
        rest.is_empty().then(|| SeriesKey {
            series,
            period: period.expect("a pattern has one date field"),
            fields,
        })
    }
}

fn parse_period(text: &str, monthly: bool) -> Option<Period> {
    if monthly {
        NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok().map(Period::Month)
    } else {
        // Exactly YYYY-MM-DD: chrono would take a one-digit month.
        let b = text.as_bytes();
        let shape =
            b.len() == 10 && b[4] == b'-' && b[7] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        shape.then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(Period::Day))?
    }
}

/// What one series holds, gathered key by key in key order (within a series, keys differ only
/// in their date, so key order is period order); a key of a hole may come later.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Held {
    first: Period,
    last: Period,
    /// The last period's key (relative to `source.prefix`).
    last_key: String,
    /// When, and by which run, the last period's file was copied.
    last_copied: Option<DateTime<Utc>>,
    last_run: i64,
    periods: u64,
    missing: Vec<Period>,
    late: Vec<Period>,
}

/// The completeness of every series of a spec, from the keys it holds. It is kept in the
/// manifest between runs (`feeds.series_state`), so that a run adds only the keys copied since.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Gaps {
    series: std::collections::BTreeMap<String, Held>,
    /// Keys that match no series.
    pub unmatched: u64,
}

/// One series' completeness, as `manifest gaps` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeriesGaps {
    pub series: String,
    pub first: String,
    pub last: String,
    pub periods: u64,
    /// Periods between the first and the last that no file holds (holes).
    pub missing: Vec<String>,
    /// Since when the period after the last is overdue, and how many periods are.
    pub overdue_since: Option<String>,
    pub overdue_periods: u64,
    /// Periods whose file arrived late: copied after it was due, by a later run than a later
    /// period's file (a hole the publisher filled; a backfill is not late).
    pub late: Vec<String>,
}

impl SeriesGaps {
    pub fn has_gaps(&self) -> bool {
        !self.missing.is_empty() || self.overdue_periods > 0
    }
}

/// Where one series stands, for a run that lists only what can be new.
#[derive(Debug)]
pub struct Tail<'a> {
    pub last: Period,
    /// The last period's key, relative to `source.prefix`.
    pub last_key: &'a str,
    /// The missing periods and the keys their files would have.
    pub holes: Vec<(Period, String)>,
}

/// The key of `series` (its key with the date field left in) for `period`.
pub fn key_of(series: &str, period: Period) -> String {
    let field = match period {
        Period::Day(_) => "{date}",
        Period::Month(_) => "{month}",
    };
    series.replacen(field, &period.to_string(), 1)
}

/// What a run records of its spec's series: periods missing inside them, series overdue, and
/// the first 100 series with either (for the `gap` notification).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub missing: u64,
    pub overdue: u64,
    pub gapped: Vec<SeriesGaps>,
}

impl Totals {
    pub fn of(report: Vec<SeriesGaps>) -> Totals {
        Totals {
            missing: report.iter().map(|g| g.missing.len() as u64).sum(),
            overdue: report.iter().filter(|g| g.overdue_periods > 0).count() as u64,
            gapped: report.into_iter().filter(SeriesGaps::has_gaps).take(100).collect(),
        }
    }
}

/// At most this many overdue periods are counted at a series' end (a series stopped for good).
const MAX_OVERDUE: u64 = 10_000;

impl Gaps {
    /// Adds a held key (relative to `source.prefix`), copied at `copied_at` by run `run_id`:
    /// in key order, or later than the keys after it (a hole filled since).
    pub fn add(&mut self, opts: &SeriesOpts, key: &str, run_id: i64, copied_at: Option<DateTime<Utc>>) {
        let Some(k) = opts.pattern.read(key) else {
            self.unmatched += 1;
            return;
        };
        let Some(held) = self.series.get_mut(&k.series) else {
            self.series.insert(
                k.series,
                Held {
                    first: k.period,
                    last: k.period,
                    last_key: key.to_string(),
                    last_copied: copied_at,
                    last_run: run_id,
                    periods: 1,
                    missing: Vec::new(),
                    late: Vec::new(),
                },
            );
            return;
        };
        let due = |p: Period| p.end() + opts.due_after;
        if k.period > held.last {
            // The previous file arrived late: after it was due, and in a later run than this
            // later one.
            if held.last_run > run_id && held.last_copied.is_some_and(|prev| prev > due(held.last)) {
                held.late.push(held.last);
            }
            let mut p = held.last.next();
            while p < k.period {
                held.missing.push(p);
                p = p.next();
            }
            held.last = k.period;
            held.last_key = key.to_string();
            held.last_copied = copied_at;
            held.last_run = run_id;
            held.periods += 1;
        } else if let Some(i) = held.missing.iter().position(|p| *p == k.period) {
            // A hole filled after later periods were held: late when it came after it was due,
            // in a later run than the last period's file (a backfill is not late).
            held.missing.remove(i);
            held.periods += 1;
            if run_id > held.last_run && copied_at.is_some_and(|at| at > due(k.period)) {
                held.late.push(k.period);
                held.late.sort();
            }
        } else if k.period < held.first {
            let mut p = k.period.next();
            while p < held.first {
                held.missing.push(p);
                p = p.next();
            }
            held.missing.sort();
            held.first = k.period;
            held.periods += 1;
        }
        // Otherwise a period already held: a republished file, or a key seen again.
    }

    /// Where each series stands: its last key and period, and its holes with their keys.
    pub fn tails(&self) -> impl Iterator<Item = Tail<'_>> {
        self.series.iter().map(|(series, h)| Tail {
            last: h.last,
            last_key: &h.last_key,
            holes: h.missing.iter().map(|p| (*p, key_of(series, *p))).collect(),
        })
    }

    /// Whether no key of any series is held (a first run).
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Every series' completeness at `now`.
    pub fn report(&self, opts: &SeriesOpts, now: DateTime<Utc>) -> Vec<SeriesGaps> {
        self.series
            .iter()
            .map(|(name, h)| {
                let due = |p: Period| p.end() + opts.due_after;
                let mut overdue = 0;
                let mut p = h.last.next();
                while due(p) < now && overdue < MAX_OVERDUE {
                    overdue += 1;
                    p = p.next();
                }
                SeriesGaps {
                    series: name.clone(),
                    first: h.first.to_string(),
                    last: h.last.to_string(),
                    periods: h.periods,
                    missing: h.missing.iter().map(ToString::to_string).collect(),
                    overdue_since: (overdue > 0).then(|| due(h.last.next()).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    overdue_periods: overdue,
                    late: h.late.iter().map(ToString::to_string).collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Period {
        Period::Day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    #[test]
    fn binance_keys_read_as_series_and_periods() {
        let p = Pattern::parse("{symbol}/{interval}/{symbol}-{interval}-{date}.zip").unwrap();
        let k = p.read("BTCUSDT/1m/BTCUSDT-1m-2026-11-27.zip").unwrap();
        assert_eq!(k.series, "BTCUSDT/1m/BTCUSDT-1m-{date}.zip");
        assert_eq!(k.period, day("2026-11-27"));
        assert_eq!(k.fields, [("symbol".into(), "BTCUSDT".into()), ("interval".into(), "1m".into())]);
        // A field used twice must match the same text; fields stay within a segment.
        assert_eq!(p.read("BTCUSDT/1m/ETHUSDT-1m-2026-11-27.zip"), None);
        assert_eq!(p.read("BTC/USDT/1m/BTC/USDT-1m-2026-11-27.zip"), None);
        // Not a date, a sidecar, a date that does not exist.
        assert_eq!(p.read("BTCUSDT/1m/BTCUSDT-1m-2026-11-2.zip"), None);
        assert_eq!(p.read("BTCUSDT/1m/BTCUSDT-1m-2026-11-27.zip.CHECKSUM"), None);
        assert_eq!(p.read("BTCUSDT/1m/BTCUSDT-1m-2026-02-30.zip"), None);
        let m = Pattern::parse("{symbol}/{symbol}-{month}.zip").unwrap();
        let k = m.read("ETHBTC/ETHBTC-2026-10.zip").unwrap();
        assert_eq!(
            (k.period.to_string(), k.period.next().to_string()),
            ("2026-10".into(), "2026-11".into())
        );
        assert_eq!(k.period.end().to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(
            Period::Month(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()).next().to_string(),
            "2027-01"
        );
    }

    /// Daily series of `{symbol}/{symbol}-{date}.zip`, due a day after.
    fn daily() -> SeriesOpts {
        SeriesOpts {
            pattern: Pattern::parse("{symbol}/{symbol}-{date}.zip").unwrap(),
            due_after: Duration::from_secs(86_400),
            reconcile: Schedule::parse("0 0 4 * * Sun").unwrap(),
        }
    }

    #[test]
    fn gaps_name_holes_overdue_series_and_late_files() {
        let opts = daily();
        let at = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        let mut g = Gaps::default();
        // A: the 1st, 2nd, 3rd and 6th (4th and 5th missing); the 2nd came on the 6th, after
        // the 3rd (copied on the 4th): late.
        g.add(&opts, "A/A-2026-11-01.zip", 1, at("2026-11-02T01:00:00Z"));
        g.add(&opts, "A/A-2026-11-01.zip.CHECKSUM", 1, at("2026-11-02T01:00:00Z"));
        g.add(&opts, "A/A-2026-11-02.zip", 3, at("2026-11-06T01:00:00Z"));
        g.add(&opts, "A/A-2026-11-03.zip", 2, at("2026-11-04T01:00:00Z"));
        g.add(&opts, "A/A-2026-11-06.zip", 4, at("2026-11-07T01:00:00Z"));
        // B: complete up to the 7th, each file copied the morning after its day; a backfill
        // of old days copied by one run is not late either.
        for d in 1..=7 {
            g.add(
                &opts,
                &format!("B/B-2026-11-0{d}.zip"),
                d,
                at(&format!("2026-11-0{}T00:30:00Z", d + 1)),
            );
        }
        for d in 1..=3 {
            g.add(&opts, &format!("C/C-2026-11-0{d}.zip"), 9, at("2026-11-08T00:00:00Z"));
        }
        let r = g.report(&opts, at("2026-11-09T12:00:00Z").unwrap());
        assert_eq!(g.unmatched, 1, "the sidecar is no series file");
        let a = &r[0];
        assert_eq!((a.first.as_str(), a.last.as_str(), a.periods), ("2026-11-01", "2026-11-06", 4));
        assert_eq!(a.missing, ["2026-11-04", "2026-11-05"]);
        assert_eq!(a.late, ["2026-11-02"]);
        // A's next file (the 7th) was due on the 9th at 00:00; the 8th's is due on the 10th.
        assert_eq!((a.overdue_since.as_deref(), a.overdue_periods), (Some("2026-11-09T00:00:00Z"), 1));
        let b = &r[1];
        assert!(!b.has_gaps() && b.late.is_empty(), "{b:?}");
        let c = &r[2];
        // C stopped after the 3rd: the 4th to the 7th are overdue (the 8th is due on the 10th).
        assert!(c.late.is_empty() && c.overdue_periods == 4, "{c:?}");
    }

    #[test]
    fn bad_patterns_say_why() {
        for (p, why) in [
            ("{symbol}/{symbol}.zip", "no date field"),
            ("{date}/{month}.zip", "more than one date field"),
            ("{symbol}{date}.zip", "nothing between"),
            ("{sym bol}/{date}", "names are letters"),
            ("{symbol/{date}", "names are letters"),
            ("{symbol}/{date", "without its `}`"),
            ("a}/{date}", "without its `{`"),
            ("/{symbol}/{date}.zip", "no leading '/'"),
        ] {
            let e = Pattern::parse(p).unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    /// Keys that come after later ones (a hole filled since, an earlier first period) give
    /// what the same keys in key order give.
    #[test]
    fn keys_out_of_order_count_as_in_order() {
        let opts = daily();
        let key = |d: u32| format!("X/X-2026-11-{d:02}.zip");
        let at = |d: u32| Some(Utc.with_ymd_and_hms(2026, 11, d, 12, 0, 0).unwrap());
        let mut in_order = Gaps::default();
        for d in [3, 4, 5, 7, 9] {
            in_order.add(&opts, &key(d), 1, at(20));
        }
        let mut later = Gaps::default();
        for d in [5, 9, 4, 7, 3, 7] {
            later.add(&opts, &key(d), 1, at(20));
        }
        let now = Utc.with_ymd_and_hms(2026, 11, 10, 0, 0, 0).unwrap();
        let report = later.report(&opts, now);
        assert_eq!(report, in_order.report(&opts, now));
        // Day 6 filled by a later run, after it was due: late.
        later.add(&opts, &key(6), 2, at(21));
        assert_eq!(later.report(&opts, now)[0].late, ["2026-11-06"]);
        assert_eq!(
            (report[0].periods, report[0].missing.clone()),
            (5, vec!["2026-11-06".to_string(), "2026-11-08".into()])
        );
    }
}
