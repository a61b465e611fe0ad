//! Feeds driven by S3 event notifications (`[source.events]`): messages are received from the
//! feed's SQS queue, gathered for a short window into a batch, and the batch's keys become one
//! run (`engine::RunOptions::events`) that reads each key's state at the source and copies
//! through the normal path. Events are hints; the source's state decides. A message is deleted
//! from the queue only after the run has committed its rows, and only if none of its keys
//! failed: a message that keeps failing goes to the queue's redrive policy.

mod envelope;
mod queue;

pub use envelope::{Event, Message};
pub use queue::{Queue, Received};

use crate::spec::Spec;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Messages in one batch, at most (each names one key, or a few).
pub const MAX_MESSAGES: usize = 1000;
/// How often the queue's depth is sampled.
const DEPTH_EVERY: Duration = Duration::from_secs(60);
/// How long to wait after a failed receive.
const RECEIVE_BACKOFF: Duration = Duration::from_secs(5);
/// An event is covered by a listing of its key this much later than the event's time (S3's
/// clock against this host's).
const CLOCK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// Keys whose last listing is remembered, at most.
const LISTED_KEYS: usize = 100_000;

/// What became of an event (`s3syncd_events_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Its object was copied (new or changed).
    Copied,
    /// Its object was already as the source holds it.
    Current,
    /// Its object's source was gone and the destination's copy was deleted.
    Deleted,
    /// Another bucket, outside the source prefix or the filters, or no object event.
    Ignored,
    /// Its object failed in the run: the message is left for redelivery.
    Failed,
    /// Not an S3 event: left to the queue's redrive policy.
    Unreadable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Copied => "copied",
            Outcome::Current => "current",
            Outcome::Deleted => "deleted",
            Outcome::Ignored => "ignored",
            Outcome::Failed => "failed",
            Outcome::Unreadable => "unreadable",
        }
    }
}

/// Messages received and not yet deleted or given back: renewed until their run ends.
type Held = Arc<Mutex<HashMap<String, String>>>;

/// A feed's queue as the feed's loop reads it: messages arrive in the background (long
/// polls), and [`Inbox::ready`] says when a batch can run.
pub struct Inbox {
    queue: Queue,
    window: Duration,
    rx: mpsc::Receiver<Received>,
    held: Held,
    /// Messages of the batch being gathered, and when its first arrived.
    gathering: Vec<Received>,
    since: Option<Instant>,
    /// When each key was last listed by a run of this inbox's events: an event older than
    /// that is covered and needs no listing (a burst of events for one key lists it once).
    listed: HashMap<String, Listed>,
    /// Ends the background tasks when the inbox is dropped.
    _tasks: tokio_util::sync::DropGuard,
}

impl Inbox {
    /// Starts receiving from the spec's queue; `None` for a spec without `[source.events]`.
    pub async fn open(spec: &Spec) -> Option<Inbox> {
        let events = spec.events.as_ref()?;
        let queue = Queue::connect(events).await;
        let held: Held = Arc::default();
        let (tx, rx) = mpsc::channel(MAX_MESSAGES);
        let end = CancellationToken::new();
        tokio::spawn(receive(queue.clone(), events.visibility, tx, held.clone(), end.clone()));
        tokio::spawn(renew(queue.clone(), events.visibility, held.clone(), end.clone()));
        tokio::spawn(sample(queue.clone(), spec.name.clone(), end.clone()));
        Some(Inbox {
            queue,
            window: events.window,
            rx,
            held,
            gathering: Vec::new(),
            since: None,
            listed: HashMap::new(),
            _tasks: end.drop_guard(),
        })
    }

