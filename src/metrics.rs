//! Prometheus metrics, recorded by metrics-exporter-prometheus and rendered by the daemon's
//! `metrics_listen` server at `/metrics`. Without an endpoint configured every call here is a
//! no-op (no recorder is installed).
//!
//! Names follow Prometheus conventions: `s3syncd_` prefix, `_total` counters, base units.
//! A leaf: callers pass plain values, so this module imports nothing of the crate.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
pub use metrics_exporter_prometheus::PrometheusHandle;

/// Installs the recorder; the handle renders the text `/metrics` serves ([`render`]). Samples
/// reach the summaries when rendered: the run times take one sample per run and the event lags
/// one per event, held until the next scrape, and an idle daemon never wakes for its metrics.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot record metrics: {e}"))?;
    describe_runs();
    describe_feeds();
    describe_events();
    Ok(handle)
}

/// What runs count: objects, bytes, fallbacks, runs, requests, run times.
fn describe_runs() {
    describe_counter!("s3syncd_objects_copied_total", "Objects copied and verified, by spec and mode.");
    describe_counter!(
        "s3syncd_bytes_copied_total",
        Unit::Bytes,
        "Bytes of objects copied, by spec and mode."
    );
    describe_counter!("s3syncd_objects_failed_total", "Objects that failed, by spec.");
    describe_counter!(
        "s3syncd_objects_skipped_total",
        "Listed objects unchanged since they were copied, by spec."
    );
    describe_counter!(
        "s3syncd_fallbacks_total",
        "Objects moved from one mode to the next, by spec, from and to."
    );
    describe_counter!(
        "s3syncd_bytes_through_host_total",
        Unit::Bytes,
        "Bytes that passed through this host (stream, staged, sidecars)."
    );
    describe_counter!("s3syncd_runs_total", "Finished runs, by spec and status.");
    describe_counter!(
        "s3syncd_s3_requests_total",
        "S3 request attempts (retries included), by spec, operation and result."
    );
    describe_histogram!("s3syncd_run_duration_seconds", Unit::Seconds, "Wall time of runs, by spec.");
}

/// What each feed stands at (its last runs, freshness, deliveries, series, schedule), and the
/// throttled answers and notifications around them.
fn describe_feeds() {
    describe_gauge!(
        "s3syncd_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last run that ended ok, by spec."
    );
    describe_gauge!("s3syncd_runs_in_flight", "Runs going on now, by spec.");
    describe_gauge!(
        "s3syncd_feed_stale",
        "1 while a feed with stale_after got nothing new within it, by spec."
    );
    describe_gauge!(
        "s3syncd_feed_last_new_object_timestamp_seconds",
        Unit::Seconds,
        "Unix time the feed last got a new or changed object, by spec."
    );
    describe_counter!(
        "s3syncd_deliveries_failed_total",
        "Runs whose delivery file could not be written (their own, or held back behind an earlier one), by spec."
    );
    describe_gauge!(
        "s3syncd_runs_undelivered",
        "Finished runs whose delivery file is not written yet, by spec."
    );
    describe_gauge!(
        "s3syncd_series_missing",
        "Periods missing inside the series of a spec with [series] (holes), by spec."
    );
    describe_gauge!("s3syncd_series_overdue", "Series whose next period is past due_after, by spec.");
    describe_gauge!(
        "s3syncd_run_concurrency",
        "The most copies in flight at once in the spec's last run."
    );
    describe_gauge!("s3syncd_last_run_failed", "1 when the spec's last run ended failed, else 0.");
    describe_gauge!(
        "s3syncd_run_started_timestamp_seconds",
        Unit::Seconds,
        "When the spec's current (or last) run started, Unix time."
    );
    describe_gauge!(
        "s3syncd_next_run_timestamp_seconds",
        Unit::Seconds,
        "The spec's next scheduled run, Unix time."
    );
    describe_gauge!(
        "s3syncd_schedule_interval_seconds",
        Unit::Seconds,
        "Time between the spec's next two scheduled runs."
    );
    describe_counter!(
        "s3syncd_ticks_skipped_total",
        "Scheduled ticks skipped because the spec's run was still going (a run longer than its interval)."
    );
    describe_counter!(
        "s3syncd_throttled_total",
        "Answers that asked to slow down (503 SlowDown, 429), by spec."
    );
    describe_counter!(
        "s3syncd_notifications_total",
        "Notification attempts, by event and result (ok, retry, failed, dropped)."
    );
}

/// Feeds driven by S3 events (`[source.events]`).
fn describe_events() {
    describe_counter!(
        "s3syncd_events_total",
        "S3 events read from a feed's queue, by spec and outcome (copied, current, deleted, ignored, failed, unreadable)."
    );
    describe_histogram!(
        "s3syncd_event_lag_seconds",
        Unit::Seconds,
        "From an event's time to the end of the run that handled it, by spec."
    );
    describe_gauge!(
        "s3syncd_events_queue_depth",
        "Messages waiting in a feed's queue (SQS's approximate count, sampled each minute)."
    );
    describe_counter!(
        "s3syncd_events_missed_total",
        "Objects a listing run of an event-driven feed copied that no event had brought, by spec."
    );
}

/// The Prometheus text of everything recorded, the summaries brought up to date first.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

pub fn run_started(spec: &str) {
    gauge!("s3syncd_runs_in_flight", "spec" => spec.to_string()).increment(1.0);
    gauge!("s3syncd_run_started_timestamp_seconds", "spec" => spec.to_string()).set(chrono::Utc::now().timestamp() as f64);
}

