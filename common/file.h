// Small file helpers shared by the loaders.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "common/status.h"

namespace tierserve {

// The whole content of `path`, or kIoError naming the path and the OS error.
Result<std::string> read_file(const std::filesystem::path& path);

// As read_file, but a file that does not exist is nullopt rather than an error (optional files
// such as generation_config.json); a file that exists and cannot be read is still an error.
Result<std::optional<std::string>> read_file_if_exists(const std::filesystem::path& path);

}  // namespace tierserve
