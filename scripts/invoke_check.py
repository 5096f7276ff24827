"""Invokes each Lambda through `cargo lambda watch` with the fixtures in events/ and checks the answers.

Run by scripts/invoke-check, which provides LocalStack (AWS_ENDPOINT_URL), the resource names
(TIDEMARK_*), a running `cargo lambda watch` on INVOKE_PORT, and boto3 (from the SAM CLI's venv).
Every check names the fixture and what was expected, and the first failure stops the run.
"""

import base64
import gzip
import json
import os
import subprocess
import sys

import boto3

EVENTS = "events"
PORT = os.environ["INVOKE_PORT"]
SHARD = "shardId-000000000000"


def invoke(function, fixture):
    """One `cargo lambda invoke` with a fixture; returns the function's JSON answer."""
    path = os.path.join(EVENTS, fixture)
    done = subprocess.run(
        ["cargo", "lambda", "invoke", function, "--invoke-port", PORT,
         "--data-file", path, "--output-format", "json"],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        fail(f"cargo lambda invoke {function} --data-file {path} exited {done.returncode}:\n"
             f"{done.stdout}\n{done.stderr}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        fail(f"{path}: the answer is not JSON:\n{done.stdout}\n{done.stderr}")


def http(function, fixture, expected_status):
    """Invokes an HTTP function; checks the status code and returns the decoded body."""
    answer = invoke(function, fixture)
    status = answer.get("statusCode")
    body = answer.get("body") or ""
    if answer.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    if status != expected_status:
        fail(f"{fixture}: expected HTTP {expected_status}, got {status}: {body}")
    print(f"ok   {function:<9} {fixture:<40} {status}")
    return json.loads(body)


def check(condition, message):
    if not condition:
        fail(message)


def fail(message):
    print(f"FAIL {message}", file=sys.stderr)
    sys.exit(1)


def is_sequence_number(value):
    return isinstance(value, str) and value.isdigit() and len(value) >= 20


def ingest_checks():
    for fixture in ["ingest/apigw-v1-post-event.json",
                    "ingest/apigw-v2-base64-post-event.json",
                    "ingest/function-url-post-event.json",
                    "ingest/alb-post-event.json"]:
        body = http("ingest", fixture, 202)
        check(is_sequence_number(body.get("sequence_number")),
              f"{fixture}: no Kinesis sequence number in {body}")
        check(body.get("shard_id", "").startswith("shardId-"), f"{fixture}: no shard id in {body}")

    fixture = "ingest/apigw-v2-post-batch.json"
    body = http("ingest", fixture, 202)
    results = body.get("results", [])
    check(len(results) == 4, f"{fixture}: expected 4 results in request order, got {body}")
    check(all(is_sequence_number(r.get("sequence_number")) for r in results),
          f"{fixture}: every event should be accepted with a sequence number: {body}")
    # Same id, same shard: the sequence numbers of one id increase in request order.
    same_id = [int(r["sequence_number"]) for r in results if r.get("id") == "invoke-v2"]
    check(same_id == sorted(same_id) and len(set(same_id)) == 3,
          f"{fixture}: one id's records should have increasing sequence numbers: {same_id}")

    # The same request twice with one Idempotency-Key: the second is the first answer, replayed
    # from the IDEMPOTENCY table, and the stream holds the event once (checked below).
    fixture = "ingest/apigw-v2-post-event-idempotent.json"
    first = invoke("ingest", fixture)
    retry = invoke("ingest", fixture)
    check(first.get("statusCode") == 202 and retry.get("statusCode") == 202,
          f"{fixture}: expected 202 twice, got {first} and {retry}")
    replayed = {k.lower(): v for k, v in (retry.get("headers") or {}).items()}
    check(replayed.get("idempotent-replayed") == "true" and retry.get("body") == first.get("body"),
          f"{fixture}: the retry should be the first answer, replayed: {first} then {retry}")
    print(f"ok   ingest    {fixture:<40} 202, then the same answer replayed")

    fixture = "ingest/apigw-v2-post-invalid.json"
    body = http("ingest", fixture, 400)
    check(body.get("error", {}).get("field") == "id", f"{fixture}: the error should name 'id': {body}")


def stream_holds_the_accepted_events():
    """The 202s were real: the stream on the endpoint holds exactly the posted events."""
    kinesis = boto3.client("kinesis", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    stream = os.environ["TIDEMARK_STREAM_NAME"]
    ids = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"]
        ids += [json.loads(r["Data"])["id"] for r in records]
    expected = ["invoke-v1", "invoke-v2-base64", "invoke-url", "invoke-alb",
                "invoke-v2", "invoke-v2", "invoke-v2", "invoke-v2b", "invoke-idem"]
    check(sorted(ids) == sorted(expected), f"the stream should hold {sorted(expected)}, holds {sorted(ids)}")
    print(f"ok   stream holds the {len(ids)} accepted events")


def processor_checks():
    fixture = "processor/kinesis-batch.json"
    # The second invocation is Lambda's redelivery of the same batch: nothing may change.
    for attempt in ("first delivery", "redelivery"):
        answer = invoke("processor", fixture)
        check(answer == {"batchItemFailures": []},
              f"{fixture} ({attempt}): expected no batch item failures, got {answer}")
        print(f"ok   processor {fixture:<40} {attempt}: batchItemFailures []")

    records = json.load(open(os.path.join(EVENTS, fixture)))["Records"]
    last_sequence = records[-1]["kinesis"]["sequenceNumber"]
    poison = [r["kinesis"]["sequenceNumber"] for r in records
              if not decodes_to_event(r["kinesis"]["data"])]

    dynamodb = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    letters = dynamodb.scan(TableName=os.environ["TIDEMARK_DEADLETTER_TABLE"])["Items"]
    dead = sorted(item["sequence_number"]["S"] for item in letters)
    check(dead == sorted(poison), f"DEADLETTER should hold the poison records {poison}, holds {dead}")
    print(f"ok   DEADLETTER holds the {len(dead)} poison records")
    return last_sequence


def archiver_checks():
    fixture = "processor/kinesis-batch.json"
    # The same batch twice, as a redelivery: its object is rewritten, not added.
    for attempt in ("first delivery", "redelivery"):
        answer = invoke("archiver", fixture)
        check(answer == {"batchItemFailures": []},
              f"archiver {fixture} ({attempt}): expected no batch item failures, got {answer}")
        print(f"ok   archiver  {fixture:<40} {attempt}: batchItemFailures []")
    records = json.load(open(os.path.join(EVENTS, fixture)))["Records"]
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    objects = s3.list_objects_v2(Bucket=os.environ["TIDEMARK_ARCHIVE_BUCKET"]).get("Contents", [])
    check(len(objects) == 1, f"the archive should hold one object for the batch, holds {objects}")
    body = s3.get_object(Bucket=os.environ["TIDEMARK_ARCHIVE_BUCKET"], Key=objects[0]["Key"])["Body"].read()
    lines = gzip.decompress(body).decode().splitlines()
    check([base64.b64decode(json.loads(line)["data"]) for line in lines]
          == [base64.b64decode(r["kinesis"]["data"]) for r in records],
          f"the archive object should hold the batch's records, bytes as sent: {lines}")
    print(f"ok   archive holds {objects[0]['Key']} with the {len(lines)} records")


def status_view_checks():
    fixture = "processor/kinesis-batch.json"
    # Delivery and redelivery: the second changes no entry and counts nothing twice.
    for attempt in ("first delivery", "redelivery"):
        answer = invoke("status-view", fixture)
        check(answer == {"batchItemFailures": []},
              f"status-view {fixture} ({attempt}): expected no batch item failures, got {answer}")
        print(f"ok   status-view {fixture:<38} {attempt}: batchItemFailures []")


def notifier_checks():
    """The notifier with STATUS stream records: three changes reach a queue a rule targets; the
    deletion and the image that is not a row are skipped, not retried."""
    fixture = "notifier/status-stream-batch.json"
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    bus = os.environ["TIDEMARK_CHANGE_BUS"]
    events = boto3.client("events", endpoint_url=endpoint)
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    events.create_event_bus(Name=bus)
    queue = sqs.create_queue(QueueName=bus)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="status-changes", EventBusName=bus,
                    EventPattern=json.dumps({"source": ["tidemark"], "detail-type": ["Status changed"]}))
    events.put_targets(Rule="status-changes", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}])
    answer = invoke("notifier", fixture)
    check(answer == {"batchItemFailures": []},
          f"notifier {fixture}: expected no batch item failures, got {answer}")
    print(f"ok   notifier  {fixture:<40} batchItemFailures []")
    received = []
    for _ in range(20):
        page = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        received += [json.loads(m["Body"])["detail"] for m in page.get("Messages", [])]
        if len(received) >= 3:
            break
    changes = sorted((c["id"], c["old_status"] or "", c["new_status"]) for c in received)
    check(changes == [("order-1", "", "created"), ("order-1", "created", "shipped"), ("order-2", "", "failed")],
          f"the queue should hold the fixture's three changes, holds {received}")
    print(f"ok   the rule delivered the {len(received)} status-change events")


