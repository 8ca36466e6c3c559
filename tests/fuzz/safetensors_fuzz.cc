// libFuzzer target for parse_safetensors(): whatever the bytes, parsing must not crash, must not
// read outside the input (ASan), and anything it accepts must satisfy the documented invariants.
#include <cstdint>
#include <cstdlib>

#include "common/dtype.h"
#include "engine/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto result = tierserve::parse_safetensors(data, size, "fuzz.safetensors");
  if (!result.is_ok()) {
    if (result.status().message().empty()) std::abort();
    return 0;
  }
  // Accepted: the header fits, every tensor lies inside the data section with the size its shape
  // and dtype imply, and non-empty tensors, sorted by begin, do not overlap.
  if (size < 8) std::abort();
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | data[i];
  if (header > size - 8) std::abort();
  const uint64_t data_size = size - 8 - header;
  uint64_t last_end = 0;
  uint64_t last_begin = 0;
  for (const tierserve::SafetensorsEntry& e : result.value()) {
    if (e.begin < last_begin || e.end < e.begin || e.end > data_size) std::abort();
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      if (d < 0) std::abort();
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * tierserve::dtype_size(e.dtype) != e.end - e.begin) std::abort();
    if (e.end > e.begin) {
      if (e.begin < last_end) std::abort();
      last_end = e.end;
    }
    last_begin = e.begin;
  }
  return 0;
}
