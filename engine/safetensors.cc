#include "engine/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <system_error>
#include <tuple>
#include <utility>

#include "common/check.h"
#include "common/file.h"

namespace tierserve {
namespace {

using nlohmann::json;

// A header longer than this is not a safetensors file (real headers are a few MB at most).
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
// Longest name or JSON excerpt quoted in an error message.
constexpr size_t kMaxQuoted = 120;

constexpr const char* kSupportedDTypes = "F32, F16, BF16, I32, I64 or U8";

struct DTypeName {
  std::string_view name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16},
    {"I32", DType::kI32}, {"I64", DType::kI64}, {"U8", DType::kU8},
};
// Dtypes the safetensors format defines that this engine does not load.
constexpr std::string_view kOtherFormatDTypes[] = {
    "F64",     "I8",      "I16",     "U16",     "U32",     "U64", "BOOL",
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64",
};

// Escapes control bytes and truncates, so that an error stays one readable line whatever the
// file holds.
std::string sanitize(std::string_view text) {
  std::string out;
  const size_t n = std::min(text.size(), kMaxQuoted);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > n) out += "...";
  return out;
}

uint64_t load_le64(const uint8_t* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

std::string quote(std::string_view name) { return "'" + sanitize(name) + "'"; }

// A JSON value as it appears in the file, shortened for an error message.
std::string excerpt(const json& value) {
  return sanitize(value.dump(-1, ' ', false, json::error_handler_t::replace));
}

std::string format_shape(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::string format_offsets(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// One header entry, validated on its own (its place among the others is checked later).
class EntryParser {
 public:
  EntryParser(std::string_view file, const std::string& name, uint64_t data_size)
      : file_(file), name_(name), data_size_(data_size) {}

  Result<SafetensorsEntry> parse(const json& value) {
    if (!value.is_object()) {
      return error("expected an object with dtype, shape and data_offsets, got " + excerpt(value));
    }
    SafetensorsEntry entry;
    entry.name = name_;
    TS_RETURN_IF_ERROR(parse_dtype(value, &entry.dtype));
    TS_RETURN_IF_ERROR(parse_shape(value, &entry.shape));
    TS_RETURN_IF_ERROR(parse_offsets(value, entry));
    return entry;
  }

 private:
  Status error(const std::string& what, StatusCode code = StatusCode::kDataLoss) const {
    return Status(code, std::string(file_) + ": tensor " + quote(name_) + ": " + what);
  }

  Status parse_dtype(const json& value, DType* out) const {
    auto it = value.find("dtype");
    if (it == value.end()) return error("missing \"dtype\"");
    if (!it->is_string()) return error("\"dtype\" is not a string: " + excerpt(*it));
    const std::string& name = it->get_ref<const std::string&>();
    for (const DTypeName& d : kDTypes) {
      if (d.name == name) {
        *out = d.dtype;
        return Status::ok();
      }
    }
    const bool known = std::find(std::begin(kOtherFormatDTypes), std::end(kOtherFormatDTypes),
                                 name) != std::end(kOtherFormatDTypes);
    return error(std::string(known ? "unsupported" : "unknown") + " dtype " + quote(name) +
                     " (expected " + kSupportedDTypes + ")",
                 known ? StatusCode::kUnimplemented : StatusCode::kDataLoss);
  }

  Status parse_shape(const json& value, std::vector<int64_t>* shape) const {
    auto it = value.find("shape");
    if (it == value.end()) return error("missing \"shape\"");
    if (!it->is_array()) return error("\"shape\" is not an array: " + excerpt(*it));
    for (const json& dim : *it) {
      if (dim.is_number_unsigned()) {
        if (dim.get<uint64_t>() > uint64_t{INT64_MAX}) {
          return error("dimension " + std::to_string(dim.get<uint64_t>()) + " in shape " +
                       excerpt(*it) + " is too large");
        }
        shape->push_back(static_cast<int64_t>(dim.get<uint64_t>()));
      } else if (dim.is_number_integer()) {
        return error("negative dimension " + std::to_string(dim.get<int64_t>()) + " in shape " +
                     excerpt(*it));
      } else {
        return error("shape " + excerpt(*it) +
                     " has a dimension that is not an integer: " + excerpt(dim));
      }
    }
    return Status::ok();
  }

  Status parse_offsets(const json& value, SafetensorsEntry& entry) const {
    auto it = value.find("data_offsets");
    if (it == value.end()) return error("missing \"data_offsets\"");
    if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number_unsigned() ||
        !(*it)[1].is_number_unsigned()) {
      return error("\"data_offsets\" is not [begin, end] with non-negative integers: " +
                   excerpt(*it));
    }
    entry.begin = (*it)[0].get<uint64_t>();
    entry.end = (*it)[1].get<uint64_t>();
    const std::string offsets = "data_offsets " + format_offsets(entry.begin, entry.end);
    if (entry.end < entry.begin) return error(offsets + ": end is before begin");

    uint64_t numel = 1;
    for (int64_t dim : entry.shape) {
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dim), &numel)) {
        return error("shape " + format_shape(entry.shape) + " overflows a 64-bit element count");
      }
    }
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(numel, uint64_t{dtype_size(entry.dtype)}, &bytes)) {
      return error("shape " + format_shape(entry.shape) + " overflows a 64-bit byte count");
    }
    if (entry.end - entry.begin != bytes) {
      return error(offsets + " hold " + std::to_string(entry.end - entry.begin) +
                   " bytes but shape " + format_shape(entry.shape) + " of " +
                   std::string(dtype_name(entry.dtype)) + " needs " + std::to_string(bytes));
    }
    if (entry.end > data_size_) {
      return error(offsets + " end beyond the data section of " + std::to_string(data_size_) +
                   " bytes (truncated file?)");
    }
    return Status::ok();
  }

  std::string_view file_;
  const std::string& name_;
  uint64_t data_size_;
};

