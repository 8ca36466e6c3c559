#!/usr/bin/env bash
# End-to-end checks of the tierserve command line: usage: cli_test.sh TIERSERVE FIXTURES_DIR
set -u
bin=$1
models=$2
failures=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect NAME WANT_RC PATTERN -- command...: runs the command, checks its exit status and that its
# output (stdout + stderr) matches PATTERN (an extended regex).
expect() {
  local name=$1 want_rc=$2 pattern=$3
  shift 4
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if { [ "$want_rc" = nonzero ] && [ "$rc" -eq 0 ]; } ||
     { [ "$want_rc" != nonzero ] && [ "$rc" -ne "$want_rc" ]; }; then
    echo "FAIL $name: exit status $rc, wanted $want_rc; output: $out"
    failures=$((failures + 1))
  elif ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL $name: output does not match /$pattern/: $out"
    failures=$((failures + 1))
  elif [ "$rc" -ne 0 ] && [ "$(grep -v '^info: ' <<<"$out" | grep -c .)" -ne 1 ]; then
    echo "FAIL $name: an error must be one line, got: $out"
    failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
}

m=$models/llama_gqa_f32
expect version 0 '^tierserve [0-9]+\.[0-9]+\.[0-9]+' -- "$bin" --version
expect help 0 'generate' -- "$bin" --help
expect generate_json 0 '^\{"prompt_token_ids":\[1,2,3\],"token_ids":\[[0-9]+(,[0-9]+){3}\],"logprobs":\[[^]]+\],"finish_reason":"length"\}$' -- \
  "$bin" generate "$m" --prompt-ids 1,2,3 --max-tokens 4 --temperature 0 --ignore-eos --json
expect generate_sampled 0 'finish_reason: (length|stop)' -- \
  "$bin" generate "$m" --prompt-ids 4,5 --max-tokens 6 --temperature 0.8 --top-k 10 --top-p 0.9 \
  --min-p 0.05 --seed 7 --repetition-penalty 1.1
expect dummy 0 '"finish_reason"' -- \
  "$bin" generate "$m" --prompt-ids 1,2 --max-tokens 3 --load-format dummy --json
expect missing_model nonzero 'config.json' -- "$bin" generate "$tmp/nope" --prompt-ids 1
# 4-bit checkpoints, GGUF files (by file and by a directory holding one), the new families.
expect generate_awq 0 '"finish_reason":"length"' -- \
  "$bin" generate "$models/llama_awq_f16" --prompt-ids 1,2,3 --max-tokens 4 --ignore-eos --json
expect generate_gguf_file 0 '"finish_reason":"length"' -- \
  "$bin" generate "$models/llama_gguf_f32/model.gguf" --prompt-ids 1,2,3 --max-tokens 4 \
  --ignore-eos --json
expect generate_gguf_dir 0 '"finish_reason":"length"' -- \
  "$bin" generate "$models/qwen2_gguf_f16" --prompt-ids 1,2,3 --max-tokens 4 --ignore-eos --json
expect generate_chatglm 0 '"finish_reason":"length"' -- \
  "$bin" generate "$models/glm4_bf16" --prompt-ids 1,2,3 --max-tokens 4 --ignore-eos --json
expect generate_baichuan_alibi 0 '"finish_reason":"length"' -- \
  "$bin" generate "$models/baichuan2_alibi_f32" --prompt-ids 1,2,3 --max-tokens 4 --ignore-eos \
  --json
head -c 5000 "$models/llama_gguf_f32/model.gguf" > "$tmp/cut.gguf"
expect truncated_gguf nonzero 'cut.gguf' -- "$bin" generate "$tmp/cut.gguf" --prompt-ids 1
printf 'GGUF\x01\x00\x00\x00' > "$tmp/v1.gguf"
expect gguf_version_1 nonzero 'v1.gguf' -- "$bin" generate "$tmp/v1.gguf" --prompt-ids 1
expect bad_ids nonzero "item 2 \('x'\)" -- "$bin" generate "$m" --prompt-ids 1,x
expect unknown_flag nonzero 'frobnicate' -- "$bin" generate "$m" --prompt-ids 1 --frobnicate
expect bad_temperature nonzero 'temperature' -- "$bin" generate "$m" --prompt-ids 1 --temperature -1
expect bad_load_format nonzero 'load-format' -- "$bin" generate "$m" --prompt-ids 1 --load-format pt
expect out_of_vocab nonzero 'outside the vocabulary' -- "$bin" generate "$m" --prompt-ids 1,99999

