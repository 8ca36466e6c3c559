// The version string printed by `tierserve --version` and GET /version.
#pragma once

namespace tierserve {
inline constexpr const char* kVersion = "0.1.0";
}  // namespace tierserve
