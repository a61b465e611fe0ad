//! S3 Batch Operations' Copy job, emulated from its documented formats (no local emulator of
//! the service exists): the job reads a CSV manifest (`bucket,key`, the key URL-encoded),
//! copies each object with CopyObject to `TargetKeyPrefix` + key in the target bucket, and
//! writes a completion report with one line per task: bucket, key, version id, task status
//! (`succeeded`/`failed`), error code, HTTP status code, result message.

use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use std::path::Path;

/// Runs the copy job of `manifest` into `target_bucket` under `target_prefix` and writes the
/// report to `report`. Returns (succeeded, failed).
pub async fn copy_job(client: &aws_sdk_s3::Client, manifest: &Path, target_bucket: &str, target_prefix: &str, report: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(manifest).unwrap();
    let (mut ok, mut failed, mut lines) = (0, 0, String::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (bucket, encoded) = line.split_once(',').expect("bucket,key");
        let key = percent_decode_str(&encoded.replace('+', " ")).decode_utf8().unwrap().into_owned();
        let source = format!("{bucket}/{}", utf8_percent_encode(&key, NON_ALPHANUMERIC));
        let copied = client
            .copy_object()
            .copy_source(source)
            .bucket(target_bucket)
            .key(format!("{target_prefix}{key}"))
            .send()
            .await;
        match copied {
            Ok(_) => {
                ok += 1;
                lines.push_str(&format!("{bucket},{encoded},,succeeded,,200,Successful\n"));
            }
            Err(e) => {
                failed += 1;
                let e = e.into_service_error();
                let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e)
                    .unwrap_or("InternalError")
                    .to_string();
                lines.push_str(&format!("{bucket},{encoded},,failed,{code},404,\"{code}: the copy failed\"\n"));
            }
        }
    }
    std::fs::write(report, lines).unwrap();
    (ok, failed)
}
