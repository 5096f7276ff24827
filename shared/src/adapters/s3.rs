//! The archive on S3: one object per batch ([`crate::domain::archive`]), encrypted with the
//! bucket's default key (the stack's KMS key, set on the bucket by the template, so no request
//! names a key and a bucket without one still works locally).

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::sdk::{classify, Failure};
use crate::domain::archive::oversize_object;
use crate::ports::*;

fn store_error(failure: Failure) -> StoreError {
    match failure {
        Failure::Throttled(m) => StoreError::Throttled(m),
        Failure::Service { code, message } => match code.as_str() {
            // S3's throttle is a 503 SlowDown.
            "SlowDown" => StoreError::Throttled(message),
            "NoSuchBucket" | "AccessDenied" | "NoSuchKey" | "InvalidBucketName" => {
                StoreError::Rejected(message)
            }
            _ => StoreError::Unavailable(message),
        },
        Failure::Unreachable(m) => StoreError::Unavailable(m),
    }
}

#[derive(Clone)]
pub struct S3Archive {
    client: Client,
    bucket: String,
}

impl S3Archive {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// The client for `sdk`. With an explicit endpoint (LocalStack), paths name the bucket:
    /// bucket host names (`bucket.127.0.0.1`) do not resolve locally.
    pub fn client(sdk: &aws_config::SdkConfig) -> Client {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        Client::from_conf(config)
    }
}

#[async_trait]
impl ArchiveWriter for S3Archive {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            // A gzip file (`.jsonl.gz`), not gzip-encoded JSON: no Content-Encoding, so no
            // client decompresses it on the way and every tool gets the bytes that were stored.
            .content_type("application/gzip")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        Ok(())
    }
}

#[async_trait]
impl ArchivePruner for S3Archive {
    /// In the stack's versioned bucket this leaves a delete marker; the bytes go when the
    /// bucket's noncurrent versions do (teardown removes every version).
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        Ok(())
    }
}

#[async_trait]
impl ArchiveReader for S3Archive {
    async fn list(&self, start_after: Option<&str>) -> Result<ArchivePage, StoreError> {
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_start_after(start_after.map(str::to_owned))
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        Ok(ArchivePage {
            keys: output
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect(),
            more: output.is_truncated().unwrap_or(false),
        })
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        let stored = output
            .content_length()
            .map_or(0, |length| u64::try_from(length).unwrap_or(0));
        if let Some(reason) = oversize_object(key, stored) {
            return Err(StoreError::ItemRejected(reason));
        }
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?;
        Ok(body.into_bytes())
    }
}
