#!/usr/bin/env bash
# `tierserve bench` end to end on the demo model. `bench serve` against `tierserve serve` over
# loopback: a closed-loop run whose result file has vLLM's keys and the counts the run must give;
# a concurrency sweep; the chat endpoint with jsonl prompts, one of which the server rejects; a
# timed run with a ramp-up and samples; PNG charts; and errors that are one line. `bench decode`
# and `bench offload`: their tables, result files, recommendation and chart.
# Usage: bench_cli_test.sh TIERSERVE DEMO_MODEL_DIR
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
py() { /usr/bin/python3 "$@"; }

"$bin" serve "$demo" --port 0 --max-model-len 256 >"$tmp/serve.log" 2>&1 &
pid=$!
port=""
for _ in $(seq 1 600); do
  port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$tmp/serve.log" | grep -o '[0-9]*$')
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "FAIL server did not start: $(cat "$tmp/serve.log")"; exit 1; }
url=http://127.0.0.1:$port
bench=("$bin" bench serve --base-url "$url" --tokenizer "$demo" --disable-tqdm)

# 12 prompts of 32 tokens, 8 tokens each (EOS ignored), at most 4 in flight.
if "${bench[@]}" --num-prompts 12 --max-concurrency 4 --random-input-len 32 \
  --random-output-len 8 --ignore-eos --result-json "$tmp/r.json" >"$tmp/out.txt" 2>&1; then
  if py - "$tmp/r.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for k in ["completed", "failed", "request_throughput", "output_throughput",
          "total_token_throughput", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms",
          "std_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "mean_e2el_ms", "p99_e2el_ms",
          "total_input_tokens", "total_output_tokens", "duration", "ttfts", "itls",
          "input_lens", "output_lens", "max_concurrency"]:
    assert k in j, k
assert j["completed"] == 12 and j["failed"] == 0, (j["completed"], j["failed"])
assert j["total_output_tokens"] == 96, j["total_output_tokens"]
assert all(n == 8 for n in j["output_lens"]), j["output_lens"]
# A gap per content chunk after the first: 7, or fewer where a token's text was held back.
assert all(1 <= len(itl) <= 7 for itl in j["itls"]), [len(i) for i in j["itls"]]
assert all(n >= 32 for n in j["input_lens"]), j["input_lens"]  # usage: BOS and re-tokenizing
assert 0 < j["mean_ttft_ms"] <= j["mean_e2el_ms"]
assert abs(j["request_throughput"] - 12 / j["duration"]) < 1e-9
assert abs(j["output_throughput"] - 96 / j["duration"]) < 1e-9
assert j["max_concurrency"] == 4
PY
  then ok closed_loop; else fail "closed_loop: $(cat "$tmp/out.txt")"; fi
  grep -q 'Serving Benchmark Result' "$tmp/out.txt" && grep -q 'Mean TTFT (ms):' "$tmp/out.txt" &&
    grep -q 'P99 ITL (ms):' "$tmp/out.txt" && ok result_table || fail "result_table: $(cat "$tmp/out.txt")"
else
  fail "closed_loop exit: $(cat "$tmp/out.txt")"
fi

# A sweep: one table row per level, and a result file with one run per level.
if "${bench[@]}" --num-prompts 6 --concurrency-sweep 1,3 --random-input-len 16 \
  --random-output-len 4 --ignore-eos --result-json "$tmp/sweep.json" >"$tmp/sweep.txt" 2>&1 &&
  grep -qE '^\| 1 \| 6 \| 0 \|' "$tmp/sweep.txt" && grep -qE '^\| 3 \| 6 \| 0 \|' "$tmp/sweep.txt" &&
  py -c "import json,sys; r=json.load(open(sys.argv[1]))['runs']; assert [x['max_concurrency'] for x in r]==[1,3]" "$tmp/sweep.json"; then
  ok sweep
else
  fail "sweep: $(cat "$tmp/sweep.txt")"
fi

