//! The `raw` run: the same conditional UpdateItems from a minimal HTTP client, the ceiling a
//! client could reach on this machine.

use super::*;

/// The conditional UpdateItem of `StatusWriter::apply`, as the JSON protocol's request body.
fn raw_request(table: &str, row: &StatusRow) -> serde_json::Value {
    json!({
        "TableName": table,
        "Key": {"id": {"S": row.id}},
        "UpdateExpression": "SET #status = :status, #timestamp = :timestamp, #received_at = :received_at, #shard_id = :shard_id, #sequence_number = :sequence_number, #version = :version, #updated_at = :updated_at, #data = :data",
        "ConditionExpression": "attribute_not_exists(#id) OR #version < :version",
        "ExpressionAttributeNames": {
            "#id": "id", "#status": "status", "#timestamp": "timestamp",
            "#received_at": "received_at", "#shard_id": "shard_id",
            "#sequence_number": "sequence_number", "#version": "version",
            "#updated_at": "updated_at", "#data": "data",
        },
        "ExpressionAttributeValues": {
            ":status": {"S": row.status}, ":timestamp": {"S": row.timestamp},
            ":received_at": {"S": row.received_at}, ":shard_id": {"S": row.shard_id},
            ":sequence_number": {"S": row.sequence_number.as_str()},
            ":version": {"S": row.version.0}, ":updated_at": {"S": row.updated_at},
            ":data": {"S": row.data},
        },
    })
}

pub(super) async fn run_raw(
    endpoint: &str,
    names: &ResourceNames,
    shape: Shape,
    write_concurrency: usize,
) -> Result<Measured, BenchDynamoError> {
    let client = reqwest::Client::new();
    let rows = rows(shape)?;
    let writes = rows.len();
    let table = names.status_table.clone();
    measure(writes, || async {
        let results: Vec<Result<u16, String>> = stream::iter(rows)
            .map(|row| {
                let request = client
                    .post(endpoint)
                    .header("content-type", "application/x-amz-json-1.0")
                    .header("x-amz-target", "DynamoDB_20120810.UpdateItem")
                    .header("x-amz-date", "20240501T120000Z")
                    // Local servers read the account from the credential and check no signature.
                    .header(
                        "authorization",
                        "AWS4-HMAC-SHA256 Credential=test/20240501/us-east-1/dynamodb/aws4_request, \
                         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0",
                    )
                    .body(raw_request(&table, &row).to_string());
                async move {
                    let response = request.send().await.map_err(|e| e.to_string())?;
                    let status = response.status().as_u16();
                    // Read the body: a client that did not would not reuse the connection.
                    response.bytes().await.map_err(|e| e.to_string())?;
                    Ok(status)
                }
            })
            .buffer_unordered(write_concurrency)
            .collect()
            .await;
        every_write_applied("raw", results, |r| matches!(r, Ok(200)))
    })
    .await
}
