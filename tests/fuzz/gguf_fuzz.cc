// libFuzzer target for parse_gguf() and dequantize_gguf_row(): whatever the bytes, parsing must
// not crash, must not read outside the input (ASan), and anything it accepts must satisfy the
// documented invariants; every tensor of a dequantizable type is then dequantized from an
// exact-size copy of its bytes, so that a read past the tensor is caught too.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/gguf.h"

namespace {

using tierserve::GgmlTypeInfo;
using tierserve::GgufContents;
using tierserve::GgufTensorInfo;

void check(bool ok) {
  if (!ok) std::abort();
}

// Every accessor answers (a value or an error with a message) for every key.
void exercise_metadata(const GgufContents& c) {
  check(c.keys.size() == c.metadata.size());
  for (const tierserve::GgufKeyValue& kv : c.metadata) {
    check(c.find(kv.key) == &kv.value);
    check(!kv.value.describe().empty());
    auto u32 = c.get_u32(kv.key);
    check(u32.is_ok() || !u32.status().message().empty());
    auto f32 = c.get_f32(kv.key);
    check(f32.is_ok() || !f32.status().message().empty());
    auto str = c.get_string(kv.key);
    check(str.is_ok() == (kv.value.as_string() != nullptr));
    auto arr = c.get_array(kv.key, kv.value.element_type());
    check(arr.is_ok() == kv.value.is_array());
  }
}

void check_tensors(const GgufContents& c, const uint8_t* data, size_t size) {
  check(c.alignment > 0 && (c.alignment & (c.alignment - 1)) == 0);
  check(c.data_offset % c.alignment == 0);
  check(c.tensor_names.size() == c.tensors.size());
  std::vector<const GgufTensorInfo*> sorted;
  for (const GgufTensorInfo& t : c.tensors) {
    check(c.find_tensor(t.name) == &t);
    check(t.ne.size() <= 4);
    for (int64_t d : t.ne) check(d >= 1);
    const GgmlTypeInfo* info = tierserve::ggml_type_info(t.type);
    check(info != nullptr);
    check(t.row_length() % info->block_size == 0);
    check(static_cast<uint64_t>(t.numel() / info->block_size * info->block_bytes) == t.nbytes);
    check(t.offset >= c.data_offset && (t.offset - c.data_offset) % c.alignment == 0);
    check(t.nbytes > 0 && t.offset + t.nbytes <= size);
    sorted.push_back(&t);

    const bool supported = tierserve::check_gguf_dequantizable(t, "fuzz.gguf").is_ok();
    check(supported == info->dequantize);
    if (!supported) continue;
    std::vector<uint8_t> bytes(data + t.offset, data + t.offset + t.nbytes);
    std::vector<float> out(static_cast<size_t>(t.numel()));
    check(tierserve::dequantize_gguf_row(t.type, bytes.data(), t.numel(), out.data()).is_ok());
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    check(sorted[i]->offset >= sorted[i - 1]->offset + sorted[i - 1]->nbytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto result = tierserve::parse_gguf(data, size, "fuzz.gguf");
  if (!result.is_ok()) {
    check(result.status().message().rfind("fuzz.gguf: ", 0) == 0);
    return 0;
  }
  check(size >= 24 && std::memcmp(data, "GGUF", 4) == 0);
  check(result.value().version == 2 || result.value().version == 3);
  exercise_metadata(result.value());
  check_tensors(result.value(), data, size);
  return 0;
}
