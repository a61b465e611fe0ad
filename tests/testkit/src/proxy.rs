//! A fault-injecting HTTP proxy on 127.0.0.1, between s3syncd and a real server. Requests pass
//! through unchanged (the Host header too, so SigV4 signatures stay valid) unless a rule matches
//! the S3 operation, in which case the proxy answers with an S3 error itself.
//!
//! Faults are deterministic per object: a rule chooses request targets (an object, a part, a
//! listing page) by a seeded hash, never by a counter shared by concurrent requests, and faults
//! only the first `times` attempts at each chosen target. So no object can meet more faults than
//! the rule says, whatever the timing, and a retry budget above `times` always suffices.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The S3 operation of a request, from its method, query and headers.
pub fn operation<B>(req: &Request<B>) -> &'static str {
    let q = req.uri().query().unwrap_or("");
    let copy = req.headers().contains_key("x-amz-copy-source");
    let part = q.contains("partNumber=");
    match *req.method() {
        hyper::Method::GET if q.contains("list-type=2") => "ListObjectsV2",
        hyper::Method::GET => "GetObject",
        hyper::Method::HEAD => "HeadObject",
        hyper::Method::PUT if copy && part => "UploadPartCopy",
        hyper::Method::PUT if copy => "CopyObject",
        hyper::Method::PUT if part => "UploadPart",
        hyper::Method::PUT => "PutObject",
        hyper::Method::POST if q.contains("uploads") => "CreateMultipartUpload",
        hyper::Method::POST if q.contains("uploadId") => "CompleteMultipartUpload",
        hyper::Method::POST if q.contains("delete") => "DeleteObjects",
        hyper::Method::DELETE if q.contains("uploadId") => "AbortMultipartUpload",
        hyper::Method::DELETE => "DeleteObject",
        _ => "Other",
    }
}

/// What the proxy does instead of (or to) a matching request.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer with this HTTP status and S3 error code.
    Status(u16, &'static str),
    /// Forward, then send half the response body and drop the connection.
    ResetMidBody,
    /// Forward, then send half the body and end it, short of its Content-Length.
    Truncate,
    /// Wait this long, then forward.
    Stall(std::time::Duration),
    /// Forward, then hold the answer back this long: the server has acted, the client does
    /// not know yet (the window between a create and its record).
    StallAfter(std::time::Duration),
    /// Forward a listing page, rewritten to say `IsTruncated=true` with no continuation token.
    TruncatedListingWithoutToken,
    /// Forward a listing page with its first two entries swapped: out of key order.
    ReorderedListing,
    /// Forward, then flip one byte in the middle of the response body (same length).
    Corrupt,
}

/// Applies `action` to requests of operation `op` ("*": any) whose target is chosen (one in
/// `every`, by a hash of the target and `seed`; 1: all), once more than `after` requests of the
/// operation were seen in all, and only to the first `times` attempts at each target.
#[derive(Clone, Debug)]
pub struct Fault {
    pub op: &'static str,
    /// Only targets (the request's `/bucket/key` path, percent-encoded) ending with this.
    pub only: Option<&'static str>,
    /// Only targets not starting with this (`/bucket/prefix`): a policy that grants one prefix.
    pub not_under: Option<&'static str>,
    pub every: u64,
    pub after: u64,
    pub times: u64,
    pub seed: u64,
    /// Choose each attempt afresh (one in `every`, by a hash of the target, the attempt's
    /// number and `seed`), not each target once: a fixed share of every request, whatever the
    /// rate, as a busy server's own faults are.
    pub per_attempt: bool,
    pub action: Action,
}

impl Fault {
    /// Every attempt at every target of `op`.
    pub fn always(op: &'static str, action: Action) -> Fault {
        Fault {
            op,
            only: None,
            not_under: None,
            every: 1,
            after: 0,
            times: u64::MAX,
            seed: 0,
            per_attempt: false,
            action,
        }
    }
    /// One attempt in `every` at any target of `op`, chosen per attempt.
    pub fn share(op: &'static str, every: u64, action: Action) -> Fault {
        Fault {
            every,
            per_attempt: true,
            ..Fault::always(op, action)
        }
    }
    /// The first attempt at one target of `op` in `every`.
    pub fn once_per(op: &'static str, every: u64, action: Action) -> Fault {
        Fault {
            every,
            times: 1,
            ..Fault::always(op, action)
        }
    }
    pub fn status(op: &'static str, every: u64, status: u16, code: &'static str) -> Fault {
        Fault {
            every,
            ..Fault::always(op, Action::Status(status, code))
        }
    }
    pub fn after(self, after: u64) -> Fault {
        Fault { after, ..self }
    }
    pub fn times(self, times: u64) -> Fault {
        Fault { times, ..self }
    }
    pub fn only(self, target_suffix: &'static str) -> Fault {
        Fault {
            only: Some(target_suffix),
            ..self
        }
    }

