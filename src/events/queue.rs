//! The SQS queue of a feed: long-polled receives, batched deletes and visibility renewals, and
//! the attributes the daemon samples (depth, redrive policy).

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use aws_sdk_sqs::Client;
use std::time::Duration;

/// SQS's longest long poll: an idle feed costs three receives a minute.
pub const LONG_POLL: Duration = Duration::from_secs(20);
/// SQS's batch limit (receive, delete, change visibility).
const BATCH: usize = 10;

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
    client: Client,
    pub url: String,
}

impl Queue {
    pub async fn connect(events: &crate::spec::Events) -> Queue {
        let shared = crate::s3::shared_config(&events.credentials_side(), &events.region).await;
        let mut b = aws_sdk_sqs::config::Builder::from(&shared);
        if let Some(e) = &events.endpoint {
            b = b.endpoint_url(e);
        }
        Queue {
            client: Client::from_conf(b.build()),
            url: events.queue_url.clone(),
        }
    }

    fn err(&self, op: &'static str, e: impl std::error::Error) -> QueueError {
        QueueError {
            op,
            queue: self.url.clone(),
            message: aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
        }
    }

    /// Up to ten messages, waiting up to `wait` for the first; each hidden for `visibility`.
    pub async fn receive(&self, wait: Duration, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(BATCH as i32)
            .wait_time_seconds(wait.as_secs().min(LONG_POLL.as_secs()) as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.err("ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    id: m.message_id?,
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                    receive_count: count,
                })
            })
            .collect())
    }

    /// Deletes messages (by receipt handle), ten to a request. Returns how many SQS refused.
    pub async fn delete(&self, receipts: &[String]) -> Result<usize, QueueError> {
        let mut refused = 0;
        for chunk in receipts.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err("DeleteMessageBatch", e))?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.err("DeleteMessageBatch", e))?;
            refused += out.failed().len();
        }
        Ok(refused)
    }

    /// Hides messages for `visibility` more from now, ten to a request.
    pub async fn extend(&self, receipts: &[String], visibility: Duration) -> Result<(), QueueError> {
        for chunk in receipts.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(visibility.as_secs() as i32)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err("ChangeMessageVisibilityBatch", e))?;
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.err("ChangeMessageVisibilityBatch", e))?;
        }
        Ok(())
    }

    /// The messages waiting (SQS's approximate count), and whether a redrive policy sends
    /// messages that keep failing to a dead-letter queue.
    pub async fn attributes(&self) -> Result<(u64, bool), QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| self.err("GetQueueAttributes", e))?;
        let attrs = out.attributes();
        let depth = attrs
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        let redrive = attrs.is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy));
        Ok((depth, redrive))
    }
}
