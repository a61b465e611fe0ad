//! A fault-injecting HTTP proxy on 127.0.0.1, between s3syncd and a real server. Requests pass
//! through unchanged (the Host header too, so SigV4 signatures stay valid) unless a rule matches
//! the S3 operation, in which case the proxy answers with an S3 error itself.

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
    /// Forward a listing page, rewritten to say `IsTruncated=true` with no continuation token.
    TruncatedListingWithoutToken,
}

/// Applies `action` to the n-th request of operation `op` ("*": any) when n > `after` and
/// n % `every` == 0 (n counts from 1, per operation).
#[derive(Clone, Debug)]
pub struct Fault {
    pub op: &'static str,
    pub every: u64,
    pub after: u64,
    pub action: Action,
}

impl Fault {
    pub fn status(op: &'static str, every: u64, status: u16, code: &'static str) -> Fault {
        Fault {
            op,
            every,
            after: 0,
            action: Action::Status(status, code),
        }
    }
}

#[derive(Default)]
struct State {
    faults: Mutex<Vec<Fault>>,
    seen: Mutex<std::collections::HashMap<&'static str, u64>>,
    injected: AtomicU64,
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

    /// How many responses the proxy made up.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
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
    let n = {
        let mut seen = st.seen.lock().unwrap();
        let c = seen.entry(op).or_default();
        *c += 1;
        *c
    };
    let fault = st
        .faults
        .lock()
        .unwrap()
        .iter()
        .find(|f| (f.op == op || f.op == "*") && n > f.after && n % f.every == 0)
        .map(|f| f.action.clone());
    if fault.is_some() {
        st.injected.fetch_add(1, Ordering::Relaxed);
    }
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
        _ => Ok(resp.map(|b| b.map_err(BoxError::from).boxed())),
    }
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
