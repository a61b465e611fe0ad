//! The SQS queue of a feed: long-polled receives, batched deletes and visibility renewals, and
//! the attributes the daemon samples (depth, redrive policy). Four operations of SQS's JSON
//! protocol (`X-Amz-Target: AmazonSQS.*`), signed with SigV4 by the SDK's signer, with the
//! credentials a side's clients get (profile, role, default chain), renewed before they expire.

use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// SQS's longest long poll: an idle feed costs three receives a minute.
pub const LONG_POLL: Duration = Duration::from_secs(20);
/// SQS's batch limit (receive, delete, change visibility).
const BATCH: usize = 10;
/// A request's answer, at most this long after the long poll.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Credentials are fetched again this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
#[error("SQS {op} on {queue}: {message}")]
pub struct QueueError {
    pub op: &'static str,
    pub queue: String,
    pub message: String,
}

/// A message as received: its handle for deletes and renewals, and its body.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// How many times SQS has handed it out (1 the first time).
    pub receive_count: u32,
}

#[derive(Clone)]
pub struct Queue {
    pub url: String,
    endpoint: String,
    region: String,
    http: hyper_util::client::legacy::Client<crate::s3::https::Https, Full<Bytes>>,
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    cached: Arc<tokio::sync::Mutex<Option<Credentials>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ReceiveOutput {
    #[serde(default)]
    messages: Vec<WireMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireMessage {
    message_id: String,
    receipt_handle: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Entry<'a> {
    id: String,
    receipt_handle: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    visibility_timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct BatchOutput {
    #[serde(default)]
    failed: Vec<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct AttributesOutput {
    #[serde(default)]
    attributes: HashMap<String, String>,
}

/// SQS's error answer: `__type` (`com.amazonaws.sqs#QueueDoesNotExist`) and a message.
#[derive(Deserialize, Default)]
struct ErrorOutput {
    #[serde(rename = "__type", default)]
    kind: String,
    #[serde(default, alias = "Message")]
    message: String,
}

impl Queue {
    pub async fn connect(events: &crate::spec::Events) -> Queue {
        let shared = crate::s3::shared_config(&events.credentials_side(), &events.region).await;
        Queue {
            url: events.queue_url.clone(),
            endpoint: events.endpoint.clone(),
            region: events.region.clone(),
            http: crate::s3::https::client(),
            credentials: shared.credentials_provider(),
            cached: Arc::default(),
        }
    }

    fn err(&self, op: &'static str, message: impl Into<String>) -> QueueError {
        QueueError {
            op,
            queue: self.url.clone(),
            message: message.into(),
        }
    }

    /// The credentials to sign with: those held, unless they expire within `RENEW_BEFORE`.
    async fn credentials(&self, op: &'static str) -> Result<Credentials, QueueError> {
        let Some(provider) = &self.credentials else {
            return Err(self.err(op, "no credentials: SQS requests must be signed"));
        };
        let mut cached = self.cached.lock().await;
        let fresh = cached
            .as_ref()
            .filter(|c| c.expiry().is_none_or(|at| at > SystemTime::now() + RENEW_BEFORE));
        if let Some(c) = fresh {
            return Ok(c.clone());
        }
        let c = provider.provide_credentials().await.map_err(|e| {
            self.err(
                op,
                format!("credentials: {}", aws_smithy_types::error::display::DisplayErrorContext(e)),
            )
        })?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// One signed call of operation `op` with a JSON body; the JSON answer.
    async fn call<T: for<'de> Deserialize<'de> + Default>(
        &self,
        op: &'static str,
        body: serde_json::Value,
        wait: Duration,
    ) -> Result<T, QueueError> {
        let body = body.to_string();
        let mut req = hyper::Request::post(format!("{}/", self.endpoint))
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("AmazonSQS.{op}"))
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|e| self.err(op, e.to_string()))?;
        self.sign(op, &mut req, body.as_bytes()).await?;
        let answer = tokio::time::timeout(wait + TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| self.err(op, "no answer in time"))?
            .map_err(|e| self.err(op, e.to_string()))?;
        let status = answer.status();
        let bytes = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| self.err(op, e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let e: ErrorOutput = serde_json::from_slice(&bytes).unwrap_or_default();
            let kind = e.kind.rsplit('#').next().unwrap_or_default();
            return Err(self.err(op, format!("HTTP {status} {kind}: {}", e.message)));
        }
        if bytes.is_empty() {
            return Ok(T::default());
        }
        serde_json::from_slice(&bytes).map_err(|e| self.err(op, format!("unreadable answer: {e}")))
    }

    async fn sign(&self, op: &'static str, req: &mut hyper::Request<Full<Bytes>>, body: &[u8]) -> Result<(), QueueError> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let identity = self.credentials(op).await?.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sqs")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| self.err(op, e.to_string()))?
            .into();
        let headers = req.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let uri = req.uri().to_string();
        let signable = SignableRequest::new("POST", &uri, headers, SignableBody::Bytes(body)).map_err(|e| self.err(op, e.to_string()))?;
        let (instructions, _) = sign(signable, &params).map_err(|e| self.err(op, e.to_string()))?.into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }

    /// Up to ten messages, waiting up to `wait` for the first; each hidden for `visibility`.
    pub async fn receive(&self, wait: Duration, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        let wait = wait.min(LONG_POLL);
        let body = serde_json::json!({
            "QueueUrl": self.url,
            "MaxNumberOfMessages": BATCH,
            "WaitTimeSeconds": wait.as_secs(),
            "VisibilityTimeout": visibility.as_secs(),
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        });
        let out: ReceiveOutput = self.call("ReceiveMessage", body, wait).await?;
        Ok(out
            .messages
            .into_iter()
            .map(|m| Received {
                receive_count: m
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                id: m.message_id,
                receipt: m.receipt_handle,
                body: m.body,
            })
            .collect())
    }

    /// Deletes messages (by receipt handle), ten to a request. Returns how many SQS refused.
    pub async fn delete(&self, receipts: &[String]) -> Result<usize, QueueError> {
        let mut refused = 0;
        for chunk in receipts.chunks(BATCH) {
            let entries = entries(chunk, None);
            let out: BatchOutput = self
                .call(
                    "DeleteMessageBatch",
                    serde_json::json!({ "QueueUrl": self.url, "Entries": entries }),
                    Duration::ZERO,
                )
                .await?;
            refused += out.failed.len();
        }
        Ok(refused)
    }

    /// Hides messages for `visibility` more from now, ten to a request.
    pub async fn extend(&self, receipts: &[String], visibility: Duration) -> Result<(), QueueError> {
        for chunk in receipts.chunks(BATCH) {
            let entries = entries(chunk, Some(visibility.as_secs()));
            let body = serde_json::json!({ "QueueUrl": self.url, "Entries": entries });
            let _: BatchOutput = self.call("ChangeMessageVisibilityBatch", body, Duration::ZERO).await?;
        }
        Ok(())
    }

    /// The messages waiting (SQS's approximate count), and whether a redrive policy sends
    /// messages that keep failing to a dead-letter queue.
    pub async fn attributes(&self) -> Result<(u64, bool), QueueError> {
        let body = serde_json::json!({
            "QueueUrl": self.url,
            "AttributeNames": ["ApproximateNumberOfMessages", "RedrivePolicy"],
        });
        let out: AttributesOutput = self.call("GetQueueAttributes", body, Duration::ZERO).await?;
        let depth = out
            .attributes
            .get("ApproximateNumberOfMessages")
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        Ok((depth, out.attributes.contains_key("RedrivePolicy")))
    }
}

fn entries(receipts: &[String], visibility: Option<u64>) -> Vec<Entry<'_>> {
    receipts
        .iter()
        .enumerate()
        .map(|(i, r)| Entry {
            id: i.to_string(),
            receipt_handle: r,
            visibility_timeout: visibility,
        })
        .collect()
}