    /// Only targets outside `prefix` (the request's `/bucket/key` path).
    pub fn only_not_under(self, prefix: &'static str) -> Fault {
        Fault {
            not_under: Some(prefix),
            ..self
        }
    }

    fn chooses(&self, target: &str, attempt: u64) -> bool {
        use std::hash::{Hash, Hasher};
        if self.only.is_some_and(|o| !target.ends_with(o)) || self.not_under.is_some_and(|p| target.starts_with(p)) {
            return false;
        }
        if self.every <= 1 {
            return true;
        }
        // A fixed hash (SipHash with zero keys), so the choice is the same in every run.
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        (self.seed, self.op, target).hash(&mut h);
        if self.per_attempt {
            attempt.hash(&mut h);
        }
        h.finish().is_multiple_of(self.every)
    }
}

#[derive(Default)]
struct State {
    faults: Mutex<Vec<Fault>>,
    seen: Mutex<std::collections::HashMap<&'static str, u64>>,
    /// Attempts per (operation, target).
    attempts: Mutex<std::collections::HashMap<(&'static str, String), u64>>,
    injected: AtomicU64,
    /// The most faults any one (operation, target) met.
    most_per_target: AtomicU64,
    faulted: Mutex<std::collections::HashMap<(&'static str, String), u64>>,
    /// Requests carrying each header, by lower-case name.
    headers: Mutex<std::collections::HashMap<String, u64>>,
    /// A request-rate cap, as S3 has per prefix: requests beyond it get 503 SlowDown.
    cap: Mutex<Option<RateCap>>,
    /// Requests answered SlowDown by the cap, and requests forwarded.
    capped: AtomicU64,
    forwarded: AtomicU64,
    /// Requests by (bucket, access key id, signing region), from each SigV4 Authorization header.
    signers: Mutex<std::collections::BTreeMap<(String, String, String), u64>>,
    /// Buckets that live in a region, as AWS answers for them: a request signed for another
    /// region gets 301 with `x-amz-bucket-region` and an empty body.
    regions: Mutex<std::collections::HashMap<String, String>>,
}

/// The access key id and region of a SigV4 `Authorization` header.
fn signer(auth: &str) -> Option<(String, String)> {
    let cred = auth.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    let mut parts = cred.split('/');
    let key = parts.next()?.to_string();
    let region = parts.nth(1)?.to_string();
    Some((key, region))
}

/// A token bucket: `per_second` tokens a second, at most a tenth of a second's worth at once.
struct RateCap {
    per_second: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl RateCap {
    fn admit(&mut self) -> bool {
        let now = std::time::Instant::now();
        let burst = (self.per_second / 10.0).max(1.0);
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a request is about, for choosing and counting faults: the path (bucket and key) and
/// the part number or the listing page, without anything that differs between runs (upload ids).
fn target<B>(req: &Request<B>) -> String {
    let path = req.uri().path().to_string();
    let q = req.uri().query().unwrap_or("");
    let keep: Vec<&str> = q
        .split('&')
        .filter(|kv| {
            ["partNumber=", "continuation-token=", "start-after=", "prefix="]
                .iter()
                .any(|k| kv.starts_with(k))
        })
        .collect();
    if keep.is_empty() {
        path
    } else {
        format!("{path}?{}", keep.join("&"))
    }
}

pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: &str, faults: Vec<Fault>) -> FaultProxy {
        let state = Arc::new(State {
            faults: Mutex::new(faults),
            ..State::default()
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let upstream = upstream.trim_end_matches('/').to_string();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            let Ok((socket, _)) = r else { continue };
                            let (client, st, upstream) = (client.clone(), st.clone(), upstream.clone());
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(move |req| handle(req, client.clone(), st.clone(), upstream.clone()));
                                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), svc).await;
                            });
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        FaultProxy {
            endpoint: format!("http://{addr}"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Replaces the rules and starts counting requests and attempts anew: one proxy, so one
    /// endpoint (which s3syncd's manifest keys its rows by), serves a spec's clean runs and its
    /// faulty ones.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        *self.state.faults.lock().unwrap() = faults;
        self.state.seen.lock().unwrap().clear();
        self.state.attempts.lock().unwrap().clear();
    }

    /// Caps the request rate: beyond `per_second`, requests get 503 SlowDown, as S3 answers
    /// more requests per second on a prefix than it can take.
    pub fn cap_rate(&self, per_second: u32) {
        *self.state.cap.lock().unwrap() = Some(RateCap {
            per_second: per_second as f64,
            tokens: (per_second as f64 / 10.0).max(1.0),
            last: std::time::Instant::now(),
        });
    }

    /// Requests the rate cap answered SlowDown, and requests forwarded to the server.
    pub fn capped(&self) -> (u64, u64) {
        (
            self.state.capped.load(Ordering::Relaxed),
            self.state.forwarded.load(Ordering::Relaxed),
        )
    }

    /// How many requests the proxy faulted.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// The most faults one target (an object, a part, a page) met.
    pub fn most_faults_per_target(&self) -> u64 {
        self.state.most_per_target.load(Ordering::Relaxed)
    }

    /// How many distinct targets were faulted at least once.
    pub fn faulted_targets(&self) -> usize {
        self.state.faulted.lock().unwrap().len()
    }

    /// How many requests carried header `name` (lower case).
    /// The targets of the requests of operation `op` seen since the faults were last set, with
    /// how many attempts each (a listing's target has its `prefix=` and `start-after=`).
    pub fn targets(&self, op: &str) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .state
            .attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|((o, _), _)| *o == op)
            .map(|((_, t), n)| (t.clone(), *n))
            .collect();
        v.sort();
        v
    }

    pub fn seen_header(&self, name: &str) -> u64 {
        self.state.headers.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Places `bucket` in `region`: requests signed for another region are answered as AWS
    /// answers them (301, `x-amz-bucket-region`, no body), and every answer about the bucket
    /// names its region.
    pub fn set_bucket_region(&self, bucket: &str, region: &str) {
        self.state.regions.lock().unwrap().insert(bucket.into(), region.into());
    }

    /// Signed requests by (bucket, access key id, signing region), with their counts.
    pub fn signers(&self) -> Vec<((String, String, String), u64)> {
        self.state.signers.lock().unwrap().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn seen(&self, op: &str) -> u64 {
        self.state.seen.lock().unwrap().get(op).copied().unwrap_or(0)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

async fn handle(
    req: Request<Incoming>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    st: Arc<State>,
    upstream: String,
) -> Result<Response<Body>, BoxError> {
    let op = operation(&req);
    let target = target(&req);
    {
        let mut headers = st.headers.lock().unwrap();
        for name in req.headers().keys() {
            *headers.entry(name.as_str().to_string()).or_default() += 1;
        }
    }
    let n = {
        let mut seen = st.seen.lock().unwrap();
        let c = seen.entry(op).or_default();
        *c += 1;
        *c
    };
    let attempt = {
        let mut a = st.attempts.lock().unwrap();
        let c = a.entry((op, target.clone())).or_default();
        *c += 1;
        *c
    };
    let fault = st
        .faults
        .lock()
        .unwrap()
        .iter()
        .find(|f| (f.op == op || f.op == "*") && n > f.after && attempt <= f.times && f.chooses(&target, attempt))
        .map(|f| f.action.clone());
    if fault.is_some() {
        st.injected.fetch_add(1, Ordering::Relaxed);
        let mut faulted = st.faulted.lock().unwrap();
        let c = faulted.entry((op, target)).or_default();
        *c += 1;
        st.most_per_target.fetch_max(*c, Ordering::Relaxed);
    }
    let bucket = req.uri().path().trim_start_matches('/').split('/').next().unwrap_or("").to_string();
    let signed = req.headers().get("authorization").and_then(|a| a.to_str().ok()).and_then(signer);
    if let Some((key, region)) = &signed {
        *st.signers
            .lock()
            .unwrap()
            .entry((bucket.clone(), key.clone(), region.clone()))
            .or_default() += 1;
    }
    let home = st.regions.lock().unwrap().get(&bucket).cloned();
    if let (Some(home), Some((_, region))) = (&home, &signed) {
        if home != region {
            let _ = req.into_body().collect().await;
            return Ok(Response::builder()
                .status(301)
                .header("x-amz-bucket-region", home)
                .body(full(""))
                .unwrap());
        }
    }
    let capped = st.cap.lock().unwrap().as_mut().is_some_and(|c| !c.admit());
    let fault = if capped {
        st.capped.fetch_add(1, Ordering::Relaxed);
        Some(Action::Status(503, "SlowDown"))
    } else {
        st.forwarded.fetch_add(1, Ordering::Relaxed);
        fault
    };
    match fault {
        Some(Action::Status(status, code)) => {
            // Drain the body so the client sees a clean response, not a reset.
            let _ = req.into_body().collect().await;
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
            );
            return Ok(Response::builder()
                .status(status)
                .header("content-type", "application/xml")
                .body(full(xml))
                .unwrap());
        }
        Some(Action::Stall(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    parts.uri = format!("{upstream}{path}").parse().unwrap();
    let fwd = Request::from_parts(parts, Full::new(body));
    let resp = match client.request(fwd).await {
        Ok(r) => r,
        Err(e) => return Ok(Response::builder().status(502).body(full(e.to_string())).unwrap()),
    };
    if let Some(Action::StallAfter(d)) = fault {
        tokio::time::sleep(d).await;
    }
    match fault {
        Some(Action::ResetMidBody) | Some(Action::Truncate) => {
            let reset = matches!(fault, Some(Action::ResetMidBody));
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let half = bytes.slice(..bytes.len() / 2);
            let mut frames: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = vec![Ok(hyper::body::Frame::data(half))];
            if reset {
                frames.push(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset")));
            }
            // The original Content-Length stays: the client sees a body that ends short, and
            // with the error frame hyper aborts the connection mid-body.
            let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
            Ok(Response::from_parts(parts, BodyExt::boxed(body.map_err(BoxError::from))))
        }
        Some(Action::Corrupt) => {
            let (parts, body) = resp.into_parts();
            let mut bytes = body.collect().await?.to_bytes().to_vec();
            let middle = bytes.len() / 2;
            if let Some(b) = bytes.get_mut(middle) {
                *b ^= 0xff;
            }
            Ok(Response::from_parts(parts, full(bytes)))
        }
        Some(Action::TruncatedListingWithoutToken) => {
            let (mut parts, body) = resp.into_parts();
            let xml = String::from_utf8_lossy(&body.collect().await?.to_bytes()).into_owned();
            let xml = xml.replace("<IsTruncated>false</IsTruncated>", "<IsTruncated>true</IsTruncated>");
            let xml = match (xml.find("<NextContinuationToken>"), xml.find("</NextContinuationToken>")) {
                (Some(a), Some(b)) => format!("{}{}", &xml[..a], &xml[b + "</NextContinuationToken>".len()..]),
                _ => xml,
            };
            parts.headers.remove("content-length");
            Ok(Response::from_parts(parts, full(xml)))
        }
        Some(Action::ReorderedListing) => {
            let (mut parts, body) = resp.into_parts();
            let xml = String::from_utf8_lossy(&body.collect().await?.to_bytes()).into_owned();
            parts.headers.remove("content-length");
            Ok(Response::from_parts(parts, full(swap_first_two(&xml, "<Contents>", "</Contents>"))))
        }
        _ => {
            let mut resp = resp.map(|b| b.map_err(BoxError::from).boxed());
            if let Some(home) = home {
                resp.headers_mut().insert("x-amz-bucket-region", home.parse().unwrap());
            }
            Ok(resp)
        }
    }
}

/// `xml` with its first two `open`...`close` elements swapped (unchanged with fewer than two).
fn swap_first_two(xml: &str, open: &str, close: &str) -> String {
    let element = |from: usize| {
        let a = from + xml[from..].find(open)?;
        let b = a + xml[a..].find(close)? + close.len();
        Some((a, b))
    };
    let Some((a1, b1)) = element(0) else { return xml.to_string() };
    let Some((a2, b2)) = element(b1) else { return xml.to_string() };
    format!("{}{}{}{}{}", &xml[..a1], &xml[a2..b2], &xml[b1..a2], &xml[a1..b1], &xml[b2..])
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
