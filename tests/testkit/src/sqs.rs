//! Test-side SQS on moto: queues with a dead-letter queue, S3 notifications to a queue, and the
//! checks a test makes (messages waiting and in flight). Set-up and checks only, through the SDK.

use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;

pub struct Sqs {
    pub client: Client,
}

/// A queue and its dead-letter queue.
pub struct TestQueue {
    pub url: String,
    pub arn: String,
    pub dead_letters: String,
}

impl Sqs {
    /// The SQS of a moto server (any credentials).
    pub fn of(endpoint: &str) -> Sqs {
        let conf = aws_sdk_sqs::config::Builder::new()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "moto-key",
                "moto-secret",
                None,
                None,
                "tests",
            ))
            .http_client(crate::objects::http_client())
            .build();
        Sqs {
            client: Client::from_conf(conf),
        }
    }

    async fn arn(&self, url: &str) -> String {
        let a = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        a.attributes().unwrap()[&QueueAttributeName::QueueArn].clone()
    }

    /// A queue whose messages go to a dead-letter queue after `max_receives` receives.
    pub async fn queue(&self, name: &str, max_receives: u32) -> TestQueue {
        let dlq = self.client.create_queue().queue_name(format!("{name}-dead")).send().await.unwrap();
        let dead_letters = dlq.queue_url().unwrap().to_string();
        let dlq_arn = self.arn(&dead_letters).await;
        let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#);
        let q = self
            .client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::RedrivePolicy, policy)
            .send()
            .await
            .unwrap();
        let url = q.queue_url().unwrap().to_string();
        let arn = self.arn(&url).await;
        TestQueue { url, arn, dead_letters }
    }

    /// S3 sends `bucket`'s object created and removed events to the queue.
    pub async fn notify(&self, s3: &aws_sdk_s3::Client, bucket: &str, queue_arn: &str) {
        let q = QueueConfiguration::builder()
            .queue_arn(queue_arn)
            .events(Event::S3ObjectCreated)
            .events(Event::S3ObjectRemoved)
            .build()
            .unwrap();
        s3.put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(NotificationConfiguration::builder().queue_configurations(q).build())
            .send()
            .await
            .unwrap();
    }

    /// Sends message bodies, ten to a request.
    pub async fn send(&self, url: &str, bodies: &[String]) {
        for (n, chunk) in bodies.chunks(10).enumerate() {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(format!("m{n}-{i}"))
                        .message_body(b)
                        .build()
                        .unwrap()
                })
                .collect();
            let out = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap();
            assert!(out.failed().is_empty(), "SendMessageBatch failed for {:?}", out.failed());
        }
    }

    /// Messages waiting, and received but not deleted (in flight).
    pub async fn counts(&self, url: &str) -> (u64, u64) {
        let a = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let a = a.attributes().unwrap();
        let n = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    pub async fn purge(&self, url: &str) {
        self.client.purge_queue().queue_url(url).send().await.unwrap();
    }
}

/// An S3 event notification body with a record for each key (form-encoded as S3 does), as S3
/// sends them to SQS, of events at `time`.
pub fn s3_event(bucket: &str, keys: &[&str], name: &str, time: chrono::DateTime<chrono::Utc>) -> String {
    let records: Vec<serde_json::Value> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let encoded = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%2F", "/")
                .replace("%20", "+");
            serde_json::json!({
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "eventName": name,
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                       "object": {"key": encoded, "sequencer": format!("{i:016X}")}}
            })
        })
        .collect();
    serde_json::json!({ "Records": records }).to_string()
}
