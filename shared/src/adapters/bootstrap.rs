//! Creates the stream and tables when they are missing, for `tidemark serve` and
//! `tidemark bootstrap` against LocalStack or any endpoint. (The SAM template creates them in AWS.)

use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_kinesis::operation::create_stream::CreateStreamError;
use aws_sdk_kinesis::operation::describe_stream_summary::DescribeStreamSummaryError;
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

/// What a describe call found.
enum Found {
    Active,
    NotYetActive,
    Missing,
}

/// Describes `resource` until it is ACTIVE, creating it once when it is missing. `create`
/// answers whether it created it: `false` when someone else got there first
/// (`ResourceInUseException`), which is waited for like our own. Returns whether this call
/// created it.
async fn ensure_active<D, DF, C, CF>(
    resource: &str,
    mut describe: D,
    mut create: C,
) -> Result<bool, BootstrapError>
where
    D: FnMut() -> DF,
    DF: Future<Output = Result<Found, Failure>>,
    C: FnMut() -> CF,
    CF: Future<Output = Result<bool, Failure>>,
{
    let mut created = false;
    let started = tokio::time::Instant::now();
    loop {
        match describe().await.map_err(|f| aws_error(resource, f))? {
            Found::Active => return Ok(created),
            Found::NotYetActive => {}
            Found::Missing => created |= create().await.map_err(|f| aws_error(resource, f))?,
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(BootstrapError::Timeout {
                resource: resource.to_owned(),
                seconds: ACTIVE_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(ACTIVE_POLL).await;
    }
}

/// Creates the stream with `shard_count` shards if missing and waits until it is ACTIVE.
/// Returns whether it was created.
pub async fn ensure_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shard_count: u32,
) -> Result<bool, BootstrapError> {
    ensure_active(
        &format!("Kinesis stream {name}"),
        || async {
            match client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
            {
                Ok(output) => Ok(
                    if output
                        .stream_description_summary()
                        .is_some_and(|s| *s.stream_status() == StreamStatus::Active)
                    {
                        Found::Active
                    } else {
                        Found::NotYetActive
                    },
                ),
                Err(e)
                    if e.as_service_error().is_some_and(
                        DescribeStreamSummaryError::is_resource_not_found_exception,
                    ) =>
                {
                    Ok(Found::Missing)
                }
                Err(e) => Err(classify(&e)),
            }
        },
        || async {
            let created = client
                .create_stream()
                .stream_name(name)
                .shard_count(i32::try_from(shard_count).unwrap_or(i32::MAX))
                .send()
                .await;
            match created {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(CreateStreamError::is_resource_in_use_exception) =>
                {
                    Ok(false)
                }
                Err(e) => Err(classify(&e)),
            }
        },
    )
    .await
}

/// Creates an on-demand table with string keys if missing and waits until it is ACTIVE.
pub async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    hash_key: &str,
    range_key: Option<&str>,
) -> Result<bool, BootstrapError> {
    let resource = format!("DynamoDB table {name}");
    let mut attributes = Vec::new();
    let mut key_schema = Vec::new();
    let keys =
        std::iter::once((hash_key, KeyType::Hash)).chain(range_key.map(|k| (k, KeyType::Range)));
    for (key, key_type) in keys {
        let build_error = |e: aws_sdk_dynamodb::error::BuildError| BootstrapError::Aws {
            resource: resource.clone(),
            message: e.to_string(),
        };
        attributes.push(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)?,
        );
        key_schema.push(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(key_type)
                .build()
                .map_err(build_error)?,
        );
    }
    ensure_active(
        &resource,
        || async {
            match client.describe_table().table_name(name).send().await {
                Ok(output) => Ok(
                    if output.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                        Found::Active
                    } else {
                        Found::NotYetActive
                    },
                ),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(DescribeTableError::is_resource_not_found_exception) =>
                {
                    Ok(Found::Missing)
                }
                Err(e) => Err(classify(&e)),
            }
        },
        || async {
            let created = client
                .create_table()
                .table_name(name)
                .billing_mode(BillingMode::PayPerRequest)
                .set_attribute_definitions(Some(attributes.clone()))
                .set_key_schema(Some(key_schema.clone()))
                .send()
                .await;
            match created {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(CreateTableError::is_resource_in_use_exception) =>
                {
                    Ok(false)
                }
                Err(e) => Err(classify(&e)),
            }
        },
    )
    .await
}

/// Ensures the stream and the tables exist; returns the names it created.
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
        (&names.idempotency_table, "key", None),
        (&names.status_view_table, "pk", Some("sk")),
    ] {
        if ensure_table(&dynamodb, table, hash, range).await? {
            created.push(table.clone());
        }
    }
    if let Some(history) = &names.history_table {
        if ensure_table(&dynamodb, history, "id", Some("version")).await? {
            created.push(history.clone());
        }
    }
    if ensure_bucket(&super::s3::S3Archive::client(sdk), &names.archive_bucket).await? {
        created.push(names.archive_bucket.clone());
    }
    Ok(created)
}

/// Creates the archive bucket if missing. Returns whether it was created.
pub async fn ensure_bucket(
    client: &aws_sdk_s3::Client,
    name: &str,
) -> Result<bool, BootstrapError> {
    let resource = format!("S3 bucket {name}");
    match client.head_bucket().bucket(name).send().await {
        Ok(_) => return Ok(false),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => {}
        Err(e) => return Err(aws_error(&resource, classify(&e))),
    }
    // Outside us-east-1, S3 wants the region named again as the bucket's location.
    let location = client
        .config()
        .region()
        .map(|r| r.as_ref().to_owned())
        .filter(|r| r != "us-east-1")
        .map(|r| {
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    r.as_str(),
                ))
                .build()
        });
    match client
        .create_bucket()
        .bucket(name)
        .set_create_bucket_configuration(location)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().is_some_and(|e| {
                e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
            }) =>
        {
            Ok(false)
        }
        Err(e) => Err(aws_error(&resource, classify(&e))),
    }
}
