#!/usr/bin/env bash
# Starts `tierserve serve` on the demo model (loopback, an ephemeral port, an API key) and runs a
# node script against it: by default the official openai npm client (openai_client_test.mjs).
#   openai_client_test.sh TIERSERVE_BINARY SOURCE_DIR [SCRIPT.mjs [BASE_PATH|none]]
set -euo pipefail
bin=$1
src=$2
script=${3:-openai_client_test.mjs}
suffix=${4:-/v1}  # "none": the server's root
[ "$suffix" = none ] && suffix=""
log=$(mktemp)
"$bin" serve "$src/models/demo" --served-model-name demo --port 0 --api-key test-key \
  --max-model-len 512 >"$log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT
port=""
for _ in $(seq 1 600); do
  port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  [ -n "$port" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "tierserve serve exited early:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "tierserve serve did not start listening:" >&2
  cat "$log" >&2
  exit 1
fi
status=0
"${NODE:-node}" "$src/tests/server/$script" "http://127.0.0.1:$port$suffix" test-key || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log ---" >&2
  tail -50 "$log" >&2
fi
exit "$status"
