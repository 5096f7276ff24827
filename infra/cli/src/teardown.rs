//! `tidemark teardown`: removes what `sam delete` leaves behind on purpose. The template retains
//! the tables that hold the product's data (STATUS, the status view, OPLOG, DEADLETTER,
//! HISTORY) and the versioned archive bucket, so deleting a stack never deletes its data; they
//! are billed until someone removes them. This empties the bucket (every version and delete
//! marker) and deletes it, and deletes the tables, after the operator confirmed. The KMS key is
//! left to `aws kms schedule-key-deletion`, which AWS holds for 7 to 30 days; the command says so.

use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use tidemark::config::ResourceNames;

/// Keys per DeleteObjects call: S3's maximum.
const DELETE_OBJECTS_MAX: usize = 1000;

/// What was found and removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub tables: Vec<String>,
    /// Tables that did not exist (already removed, or never created).
    pub absent: Vec<String>,
    pub object_versions: usize,
    pub bucket: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("not confirmed: nothing was deleted")]
    NotConfirmed,
    #[error("{what} failed: {reason}")]
    Aws { what: String, reason: String },
}

fn aws(what: impl Into<String>) -> impl FnOnce(String) -> TeardownError {
    let what = what.into();
    move |reason| TeardownError::Aws { what, reason }
}

/// The retained tables of a stack, by name.
pub fn retained_tables(names: &ResourceNames) -> Vec<String> {
    let mut tables = vec![
        names.status_table.clone(),
        names.status_view_table.clone(),
        names.oplog_table.clone(),
        names.deadletter_table.clone(),
        // Not retained by the template (its keys expire within a day), but removed here too
        // when it is still there, so the command leaves nothing of the stack's data behind.
        names.idempotency_table.clone(),
    ];
    tables.extend(names.history_table.clone());
    tables
}

/// Deletes the tables and the archive bucket of `names`, once `confirm` agreed to the list it is
/// shown. A table or bucket that is already gone is reported, not an error.
pub async fn teardown(
    sdk: &aws_config::SdkConfig,
    names: &ResourceNames,
    confirm: impl FnOnce(&[String]) -> bool,
) -> Result<Removed, TeardownError> {
    let mut plan: Vec<String> = retained_tables(names)
        .into_iter()
        .map(|t| format!("DynamoDB table {t}"))
        .collect();
    plan.push(format!(
        "S3 bucket {}, every object version and delete marker in it",
        names.archive_bucket
    ));
    if !confirm(&plan) {
        return Err(TeardownError::NotConfirmed);
    }
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let s3 = tidemark::adapters::s3::S3Archive::client(sdk);
    let mut removed = Removed::default();
    for table in retained_tables(names) {
        if delete_table(&dynamodb, &table).await? {
            removed.tables.push(table);
        } else {
            removed.absent.push(table);
        }
    }
    match empty_bucket(&s3, &names.archive_bucket).await? {
        Some(versions) => {
            removed.object_versions = versions;
            s3.delete_bucket()
                .bucket(&names.archive_bucket)
                .send()
                .await
                .map_err(|e| e.into_service_error().to_string())
                .map_err(aws(format!("DeleteBucket {}", names.archive_bucket)))?;
            removed.bucket = Some(names.archive_bucket.clone());
        }
        None => removed.absent.push(names.archive_bucket.clone()),
    }
    Ok(removed)
}

/// Deletes `table`, turning its deletion protection off first; `false` when it does not exist.
async fn delete_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<bool, TeardownError> {
    let described = dynamodb.describe_table().table_name(table).send().await;
    let description = match described {
        Ok(output) => output.table,
        Err(e) => {
            let e = e.into_service_error();
            if e.is_resource_not_found_exception() {
                return Ok(false);
            }
            return Err(aws(format!("DescribeTable {table}"))(e.to_string()));
        }
    };
    if description.and_then(|t| t.deletion_protection_enabled) == Some(true) {
        dynamodb
            .update_table()
            .table_name(table)
            .deletion_protection_enabled(false)
            .send()
            .await
            .map_err(|e| e.into_service_error().to_string())
            .map_err(aws(format!(
                "UpdateTable {table} (deletion protection off)"
            )))?;
    }
    match dynamodb.delete_table().table_name(table).send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = e.into_service_error();
            if e.is_resource_not_found_exception() {
                Ok(false)
            } else {
                Err(aws(format!("DeleteTable {table}"))(e.to_string()))
            }
        }
    }
}

/// Deletes every object version and delete marker of `bucket`; `None` when the bucket does not
/// exist, else how many were deleted.
async fn empty_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> Result<Option<usize>, TeardownError> {
    let mut deleted = 0;
    loop {
        let listed = s3.list_object_versions().bucket(bucket).send().await;
        let page = match listed {
            Ok(page) => page,
            Err(e) => {
                let e = e.into_service_error();
                if e.meta().code() == Some("NoSuchBucket") {
                    return Ok(None);
                }
                return Err(aws(format!("ListObjectVersions {bucket}"))(e.to_string()));
            }
        };
        let keys: Vec<ObjectIdentifier> = page
            .versions()
            .iter()
            .map(|v| (v.key(), v.version_id()))
            .chain(
                page.delete_markers()
                    .iter()
                    .map(|m| (m.key(), m.version_id())),
            )
            .filter_map(|(key, version)| {
                ObjectIdentifier::builder()
                    .key(key?)
                    .set_version_id(version.map(str::to_owned))
                    .build()
                    .ok()
            })
            .collect();
        if keys.is_empty() {
            return Ok(Some(deleted));
        }
        // Deleting from the start, the next listing starts over: no marker to carry.
        for chunk in keys.chunks(DELETE_OBJECTS_MAX) {
            let delete = Delete::builder()
                .set_objects(Some(chunk.to_vec()))
                .quiet(true)
                .build()
                .map_err(|e| aws(format!("DeleteObjects {bucket}"))(e.to_string()))?;
            let output = s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| e.into_service_error().to_string())
                .map_err(aws(format!("DeleteObjects {bucket}")))?;
            if let Some(error) = output.errors().first() {
                return Err(aws(format!("DeleteObjects {bucket}"))(format!(
                    "{} of {} refused, e.g. {:?}: {:?}",
                    output.errors().len(),
                    chunk.len(),
                    error.key(),
                    error.message()
                )));
            }
            deleted += chunk.len();
        }
    }
}
