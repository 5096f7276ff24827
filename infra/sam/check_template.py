"""Project rules for template.yaml that the generic linters do not know.

1. Least privilege: no IAM statement in a role grants an action on Resource "*" or any other
   wildcard, other than the objects of one of the stack's resources ("${ArchiveBucket.Arn}/*"),
   and one exception: the network-interface actions an MSK mapping needs (NETWORK_INTERFACE_ACTIONS),
   in a statement that holds nothing else.
   Every branch of an Fn::If, the template of an Fn::Sub and the parts of an Fn::Join are read.
   No function takes SAM `Policies:` (they would escape this rule): roles are written inline.
2. Every function gets every TIDEMARK_* name the Lambdas require (shared/src/config.rs); a
   missing one would only show up as a function that refuses to start after deploy.
3. The event source mappings keep the settings the processor's guarantees depend on: every
   consumer function has one Kinesis mapping, and at most one Kafka mapping (only when the stack
   reads a topic), with its own consumer group and the error handling of provisioned mode.
4. The API has exactly the routes of shared/openapi.json, each authorised, with the write or
   read scopes in JWT mode, and the stage is throttled.
5. The limits docs/limits.md states hold for the template's defaults: the stage's rate fits the
   default shards' write capacity and the account's API Gateway quota, a read's longest wait fits
   the query function's timeout, the batch size is one a Kinesis mapping accepts, the stream
   keeps records longer than the mapping's retry age, the consumers' concurrency at the default
   shard count and the query function's reservation fit the account's default Lambda
   concurrency, and the query function (whose reads wait) is capped.

Run with the SAM CLI's Python (it brings cfn-lint, whose loader understands !Ref and friends):
    .tools/aws-sam-cli/bin/python infra/sam/check_template.py [TEMPLATE]
scripts/check-template also runs it on infra/sam/bad-template.yaml, which must fail each rule, and
on infra/sam/bad-limits-template.yaml (the concurrency limit, which the first cannot also break).
"""

import json
import re
import sys

from cfnlint.decode import cfn_yaml

TEMPLATE = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
CONFIG = "shared/src/config.rs"
OPENAPI = "shared/openapi.json"
REQUIRED_NAMES = [
    "STREAM_NAME_VAR",
    "STATUS_TABLE_VAR",
    "OPLOG_TABLE_VAR",
    "DEADLETTER_TABLE_VAR",
    "IDEMPOTENCY_TABLE_VAR",
    "ARCHIVE_BUCKET_VAR",
    "HISTORY_TABLE_VAR",
    "STATUS_VIEW_TABLE_VAR",
]
CONSUMERS_CRATE = "functions/processor/Cargo.toml"
LIMITS = "shared/src/domain/limits.rs"
# Documented AWS quotas (docs/limits.md has the sources), as of the price table's date.
KINESIS_SHARD_RECORDS_PER_SECOND = 1_000
API_GATEWAY_ACCOUNT_RATE = 10_000
API_GATEWAY_ACCOUNT_BURST = 5_000
KINESIS_MAPPING_MAX_BATCH = 10_000
LAMBDA_ACCOUNT_CONCURRENCY = 1_000
LAMBDA_UNRESERVED_MINIMUM = 100

# The MSK mapping's pollers create network interfaces in the cluster's subnets: EC2 grants these
# only on "*" (AWS's AWSLambdaMSKExecutionRole, and the Lambda developer guide's "Configuring
# Lambda permissions for Amazon MSK event source mappings", list them so).
NETWORK_INTERFACE_ACTIONS = {
    "ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs",
}

problems = []
# The objects of a bucket ("${ArchiveBucket.Arn}/*") and the streams of a table
# ("${StatusTable.Arn}/stream/*"): children of a resource the stack owns.
OWN_CHILDREN = re.compile(r"\$\{[A-Za-z0-9]+\.Arn\}(/stream)?/\*")


