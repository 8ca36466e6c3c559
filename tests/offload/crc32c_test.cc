#include "offload/crc32c.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <climits>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace tierserve {
namespace {

// Bit-at-a-time CRC-32C (reflected polynomial 0x82F63B78), the definition the fast one must match.
uint32_t reference_crc32c(const uint8_t* p, size_t n, uint32_t crc = 0) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(Crc32cTest, StandardCheckValue) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32c(s.data(), s.size()), 0xE3069283u);
  EXPECT_EQ(reference_crc32c(reinterpret_cast<const uint8_t*>(s.data()), s.size()), 0xE3069283u);
}

// RFC 3720 (iSCSI) appendix B.4 test vectors.
TEST(Crc32cTest, Rfc3720Vectors) {
  std::vector<uint8_t> zeros(32, 0x00), ones(32, 0xFF), up(32), down(32);
  for (int i = 0; i < 32; ++i) {
    up[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
    down[static_cast<size_t>(i)] = static_cast<uint8_t>(31 - i);
  }
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(up.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(crc32c(down.data(), 32), 0x113FDB5Cu);
}

TEST(Crc32cTest, EmptyInputReturnsTheSeed) {
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  EXPECT_EQ(crc32c(nullptr, 0, 0x12345678u), 0x12345678u);
}

TEST(Crc32cTest, MatchesReferenceAtEveryLengthAndUnalignedStart) {
  const std::vector<uint8_t> data = random_bytes(1200, 1);
  for (size_t start = 0; start < 16; ++start) {
    for (size_t n = 0; n + start <= 1100; n += (n < 300 ? 1 : 37)) {
      ASSERT_EQ(crc32c(data.data() + start, n), reference_crc32c(data.data() + start, n))
          << "start " << start << " length " << n;
    }
  }
}

TEST(Crc32cTest, ChainsAcrossEverySplitPoint) {
  const std::vector<uint8_t> data = random_bytes(700, 2);
  const uint32_t whole = crc32c(data.data(), data.size());
  ASSERT_EQ(whole, reference_crc32c(data.data(), data.size()));
  for (size_t split = 0; split <= data.size(); ++split) {
    const uint32_t a = crc32c(data.data(), split);
    ASSERT_EQ(crc32c(data.data() + split, data.size() - split, a), whole) << "split " << split;
  }
  // Three pieces, and a non-zero seed against the reference.
  const uint32_t ab = crc32c(data.data() + 100, 250, crc32c(data.data(), 100));
  EXPECT_EQ(crc32c(data.data() + 350, 350, ab), whole);
  EXPECT_EQ(crc32c(data.data(), 99, 0xDEADBEEFu), reference_crc32c(data.data(), 99, 0xDEADBEEFu));
}

TEST(Crc32cTest, ChunkingGivesTheSameValue) {
  const std::vector<uint8_t> data = random_bytes(10007, 3);
  const uint32_t expected = reference_crc32c(data.data(), data.size(), 0x0BADF00Du);
  for (size_t chunk : {size_t{1}, size_t{3}, size_t{64}, size_t{4096}, size_t{10006}, size_t{10007},
                       size_t{INT_MAX}}) {
    EXPECT_EQ(internal::crc32c_chunked(data.data(), data.size(), 0x0BADF00Du, chunk), expected)
        << "chunk " << chunk;
  }
}

// A length beyond INT_MAX (ISA-L's int length) over untouched anonymous memory, which reads as
// zeros without using RAM: must equal the value chained from pieces each within int range.
TEST(Crc32cTest, LengthBeyondIntMax) {
  const size_t n = size_t{INT_MAX} + 4097;
  void* p = mmap(nullptr, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) GTEST_SKIP() << "cannot map " << n << " bytes of address space";
  const auto* b = static_cast<const uint8_t*>(p);
  const size_t half = n / 2;
  const uint32_t chained = crc32c(b + half, n - half, crc32c(b, half));
  EXPECT_EQ(crc32c(b, n), chained);
  EXPECT_EQ(internal::crc32c_chunked(b, n, 0, size_t{1} << 28), chained);
  // A wrong length (what an int truncation would give) must not match.
  EXPECT_NE(crc32c(b, n - 4096), chained);
  munmap(p, n);
}

}  // namespace
}  // namespace tierserve