# Chat with jsonl prompts; the third asks for more tokens than the context holds: a 400, counted
# as a failure of class http_400, while the others complete.
cat >"$tmp/p.jsonl" <<'JL'
{"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 6}
{"question": "What is a tier?", "max_tokens": 6}
{"prompt": "Too long an answer", "max_tokens": 100000}
{"instruction": "Summarize", "input": "tiers of memory", "max_tokens": 6}
JL
if "${bench[@]}" --endpoint /v1/chat/completions --dataset-name jsonl --dataset-path "$tmp/p.jsonl" \
  --num-prompts 8 --max-concurrency 2 --ignore-eos --result-json "$tmp/chat.json" >"$tmp/chat.txt" 2>&1 &&
  py -c "
import json, sys
j = json.load(open(sys.argv[1]))
assert j['completed'] == 6 and j['failed'] == 2, (j['completed'], j['failed'])
assert j['error_classes'] == {'http_400': 2}, j['error_classes']
assert j['total_output_tokens'] == 36, j['total_output_tokens']
" "$tmp/chat.json"; then
  ok chat_jsonl_with_failures
else
  fail "chat_jsonl_with_failures: $(cat "$tmp/chat.txt")"
fi

# A timed run at a Poisson rate with a ramp-up, sampled every 0.5 s, with charts.
if "${bench[@]}" --duration 3s --ramp-up 1s --request-rate 20 --max-concurrency 4 \
  --sample-interval 500ms --random-input-len 16 --random-output-len 4 --ignore-eos \
  --result-json "$tmp/timed.json" --plot "$tmp/plots" >"$tmp/timed.txt" 2>&1 &&
  py -c "
import json, sys
j = json.load(open(sys.argv[1]))
assert j['completed'] >= 10 and j['failed'] == 0, (j['completed'], j['failed'])
s = j['samples']
assert len(s) >= 4, s
assert s[0]['concurrency_limit'] <= 3 and s[-1]['concurrency_limit'] == 4, s
assert max(j['start_times']) < 3.0, max(j['start_times'])
" "$tmp/timed.json" && [ -s "$tmp/plots/latency_percentiles.png" ] &&
  [ -s "$tmp/plots/throughput_over_time.png" ]; then
  ok timed_ramp_plots
else
  fail "timed_ramp_plots: $(cat "$tmp/timed.txt")"
fi

# Errors are one line and exit 1: no server there; a bad flag value.
out=$("$bin" bench serve --base-url http://127.0.0.1:1 --model m --tokenizer "$demo" 2>&1)
rc=$?
if [ $rc -eq 1 ] && [ "$(grep -c '^error:' <<<"$out")" -eq 1 ] && grep -q 'connect' <<<"$out"; then
  ok no_server
else
  fail "no_server ($rc): $out"
fi
out=$("${bench[@]}" --request-rate fast 2>&1)
rc=$?
if [ $rc -eq 1 ] && grep -q 'request-rate' <<<"$out"; then ok bad_rate; else fail "bad_rate ($rc): $out"; fi
out=$("${bench[@]}" --duration 10s 2>&1)
rc=$?
if [ $rc -eq 1 ] && grep -q -- '--duration needs --max-concurrency' <<<"$out"; then ok unbounded_duration; else fail "unbounded_duration ($rc): $out"; fi
out=$("$bin" bench serve --base-url "$url" --num-prompts 2 2>&1)
rc=$?
if [ $rc -eq 1 ] && grep -q -- '--tokenizer' <<<"$out"; then ok random_needs_tokenizer; else fail "random_needs_tokenizer ($rc): $out"; fi

kill "$pid" && wait "$pid"
pid=""

# bench decode: one row per batch size, every figure positive, the run's token counts.
if "$bin" bench decode "$demo" --batch-sizes 1,3 --input-len 8 --output-len 6 --repeats 1 \
  --shared-prefix-len 16 --result-json "$tmp/decode.json" >"$tmp/decode.txt" 2>&1 &&
  py -c "
import json, sys
rows = json.load(open(sys.argv[1]))['rows']
assert [r['batch'] for r in rows] == [1, 3], rows
for r in rows:
    assert r['decode_tokens_per_s'] > 0 and r['memory_bound_tokens_per_s'] > 0, r
    assert 0 < r['ratio_to_memory_bound'] and r['mean_ttft_ms'] > 0 and r['step_ms'] > 0, r
    assert r['streamed_mib_per_step'] == 0 and r['stall_ms_per_step'] == 0, r
assert rows[1]['prefix_hit_tokens'] >= 16, rows  # three prompts behind one 16-token prefix
" "$tmp/decode.json" && grep -q '^| 3 |' "$tmp/decode.txt"; then
  ok bench_decode
else
  fail "bench_decode: $(cat "$tmp/decode.txt")"
fi

# bench offload: resident, host-streamed and disk-streamed points at two depths; streamed points
# move bytes and have an overlap efficiency; a recommendation and a chart.
mkdir -p "$tmp/offload"
if "$bin" bench offload "$demo" --cpu-offload-gb-sweep 0,0.002 --disk-offload-gb-sweep 0,0.002 \
  --prefetch-depth-sweep 1,2 --batch-sizes 2 --input-len 8 --output-len 6 --repeats 1 \
  --offload-dir "$tmp/offload" --device-memory-gb 1 --plot "$tmp/oplot" \
  --result-json "$tmp/offload.json" >"$tmp/offload.txt" 2>&1 &&
  py -c "
import json, sys
j = json.load(open(sys.argv[1]))
pts = j['points']
assert len(pts) == 7, len(pts)  # resident once, then 3 offloads x 2 depths
assert all('error' not in p for p in pts), pts
assert j['host_copy_bytes_per_s'] > 0 and j['disk_read_bytes_per_s'] > 0, j
for p in pts:
    assert p['decode_tokens_per_s'] > 0, p
    if p['cpu_offload_gb'] > 0: assert p['host_mib_per_step'] > 0, p
    if p['disk_offload_gb'] > 0: assert p['disk_mib_per_step'] > 0, p
    assert p['overlap_efficiency'] > 0, p
assert len(j['recommendations']) == 1 and 'at batch 2' in j['recommendations'][0], j
" "$tmp/offload.json" && grep -q '^recommendation: with 1 GiB of device memory' "$tmp/offload.txt" &&
  [ -s "$tmp/oplot/offload_sweep.png" ] && [ -z "$(ls -A "$tmp/offload")" ]; then
  ok bench_offload
else
  fail "bench_offload: $(cat "$tmp/offload.txt"; ls -A "$tmp/offload")"
fi
out=$("$bin" bench offload "$demo" --disk-offload-gb-sweep 1 2>&1)
rc=$?
if [ $rc -eq 1 ] && grep -q -- '--offload-dir' <<<"$out"; then ok offload_needs_dir; else fail "offload_needs_dir ($rc): $out"; fi
[ $failures -eq 0 ] && echo "all bench serve tests passed"
exit $((failures > 0))