def statements(policy_document):
    found = policy_document.get("Statement", [])
    found = found if isinstance(found, list) else [found]
    # A statement only some stacks have (Fn::If: [condition, statement, AWS::NoValue]).
    flat = []
    for statement in found:
        if isinstance(statement, dict) and "Fn::If" in statement:
            flat.extend(s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Ref" not in s)
        else:
            flat.append(statement)
    return flat


def resource_texts(value):
    """Every text a Resource can become: each branch of an Fn::If, the template of an Fn::Sub,
    each literal part of an Fn::Join (so a "/*" joined on is caught, if conservatively)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from resource_texts(item)
    elif isinstance(value, dict):
        if "Fn::If" in value:
            yield from resource_texts(value["Fn::If"][1:])
        elif "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            yield from resource_texts(sub if isinstance(sub, str) else sub[0])
        elif "Fn::Join" in value:
            yield from resource_texts(value["Fn::Join"][1])


def wildcard_resources(statement):
    # The children of one of the stack's own resources (OWN_CHILDREN) are fine; a wildcard
    # anywhere else ("table/*", an account, a region) reaches what the stack does not own.
    return [r for r in resource_texts(statement.get("Resource", []))
            if "*" in r and not OWN_CHILDREN.fullmatch(r)]


def main():
    template = cfn_yaml.load(TEMPLATE)
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function" and "Policies" in resource.get("Properties", {}):
            problems.append(f"{name}: SAM Policies are not checked for least privilege; give it an inline Role")
    resources = template["Resources"]

    for name, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in statements(policy["PolicyDocument"]):
                actions = statement.get("Action", [])
                actions = set(actions if isinstance(actions, list) else [actions])
                if actions <= NETWORK_INTERFACE_ACTIONS and statement.get("Resource") == "*":
                    continue
                if wildcard_resources(statement):
                    problems.append(f"{name}/{statement.get('Sid', '?')}: Resource holds '*'")
        if resource["Properties"].get("ManagedPolicyArns"):
            problems.append(f"{name}: managed policies grant on '*'; write the statements inline")

    config = open(CONFIG).read()
    required = []
    for const in REQUIRED_NAMES:
        match = re.search(rf'const {const}: &str = "([A-Z_]+)"', config)
        if not match:
            problems.append(f"{CONFIG}: {const} not found (update {__file__})")
            continue
        required.append(match.group(1))
    globals_env = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        env = dict(globals_env)
        env.update(resource["Properties"].get("Environment", {}).get("Variables", {}))
        missing = [var for var in required if var not in env]
        if missing:
            problems.append(f"{name}: environment lacks {missing}")
        if resource.get("Metadata", {}).get("BuildMethod") != "rust-cargolambda":
            problems.append(f"{name}: Metadata.BuildMethod should be rust-cargolambda")

    mappings = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    # Every consumer binary (one per registered consumer) runs as a function with exactly one
    # mapping of its own, so none is built and never fed, nor fed twice.
    binaries = set(re.findall(r'\[\[bin\]\]\s*name = "([a-z-]+)"', open(CONSUMERS_CRATE).read()))
    consumer_functions = {name: r for name, r in resources.items()
                          if r["Type"] == "AWS::Serverless::Function"
                          and r["Properties"].get("CodeUri") == "functions/processor"}
    deployed = {r["Metadata"]["BuildProperties"]["Binary"] for r in consumer_functions.values()}
    if deployed != binaries:
        problems.append(f"consumer functions build {sorted(deployed)}, {CONSUMERS_CRATE} has {sorted(binaries)}")
    def kinesis_mapping(mapping):
        return "Topics" not in mapping["Properties"]

    for name in consumer_functions:
        fed = [m for m in mappings if m["Properties"].get("FunctionName") == {"Ref": name}]
        from_stream = [m for m in fed if kinesis_mapping(m)]
        if len(from_stream) != 1:
            problems.append(f"{name}: expected one event source mapping of the stream, found {len(from_stream)}")
        from_topic = [m for m in fed if not kinesis_mapping(m)]
        if len(from_topic) > 1 or any(m.get("Condition") != "ReadKafka" for m in from_topic):
            problems.append(f"{name}: expected at most one Kafka mapping, under Condition ReadKafka")
    groups = []
    for mapping in mappings:
        props = mapping["Properties"]
        expected = {
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BisectBatchOnFunctionError": True,
            "StartingPosition": "TRIM_HORIZON",
        }
        if kinesis_mapping(mapping):
            expected["ParallelizationFactor"] = 1
        else:
            # Kafka: a partition is read one batch at a time by itself; the error handling above
            # exists only in provisioned mode; each consumer reads every record with its own group.
            if "ProvisionedPollerConfig" not in props:
                problems.append("Kafka mapping: no ProvisionedPollerConfig (its error handling needs provisioned mode)")
            if "ParallelizationFactor" in props:
                problems.append("Kafka mapping: ParallelizationFactor is for Kinesis and DynamoDB only")
            groups.append(json.dumps([props.get(k) for k in ("AmazonManagedKafkaEventSourceConfig",
                                                              "SelfManagedKafkaEventSourceConfig")]))
        for key, value in expected.items():
            if props.get(key) != value:
                problems.append(f"event source mapping: {key} should be {value!r}, is {props.get(key)!r}")
        if "OnFailure" not in props.get("DestinationConfig", {}):
            problems.append("event source mapping: no on-failure destination")
    if len(groups) != len(set(groups)):
        problems.append("Kafka mappings share a consumer group: each consumer would see only some partitions")

    # The API: every route authorised the same way, with the write or read scopes in JWT mode,
    # and every route in shared/openapi.json present; the stage throttled.
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in resources.values()
              if r["Type"] == "AWS::ApiGatewayV2::Route"}
    document = json.load(open(OPENAPI))
    # An operation marked x-tidemark-serve-only (the change feed) is served by `tidemark serve`
    # alone: the stack delivers the same thing another way (EventBridge), so it has no route.
    documented = {f"{method.upper()} {path}" for path, item in document["paths"].items()
                  for method, operation in item.items() if not operation.get("x-tidemark-serve-only")}
    if set(routes) != documented:
        problems.append(f"API routes {sorted(routes)} differ from {OPENAPI}'s operations {sorted(documented)}")
    for key, props in routes.items():
        scopes = "JwtWriteScopes" if key.startswith("POST ") else "JwtReadScopes"
        expected = {"Fn::If": ["UseJwtAuth", {"Ref": scopes}, {"Ref": "AWS::NoValue"}]}
        if props.get("AuthorizationScopes") != expected:
            problems.append(f"route {key}: AuthorizationScopes should be {scopes} in JWT mode")
        if "AuthorizationType" not in props:
            problems.append(f"route {key}: no AuthorizationType")
    stages = [name for name, r in resources.items() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    if not stages:
        problems.append("no AWS::ApiGatewayV2::Stage: the API would have no throttling")
    for name, resource in resources.items():
        if resource["Type"] == "AWS::ApiGatewayV2::Stage":
            settings = resource["Properties"].get("DefaultRouteSettings", {})
            if not {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(settings):
                problems.append(f"{name}: DefaultRouteSettings should set throttling rate and burst")

    check_limits(template, resources, len(consumer_functions))

    if problems:
        for problem in problems:
            print(f"template check: {problem}", file=sys.stderr)
        sys.exit(1)
    print(f"{TEMPLATE}: least privilege, function environment, mapping settings, API routes and limits hold")


def check_limits(template, resources, consumers):
    """Rule 5: the stated limits hold for the template's defaults."""
    parameters = template.get("Parameters", {})

    def default(name):
        value = parameters.get(name, {}).get("Default")
        if value is None:
            problems.append(f"limits: parameter {name} has no default")
            return None
        return int(value)

    shards, rate, burst = default("ShardCount"), default("ApiThrottlingRateLimit"), default("ApiThrottlingBurstLimit")
    if None not in (shards, rate) and rate > shards * KINESIS_SHARD_RECORDS_PER_SECOND:
        problems.append(f"limits: ApiThrottlingRateLimit {rate}/s exceeds the write capacity of "
                        f"ShardCount {shards} ({shards * KINESIS_SHARD_RECORDS_PER_SECOND} records/s)")
    if rate is not None and rate > API_GATEWAY_ACCOUNT_RATE:
        problems.append(f"limits: ApiThrottlingRateLimit {rate}/s exceeds the account's API Gateway quota ({API_GATEWAY_ACCOUNT_RATE}/s)")
    if burst is not None and burst > API_GATEWAY_ACCOUNT_BURST:
        problems.append(f"limits: ApiThrottlingBurstLimit {burst} exceeds the account's API Gateway burst ({API_GATEWAY_ACCOUNT_BURST})")

    match = re.search(r"MAX_CONSISTENCY_WAIT: Duration = Duration::from_secs\((\d+)\)", open(LIMITS).read())
    timeout = default("HttpTimeoutSeconds")
    if not match:
        problems.append(f"limits: MAX_CONSISTENCY_WAIT not found in {LIMITS} (update {__file__})")
    elif timeout is not None and int(match.group(1)) * 2 > timeout:
        problems.append(f"limits: a read may wait {match.group(1)} s, more than half of HttpTimeoutSeconds {timeout}")

    batch = parameters.get("BatchSize", {})
    for key in ("Default", "MaxValue"):
        if int(batch.get(key, 0)) > KINESIS_MAPPING_MAX_BATCH:
            problems.append(f"limits: BatchSize {key} {batch[key]} is more than a Kinesis mapping takes ({KINESIS_MAPPING_MAX_BATCH})")

    retention, max_age = default("StreamRetentionHours"), default("MaximumRecordAgeSeconds")
    if None not in (retention, max_age) and max_age >= retention * 3600:
        problems.append(f"limits: MaximumRecordAgeSeconds {max_age} is not under StreamRetentionHours {retention} h: "
                        "a range given up on could no longer be replayed")

    # One batch per shard at a time per consumer (ParallelizationFactor 1, rule 3), beside what
    # the query function reserves; AWS keeps 100 of the account's executions unreserved.
    reserved = int(parameters.get("QueryReservedConcurrency", {}).get("Default", 0))
    if shards is not None and shards * consumers + reserved > LAMBDA_ACCOUNT_CONCURRENCY - LAMBDA_UNRESERVED_MINIMUM:
        problems.append(f"limits: {consumers} consumers x ShardCount {shards} and QueryReservedConcurrency {reserved} "
                        f"need more than the account's default {LAMBDA_ACCOUNT_CONCURRENCY} concurrent executions")
    # Waiting reads hold an execution for seconds: the query function must be capped.
    query = resources.get("QueryFunction")
    if query is not None and "ReservedConcurrentExecutions" not in query.get("Properties", {}):
        problems.append("limits: QueryFunction has no ReservedConcurrentExecutions: long-polling readers "
                        "could take every execution of the account")


if __name__ == "__main__":
    main()
