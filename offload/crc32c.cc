#include "offload/crc32c.h"

#include <isa-l/crc.h>

#include <climits>

#include "common/check.h"

namespace tierserve {
namespace internal {

uint32_t crc32c_chunked(const void* data, size_t bytes, uint32_t crc, size_t max_chunk) {
  TS_CHECK(max_chunk > 0 && max_chunk <= static_cast<size_t>(INT_MAX)) << max_chunk;
  TS_CHECK(data != nullptr || bytes == 0);
  // ISA-L neither inverts its seed nor its result; the standard CRC-32C does both, so the
  // running value is kept inverted between chunks.
  unsigned int state = ~crc;
  // ISA-L takes a non-const pointer but only reads through it.
  auto* p = static_cast<unsigned char*>(const_cast<void*>(data));
  while (bytes > 0) {
    const size_t n = bytes < max_chunk ? bytes : max_chunk;
    state = crc32_iscsi(p, static_cast<int>(n), state);
    p += n;
    bytes -= n;
  }
  return ~state;
}

}  // namespace internal

uint32_t crc32c(const void* data, size_t bytes, uint32_t crc) {
  // 1 GiB chunks: well inside ISA-L's int length, and long enough that the loop costs nothing.
  return internal::crc32c_chunked(data, bytes, crc, size_t{1} << 30);
}

}  // namespace tierserve
