// Instruction-set paths of the CPU kernels, and what the running CPU supports.
#pragma once

#include <cstdint>
#include <string_view>

namespace tierserve {

// A family of hand-written kernels. Each path is compiled in its own translation unit with its
// own target flags, so the rest of the binary stays baseline x86-64.
enum class CpuIsa : uint8_t {
  kAuto,    // the best path the running CPU supports (resolved by resolve_cpu_isa)
  kScalar,  // portable C++; the reference every other path is tested against
  kAvx2,    // AVX2 + FMA + F16C
  kAvx512,  // AVX-512 F/BW/VL + FMA + F16C
};

// "auto", "scalar", "avx2", "avx512".
std::string_view cpu_isa_name(CpuIsa isa);
// Parses the names above; returns false for anything else.
bool parse_cpu_isa(std::string_view name, CpuIsa* out);
// Whether the running CPU (and OS) can execute `isa`'s kernels. kAuto and kScalar: always.
bool cpu_supports_isa(CpuIsa isa);
// kAuto becomes the best supported path; any other value is returned unchanged.
CpuIsa resolve_cpu_isa(CpuIsa isa);

}  // namespace tierserve
