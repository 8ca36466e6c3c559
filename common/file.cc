#include "common/file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace tierserve {

Result<std::string> read_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return io_error(path.string() + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error(path.string() + ": cannot open: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return io_error(path.string() + ": read failed");
  return text.str();
}

Result<std::optional<std::string>> read_file_if_exists(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<std::string>();
  TS_ASSIGN_OR_RETURN(std::string text, read_file(path));
  return std::optional<std::string>(std::move(text));
}

}  // namespace tierserve
