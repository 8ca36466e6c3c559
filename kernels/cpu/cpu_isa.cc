#include "kernels/cpu/cpu_isa.h"

#include <cpuid.h>

namespace tierserve {
namespace {

// CPUID.1:ECX bit 29. Queried directly because clang's __builtin_cpu_supports has no "f16c".
bool cpu_has_f16c() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (ecx & bit_F16C) != 0;
}

}  // namespace

std::string_view cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAuto:
      return "auto";
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

bool parse_cpu_isa(std::string_view name, CpuIsa* out) {
  for (CpuIsa isa : {CpuIsa::kAuto, CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (name == cpu_isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

bool cpu_supports_isa(CpuIsa isa) {
  // __builtin_cpu_supports also checks that the OS saves the wide register state (XCR0).
  __builtin_cpu_init();
  const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  switch (isa) {
    case CpuIsa::kAuto:
    case CpuIsa::kScalar:
      return true;
    case CpuIsa::kAvx2:
      return avx2;
    case CpuIsa::kAvx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
  }
  return false;
}

CpuIsa resolve_cpu_isa(CpuIsa isa) {
  if (isa != CpuIsa::kAuto) return isa;
  if (cpu_supports_isa(CpuIsa::kAvx512)) return CpuIsa::kAvx512;
  if (cpu_supports_isa(CpuIsa::kAvx2)) return CpuIsa::kAvx2;
  return CpuIsa::kScalar;
}

}  // namespace tierserve
