// Reading safetensors checkpoints: the header format, memory-mapped files, and sharded
// directories (model.safetensors.index.json). Weights are never copied here; views point into
// the mapping.
//
// File format: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data section; offsets are relative to the start of the data section.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "common/file.h"
#include "common/status.h"

namespace tierserve {

// One tensor's entry in a safetensors header.
struct SafetensorsEntry {
  std::string name;            // tensor name
  DType dtype = DType::kF32;   // F32, F16, BF16, I32, I64 or U8
  std::vector<int64_t> shape;  // may be empty (a scalar)
  uint64_t begin = 0;          // byte offset of the first element in the data section
  uint64_t end = 0;            // one past the last byte; end - begin == numel * dtype_size
};

// Parses a whole safetensors file image (`size` bytes at `data`). Validates everything a
// malformed or hostile file could get wrong: header length past the end of the file, JSON that is
// not an object of entries, unknown dtypes, negative or overflowing shapes, data_offsets whose
// size disagrees with shape x dtype, offsets outside the data section, and overlapping tensors.
// `file_name` prefixes every error. Never reads outside [data, data + size).
// Entries come back in data order (sorted by begin). `__metadata__` is skipped; gaps between
// tensors are accepted, overlaps and duplicate names are not. Tensor data is not necessarily
// aligned to its dtype's size (old files do not pad the header): read it with memcpy or convert().
// Errors: kDataLoss for a malformed or truncated file, kUnimplemented for a dtype outside the six
// above (e.g. F8_E4M3, F64).
Result<std::vector<SafetensorsEntry>> parse_safetensors(const uint8_t* data, size_t size,
                                                        std::string_view file_name);

// A memory-mapped safetensors file, parsed and validated at open. Read-only; thread-safe.
class SafetensorsFile {
 public:
  // Maps `path` read-only and parses its header. Errors name the path: kNotFound when missing,
  // kIoError when it cannot be opened or mapped, else those of parse_safetensors().
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  // The entry named `name`, or null.
  const SafetensorsEntry* find(std::string_view name) const;
  // Address of an entry's first byte in the mapping. `entry` must be one of entries().
  const void* data(const SafetensorsEntry& entry) const;
  // Byte offset of an entry's first byte from the start of the file (for O_DIRECT reads).
  uint64_t file_offset(const SafetensorsEntry& entry) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  MappedFile map_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t, std::less<>> by_name_;
};

// A tensor found in a checkpoint: its entry, the file that holds it, and its bytes.
struct CheckpointTensor {
  const SafetensorsEntry* entry = nullptr;
  const SafetensorsFile* file = nullptr;
  const void* data = nullptr;
};

// All safetensors files of a Hugging Face model directory: model.safetensors, or the shards that
// model.safetensors.index.json's weight_map names (each shard opened once). A directory with
// only PyTorch .bin files gets an error that says to convert them to safetensors.
class Checkpoint {
 public:
  // Opens model.safetensors if present, else the shards of model.safetensors.index.json (every
  // shard must exist and hold the tensors the weight_map assigns to it), else every *.safetensors
  // file in the directory. Errors: kNotFound for a missing directory, no weights or a missing
  // shard; kUnimplemented for PyTorch-only weights; kDataLoss for a malformed index, a tensor
  // missing from its shard, or a tensor name held by two files.
  static Result<std::unique_ptr<Checkpoint>> open(const std::filesystem::path& model_dir);

  // The tensor `name`, or kNotFound naming the tensor and the directory.
  Result<CheckpointTensor> find(std::string_view name) const;
  bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }
  // Every tensor name across all files, sorted.
  std::vector<std::string> names() const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  // Takes ownership of `file` and indexes its tensors; kDataLoss if a name is already taken.
  Status add_file(std::unique_ptr<SafetensorsFile> file);

  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, CheckpointTensor, std::less<>> tensors_;
};

}  // namespace tierserve