def decodes_to_event(data):
    try:
        event = json.loads(base64.b64decode(data))
    except ValueError:
        return False
    return isinstance(event, dict) and "status" in event


def query_checks(last_sequence):
    expected = {
        "query/apigw-v2-get-message.json": ("order-1", "shipped"),
        "query/apigw-v1-get-message.json": ("order-2", "delivered"),
        "query/function-url-get-message.json": ("order-3", "created"),
    }
    rows = {}
    for fixture, (message_id, status) in expected.items():
        row = http("query", fixture, 200)
        check(row.get("id") == message_id and row.get("status") == status,
              f"{fixture}: expected {message_id} at '{status}' (the newest version), got {row}")
        check(row.get("shard_id") == SHARD and is_sequence_number(row.get("sequence_number")),
              f"{fixture}: the row should carry its Kinesis position: {row}")
        rows[message_id] = row
    check(rows["order-3"].get("data") == {"carrier": "DHL", "parcels": 2},
          f"order-3 should keep its data: {rows['order-3']}")

    body = http("query", "query/apigw-v2-get-unknown.json", 404)
    check(body.get("error", {}).get("code"), f"a 404 should carry an error code: {body}")

    body = http("query", "query/apigw-v2-get-history.json", 200)
    events = body.get("events", [])
    check(events and events[0].get("status") == "shipped" and events[0].get("current") is True,
          f"order-1's history should start with the event STATUS holds: {body}")
    check(len(events) >= 2, f"order-1's history should hold each of its events: {body}")

    # The view against STATUS: one id per status, as the three rows above say.
    body = http("query", "query/apigw-v2-get-statuses.json", 200)
    counts = {s["status"]: s["count"] for s in body.get("statuses", [])}
    want = {}
    for message_id, row in rows.items():
        want[row["status"]] = want.get(row["status"], 0) + 1
    check(all(counts.get(status) == n for status, n in want.items()),
          f"GET /statuses should count {want} at least (STATUS's rows), got {body}")
    total = sum(counts.values())
    check(total == len(rows), f"GET /statuses should count each of the {len(rows)} ids once: {body}")
    body = http("query", "query/apigw-v2-get-status-messages.json", 200)
    check([m.get("id") for m in body.get("messages", [])] == ["order-1"],
          f"GET /statuses/shipped/messages should list order-1 alone: {body}")

    body = http("query", "query/alb-get-shards.json", 200)
    shards = {s.get("shard_id"): s for s in body.get("shards", [])}
    check(SHARD in shards, f"GET /shards should list {SHARD}: {body}")
    check(shards[SHARD].get("sequence_number") == last_sequence,
          f"OPLOG for {SHARD} should be at the batch's last record {last_sequence}: {shards[SHARD]}")
    check(shards[SHARD].get("archiver", {}).get("sequence_number") == last_sequence,
          f"the archiver's checkpoint of {SHARD} should be at {last_sequence}: {shards[SHARD]}")
    check(shards[SHARD].get("status-view", {}).get("sequence_number") == last_sequence,
          f"the status view's checkpoint of {SHARD} should be at {last_sequence}: {shards[SHARD]}")


