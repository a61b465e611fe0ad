//! `[source.events]`: the SQS queue that S3 event notifications reach (directly, through SNS or
//! through EventBridge), its credentials, and how events are gathered into runs.

use super::check::{check_role, span, Diags, RoleKeys};
use super::raw::RawEvents;
use super::{Locator, Role, Side};
use std::time::Duration;

/// How long events are gathered into one run after the first arrives, unless set.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(1);
/// How long an event may take to arrive, unless set: a listing run's copy of an object that
/// changed longer ago than this is counted as missed by the events.
pub const DEFAULT_MISSED_AFTER: Duration = Duration::from_secs(60);
/// How long a received message stays hidden from other consumers, unless set; renewed while
/// its run goes on.
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(60);

/// The queue of a feed driven by events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    pub queue_url: String,
    /// The queue's region: set, else read from an AWS queue URL (`sqs.REGION.amazonaws.com`).
    pub region: String,
    /// Where SQS requests go: set, else the queue URL's scheme and host.
    pub endpoint: String,
    pub profile: Option<String>,
    pub role: Option<Role>,
    /// Events arriving within this long of the first are one run.
    pub window: Duration,
    /// The visibility timeout asked for each message received.
    pub visibility: Duration,
    /// A listing run's copy of an object that changed longer than this before the run started
    /// is one the events missed (`s3syncd_events_missed_total`).
    pub missed_after: Duration,
}

impl Events {
    /// The queue's credentials as a side's are built (profile, role, else the default chain).
    pub fn credentials_side(&self) -> Side {
        Side {
            region: Some(self.region.clone()),
            profile: self.profile.clone(),
            role: self.role.clone(),
            ..Side::default()
        }
    }
}

/// The region an AWS queue URL names (`https://sqs.us-east-1.amazonaws.com/…`).
fn aws_region(url: &str) -> Option<&str> {
    let host = url.split_once("://")?.1.split('/').next()?;
    let rest = host.strip_prefix("sqs.")?;
    let (region, domain) = rest.split_once('.')?;
    domain.starts_with("amazonaws.").then_some(region)
}

/// The queue URL's scheme and host: where its SQS requests go (on AWS, the regional endpoint).
fn own_endpoint(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

fn duration(loc: &Locator, d: &mut Diags, v: Option<&toml::Spanned<String>>, key: &str, dflt: Duration, range: (u64, u64)) -> Duration {
    let Some(v) = v else { return dflt };
    match super::size::parse_duration(v.get_ref()) {
        Ok(t) if (range.0..=range.1).contains(&(t.as_millis() as u64)) => t,
        Ok(_) => {
            d.push(loc.at(
                span(v),
                format!("source.events.{key} must be between {} ms and {} s", range.0, range.1 / 1000),
            ));
            dflt
        }
        Err(m) => {
            d.push(loc.at(span(v), format!("source.events.{key}: {m}")));
            dflt
        }
    }
}

/// Checks `[source.events]`.
pub(super) fn check_events(loc: &Locator, d: &mut Diags, raw: RawEvents) -> Option<Events> {
    let url = raw.queue_url.get_ref();
    let ok = (url.starts_with("https://") || url.starts_with("http://")) && url.split('/').filter(|s| !s.is_empty()).count() >= 4;
    if !ok {
        d.push(loc.at(
            span(&raw.queue_url),
            format!("source.events.queue_url {url:?} is not a queue URL like \"https://sqs.us-east-1.amazonaws.com/123456789012/bronze-events\""),
        ));
    }
    let region = match (&raw.region, aws_region(url)) {
        (Some(r), _) => r.get_ref().clone(),
        (None, Some(r)) => r.to_string(),
        (None, None) => "us-east-1".to_string(),
    };
    let endpoint = match &raw.endpoint {
        Some(e) => e.get_ref().trim_end_matches('/').to_string(),
        None => own_endpoint(url).unwrap_or_default(),
    };
    let role = check_role(
        loc,
        d,
        "source.events",
        RoleKeys {
            role_arn: raw.role_arn.as_ref(),
            external_id: raw.external_id.as_ref(),
            role_session_name: raw.role_session_name.as_ref(),
            duration: raw.duration.as_ref(),
        },
        false,
    );
    let window = duration(loc, d, raw.window.as_ref(), "window", DEFAULT_WINDOW, (0, 60_000));
    let visibility = duration(
        loc,
        d,
        raw.visibility.as_ref(),
        "visibility",
        DEFAULT_VISIBILITY,
        (10_000, 43_200_000),
    );
    let missed_after = duration(
        loc,
        d,
        raw.missed_after.as_ref(),
        "missed_after",
        DEFAULT_MISSED_AFTER,
        (0, 86_400_000),
    );
    ok.then(|| Events {
        queue_url: url.clone(),
        region,
        endpoint,
        profile: raw.profile.map(|p| p.into_inner()),
        role,
        window,
        visibility,
        missed_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_url_names_region_and_endpoint() {
        assert_eq!(aws_region("https://sqs.eu-west-1.amazonaws.com/123456789012/q"), Some("eu-west-1"));
        assert_eq!(
            aws_region("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q"),
            Some("cn-north-1")
        );
        assert_eq!(aws_region("http://127.0.0.1:5000/123456789012/q"), None);
        assert_eq!(
            own_endpoint("http://127.0.0.1:5000/123456789012/q").as_deref(),
            Some("http://127.0.0.1:5000")
        );
    }
}