// Parses the JSON header, rejecting a name that appears twice (nlohmann keeps only the last).
Result<json> parse_header_json(const char* begin, const char* end, std::string_view file) {
  std::set<std::string> names;
  std::string duplicate;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && parsed.is_string() &&
        !names.insert(parsed.get<std::string>()).second && duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json header;
  try {
    header = json::parse(begin, end, on_event);
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (size_t pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    return data_loss(std::string(file) + ": malformed JSON header: " + sanitize(what));
  }
  if (!duplicate.empty()) {
    return data_loss(std::string(file) + ": tensor " + quote(duplicate) +
                     " appears twice in the header");
  }
  if (!header.is_object()) {
    return data_loss(std::string(file) + ": header is not a JSON object: " + excerpt(header));
  }
  return header;
}

}  // namespace

Result<std::vector<SafetensorsEntry>> parse_safetensors(const uint8_t* data, size_t size,
                                                        std::string_view file_name) {
  const std::string file(file_name);
  if (size < 8) {
    return data_loss(file + ": file is " + std::to_string(size) +
                     " bytes, too short to hold the 8-byte header length");
  }
  const uint64_t header_size = load_le64(data);
  if (header_size > kMaxHeaderBytes) {
    return data_loss(file + ": header length " + std::to_string(header_size) +
                     " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
                     " bytes (not a safetensors file?)");
  }
  if (header_size > size - 8) {
    return data_loss(file + ": header length " + std::to_string(header_size) +
                     " exceeds file size " + std::to_string(size));
  }
  const char* header_begin = reinterpret_cast<const char*>(data + 8);
  TS_ASSIGN_OR_RETURN(json header,
                      parse_header_json(header_begin, header_begin + header_size, file));
  const uint64_t data_size = size - 8 - header_size;

  std::vector<SafetensorsEntry> entries;
  entries.reserve(header.size());
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) {
        return data_loss(file + ": __metadata__ is not an object: " + excerpt(value));
      }
      continue;
    }
    TS_ASSIGN_OR_RETURN(SafetensorsEntry entry, EntryParser(file, name, data_size).parse(value));
    entries.push_back(std::move(entry));
  }

  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Sorted by begin, a non-empty tensor overlaps another iff it starts before the end of the
  // last non-empty tensor seen (empty tensors occupy no bytes and overlap nothing).
  const SafetensorsEntry* last = nullptr;
  for (const SafetensorsEntry& entry : entries) {
    if (entry.begin == entry.end) continue;
    if (last != nullptr && entry.begin < last->end) {
      return data_loss(file + ": tensor " + quote(entry.name) + " data_offsets " +
                       format_offsets(entry.begin, entry.end) + " overlap tensor " +
                       quote(last->name) + " data_offsets " +
                       format_offsets(last->begin, last->end));
    }
    last = &entry;
  }
  return entries;
}

