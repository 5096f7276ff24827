//! `tidemark teardown` against LocalStack: it asks first and deletes nothing without a yes;
//! then it deletes every retained table and the archive bucket with every object version and
//! delete marker in it; run again, it finds everything already gone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use tidemark::adapters::s3::S3Archive;
use tidemark_cli::teardown::{retained_tables, teardown, TeardownError};
use tidemark_tests::Resources;

#[tokio::test]
async fn teardown_asks_then_removes_every_retained_table_and_the_versioned_bucket() {
    let r = Resources::create("teardown", 1).await;
    let s3 = S3Archive::client(&r.sdk);
    let bucket = &r.names.archive_bucket;
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Two versions of one object, then a delete marker over them, and one more object.
    for (key, body) in [("a", "1"), ("a", "2"), ("b", "3")] {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    s3.delete_object()
        .bucket(bucket)
        .key("a")
        .send()
        .await
        .unwrap();

    let tables = retained_tables(&r.names);
    assert_eq!(tables.len(), 6, "{tables:?}");
    let mut shown = Vec::new();
    let refused = teardown(&r.sdk, &r.names, |plan| {
        shown = plan.to_vec();
        false
    })
    .await;
    assert!(matches!(refused, Err(TeardownError::NotConfirmed)));
    assert_eq!(shown.len(), tables.len() + 1, "{shown:?}");
    assert!(shown.iter().any(|line| line.contains(bucket.as_str())));
    let dynamodb = r.dynamodb();
    for table in &tables {
        dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .unwrap();
    }

    let removed = teardown(&r.sdk, &r.names, |_| true).await.unwrap();
    assert_eq!(removed.tables, tables);
    assert!(removed.absent.is_empty(), "{:?}", removed.absent);
    assert_eq!(
        removed.object_versions, 4,
        "two versions of a, its delete marker, b"
    );
    assert_eq!(removed.bucket.as_deref(), Some(bucket.as_str()));
    for table in &tables {
        let gone = dynamodb.describe_table().table_name(table).send().await;
        assert!(
            gone.unwrap_err()
                .into_service_error()
                .is_resource_not_found_exception(),
            "{table} still exists"
        );
    }
    assert!(s3.head_bucket().bucket(bucket).send().await.is_err());

    let again = teardown(&r.sdk, &r.names, |_| true).await.unwrap();
    assert!(again.tables.is_empty());
    assert_eq!(again.absent.len(), tables.len() + 1);
}
