// Reading GGUF files (llama.cpp's model format): the container (metadata and tensor infos) and a
// memory-mapped file; the tensor types and their dequantization are in ggml_quants.h. Weights are
// never copied here; tensor data is addressed inside the mapping.
//
// File format (version 3; version 2 has the same layout; all integers little-endian):
//   "GGUF" magic, u32 version, u64 tensor_count, u64 metadata_kv_count,
//   metadata_kv_count x {string key, u32 value type, value},
//   tensor_count x {string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset},
//   padding to `alignment` (metadata general.alignment, default 32), then the data section.
// A string is a u64 byte length and that many bytes (no terminator); an array value is a u32
// element type, a u64 count and the elements. Tensor offsets are relative to the data section and
// multiples of the alignment.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/file.h"
#include "common/status.h"
#include "engine/ggml_quants.h"

namespace tierserve {

// ---- Metadata ------------------------------------------------------------------------------

// GGUF metadata value types, with the file format's numeric ids.
enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// "u8", "i32", "f64", "bool", "string", "array"; "type <id>" for an id outside the format.
std::string gguf_value_type_name(GgufValueType type);

// One metadata value: a scalar, a string or an array (arrays may nest). Integers keep their
// signedness (unsigned types as uint64_t, signed as int64_t), floats are widened to double
// (exactly). Strings are the file's bytes, not validated as UTF-8.
class GgufValue {
 public:
  // An array's elements: numbers and bools stored compactly, strings and nested arrays as such.
  using Storage = std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<uint64_t>,
                               std::vector<int64_t>, std::vector<double>, std::vector<bool>,
                               std::vector<std::string>, std::vector<GgufValue>>;

  GgufValue(GgufValueType type, GgufValueType element_type, Storage storage)
      : type_(type), element_type_(element_type), storage_(std::move(storage)) {}

  // The type as written in the file.
  GgufValueType type() const { return type_; }
  // An array's element type (meaningless for a scalar or string).
  GgufValueType element_type() const { return element_type_; }
  bool is_array() const { return type_ == GgufValueType::kArray; }
  // Elements of an array; 0 for a scalar or string.
  size_t array_size() const;

  // Scalars. Integer accessors accept any integer type whose value is in range (a u8 7 is also
  // an int 7); floats accept f32 and f64. nullopt on any other type or an out-of-range value.
  std::optional<uint64_t> as_uint() const;
  std::optional<int64_t> as_int() const;
  std::optional<double> as_float() const;
  std::optional<bool> as_bool() const;
  // The string, or null when this is not a string.
  const std::string* as_string() const;

  // Arrays, by element kind; null when this is not an array of that kind.
  const std::vector<uint64_t>* uints() const;          // elements u8, u16, u32 or u64
  const std::vector<int64_t>* ints() const;            // elements i8, i16, i32 or i64
  const std::vector<double>* floats() const;           // elements f32 or f64
  const std::vector<bool>* bools() const;              // elements bool
  const std::vector<std::string>* strings() const;     // elements string
  const std::vector<GgufValue>* arrays() const;        // elements arrays (nested)
  const Storage& storage() const { return storage_; }  // the raw variant

  // A short description for error messages: "u32 7", "string 'llama'", "array of 3 f32".
  std::string describe() const;

 private:
  GgufValueType type_;
  GgufValueType element_type_;
  Storage storage_;
};

// One metadata key and its value.
struct GgufKeyValue {
  std::string key;  // e.g. "general.architecture"; unique within a file
  GgufValue value;  // its value
};

// ---- Tensors and the whole file --------------------------------------------------------------

// One tensor's entry in a GGUF file.
struct GgufTensorInfo {
  std::string name;                // tensor name, unique within a file
  GgmlType type = GgmlType::kF32;  // as in the file; may lack a dequantizer (see
                                   // check_gguf_dequantizable)
  // Dimensions in GGUF (ggml) order: ne[0] is the innermost, contiguous dimension (a row's
  // length), ne[1] the number of rows, ... 0 to 4 entries, each >= 1; an empty ne is a scalar.
  // A Hugging Face [out_features, in_features] weight has ne = {in_features, out_features}.
  std::vector<int64_t> ne;
  uint64_t offset = 0;  // absolute byte offset of the tensor's first byte in the file
  uint64_t nbytes = 0;  // bytes of data: numel / block_size * block_bytes

