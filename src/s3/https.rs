//! The plain HTTPS client of what is not an S3 request: webhooks (`[[notify]]`) and the event
//! queue's SQS calls. rustls with ring, the system's roots, HTTP/1.1.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use std::sync::Arc;

pub type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// A client; without system certificates, https requests fail (warned once here).
pub fn client() -> Client<Https, Full<Bytes>> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(Arc::new(rustls_ring()))
        .map(|b| b.https_or_http().enable_http1().build())
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no system certificates: https notifications and queues will fail");
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(
                    rustls::ClientConfig::builder_with_provider(Arc::new(rustls_ring()))
                        .with_safe_default_protocol_versions()
                        .expect("TLS versions")
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
                .https_or_http()
                .enable_http1()
                .build()
        });
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

fn rustls_ring() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
