//! What an SQS message from S3 says: the three envelopes S3 events arrive in (S3's own
//! notification, the same wrapped by SNS, and EventBridge's), read into [`Event`]s.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Written (put, copied, a multipart upload completed, restored).
    Created,
    /// Deleted, or a delete marker put over it.
    Removed,
}

/// One object event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub bucket: String,
    /// The object key, decoded.
    pub key: String,
    pub kind: EventKind,
    pub time: Option<DateTime<Utc>>,
    /// S3's order of the events of one key (hex; a longer value of equal prefix is later).
    pub sequencer: Option<String>,
}

/// What a message holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Object events (a notification may hold several).
    Events(Vec<Event>),
    /// A message about no object: S3's `s3:TestEvent` when notifications are configured, or
    /// an event type that changes no object's bytes (tagging, ACL, lifecycle transitions).
    NoObject,
}

/// Why a message could not be read: it is left to the queue's redrive policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an S3 event notification: {0}")]
pub struct Unreadable(pub String);

#[derive(Deserialize)]
struct S3Notification {
    #[serde(rename = "Records")]
    records: Option<Vec<S3Record>>,
    #[serde(rename = "Event")]
    event: Option<String>,
    // SNS's envelope: the notification as a JSON string.
    #[serde(rename = "Type")]
    sns_type: Option<String>,
    #[serde(rename = "Message")]
    sns_message: Option<String>,
    // EventBridge's envelope.
    source: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    time: Option<String>,
    detail: Option<BridgeDetail>,
}

#[derive(Deserialize)]
struct S3Record {
    #[serde(rename = "eventName")]
    event_name: String,
    #[serde(rename = "eventTime")]
    event_time: Option<String>,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Named,
    object: S3Object,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    sequencer: Option<String>,
}

#[derive(Deserialize)]
struct BridgeDetail {
    bucket: Named,
    object: S3Object,
}

fn time(t: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t?).ok().map(|t| t.with_timezone(&Utc))
}

/// S3 notifications encode keys as HTML forms do (`+` for a space, `%XX` for other bytes), as
/// S3 Inventory and Batch Operations reports do.
fn form_decoded(key: &str) -> Result<String, Unreadable> {
    crate::shard::decode_key(key).ok_or_else(|| Unreadable(format!("key {key:?} does not decode to UTF-8")))
}

/// `ObjectCreated:*` and `ObjectRemoved:*`; other S3 event types change no object's bytes.
fn kind_of_name(name: &str) -> Option<EventKind> {
    let name = name.strip_prefix("s3:").unwrap_or(name);
    if name.starts_with("ObjectCreated:") || name.starts_with("ObjectRestore:Completed") {
        Some(EventKind::Created)
    } else if name.starts_with("ObjectRemoved:") || name.starts_with("LifecycleExpiration:") {
        Some(EventKind::Removed)
    } else {
        None
    }
}

/// EventBridge's detail types of the same events.
fn kind_of_detail(detail_type: &str) -> Option<EventKind> {
    match detail_type {
        "Object Created" | "Object Restore Completed" => Some(EventKind::Created),
        "Object Deleted" => Some(EventKind::Removed),
        _ => None,
    }
}

/// Reads a message body.
pub fn parse(body: &str) -> Result<Message, Unreadable> {
    let n: S3Notification = serde_json::from_str(body).map_err(|e| Unreadable(e.to_string()))?;
    if n.sns_type.as_deref() == Some("Notification") {
        let inner = n
            .sns_message
            .ok_or_else(|| Unreadable("an SNS notification without a Message".into()))?;
        return parse(&inner);
    }
    if let Some(records) = n.records {
        let mut events = Vec::with_capacity(records.len());
        for r in records {
            let Some(kind) = kind_of_name(&r.event_name) else { continue };
            events.push(Event {
                bucket: r.s3.bucket.name,
                key: form_decoded(&r.s3.object.key)?,
                kind,
                time: time(r.event_time.as_deref()),
                sequencer: r.s3.object.sequencer,
            });
        }
        return Ok(if events.is_empty() {
            Message::NoObject
        } else {
            Message::Events(events)
        });
    }
    if n.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Message::NoObject);
    }
    if let (Some("aws.s3"), Some(dt)) = (n.source.as_deref(), n.detail_type.as_deref()) {
        let (Some(kind), Some(detail)) = (kind_of_detail(dt), n.detail) else {
            return Ok(Message::NoObject);
        };
        // EventBridge carries the key as it is, not form-encoded.
        return Ok(Message::Events(vec![Event {
            bucket: detail.bucket.name,
            key: detail.object.key,
            kind,
            time: time(n.time.as_deref()),
            sequencer: detail.object.sequencer,
        }]));
    }
    Err(Unreadable(
        "neither S3's Records, SNS's Notification nor an EventBridge aws.s3 event".into(),
    ))
}

