//! Creates the stream and tables when they are missing, for `tidemark serve` and
//! `tidemark bootstrap` against LocalStack or any endpoint. (The SAM template creates them in AWS.)

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_kinesis::types::StreamStatus;

use super::sdk::{classify, Failure};
use crate::config::ResourceNames;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("creating or describing {resource} failed: {message}")]
    Aws { resource: String, message: String },
    #[error("{resource} did not become ACTIVE within {seconds} s")]
    Timeout { resource: String, seconds: u64 },
}

/// How long a new stream or table may take to become ACTIVE (LocalStack: well under a second;
/// AWS: usually under 30 s).
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);
const ACTIVE_POLL: Duration = Duration::from_millis(250);

fn aws_error(resource: &str, failure: Failure) -> BootstrapError {
    let message = match failure {
        Failure::Throttled(m) | Failure::Unreachable(m) => m,
        Failure::Service { message, .. } => message,
    };
    BootstrapError::Aws {
        resource: resource.to_owned(),
        message,
    }
}

fn is_code(failure: &Failure, wanted: &str) -> bool {
    matches!(failure, Failure::Service { code, .. } if code == wanted)
}

/// Creates the stream with `shard_count` shards if missing and waits until it is ACTIVE.
/// Returns whether it was created.
pub async fn ensure_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shard_count: u32,
) -> Result<bool, BootstrapError> {
    let resource = format!("Kinesis stream {name}");
    let mut created = false;
    let started = tokio::time::Instant::now();
    loop {
        match client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
        {
            Ok(output) => {
                let active = output
                    .stream_description_summary()
                    .is_some_and(|s| *s.stream_status() == StreamStatus::Active);
                if active {
                    return Ok(created);
                }
            }
            Err(e) => {
                let failure = classify(&e);
                if !is_code(&failure, "ResourceNotFoundException") {
                    return Err(aws_error(&resource, failure));
                }
                match client
                    .create_stream()
                    .stream_name(name)
                    .shard_count(i32::try_from(shard_count).unwrap_or(i32::MAX))
                    .send()
                    .await
                {
                    Ok(_) => created = true,
                    Err(e) => {
                        let failure = classify(&e);
                        // Someone else created it in the meantime: wait for it like ours.
                        if !is_code(&failure, "ResourceInUseException") {
                            return Err(aws_error(&resource, failure));
                        }
                    }
                }
            }
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(BootstrapError::Timeout {
                resource,
                seconds: ACTIVE_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(ACTIVE_POLL).await;
    }
}

/// Creates an on-demand table with string keys if missing and waits until it is ACTIVE.
pub async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    hash_key: &str,
    range_key: Option<&str>,
) -> Result<bool, BootstrapError> {
    let resource = format!("DynamoDB table {name}");
    let build_error = |e: aws_sdk_dynamodb::error::BuildError| BootstrapError::Aws {
        resource: resource.clone(),
        message: e.to_string(),
    };
    let mut created = false;
    let started = tokio::time::Instant::now();
    loop {
        match client.describe_table().table_name(name).send().await {
            Ok(output) => {
                if output.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                    return Ok(created);
                }
            }
            Err(e) => {
                let failure = classify(&e);
                if !is_code(&failure, "ResourceNotFoundException") {
                    return Err(aws_error(&resource, failure));
                }
                let mut request = client
                    .create_table()
                    .table_name(name)
                    .billing_mode(BillingMode::PayPerRequest);
                let keys = std::iter::once((hash_key, KeyType::Hash))
                    .chain(range_key.map(|k| (k, KeyType::Range)));
                for (key, key_type) in keys {
                    request = request
                        .attribute_definitions(
                            AttributeDefinition::builder()
                                .attribute_name(key)
                                .attribute_type(ScalarAttributeType::S)
                                .build()
                                .map_err(build_error)?,
                        )
                        .key_schema(
                            KeySchemaElement::builder()
                                .attribute_name(key)
                                .key_type(key_type)
                                .build()
                                .map_err(build_error)?,
                        );
                }
                match request.send().await {
                    Ok(_) => created = true,
                    Err(e) => {
                        let failure = classify(&e);
                        if !is_code(&failure, "ResourceInUseException") {
                            return Err(aws_error(&resource, failure));
                        }
                    }
                }
            }
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(BootstrapError::Timeout {
                resource,
                seconds: ACTIVE_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(ACTIVE_POLL).await;
    }
}

/// Ensures the stream and the three tables exist; returns the names it created.
pub async fn ensure_resources(
    sdk: &aws_config::SdkConfig,
    names: &ResourceNames,
    shard_count: u32,
) -> Result<Vec<String>, BootstrapError> {
    let kinesis = aws_sdk_kinesis::Client::new(sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let mut created = Vec::new();
    if ensure_stream(&kinesis, &names.stream, shard_count).await? {
        created.push(names.stream.clone());
    }
    for (table, hash, range) in [
        (&names.status_table, "id", None),
        (&names.oplog_table, "shard_id", None),
        (&names.deadletter_table, "shard_id", Some("sequence_number")),
    ] {
        if ensure_table(&dynamodb, table, hash, range).await? {
            created.push(table.clone());
        }
    }
    Ok(created)
}
