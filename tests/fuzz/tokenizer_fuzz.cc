// libFuzzer target for the byte-level BPE tokenizer (Llama 3 layout, tests/tokenizer/data/llama3):
// any input either fails with a message (invalid UTF-8) or encodes, and then decoding gives the
// input back byte for byte (that tokenizer has no normalizer, so the round trip is exact).
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::unique_ptr<tierserve::Tokenizer> tokenizer = [] {
    auto t = tierserve::Tokenizer::load(TIERSERVE_TOKENIZER_DATA "/llama3");
    if (!t.is_ok()) std::abort();
    return std::move(t).value();
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto ids = tokenizer->encode(text, /*add_special_tokens=*/false);
  if (!ids.is_ok()) {
    if (ids.status().message().empty()) std::abort();
    return 0;
  }
  auto back = tokenizer->decode(ids.value(), /*skip_special_tokens=*/false);
  if (!back.is_ok() || back.value() != text) std::abort();
  return 0;
}
