//! Test-side S3 helpers: set-up and checks through the SDK (never the code under test).

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

/// An SDK client for test set-up and checks (not the code under test).
pub fn client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(access_key, secret_key, None, None, "tests"))
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .http_client(http_client())
        .build();
    Client::from_conf(conf)
}

/// The HTTP client of the test-side SDK clients (rustls with ring, as the product's).
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

pub async fn create_bucket(c: &Client, bucket: &str) {
    c.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
}

pub async fn put(c: &Client, bucket: &str, key: &str, body: Vec<u8>) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

pub async fn get(c: &Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match c.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => Some(o.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(_) => None,
    }
}

/// Every key under a prefix, with its size.
pub async fn list(c: &Client, bucket: &str, prefix: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut pages = c.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(p) = pages.next().await {
        for o in p.unwrap().contents() {
            out.push((o.key().unwrap().to_string(), o.size().unwrap_or(0)));
        }
    }
    out
}

/// Uploads objects with bounded concurrency.
pub async fn put_all(c: &Client, bucket: &str, objects: Vec<(String, Vec<u8>)>) {
    use futures::StreamExt;
    futures::stream::iter(objects)
        .map(|(k, b)| {
            let c = c.clone();
            let bucket = bucket.to_string();
            async move { put(&c, &bucket, &k, b).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}
