// Device discovery for the CUDA backend. Declared without CUDA types so that the registry and
// tests can call it without seeing a CUDA header.
#pragma once

#include <string>

namespace tierserve::cuda {

// Number of CUDA devices usable by this process; 0 when there is no driver or no device.
int device_count();
// "NVIDIA H200 (sm_90, 139.8 GiB), driver 13.0" for device `index`, or the CUDA error.
std::string device_description(int index);

}  // namespace tierserve::cuda