def kafka_checks():
    """The consumers with a Kafka event (two topic-partitions): no failures on delivery and
    redelivery; STATUS and DEADLETTER hold what the fixture's records make, by partition."""
    fixture = "kafka/status-batch.json"
    for function in ("processor", "archiver", "status-view"):
        for attempt in ("first delivery", "redelivery"):
            answer = invoke(function, fixture)
            check(answer == {"batchItemFailures": []},
                  f"{function} {fixture} ({attempt}): expected no batch item failures, got {answer}")
            print(f"ok   {function:<11} {fixture:<38} {attempt}: batchItemFailures []")
    dynamodb = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    row = dynamodb.get_item(TableName=os.environ["TIDEMARK_STATUS_TABLE"],
                            Key={"id": {"S": "order-4"}}, ConsistentRead=True).get("Item")
    check(row is not None and row["status"]["S"] == "created"
          and row["shard_id"]["S"] == "tidemark-events-1" and row["sequence_number"]["S"] == "900001",
          f"STATUS should hold order-4 (a plain event at offset 9 of tidemark-events-1, "
          f"sequence number 9 x 100000 + 1): {row}")
    letters = dynamodb.scan(TableName=os.environ["TIDEMARK_DEADLETTER_TABLE"])["Items"]
    dead = sorted((item["shard_id"]["S"], item["sequence_number"]["S"]) for item in letters
                  if item["shard_id"]["S"].startswith("tidemark-events-"))
    # Offsets 43 and 44 of partition 0, 10 of partition 1 (offset x 100000 + partition).
    expected = [("tidemark-events-0", "4300000"), ("tidemark-events-0", "4400000"),
                ("tidemark-events-1", "1000001")]
    check(dead == expected, f"DEADLETTER should hold the fixture's poison {expected}, holds {dead}")
    print("ok   STATUS and DEADLETTER hold the Kafka fixture's rows and poison, by partition")
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    keys = [o["Key"] for o in s3.list_objects_v2(
        Bucket=os.environ["TIDEMARK_ARCHIVE_BUCKET"]).get("Contents", [])]
    for partition in ("tidemark-events-0", "tidemark-events-1"):
        check(any(partition in key for key in keys),
              f"the archive should hold an object of {partition}: {keys}")
    print("ok   the archive holds an object per partition")
    print("ok   the consumers read the Kafka event through cargo lambda")


def main():
    ingest_checks()
    stream_holds_the_accepted_events()
    last_sequence = processor_checks()
    archiver_checks()
    status_view_checks()
    notifier_checks()
    query_checks(last_sequence)
    # The same consumer functions, now invoked as a Kafka mapping would: the event's shape says which.
    kafka_checks()
    print("invoke check passed: every function answered as expected through cargo lambda")


if __name__ == "__main__":
    main()