// ----------------------------------------------------------------------------------------------
// SafetensorsFile

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::filesystem::path& path) {
  TS_ASSIGN_OR_RETURN(MappedFile map, MappedFile::open(path, 8, [](size_t size) {
                        return "file is " + std::to_string(size) +
                               " bytes, too short to hold the 8-byte header length";
                      }));
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = std::move(map);
  TS_ASSIGN_OR_RETURN(file->entries_,
                      parse_safetensors(file->map_.data(), file->map_.size(), path.string()));
  file->data_start_ = 8 + load_le64(file->map_.data());
  for (size_t i = 0; i < file->entries_.size(); ++i) file->by_name_[file->entries_[i].name] = i;
  return file;
}

SafetensorsFile::~SafetensorsFile() = default;

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

const void* SafetensorsFile::data(const SafetensorsEntry& entry) const {
  return map_.data() + file_offset(entry);
}

uint64_t SafetensorsFile::file_offset(const SafetensorsEntry& entry) const {
  TS_CHECK(&entry >= entries_.data() && &entry < entries_.data() + entries_.size())
      << "entry '" << entry.name << "' does not belong to " << path_.string();
  return data_start_ + entry.begin;
}

// ----------------------------------------------------------------------------------------------
// Checkpoint

namespace {

namespace fs = std::filesystem;

// A shard name from an index must stay inside the model directory.
bool is_safe_relative(const fs::path& path) {
  if (path.empty() || path.is_absolute()) return false;
  for (const fs::path& part : path) {
    if (part == "..") return false;
  }
  return true;
}

// weight_map of model.safetensors.index.json, grouped by shard: shard -> tensor names.
Result<std::map<std::string, std::vector<std::string>>> read_index(const fs::path& index_path) {
  const std::string index = index_path.string();
  TS_ASSIGN_OR_RETURN(std::string text, read_file(index_path));
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (size_t pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    return data_loss(index + ": malformed JSON: " + sanitize(what));
  }
  if (!root.is_object()) return data_loss(index + ": not a JSON object");
  auto map_it = root.find("weight_map");
  if (map_it == root.end() || !map_it->is_object()) {
    return data_loss(index + ": missing \"weight_map\" object (tensor name -> shard file)");
  }
  if (map_it->empty()) return data_loss(index + ": \"weight_map\" is empty");
  std::map<std::string, std::vector<std::string>> shards;
  for (const auto& [tensor, shard] : map_it->items()) {
    if (!shard.is_string()) {
      return data_loss(index + ": tensor " + quote(tensor) +
                       " maps to a non-string shard: " + excerpt(shard));
    }
    const std::string& shard_name = shard.get_ref<const std::string&>();
    if (!is_safe_relative(fs::path(shard_name))) {
      return data_loss(index + ": tensor " + quote(tensor) + " maps to shard " + quote(shard_name) +
                       ", which is not a file inside the model directory");
    }
    shards[shard_name].push_back(tensor);
  }
  return shards;
}

// PyTorch pickle checkpoints, which are never loaded.
bool is_pytorch_weights(const fs::path& path) {
  const std::string name = path.filename().string();
  const std::string ext = path.extension().string();
  return (ext == ".bin" && name.rfind("pytorch_model", 0) == 0) || ext == ".pt" || ext == ".pth";
}

}  // namespace

