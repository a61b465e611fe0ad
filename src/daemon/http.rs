//! The daemon's `metrics_listen` server: `/metrics` (Prometheus text) and `/` (the status page
//! of the feeds it runs, drawn from the manifest when asked, on a blocking thread: nothing is
//! computed while nobody asks). Read-only; any other path is 404, any method but GET 405.

use crate::metrics::PrometheusHandle;
use crate::spec::Spec;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// What the pages are drawn from: the metrics, the manifest, the feeds running now.
#[derive(Clone)]
pub(super) struct Pages {
    pub metrics: PrometheusHandle,
    pub manifest: PathBuf,
    pub feeds: watch::Receiver<Vec<Arc<Spec>>>,
}

/// Binds `addr` and serves until the process ends.
pub(super) async fn serve(addr: SocketAddr, pages: Pages) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let pages = pages.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(pages.clone(), req));
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Ok(())
}

async fn answer(pages: Pages, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert("content-type", kind.parse().expect("a valid header"));
        Ok(r)
    };
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", crate::metrics::render(&pages.metrics)),
        "/" => {
            let specs = pages.feeds.borrow().clone();
            let drawn = tokio::task::spawn_blocking(move || {
                let reader = crate::manifest::Reader::open(&pages.manifest)?;
                crate::report::page(&reader, &specs, chrono::Utc::now())
            })
            .await;
            match drawn {
                Ok(Ok(html)) => reply(StatusCode::OK, "text/html; charset=utf-8", html),
                Ok(Err(e)) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: / (status page) and /metrics\n".into(),
        ),
    }
}