/// A feed's next scheduled run, and the interval to the one after it.
pub fn scheduled(spec: &str, next_unix: i64, interval_secs: Option<i64>) {
    gauge!("s3syncd_next_run_timestamp_seconds", "spec" => spec.to_string()).set(next_unix as f64);
    if let Some(i) = interval_secs {
        gauge!("s3syncd_schedule_interval_seconds", "spec" => spec.to_string()).set(i as f64);
    }
}

/// Ticks that fell while the feed's run was still going.
pub fn ticks_skipped(spec: &str, n: u64) {
    counter!("s3syncd_ticks_skipped_total", "spec" => spec.to_string()).increment(n);
}

pub fn object_copied(spec: &str, mode: &'static str, bytes: u64) {
    counter!("s3syncd_objects_copied_total", "spec" => spec.to_string(), "mode" => mode).increment(1);
    counter!("s3syncd_bytes_copied_total", "spec" => spec.to_string(), "mode" => mode).increment(bytes);
}

pub fn object_failed(spec: &str) {
    counter!("s3syncd_objects_failed_total", "spec" => spec.to_string()).increment(1);
}

/// What a finished run adds to the metrics.
pub struct RunFinished<'a> {
    pub spec: &'a str,
    pub status: &'static str,
    /// The status is `ok`; `failed`.
    pub ok: bool,
    pub failed: bool,
    pub skipped: u64,
    pub through_host: u64,
    pub seconds: f64,
    /// (from, to) mode names and the number of objects.
    pub fallbacks: Vec<(&'static str, &'static str, u64)>,
    /// (operation, result) and the number of request attempts.
    pub requests: Vec<(&'a str, &'static str, u64)>,
    /// The most copies that were in flight at once.
    pub concurrency: usize,
    /// Answers that asked to slow down.
    pub throttled: u64,
}

pub fn run_finished(r: RunFinished<'_>) {
    let spec = r.spec.to_string();
    gauge!("s3syncd_runs_in_flight", "spec" => spec.clone()).decrement(1.0);
    counter!("s3syncd_runs_total", "spec" => spec.clone(), "status" => r.status).increment(1);
    counter!("s3syncd_objects_skipped_total", "spec" => spec.clone()).increment(r.skipped);
    counter!("s3syncd_bytes_through_host_total", "spec" => spec.clone()).increment(r.through_host);
    histogram!("s3syncd_run_duration_seconds", "spec" => spec.clone()).record(r.seconds);
    gauge!("s3syncd_run_concurrency", "spec" => spec.clone()).set(r.concurrency as f64);
    gauge!("s3syncd_last_run_failed", "spec" => spec.clone()).set(if r.failed { 1.0 } else { 0.0 });
    counter!("s3syncd_throttled_total", "spec" => spec.clone()).increment(r.throttled);
    if r.ok {
        gauge!("s3syncd_last_success_timestamp_seconds", "spec" => spec.clone()).set(chrono::Utc::now().timestamp() as f64);
    }
    for (from, to, n) in r.fallbacks {
        counter!("s3syncd_fallbacks_total", "spec" => spec.clone(), "from" => from, "to" => to).increment(n);
    }
    for (op, result, n) in r.requests {
        counter!("s3syncd_s3_requests_total", "spec" => spec.clone(), "operation" => op.to_string(), "result" => result).increment(n);
    }
}

/// One notification attempt's result: `ok`, `retry`, `failed` (given up) or `dropped` (queue full).
pub fn notification(event: &str, result: &'static str) {
    counter!("s3syncd_notifications_total", "event" => event.to_string(), "result" => result).increment(1);
}

/// A feed's freshness: whether it is stale, and when it last got a new or changed object.
pub fn freshness(spec: &str, stale: bool, last_new_unix: f64) {
    gauge!("s3syncd_feed_stale", "spec" => spec.to_string()).set(if stale { 1.0 } else { 0.0 });
    gauge!("s3syncd_feed_last_new_object_timestamp_seconds", "spec" => spec.to_string()).set(last_new_unix);
}

/// A run whose delivery could not be written; `waiting`: runs without their file now.
pub fn delivery_failed(spec: &str, waiting: usize) {
    counter!("s3syncd_deliveries_failed_total", "spec" => spec.to_string()).increment(1);
    undelivered(spec, waiting);
}

/// Finished runs of `spec` whose delivery file is not written yet.
pub fn undelivered(spec: &str, waiting: usize) {
    gauge!("s3syncd_runs_undelivered", "spec" => spec.to_string()).set(waiting as f64);
}

/// A spec's series: periods missing inside them, and series overdue.
pub fn series(spec: &str, missing: u64, overdue: u64) {
    gauge!("s3syncd_series_missing", "spec" => spec.to_string()).set(missing as f64);
    gauge!("s3syncd_series_overdue", "spec" => spec.to_string()).set(overdue as f64);
}

/// Events of a feed's queue with one outcome.
pub fn events(spec: &str, outcome: &'static str, n: u64) {
    counter!("s3syncd_events_total", "spec" => spec.to_string(), "outcome" => outcome).increment(n);
}

/// From an event's time to the end of the run that handled it.
pub fn event_lag(spec: &str, seconds: f64) {
    histogram!("s3syncd_event_lag_seconds", "spec" => spec.to_string()).record(seconds);
}

pub fn queue_depth(spec: &str, messages: u64) {
    gauge!("s3syncd_events_queue_depth", "spec" => spec.to_string()).set(messages as f64);
}

/// Objects a listing run copied that the feed's events should have brought.
pub fn events_missed(spec: &str, n: u64) {
    counter!("s3syncd_events_missed_total", "spec" => spec.to_string()).increment(n);
}