Status Checkpoint::add_file(std::unique_ptr<SafetensorsFile> file) {
  for (const SafetensorsEntry& entry : file->entries()) {
    auto [it, inserted] =
        tensors_.try_emplace(entry.name, CheckpointTensor{&entry, file.get(), file->data(entry)});
    if (!inserted) {
      return data_loss(dir_.string() + ": tensor " + quote(entry.name) + " is in both " +
                       it->second.file->path().filename().string() + " and " +
                       file->path().filename().string());
    }
  }
  files_.push_back(std::move(file));
  return Status::ok();
}

Result<std::unique_ptr<Checkpoint>> Checkpoint::open(const fs::path& model_dir) {
  const std::string dir = model_dir.string();
  std::error_code ec;
  const fs::file_status status = fs::status(model_dir, ec);
  if (!fs::exists(status)) return not_found(dir + ": model directory not found");
  if (!fs::is_directory(status)) return invalid_argument(dir + ": not a directory");

  auto checkpoint = std::make_unique<Checkpoint>();
  checkpoint->dir_ = model_dir;

  const fs::path single = model_dir / "model.safetensors";
  const fs::path index = model_dir / "model.safetensors.index.json";
  if (fs::exists(single, ec)) {
    TS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(single));
    TS_RETURN_IF_ERROR(checkpoint->add_file(std::move(file)));
    return checkpoint;
  }

  if (fs::exists(index, ec)) {
    TS_ASSIGN_OR_RETURN(auto shards, read_index(index));
    for (const auto& [shard, tensors] : shards) {
      const fs::path shard_path = model_dir / shard;
      if (!fs::exists(shard_path, ec)) {
        return not_found(index.string() + ": shard " + quote(shard) + " (holding tensor " +
                         quote(tensors.front()) + ") not found in " + dir);
      }
      TS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(shard_path));
      for (const std::string& tensor : tensors) {
        if (file->find(tensor) == nullptr) {
          return data_loss(index.string() + ": tensor " + quote(tensor) + " is mapped to shard " +
                           quote(shard) + ", which does not hold it");
        }
      }
      TS_RETURN_IF_ERROR(checkpoint->add_file(std::move(file)));
    }
    return checkpoint;
  }

  std::vector<fs::path> safetensors;
  bool has_pytorch = false;
  for (fs::directory_iterator it(model_dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec)) continue;
    if (it->path().extension() == ".safetensors") safetensors.push_back(it->path());
    if (is_pytorch_weights(it->path())) has_pytorch = true;
  }
  if (ec) return io_error(dir + ": cannot list directory: " + ec.message());
  if (safetensors.empty()) {
    if (has_pytorch) {
      return unimplemented(dir +
                           ": has only PyTorch .bin/.pt weights, which are not loaded (no pickle); "
                           "convert them to safetensors, e.g. with transformers: "
                           "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, "
                           "safe_serialization=True)");
    }
    return not_found(dir +
                     ": no model weights (expected model.safetensors, "
                     "model.safetensors.index.json or *.safetensors)");
  }
  std::sort(safetensors.begin(), safetensors.end());
  for (const fs::path& path : safetensors) {
    TS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(path));
    TS_RETURN_IF_ERROR(checkpoint->add_file(std::move(file)));
  }
  return checkpoint;
}

Result<CheckpointTensor> Checkpoint::find(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return not_found(dir_.string() + ": tensor " + quote(name) + " not found");
  }
  return it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, tensor] : tensors_) names.push_back(name);
  return names;
}

}  // namespace tierserve
