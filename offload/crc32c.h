// CRC-32C (Castagnoli, the iSCSI polynomial 0x1EDC6F41, reflected): the checksum DiskStore keeps
// for every stored extent. Backed by Intel ISA-L's crc32_iscsi (SSE4.2/AVX-512 where present).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tierserve {

// The standard CRC-32C of `bytes` bytes at `data`: crc32c("123456789", 9) == 0xE3069283, and
// crc32c of no bytes is `crc`. Chains: crc32c(b, nb, crc32c(a, na)) == crc32c(a followed by b).
// Any length is accepted (ISA-L's int length is fed in chunks). Thread-safe; `data` may be null
// only when `bytes` is 0.
uint32_t crc32c(const void* data, size_t bytes, uint32_t crc = 0);

namespace internal {
// crc32c() with ISA-L fed at most `max_chunk` (> 0, <= INT32_MAX) bytes per call, so that tests
// can check the chunking that lengths beyond INT32_MAX rely on with small buffers.
uint32_t crc32c_chunked(const void* data, size_t bytes, uint32_t crc, size_t max_chunk);
}  // namespace internal

}  // namespace tierserve
