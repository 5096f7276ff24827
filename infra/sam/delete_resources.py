"""Deletes the stream and tables named by TIDEMARK_* on AWS_ENDPOINT_URL (scripts/invoke-check's cleanup)."""

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
):
    try:
        dynamodb.delete_table(TableName=os.environ[var])
    except dynamodb.exceptions.ResourceNotFoundException:
        pass
