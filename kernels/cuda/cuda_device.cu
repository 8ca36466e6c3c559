#include <cuda_runtime.h>

#include <cstdio>

#include "kernels/cuda/cuda_device.h"

namespace tierserve::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string device_description(int index) {
  cudaDeviceProp prop;
  cudaError_t err = cudaGetDeviceProperties(&prop, index);
  if (err != cudaSuccess) return std::string("CUDA error: ") + cudaGetErrorString(err);
  int driver = 0;
  cudaDriverGetVersion(&driver);
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s (sm_%d%d, %.1f GiB), driver %d.%d", prop.name, prop.major,
                prop.minor, static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024 * 1024),
                driver / 1000, (driver % 1000) / 10);
  return buf;
}

}  // namespace tierserve::cuda