    /// Waits until a batch is gathered: `window` after its first message, or sooner when it
    /// holds [`MAX_MESSAGES`] messages. Cancel-safe: what is gathered stays for the next call.
    pub async fn ready(&mut self) {
        loop {
            let deadline = self.since.map(|s| s + self.window);
            if self.gathering.len() >= MAX_MESSAGES || deadline.is_some_and(|d| d <= Instant::now()) {
                return;
            }
            let received = match deadline {
                Some(d) => tokio::select! {
                    m = self.rx.recv() => m,
                    () = tokio::time::sleep_until(d) => return,
                },
                None => self.rx.recv().await,
            };
            match received {
                Some(m) => {
                    self.since.get_or_insert_with(Instant::now);
                    self.gathering.push(m);
                }
                // The receiving task ended (the inbox is closing): never ready again.
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// The batch gathered, read for `spec`.
    pub fn take(&mut self, spec: &Spec) -> Batch {
        self.since = None;
        Batch::of(spec, std::mem::take(&mut self.gathering), &self.listed)
    }

    /// After the batch's run: deletes the messages whose keys were all handled, gives the
    /// others back to the queue (they come again after their visibility timeout), and counts
    /// every event's outcome. `results`: what the run that committed its rows did, `None`
    /// when it did not complete (no message about an object is deleted).
    pub async fn settle(&mut self, spec: &Spec, batch: Batch, results: Option<RunResults>) -> BTreeMap<Outcome, u64> {
        if let Some(r) = &results {
            self.remember(&batch, r, spec);
        }
        let mut outcomes = BTreeMap::new();
        let mut delete = Vec::new();
        let now = Utc::now();
        for m in &batch.messages {
            if m.settle(results.as_ref(), &mut outcomes, spec, now) {
                delete.push(m.receipt.clone());
            }
        }
        {
            let mut held = self.held.lock().unwrap();
            for m in &batch.messages {
                held.remove(&m.id);
            }
        }
        match self.queue.delete(&delete).await {
            Ok(0) => {}
            Ok(refused) => tracing::warn!(
                refused,
                "SQS refused to delete some handled messages; they come again and are found current"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot delete handled messages; they come again and are found current"),
        }
        for (outcome, n) in &outcomes {
            crate::metrics::events(&spec.name, outcome.as_str(), *n);
        }
        outcomes
    }
}

impl Inbox {
    /// The keys of `batch` that its run (`r`) handled: a key that failed is not remembered, so
    /// its events, when they come again, are listed again.
    fn remember(&mut self, batch: &Batch, r: &RunResults, spec: &Spec) {
        let at = r.listed_at;
        if self.listed.len() + batch.keys.len() > LISTED_KEYS {
            // The oldest listings matter least: an event older than an hour is rare.
            let hour_ago = at - chrono::TimeDelta::hours(1);
            self.listed.retain(|_, l| l.at > hour_ago);
            if self.listed.len() + batch.keys.len() > LISTED_KEYS {
                self.listed.clear();
            }
        }
        for k in batch.keys.iter().filter(|k| !r.failed(k, spec)) {
            let sequencer = batch.sequencers.get(k).cloned();
            self.listed.insert(k.clone(), Listed { at, sequencer });
        }
    }
}

/// What a run did to each key: copied, deleted, failed (source keys); the rest were current.
#[derive(Default)]
pub struct RunResults {
    /// When the run started: its listing of each key came later.
    listed_at: DateTime<Utc>,
    copied: BTreeSet<String>,
    deleted: BTreeSet<String>,
    failed: BTreeSet<String>,
}

impl RunResults {
    /// Whether `set` holds object key `k` or its sidecar.
    fn holds(set: &BTreeSet<String>, k: &str, spec: &Spec) -> bool {
        set.contains(k)
            || spec
                .verify
                .checksum_sidecar
                .as_deref()
                .is_some_and(|s| set.contains(&format!("{k}{s}")))
    }

    /// Whether object key `k` (or its sidecar) failed in the run.
    fn failed(&self, k: &str, spec: &Spec) -> bool {
        RunResults::holds(&self.failed, k, spec)
    }

    /// Read from the manifest at `path`; `None` (logged) when it cannot be read.
    pub fn read(path: &std::path::Path, spec: &Spec, run_id: i64, started: DateTime<Utc>) -> Option<RunResults> {
        crate::manifest::Reader::open(path)
            .and_then(|reader| RunResults::of(&reader, spec, run_id, started))
            .inspect_err(|e| tracing::warn!(error = %e, "cannot read the batch's results; its messages come again"))
            .ok()
    }

    fn of(reader: &crate::manifest::Reader, spec: &Spec, run_id: i64, listed_at: DateTime<Utc>) -> crate::manifest::Result<RunResults> {
        let mut r = RunResults {
            listed_at,
            copied: BTreeSet::new(),
            deleted: BTreeSet::new(),
            failed: reader.failures(run_id, u32::MAX)?.into_iter().map(|(k, _)| k).collect(),
        };
        reader.changes(&spec.name, run_id - 1, Some(run_id), |c| {
            match c.action {
                crate::manifest::ChangeAction::Deleted => r.deleted.insert(c.source_key),
                _ => r.copied.insert(c.source_key),
            };
            true
        })?;
        Ok(r)
    }
}

/// What an event asks of a batch's run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    /// Another bucket, outside the source prefix or the filters.
    Ignored,
    /// Its object was listed after the event: nothing to do.
    Covered,
    /// This object key (a sidecar's event names its object) is listed.
    List(String),
}

/// A message of a batch: its events, each with what it asks.
#[derive(Debug)]
pub struct BatchMessage {
    id: String,
    receipt: String,
    events: Vec<(Event, Subject)>,
    unreadable: bool,
}

impl BatchMessage {
    /// Counts the outcome of each event; whether the message can be deleted: every event was
    /// ignored or handled by a run that completed (`r`), none failed.
    fn settle(&self, r: Option<&RunResults>, outcomes: &mut BTreeMap<Outcome, u64>, spec: &Spec, now: DateTime<Utc>) -> bool {
        if self.unreadable {
            *outcomes.entry(Outcome::Unreadable).or_default() += 1;
            return false;
        }
        let needs_run = self.events.iter().any(|(_, subject)| matches!(subject, Subject::List(_)));
        let r = match r {
            Some(r) => r,
            None if needs_run => return false, // its run did not complete: it comes again
            None => &RunResults::default(),
        };
        let mut all_done = true;
        for (event, subject) in &self.events {
            let outcome = match subject {
                Subject::Ignored => Outcome::Ignored,
                Subject::Covered => Outcome::Current,
                Subject::List(k) => {
                    if r.failed(k, spec) {
                        Outcome::Failed
                    } else if RunResults::holds(&r.copied, k, spec) {
                        Outcome::Copied
                    } else if RunResults::holds(&r.deleted, k, spec) {
                        Outcome::Deleted
                    } else {
                        Outcome::Current
                    }
                }
            };
            all_done &= outcome != Outcome::Failed;
            if let (Some(t), true) = (event.time, matches!(outcome, Outcome::Copied | Outcome::Current | Outcome::Deleted)) {
                crate::metrics::event_lag(&spec.name, (now - t).num_milliseconds().max(0) as f64 / 1000.0);
            }
            *outcomes.entry(outcome).or_default() += 1;
        }
        all_done
    }
}

/// The events of a window, read for one spec.
#[derive(Debug, Default)]
pub struct Batch {
    /// The object keys to list (a sidecar's event names its object).
    pub keys: BTreeSet<String>,
    /// The latest S3 sequencer of each key's own events (not its sidecar's).
    sequencers: HashMap<String, String>,
    messages: Vec<BatchMessage>,
}

impl Batch {
    fn of(spec: &Spec, received: Vec<Received>, listed: &HashMap<String, Listed>) -> Batch {
        let mut b = Batch::default();
        for r in received {
            let (events, unreadable) = match envelope::parse(&r.body) {
                Ok(Message::Events(e)) => (e, false),
                Ok(Message::NoObject) => (Vec::new(), false),
                Err(e) => {
                    tracing::warn!(message_id = %r.id, receives = r.receive_count, error = %e, "unreadable message left to the queue's redrive policy");
                    (Vec::new(), true)
                }
            };
            let events: Vec<(Event, Subject)> = events
                .into_iter()
                .map(|e| {
                    let subject = match object_key(spec, &e) {
                        None => Subject::Ignored,
                        Some(k) if listed.get(&k).is_some_and(|l| l.covers(&e, &k)) => Subject::Covered,
                        Some(k) => Subject::List(k),
                    };
                    (e, subject)
                })
                .collect();
            for (e, subject) in &events {
                let Subject::List(k) = subject else { continue };
                b.keys.insert(k.clone());
                // Sequencers order the events of one S3 key: a sidecar's are not its object's.
                if let Some(seq) = e.sequencer.as_ref().filter(|_| e.key == *k) {
                    let highest = b.sequencers.entry(k.clone()).or_insert_with(|| seq.clone());
                    if envelope::later(seq, highest) {
                        *highest = seq.clone();
                    }
                }
            }
            b.messages.push(BatchMessage {
                id: r.id,
                receipt: r.receipt,
                events,
                unreadable,
            });
        }
        b
    }

    /// Messages in the batch.
    pub fn messages(&self) -> usize {
        self.messages.len()
    }

    /// Whether any message holds an event of the spec's source (else no run is needed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The last listing of an object key by a run of events: when it started, and the latest S3
/// sequencer of the key's own events it handled.
#[derive(Debug, Clone)]
struct Listed {
    at: DateTime<Utc>,
    sequencer: Option<String>,
}

impl Listed {
    /// Whether this listing already saw what `e` did: `e` is no later in S3's order of the
    /// key's events than one it handled, or happened before it started (by S3's clock, with a
    /// margin for this host's).
    fn covers(&self, e: &Event, key: &str) -> bool {
        let by_order = e.key == key && matches!((&e.sequencer, &self.sequencer), (Some(s), Some(h)) if !envelope::later(s, h));
        let by_time = e.time.is_some_and(|t| t + CLOCK_MARGIN < self.at);
        by_order || by_time
    }
}

/// The object key an event is about, for `spec`: `None` for another bucket, a key outside
/// the source prefix or the filters. A sidecar's event names its object.
fn object_key(spec: &Spec, e: &Event) -> Option<String> {
    if e.bucket != spec.source.bucket {
        return None;
    }
    let rel = e.key.strip_prefix(&spec.source.prefix)?;
    let object = match spec.verify.checksum_sidecar.as_deref() {
        Some(s) => e
            .key
            .strip_suffix(s)
            .filter(|o| o.len() >= spec.source.prefix.len() && !o.ends_with('/'))
            .unwrap_or(&e.key),
        None => &e.key,
    };
    let rel_object = &object[spec.source.prefix.len()..];
    (spec.filter.matches(rel_object) || spec.filter.matches(rel)).then(|| object.to_string())
}

/// Receives in long polls until `end`, handing each message to the inbox.
async fn receive(queue: Queue, visibility: Duration, tx: mpsc::Sender<Received>, held: Held, end: CancellationToken) {
    loop {
        let got = tokio::select! {
            () = end.cancelled() => return,
            got = queue.receive(queue::LONG_POLL, visibility) => got,
        };
        match got {
            Ok(messages) => {
                for m in messages {
                    held.lock().unwrap().insert(m.id.clone(), m.receipt.clone());
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot receive events; trying again in 5 s");
                tokio::select! {
                    () = end.cancelled() => return,
                    () = tokio::time::sleep(RECEIVE_BACKOFF) => {}
                }
            }
        }
    }
}

/// Keeps held messages hidden while they wait or their run goes on: renewed every third of
/// their visibility timeout.
async fn renew(queue: Queue, visibility: Duration, held: Held, end: CancellationToken) {
    let mut every = tokio::time::interval(visibility / 3);
    every.tick().await;
    loop {
        tokio::select! {
            () = end.cancelled() => return,
            _ = every.tick() => {}
        }
        let receipts: Vec<String> = held.lock().unwrap().values().cloned().collect();
        if let Err(e) = queue.extend(&receipts, visibility).await {
            tracing::warn!(error = %e, messages = receipts.len(), "cannot renew the visibility of held messages; they may be handled twice (harmless)");
        }
    }
}

/// Samples the queue's depth each minute; warns once when no redrive policy keeps messages
/// that always fail from coming back forever.
async fn sample(queue: Queue, spec: String, end: CancellationToken) {
    let mut every = tokio::time::interval(DEPTH_EVERY);
    let mut warned = false;
    loop {
        tokio::select! {
            () = end.cancelled() => return,
            _ = every.tick() => {}
        }
        match queue.attributes().await {
            Ok((depth, redrive)) => {
                crate::metrics::queue_depth(&spec, depth);
                if !redrive && !warned {
                    tracing::warn!(spec = %spec, queue = %queue.url, "the queue has no redrive policy: a message that always fails comes back forever; give it a dead-letter queue");
                    warned = true;
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot sample the queue's depth"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        let text = "[source]\nbucket = \"src\"\nprefix = \"data/\"\n[destination]\nbucket = \"dst\"\nprefix = \"b/\"\n\
                    [verify]\nchecksum_sidecar = \".CHECKSUM\"\n[filter]\nexclude = [\"tmp/**\"]\n\
                    [source.events]\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/q\"\n";
        Spec::parse(std::path::Path::new("s.toml"), text.as_bytes()).unwrap()
    }

    fn event(bucket: &str, key: &str, seq: &str, secs_ago: i64) -> Event {
        Event {
            bucket: bucket.into(),
            key: key.into(),
            kind: envelope::EventKind::Created,
            time: Some(Utc::now() - chrono::TimeDelta::seconds(secs_ago)),
            sequencer: Some(seq.into()),
        }
    }

    #[test]
    fn an_event_names_its_object_and_sidecars_name_theirs() {
        let s = spec();
        assert_eq!(s.events.as_ref().unwrap().region, "eu-west-1");
        let key = |b: &str, k: &str| object_key(&s, &event(b, k, "01", 0));
        assert_eq!(key("src", "data/a.zip").as_deref(), Some("data/a.zip"));
        assert_eq!(key("src", "data/a.zip.CHECKSUM").as_deref(), Some("data/a.zip"));
        assert_eq!(key("other", "data/a.zip"), None);
        assert_eq!(key("src", "elsewhere/a.zip"), None);
        assert_eq!(key("src", "data/tmp/x"), None);
    }

    #[test]
    fn a_listing_covers_older_events_of_its_key_by_order_or_time() {
        let l = Listed {
            at: Utc::now(),
            sequencer: Some("0055AED6DCD90281E5".into()),
        };
        let k = "data/a.zip";
        assert!(l.covers(&event("src", k, "0055AED6DCD90281E4", 0), k), "an earlier sequencer");
        assert!(!l.covers(&event("src", k, "0055AED6DCD90281E6", 0), k), "a later one, just now");
        assert!(
            l.covers(&event("src", k, "0055AED6DCD90281E6", 60), k),
            "a later one, a minute before the listing"
        );
        assert!(
            !l.covers(&event("src", "data/a.zip.CHECKSUM", "00", 0), k),
            "another key's sequencer says nothing"
        );
    }
}