  // Dimensions in the row-major order the rest of the engine uses: ne reversed, [rows..., cols].
  std::vector<int64_t> shape() const;
  // Elements (product of ne; 1 for a scalar).
  int64_t numel() const;
  // Elements per row (ne[0]; 1 for a scalar); a multiple of the type's block size.
  int64_t row_length() const { return ne.empty() ? 1 : ne[0]; }
  // Rows: numel() / row_length().
  int64_t num_rows() const { return numel() / row_length(); }
};

// Everything a GGUF file's header holds, validated.
struct GgufContents {
  std::string file_name;                                    // prefixes the accessors' errors
  uint32_t version = 3;                                     // 2 or 3
  std::vector<GgufKeyValue> metadata;                       // in file order
  std::map<std::string, size_t, std::less<>> keys;          // key -> index in metadata
  std::vector<GgufTensorInfo> tensors;                      // in file (tensor info) order
  std::map<std::string, size_t, std::less<>> tensor_names;  // name -> index in tensors
  uint64_t alignment = 32;   // general.alignment, a power of two; tensor offsets are multiples
  uint64_t data_offset = 0;  // file offset of the data section: header end rounded up to alignment

  // The value of `key`, or null.
  const GgufValue* find(std::string_view key) const;
  // The tensor `name`, or null.
  const GgufTensorInfo* find_tensor(std::string_view name) const;

  // Typed metadata accessors. Errors name the file and the key: kNotFound for a missing key,
  // kDataLoss for a value of another type or out of range ("key 'x': expected u32, found string
  // 'abc'"). Integers are accepted from any integer type whose value fits (see GgufValue).
  Result<uint32_t> get_u32(std::string_view key) const;
  Result<uint64_t> get_u64(std::string_view key) const;
  Result<int64_t> get_i64(std::string_view key) const;
  Result<float> get_f32(std::string_view key) const;  // f32, or an f64 in float's range
  Result<double> get_f64(std::string_view key) const;
  Result<bool> get_bool(std::string_view key) const;
  Result<std::string> get_string(std::string_view key) const;
  // An array whose element type is exactly `element_type`; read it with the GgufValue array
  // accessor of that kind (e.g. strings(), floats()).
  Result<const GgufValue*> get_array(std::string_view key, GgufValueType element_type) const;
};

// Parses a whole GGUF file image (`size` bytes at `data`). Validates everything a malformed or
// hostile file could get wrong: magic, version (1 and >3 refused), counts too large for the
// bytes that remain, strings past the end, unknown value types, arrays nested deeper than 8,
// duplicate keys or tensor names, a general.alignment that is not a power-of-two integer, more
// than 4 dimensions, dimensions of 0 or above INT64_MAX, element or byte counts overflowing,
// rows not a multiple of the type's block size, unknown tensor types, tensor offsets not a
// multiple of the alignment, tensor data outside the file, and overlapping tensors. A tensor of
// a known type without a dequantizer is accepted (see check_gguf_dequantizable). `file_name`
// prefixes every error. Never reads outside [data, data + size).
// Errors: kDataLoss for a malformed or truncated file; kUnimplemented for version 1, a version
// above 3, a big-endian file, or a tensor type id this build does not know.
Result<GgufContents> parse_gguf(const uint8_t* data, size_t size, std::string_view file_name);

// OK when dequantize_gguf_row() supports `tensor`'s type, else kUnimplemented naming the file,
// the tensor and its type, and listing the supported types.
Status check_gguf_dequantizable(const GgufTensorInfo& tensor, std::string_view file_name);

// A memory-mapped GGUF file, parsed and validated at open. Read-only; thread-safe.
class GgufFile {
 public:
  // Maps `path` read-only and parses it. Errors name the path: kNotFound when missing, kIoError
  // when it cannot be opened or mapped, kInvalidArgument for a directory, else those of
  // parse_gguf().
  static Result<std::unique_ptr<GgufFile>> open(const std::filesystem::path& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const GgufContents& contents() const { return contents_; }
  // The tensor `name`, or null.
  const GgufTensorInfo* find(std::string_view name) const { return contents_.find_tensor(name); }
  // Address of a tensor's first byte in the mapping (nbytes bytes follow). `tensor` must be one
  // of contents().tensors.
  const uint8_t* data(const GgufTensorInfo& tensor) const;
  // Dequantizes all of `tensor` (numel() floats) into `dst`. `tensor` must be one of
  // contents().tensors; errors: those of check_gguf_dequantizable().
  Status dequantize(const GgufTensorInfo& tensor, float* dst) const;

 private:
  GgufFile() = default;
  std::filesystem::path path_;
  MappedFile map_;
  GgufContents contents_;
};

// Whether `path` names a GGUF file (a path ending in ".gguf", any case) rather than a model
// directory.
bool is_gguf_path(const std::filesystem::path& path);

// The GGUF file a model path stands for: the path itself when it is one, or the only .gguf
// file of a directory without config.json; nullopt otherwise (a Hugging Face directory).
std::optional<std::filesystem::path> gguf_file_of(const std::filesystem::path& model_path);

}  // namespace tierserve
