// Small file helpers shared by the loaders.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "common/status.h"

namespace tierserve {

// The whole content of `path`, or kIoError naming the path and the OS error.
Result<std::string> read_file(const std::filesystem::path& path);

// As read_file, but a file that does not exist is nullopt rather than an error (optional files
// such as generation_config.json); a file that exists and cannot be read is still an error.
Result<std::optional<std::string>> read_file_if_exists(const std::filesystem::path& path);

// A regular file mapped read-only for the object's life (the loaders' view of checkpoint
// files). Move-only; a default-constructed one maps nothing.
class MappedFile {
 public:
  // Maps all of `path`. Errors name the path: kNotFound when it does not exist, kIoError when it
  // cannot be opened, stat'ed or mapped, kInvalidArgument when it is not a regular file, and
  // kDataLoss "<path>: <too_short(size)>" when it holds fewer than `min_size` (>= 1) bytes.
  static Result<MappedFile> open(const std::filesystem::path& path, size_t min_size,
                                 const std::function<std::string(size_t size)>& too_short);
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tierserve
