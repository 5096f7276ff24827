"""Deletes the stream, tables and bucket named by TIDEMARK_* on AWS_ENDPOINT_URL (scripts/invoke-check's cleanup)."""

import os

import boto3

endpoint = os.environ["AWS_ENDPOINT_URL"]
kinesis = boto3.client("kinesis", endpoint_url=endpoint)
dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
try:
    kinesis.delete_stream(StreamName=os.environ["TIDEMARK_STREAM_NAME"], EnforceConsumerDeletion=True)
except kinesis.exceptions.ResourceNotFoundException:
    pass
for var in (
    "TIDEMARK_STATUS_TABLE",
    "TIDEMARK_OPLOG_TABLE",
    "TIDEMARK_DEADLETTER_TABLE",
    "TIDEMARK_IDEMPOTENCY_TABLE",
    "TIDEMARK_HISTORY_TABLE",
    "TIDEMARK_STATUS_VIEW_TABLE",
):
    try:
        dynamodb.delete_table(TableName=os.environ[var])
    except dynamodb.exceptions.ResourceNotFoundException:
        pass

s3 = boto3.client("s3", endpoint_url=endpoint)
bucket = os.environ["TIDEMARK_ARCHIVE_BUCKET"]
try:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)
except s3.exceptions.NoSuchBucket:
    pass

# The notifier's bus, its rule and the queue the rule targets (scripts/invoke_check.py).
bus = os.environ.get("TIDEMARK_CHANGE_BUS")
if bus:
    events = boto3.client("events", endpoint_url=endpoint)
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    try:
        events.remove_targets(Rule="status-changes", EventBusName=bus, Ids=["queue"])
        events.delete_rule(Name="status-changes", EventBusName=bus)
    except events.exceptions.ResourceNotFoundException:
        pass
    try:
        events.delete_event_bus(Name=bus)
    except events.exceptions.ResourceNotFoundException:
        pass
    try:
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=bus)["QueueUrl"])
    except sqs.exceptions.QueueDoesNotExist:
        pass