mkdir -p "$tmp/bad_json" && echo '{"architectures": ["LlamaForCausalLM"], ' >"$tmp/bad_json/config.json"
expect malformed_config nonzero 'config.json' -- "$bin" generate "$tmp/bad_json" --prompt-ids 1
mkdir -p "$tmp/truncated" && cp "$m/config.json" "$tmp/truncated/" &&
  head -c 1000 "$m/model.safetensors" >"$tmp/truncated/model.safetensors"
expect truncated_weights nonzero 'model.safetensors' -- "$bin" generate "$tmp/truncated" --prompt-ids 1
mkdir -p "$tmp/arch" && sed 's/LlamaForCausalLM/GPT2LMHeadModel/' "$m/config.json" >"$tmp/arch/config.json"
expect unsupported_arch nonzero 'GPT2LMHeadModel' -- "$bin" generate "$tmp/arch" --prompt-ids 1

# Offload flags: errors name the flag before anything loads; the deprecated alias warns.
expect offload_dir_missing nonzero 'offload-dir .*nope' -- \
  "$bin" generate "$m" --prompt-ids 1 --kv-disk-offload-gb 0.01 --offload-dir "$tmp/nope"
expect disk_offload_needs_dir nonzero 'disk-offload-gb needs --offload-dir' -- \
  "$bin" generate "$m" --prompt-ids 1 --disk-offload-gb 0.001
expect offload_queue_depth nonzero 'offload-queue-depth' -- \
  "$bin" generate "$m" --prompt-ids 1 --offload-queue-depth 0
expect swap_space_alias 0 'swap-space is deprecated' -- \
  "$bin" generate "$m" --prompt-ids 1 --max-tokens 1 --swap-space 0.01
expect swap_space_and_new_name nonzero 'swap-space: is the old name of --kv-offloading-size; give only one' -- \
  "$bin" generate "$m" --prompt-ids 1 --swap-space 0.01 --kv-offloading-size 0.02
expect long_context nonzero 'max-model-len 100000 exceeds' -- \
  "$bin" generate "$m" --prompt-ids 1 --max-model-len 100000
expect kv_report 0 'KV cache [0-9.]+ [KM]iB = [0-9]+ tokens \([0-9]+ blocks of 16\); maximum concurrency for 128 tokens per request: [0-9.]+x' -- \
  "$bin" generate "$m" --prompt-ids 1,2 --max-tokens 2 --max-model-len 128 --kv-cache-memory-bytes 1048576
expect kv_too_small nonzero 'cannot hold one request of --max-model-len 256 tokens; use --max-model-len 32 or less' -- \
  "$bin" generate "$m" --prompt-ids 1 --max-model-len 256 --kv-cache-memory-bytes 24576
expect engine_flags 0 '"finish_reason":"length"' -- \
  "$bin" generate "$m" --prompt-ids 1,2,3 --max-tokens 3 --ignore-eos --json --deterministic \
  --no-enable-prefix-caching --max-num-seqs 4 --gpu-memory-utilization 0.5 --device-memory-gb 1
expect bad_utilization nonzero 'gpu-memory-utilization must be in \(0, 1\]' -- \
  "$bin" generate "$m" --prompt-ids 1 --gpu-memory-utilization 1.5
expect negative_seed nonzero 'seed|-7' -- "$bin" generate "$m" --prompt-ids 1 --seed -7

