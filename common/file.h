// Small file helpers shared by the loaders.
#pragma once

#include <filesystem>
#include <string>

#include "common/status.h"

namespace tierserve {

// The whole content of `path`, or kIoError naming the path and the OS error.
Result<std::string> read_file(const std::filesystem::path& path);

}  // namespace tierserve
