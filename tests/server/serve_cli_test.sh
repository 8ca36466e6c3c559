#!/usr/bin/env bash
# `tierserve serve` as a process: flags (unknown ones, vLLM's --max-model-len forms, the
# deprecated --swap-space), TIERSERVE_API_KEY, the start-up order (weight-loading progress, the
# memory report, the listening address), and SIGTERM/SIGINT: a running request finishes, the
# process exits 0. Usage: serve_cli_test.sh TIERSERVE DEMO_MODEL_DIR
set -u
bin=$1
demo=$2
failures=0
tmp=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "FAIL $1"
  failures=$((failures + 1))
}
ok() { echo "ok   $1"; }

# start LOG ARGS...: starts `tierserve serve` in the background; sets pid and port.
start() {
  local log=$1
  shift
  "$bin" serve "$demo" --port 0 "$@" >"$log" 2>&1 &
  pid=$!
  port=""
  for _ in $(seq 1 600); do
    port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$log" | grep -o '[0-9]*$')
    [ -n "$port" ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# stop SIGNAL: signals the server and waits; sets rc.
stop() {
  kill "-$1" "$pid"
  wait "$pid"
  rc=$?
  pid=""
}

# Flags that are wrong fail at once with one line naming them.
out=$("$bin" serve "$demo" --frobnicate 2>&1)
if [ $? -ne 0 ] && grep -q -- '--frobnicate' <<<"$out"; then ok unknown_flag; else fail "unknown_flag: $out"; fi
out=$("$bin" serve "$demo" --max-model-len 4x 2>&1)
if [ $? -ne 0 ] && grep -q -- 'max-model-len' <<<"$out"; then ok bad_max_model_len; else fail "bad_max_model_len: $out"; fi
out=$("$bin" serve "$demo" --dtype float16 2>&1)
if [ $? -ne 0 ] && grep -q 'checkpoint is bf16' <<<"$out"; then ok dtype_conversion; else fail "dtype_conversion: $out"; fi
out=$("$bin" serve "$demo" --dtype int3 2>&1)
if [ $? -ne 0 ] && grep -q -- '--dtype must be' <<<"$out"; then ok dtype_bad; else fail "dtype_bad: $out"; fi
out=$("$bin" serve 2>&1)
if [ $? -ne 0 ] && grep -q 'model directory' <<<"$out"; then ok no_model; else fail "no_model: $out"; fi

# 1k = 1000 tokens (vLLM's lower-case suffix); --swap-space warns; the key from the environment.
log=$tmp/serve.log
if TIERSERVE_API_KEY=env-key start "$log" --served-model-name demo --max-model-len 1k \
  --swap-space 0.01 --dtype bfloat16; then
  base=http://127.0.0.1:$port
  models=$(curl -s -H 'Authorization: Bearer env-key' "$base/v1/models")
  grep -q '"max_model_len":1000' <<<"$models" && ok max_model_len_1k || fail "max_model_len_1k: $models"
  code=$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/models")
  [ "$code" = 401 ] && ok env_api_key || fail "env_api_key: $code without the key"
  grep -q 'swap-space is deprecated' "$log" && ok swap_space_warning || fail swap_space_warning
  # Start-up order: progress, then the memory report, then the address.
  progress=$(grep -n 'loading weights' "$log" | tail -1 | cut -d: -f1)
  report=$(grep -n 'KV cache' "$log" | head -1 | cut -d: -f1)
  listening=$(grep -n 'listening on' "$log" | cut -d: -f1)
  if [ -n "$progress" ] && [ -n "$report" ] && [ "$progress" -lt "$report" ] &&
    [ "$report" -lt "$listening" ]; then
    ok startup_order
  else
    fail "startup_order: $(cat "$log")"
  fi
  # SIGTERM with a request running: it completes, then the process exits 0.
  curl -s -H 'Authorization: Bearer env-key' -H 'Content-Type: application/json' \
    -d '{"model": "demo", "prompt": "This program", "max_tokens": 900, "ignore_eos": true, "stream": true}' \
    "$base/v1/completions" >"$tmp/stream.txt" &
  client=$!
  for _ in $(seq 1 100); do
    grep -q '^data: {' "$tmp/stream.txt" && break
    sleep 0.05
  done
  stop TERM
  wait "$client"
  if [ "$rc" -eq 0 ] && grep -q '"finish_reason":"length"' "$tmp/stream.txt" &&
    grep -q 'stopping; 1 request(s) in flight' "$log" &&
    tail -c 20 "$tmp/stream.txt" | grep -q 'data: \[DONE\]'; then
    ok sigterm_drains
  else
    fail "sigterm_drains: exit $rc; stream tail: $(tail -c 300 "$tmp/stream.txt")"
  fi
  # After the stop, nothing listens.
  code=$(curl -s -o /dev/null -w '%{http_code}' "$base/health")
  [ "$code" = 000 ] && ok closed || fail "closed: $code"
else
  fail "start: $(cat "$log")"
fi

# SIGINT on an idle server exits 0; --shutdown-timeout 0 ends at once.
if start "$tmp/idle.log" --shutdown-timeout 0; then
  stop INT
  [ "$rc" -eq 0 ] && ok sigint_idle || fail "sigint_idle: exit $rc"
else
  fail "start idle: $(cat "$tmp/idle.log")"
fi

# A signal while the weights load ends the process at once, with exit status 0. A dummy
# 0.5B-shaped model (the demo's tokenizer) loads slowly enough to be caught.
big=$tmp/big
mkdir -p "$big" && cp "$(dirname "$0")/../../benchmarks/configs/qwen2.5-0.5b/config.json" "$big/" &&
  cp "$demo"/tokenizer*.json "$big/"
"$bin" serve "$big" --port 0 --load-format dummy >"$tmp/big.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q 'loading weights' "$tmp/big.log" && break
  sleep 0.05
done
if grep -q 'listening on' "$tmp/big.log"; then
  echo "skip sigterm_while_loading: loaded before the signal"
  stop TERM
else
  stop TERM
  if [ "$rc" -eq 0 ] && grep -q 'while loading: exiting' "$tmp/big.log"; then
    ok sigterm_while_loading
  else
    fail "sigterm_while_loading: exit $rc; $(cat "$tmp/big.log")"
  fi
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all serve command-line checks passed"