/// Whether sequencer `a` is later than `b` (S3: compare as hex after padding to one length).
pub fn later(a: &str, b: &str) -> bool {
    let w = a.len().max(b.len());
    format!("{a:0<w$}") > format!("{b:0<w$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const S3: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
        "eventTime":"2026-12-06T10:00:00.000Z","eventName":"ObjectCreated:Put",
        "s3":{"s3SchemaVersion":"1.0","bucket":{"name":"src","arn":"arn:aws:s3:::src"},
        "object":{"key":"data/a+b%2Bc%C3%BC.zip","size":3,"eTag":"x","sequencer":"0055AED6DCD90281E5"}}}]}"#;

    #[test]
    fn s3_records_are_read_with_their_keys_decoded() {
        let Message::Events(e) = parse(S3).unwrap() else { panic!() };
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "data/a b+cü.zip");
        assert_eq!(e[0].bucket, "src");
        assert_eq!(e[0].kind, EventKind::Created);
        assert_eq!(e[0].sequencer.as_deref(), Some("0055AED6DCD90281E5"));
        assert_eq!(e[0].time.unwrap().to_rfc3339(), "2026-12-06T10:00:00+00:00");
    }

    #[test]
    fn sns_and_eventbridge_envelopes_say_the_same() {
        let sns = serde_json::json!({"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": S3})
            .to_string();
        assert_eq!(parse(&sns).unwrap(), parse(S3).unwrap());
        let bridge = r#"{"version":"0","id":"1","detail-type":"Object Deleted","source":"aws.s3","account":"1",
            "time":"2026-12-06T10:00:00Z","region":"us-east-1","resources":["arn:aws:s3:::src"],
            "detail":{"version":"0","bucket":{"name":"src"},"object":{"key":"data/a b+c.zip","sequencer":"0A"},"reason":"DeleteObject"}}"#;
        let Message::Events(e) = parse(bridge).unwrap() else { panic!() };
        assert_eq!((e[0].key.as_str(), e[0].kind), ("data/a b+c.zip", EventKind::Removed));
    }

    #[test]
    fn test_events_and_other_types_hold_no_object_and_garbage_is_unreadable() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-06T10:00:00Z","Bucket":"src"}"#;
        assert_eq!(parse(test).unwrap(), Message::NoObject);
        let tagging = S3.replace("ObjectCreated:Put", "ObjectTagging:Put");
        assert_eq!(parse(&tagging).unwrap(), Message::NoObject);
        let removed = S3.replace("ObjectCreated:Put", "ObjectRemoved:DeleteMarkerCreated");
        let Message::Events(e) = parse(&removed).unwrap() else { panic!() };
        assert_eq!(e[0].kind, EventKind::Removed);
        assert!(parse("not json")
            .unwrap_err()
            .to_string()
            .starts_with("not an S3 event notification"));
        assert!(parse(r#"{"hello": 1}"#).is_err());
    }

    #[test]
    fn sequencers_compare_as_s3_says() {
        assert!(later("0055AED6DCD90281E6", "0055AED6DCD90281E5"));
        assert!(later("0055AED6DCD90281E500", "0055AED6DCD90281E4"));
        assert!(!later("0055AED6DCD90281E5", "0055AED6DCD90281E5"));
    }
}