# Hostile shapes are refused before anything is allocated or written.
mkdir -p "$tmp/huge" && sed -e 's/"num_hidden_layers": [0-9]*/"num_hidden_layers": 4096/' \
  -e 's/"num_attention_heads": [0-9]*/"num_attention_heads": 16384/' \
  -e 's/"num_key_value_heads": [0-9]*/"num_key_value_heads": 16384/' \
  -e 's/"hidden_size": [0-9]*/"hidden_size": 1048576/' "$m/config.json" >"$tmp/huge/config.json"
expect huge_weights nonzero 'config.json' -- \
  "$bin" generate "$tmp/huge" --prompt-ids 1 --load-format dummy --max-model-len 8

# generation_config.json supplies the sampling defaults the command line does not give.
mkdir -p "$tmp/gen" && cp "$m"/*.json "$m"/*.safetensors "$tmp/gen/" &&
  echo '{"eos_token_id": 2, "temperature": 0.0, "max_new_tokens": 3}' >"$tmp/gen/generation_config.json"
greedy=$("$bin" generate "$m" --prompt-ids 4,5,6 --max-tokens 3 --temperature 0 --json 2>/dev/null)
expect generation_defaults 0 "^$(sed 's/[][]/\\&/g' <<<"$greedy")\$" -- \
  "$bin" generate "$tmp/gen" --prompt-ids 4,5,6 --json

# tokenize: the ids of the reference (tests/tokenizer) for every golden case of a tokenizer-only
# directory, with and without special tokens.
if [ -n "${TOKENIZER_DATA:-}" ]; then
  for tok in llama3 qwen2 sp_legacy; do
    mismatches=$(/usr/bin/python3 - "$bin" "$TOKENIZER_DATA" "$tok" <<'PY'
import json, subprocess, sys
bin, data, tok = sys.argv[1:4]
cases = json.load(open("%s/%s_golden.json" % (data, tok)))["cases"]
bad = 0
for c in cases[:40]:
    if "ids" not in c or "\0" in c["text"] or c["text"].startswith("-"):
        continue
    cmd = [bin, "tokenize", "%s/%s" % (data, tok), "--text", c["text"], "--json"]
    if not c["add_special_tokens"]:
        cmd.append("--no-special-tokens")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0 or json.loads(out.stdout)["tokens"] != c["ids"]:
        bad += 1
        print("mismatch on %r: %s" % (c["text"][:40], out.stdout or out.stderr), file=sys.stderr)
print(bad)
PY
)
    expect "tokenize_$tok" 0 '^0$' -- echo "$mismatches"
  done
  expect tokenize_bad_utf8 nonzero 'byte offset 4' -- \
    "$bin" tokenize "$TOKENIZER_DATA/qwen2" --text $'bad \xff'
  expect tokenize_missing nonzero 'tokenizer' -- "$bin" tokenize "$tmp" --text hi
fi

# Text in, text out on the embedded demo model (a real tokenizer and chat template).
if [ -n "${DEMO_MODEL:-}" ]; then
  expect chat_render 0 '"prompt":"<\|begin_of_text\|><\|start_header_id\|>user<\|end_header_id\|>\\n\\nHi there<\|eot_id\|><\|start_header_id\|>assistant<\|end_header_id\|>\\n\\n"' -- \
    "$bin" tokenize "$DEMO_MODEL" --messages '[{"role": "user", "content": "Hi there"}]' --json
  expect chat_bad_messages nonzero '--messages: item 0' -- \
    "$bin" tokenize "$DEMO_MODEL" --messages '[{"content": "no role"}]'
  expect text_generate 0 '"text":"[^"]+"' -- \
    "$bin" generate "$DEMO_MODEL" --prompt "This program is free software" --max-tokens 12 \
    --temperature 0 --ignore-eos --json
  expect text_stop 0 '"finish_reason":"stop","text":"[^e"]*"\}$' -- \
    "$bin" generate "$DEMO_MODEL" --prompt "This program is free software" --max-tokens 40 \
    --temperature 0 --ignore-eos --stop e --json
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures CLI check(s) failed"
  exit 1
fi
echo "all CLI checks passed"
