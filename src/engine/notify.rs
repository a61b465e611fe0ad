//! `[[notify]]`: an HTTP POST with a JSON body for each chosen event, from a bounded queue that
//! no run waits on. Each post has a timeout and a few retries with backoff; at exit the queue
//! gets at most the grace period (`Notifications::drain`), so a dead receiver never holds up a
//! run or a shutdown for longer. Bodies may be signed: `X-S3syncd-Signature: sha256=HEX`, the
//! HMAC-SHA256 of the raw body with the key read from `secret_file` (never logged).

use crate::spec::{Notifier, NotifyEvent, NotifyFormat};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// Posts waiting or in flight at once, in all; more are dropped (and counted).
const QUEUE: usize = 256;
const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(5);

use crate::s3::https::Https;

struct Post {
    notifier: Notifier,
    event: NotifyEvent,
    body: Vec<u8>,
}

/// The process's notification queue: each post is a task of its own (a slow receiver delays
/// no other), at most `QUEUE` at once.
#[derive(Clone)]
pub struct Notifications {
    /// Built on the first post: loading the system's certificates is start-up work that a
    /// process without notifiers never needs.
    client: Arc<std::sync::OnceLock<Client<Https, Full<Bytes>>>>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            client: Arc::default(),
            slots: Arc::new(Semaphore::new(QUEUE)),
            tracker: TaskTracker::new(),
        }
    }
}

impl Notifications {
    /// Queues `event` with `body` for every notifier in `to` that wants it; never waits. Needs
    /// a Tokio runtime.
    pub fn send(&self, to: &[Notifier], event: NotifyEvent, body: &serde_json::Value) {
        for n in to.iter().filter(|n| n.wants(event)) {
            let body = match n.format {
                NotifyFormat::Json => body.to_string(),
                NotifyFormat::Slack => serde_json::json!({ "text": body["text"] }).to_string(),
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                tracing::warn!(url = %redact(&n.url), %event, "notification queue full: dropped");
                crate::metrics::notification(event.as_str(), "dropped");
                continue;
            };
            let post = Post {
                notifier: n.clone(),
                event,
                body: body.into_bytes(),
            };
            let client = self.client.get_or_init(crate::s3::https::client).clone();
            self.tracker.spawn(async move {
                send(&client, post).await;
                drop(slot);
            });
        }
    }

    /// Waits for the posts under way, at most `grace`; what is left then is dropped.
    pub async fn drain(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "notifications still unsent at exit: dropped");
        }
    }
}

/// POSTs with retries (0.5 s, 1 s, 2 s apart) on a network error, a timeout or a 5xx/429.
async fn send(client: &Client<Https, Full<Bytes>>, post: Post) {
    let url = redact(&post.notifier.url);
    let signature = match &post.notifier.secret_file {
        None => None,
        Some(f) => match std::fs::read(f) {
            Ok(key) => Some(sign(trim_newline(&key), &post.body)),
            Err(e) => {
                tracing::warn!(%url, file = %f.display(), error = %e, "cannot read the notification secret; not sending");
                crate::metrics::notification(post.event.as_str(), "failed");
                return;
            }
        },
    };
    for attempt in 1..=ATTEMPTS {
        let mut req = hyper::Request::post(&post.notifier.url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("s3syncd/", env!("CARGO_PKG_VERSION")));
        if let Some(s) = &signature {
            req = req.header("x-s3syncd-signature", s);
        }
        let req = match req.body(Full::new(Bytes::from(post.body.clone()))) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%url, error = %e, "notification URL is not usable");
                crate::metrics::notification(post.event.as_str(), "failed");
                return;
            }
        };
        let outcome = match tokio::time::timeout(TIMEOUT, client.request(req)).await {
            Err(_) => Err("no answer within 5 s".to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
            Ok(Ok(resp)) if resp.status().is_server_error() || resp.status().as_u16() == 429 => Err(format!("HTTP {}", resp.status())),
            Ok(Ok(resp)) => {
                tracing::warn!(%url, event = post.event.as_str(), status = resp.status().as_u16(), "notification refused");
                crate::metrics::notification(post.event.as_str(), "failed");
                return;
            }
        };
        match outcome {
            Ok(()) => {
                tracing::debug!(%url, event = post.event.as_str(), attempt, "notification sent");
                crate::metrics::notification(post.event.as_str(), "ok");
                return;
            }
            Err(why) if attempt < ATTEMPTS => {
                crate::metrics::notification(post.event.as_str(), "retry");
                tracing::debug!(%url, event = post.event.as_str(), attempt, error = %why, "notification failed; retrying");
                tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt - 1)).await;
            }
            Err(why) => {
                tracing::warn!(%url, event = post.event.as_str(), attempts = ATTEMPTS, error = %why, "notification not delivered");
                crate::metrics::notification(post.event.as_str(), "failed");
            }
        }
    }
}

fn trim_newline(key: &[u8]) -> &[u8] {
    let mut k = key;
    while let [rest @ .., b'\n' | b'\r'] = k {
        k = rest;
    }
    k
}

/// `sha256=HEX` of HMAC-SHA256(key, body).
pub fn sign(key: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The URL without its path and query, where webhook tokens live (Slack's are in the path).
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_raw_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(trim_newline(b"key\n"), b"key");
    }

    #[test]
    fn logged_urls_keep_no_path_query_or_user() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/SECRET"),
            "https://hooks.slack.com/..."
        );
        assert_eq!(redact("http://user:pw@127.0.0.1:9/x?token=1"), "http://127.0.0.1:9/...");
    }
}
