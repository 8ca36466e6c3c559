#include "engine/gguf.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstring>
#include <iterator>
#include <type_traits>
#include <utility>

#include "common/check.h"

namespace tierserve {
namespace {

// ---- Error-message helpers -------------------------------------------------------------------

// Longest name or string quoted in an error message.
constexpr size_t kMaxQuoted = 120;

// Escapes control bytes and truncates, so that an error stays one readable line whatever the
// file holds.
std::string quote(std::string_view text) {
  std::string out = "'";
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
  return out + "'";
}

std::string format_double(double value) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  return ec == std::errc() ? std::string(buf, end) : "?";
}

std::string format_ne(const std::vector<int64_t>& ne) {
  std::string out = "[";
  for (size_t i = 0; i < ne.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(ne[i]);
  }
  return out + "]";
}

std::string format_range(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

// ---- The parser ------------------------------------------------------------------------------

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int kMaxDims = 4;              // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;        // arrays nested deeper than this are refused
constexpr uint64_t kDefaultAlignment = 32;
// Fewest bytes one metadata entry (key length, type, a 1-byte value) and one tensor info (name
// length, n_dims, type, offset) can take: bounds the counts before anything is reserved.
constexpr uint64_t kMinKeyValueBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;

bool is_integer_type(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kU16:
    case GgufValueType::kI16:
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kU64:
    case GgufValueType::kI64:
      return true;
    default:
      return false;
  }
}
bool is_signed_type(GgufValueType t) {
  return t == GgufValueType::kI8 || t == GgufValueType::kI16 || t == GgufValueType::kI32 ||
         t == GgufValueType::kI64;
}

// Bytes of a scalar of type `t` in the file; 0 for strings and arrays.
uint64_t scalar_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    default:
      return 0;
  }
}

// Fewest bytes one value of type `t` takes: a string its length, an array its type and count.
uint64_t min_value_bytes(GgufValueType t) {
  if (t == GgufValueType::kString) return 8;
  if (t == GgufValueType::kArray) return 4 + 8;
  return scalar_bytes(t);
}

// Reads a GGUF image front to back. Every read is bounds-checked against the image; errors
// are prefixed with the file name.
class Parser {
 public:
  Parser(const uint8_t* data, size_t size, std::string_view file)
      : data_(data), size_(size), file_(file) {}

  Result<GgufContents> parse() {
    GgufContents out;
    out.file_name = file_;
    TS_RETURN_IF_ERROR(parse_preamble(&out.version));
    uint64_t tensor_count = 0;
    uint64_t kv_count = 0;
    TS_RETURN_IF_ERROR(read_u64(&tensor_count, "the tensor count"));
    TS_RETURN_IF_ERROR(read_u64(&kv_count, "the metadata key/value count"));
    // Every entry takes some bytes, so counts larger than the rest of the file allows are
    // refused before anything is reserved for them.
    const uint64_t left = remaining();
    if (kv_count > left / kMinKeyValueBytes) {
      return error("metadata key/value count " + std::to_string(kv_count) + " cannot fit in the " +
                   std::to_string(left) + " bytes after the header (each takes at least " +
                   std::to_string(kMinKeyValueBytes) + ")");
    }
    if (tensor_count > (left - kv_count * kMinKeyValueBytes) / kMinTensorInfoBytes) {
      return error("tensor count " + std::to_string(tensor_count) + " cannot fit in the " +
                   std::to_string(left) + " bytes after the header (each tensor info takes " +
                   "at least " + std::to_string(kMinTensorInfoBytes) + ")");
    }

    out.metadata.reserve(kv_count);
    for (uint64_t i = 0; i < kv_count; ++i) {
      std::string key;
      TS_RETURN_IF_ERROR(read_string(&key, "the key of metadata entry " + std::to_string(i)));
      const std::string where = "metadata key " + quote(key);
      uint32_t type_id = 0;
      TS_RETURN_IF_ERROR(read_u32(&type_id, "the value type of " + where));
      GgufValueType type;
      TS_RETURN_IF_ERROR(check_value_type(type_id, where, &type));
      TS_ASSIGN_OR_RETURN(GgufValue value, read_value(type, where, 0));
      if (!out.keys.try_emplace(key, out.metadata.size()).second) {
        return error(where + " appears twice");
      }
      out.metadata.push_back(GgufKeyValue{std::move(key), std::move(value)});
    }
    TS_RETURN_IF_ERROR(parse_alignment(out, &out.alignment));

    out.tensors.reserve(tensor_count);
    std::vector<uint64_t> relative_offsets;
    relative_offsets.reserve(tensor_count);
    for (uint64_t i = 0; i < tensor_count; ++i) {
      uint64_t offset = 0;
      TS_ASSIGN_OR_RETURN(GgufTensorInfo info, read_tensor_info(i, &offset));
      if (!out.tensor_names.try_emplace(info.name, out.tensors.size()).second) {
        return error("tensor " + quote(info.name) + " appears twice");
      }
      out.tensors.push_back(std::move(info));
      relative_offsets.push_back(offset);
    }

    // The data section starts at the end of the tensor infos rounded up to the alignment.
    if (__builtin_add_overflow(uint64_t{pos_}, out.alignment - 1, &out.data_offset)) {
      return error("data section offset overflows with alignment " + std::to_string(out.alignment));
    }
    out.data_offset &= ~(out.alignment - 1);
    for (size_t i = 0; i < out.tensors.size(); ++i) {
      TS_RETURN_IF_ERROR(place_tensor(out, relative_offsets[i], &out.tensors[i]));
    }
    TS_RETURN_IF_ERROR(check_overlaps(out.tensors));
    return out;
  }

 private:
  Status error(const std::string& what, StatusCode code = StatusCode::kDataLoss) const {
    return Status(code, std::string(file_) + ": " + what);
  }

  uint64_t remaining() const { return size_ - pos_; }

  // Reads an n-byte little-endian unsigned integer.
  Status read_le(int n, uint64_t* out, const std::string& what) {
    if (remaining() < static_cast<uint64_t>(n)) {
      return error("truncated at byte " + std::to_string(pos_) + " reading " + what + " (" +
                   std::to_string(n) + " bytes; the file has " + std::to_string(size_) + ")");
    }
    uint64_t value = 0;
    for (int i = n - 1; i >= 0; --i) value = (value << 8) | data_[pos_ + i];
    pos_ += n;
    *out = value;
    return Status::ok();
  }
  Status read_u32(uint32_t* out, const std::string& what) {
    uint64_t value = 0;
    TS_RETURN_IF_ERROR(read_le(4, &value, what));
    *out = static_cast<uint32_t>(value);
    return Status::ok();
  }
  Status read_u64(uint64_t* out, const std::string& what) { return read_le(8, out, what); }

  Status read_string(std::string* out, const std::string& what) {
    uint64_t length = 0;
    TS_RETURN_IF_ERROR(read_u64(&length, "the length of " + what));
    if (length > remaining()) {
      return error(what + ": string length " + std::to_string(length) + " at byte " +
                   std::to_string(pos_ - 8) + " exceeds the " + std::to_string(remaining()) +
                   " bytes left in the file");
    }
    out->assign(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return Status::ok();
  }

  Status parse_preamble(uint32_t* version) {
    if (size_ < 4 || std::memcmp(data_, "GGUF", 4) != 0) {
      if (size_ >= 4 && std::memcmp(data_, "FUGG", 4) == 0) {
        return error("big-endian GGUF files are not supported", StatusCode::kUnimplemented);
      }
      return error("not a GGUF file: expected the magic \"GGUF\" in the first 4 bytes");
    }
    uint64_t magic = 0;
    TS_RETURN_IF_ERROR(read_le(4, &magic, "the magic"));
    TS_CHECK(magic == kMagic);
    TS_RETURN_IF_ERROR(read_u32(version, "the version"));
    if (*version == 1) {
      return error(
          "GGUF version 1 is not supported (it has 32-bit counts); convert the model "
          "again with a current llama.cpp",
          StatusCode::kUnimplemented);
    }
    if (*version == 0x02000000 || *version == 0x03000000) {
      return error("big-endian GGUF files are not supported", StatusCode::kUnimplemented);
    }
    if (*version == 0) return error("GGUF version 0 is not valid");
    if (*version > 3) {
      return error(
          "GGUF version " + std::to_string(*version) + " is not supported (versions 2 and 3 are)",
          StatusCode::kUnimplemented);
    }
    return Status::ok();
  }

  Status check_value_type(uint32_t id, const std::string& where, GgufValueType* out) const {
    if (id > static_cast<uint32_t>(GgufValueType::kF64)) {
      return error(where + ": unknown value type " + std::to_string(id) + " at byte " +
                   std::to_string(pos_ - 4) + " (GGUF value types are 0-12)");
    }
    *out = static_cast<GgufValueType>(id);
    return Status::ok();
  }

  // Reads a value of `type` (already read); `depth` counts enclosing arrays.
  Result<GgufValue> read_value(GgufValueType type, const std::string& where, int depth) {
    using T = GgufValueType;
    const T none = T::kU8;
    const std::string what = "the value of " + where;
    if (type == T::kString) {
      std::string s;
      TS_RETURN_IF_ERROR(read_string(&s, where));
      return GgufValue(type, none, std::move(s));
    }
    if (type == T::kArray) return read_array(where, depth);
    uint64_t bits = 0;
    TS_RETURN_IF_ERROR(read_le(static_cast<int>(scalar_bytes(type)), &bits, what));
    switch (type) {
      case T::kU8:
      case T::kU16:
      case T::kU32:
      case T::kU64:
        return GgufValue(type, none, bits);
      case T::kI8:
        return GgufValue(type, none, int64_t{static_cast<int8_t>(bits)});
      case T::kI16:
        return GgufValue(type, none, int64_t{static_cast<int16_t>(bits)});
      case T::kI32:
        return GgufValue(type, none, int64_t{static_cast<int32_t>(bits)});
      case T::kI64:
        return GgufValue(type, none, static_cast<int64_t>(bits));
      case T::kF32: {
        const uint32_t b32 = static_cast<uint32_t>(bits);
        float f;
        std::memcpy(&f, &b32, sizeof(f));
        return GgufValue(type, none, static_cast<double>(f));
      }
      case T::kF64: {
        double f;
        std::memcpy(&f, &bits, sizeof(f));
        return GgufValue(type, none, f);
      }
      case T::kBool:
        if (bits > 1) {
          return error(where + ": bool byte " + std::to_string(bits) + " at byte " +
                       std::to_string(pos_ - 1) + " is neither 0 nor 1");
        }
        return GgufValue(type, none, bits == 1);
      default:
        break;
    }
    TS_CHECK(false) << "unhandled GGUF value type " << static_cast<uint32_t>(type);
    return internal_error("unreachable");
  }

  // Reads `count` scalars of `type` into a vector of E.
  template <typename E>
  Result<std::vector<E>> read_scalars(GgufValueType type, uint64_t count,
                                      const std::string& where) {
    std::vector<E> values;
    values.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      TS_ASSIGN_OR_RETURN(GgufValue v, read_value(type, where, 0));
      values.push_back(std::get<E>(v.storage()));
    }
    return values;
  }

  Result<GgufValue> read_array(const std::string& where, int depth) {
    using T = GgufValueType;
    if (depth >= kMaxArrayDepth) {
      return error(where + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
    }
    uint32_t elem_id = 0;
    TS_RETURN_IF_ERROR(read_u32(&elem_id, "the element type of the array in " + where));
    T elem;
    TS_RETURN_IF_ERROR(check_value_type(elem_id, where + " (array element)", &elem));
    uint64_t count = 0;
    TS_RETURN_IF_ERROR(read_u64(&count, "the length of the array in " + where));
    const uint64_t min_bytes = min_value_bytes(elem);
    if (count > remaining() / min_bytes) {
      return error(where + ": array of " + std::to_string(count) + " " +
                   gguf_value_type_name(elem) + " at byte " + std::to_string(pos_ - 8) +
                   " cannot fit in the " + std::to_string(remaining()) + " bytes left in the file");
    }
    const std::string elem_where = where + " (array element)";
    if (is_integer_type(elem) && !is_signed_type(elem)) {
      TS_ASSIGN_OR_RETURN(auto values, read_scalars<uint64_t>(elem, count, elem_where));
      return GgufValue(T::kArray, elem, std::move(values));
    }
    if (is_signed_type(elem)) {
      TS_ASSIGN_OR_RETURN(auto values, read_scalars<int64_t>(elem, count, elem_where));
      return GgufValue(T::kArray, elem, std::move(values));
    }
    if (elem == T::kF32 || elem == T::kF64) {
      TS_ASSIGN_OR_RETURN(auto values, read_scalars<double>(elem, count, elem_where));
      return GgufValue(T::kArray, elem, std::move(values));
    }
    if (elem == T::kBool) {
      std::vector<bool> values;
      values.reserve(count);
      for (uint64_t i = 0; i < count; ++i) {
        TS_ASSIGN_OR_RETURN(GgufValue v, read_value(elem, elem_where, 0));
        values.push_back(std::get<bool>(v.storage()));
      }
      return GgufValue(T::kArray, elem, std::move(values));
    }
    if (elem == T::kString) {
      std::vector<std::string> values;
      values.reserve(count);
      for (uint64_t i = 0; i < count; ++i) {
        values.emplace_back();
        TS_RETURN_IF_ERROR(read_string(&values.back(), elem_where));
      }
      return GgufValue(T::kArray, elem, std::move(values));
    }
    std::vector<GgufValue> values;
    values.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      TS_ASSIGN_OR_RETURN(GgufValue v, read_array(elem_where, depth + 1));
      values.push_back(std::move(v));
    }
    return GgufValue(T::kArray, elem, std::move(values));
  }

  Status parse_alignment(const GgufContents& contents, uint64_t* alignment) const {
    *alignment = kDefaultAlignment;
    const GgufValue* value = contents.find("general.alignment");
    if (value == nullptr) return Status::ok();
    const std::optional<uint64_t> a = value->as_uint();
    if (!a.has_value()) {
      return error("general.alignment is " + value->describe() +
                   ", expected an unsigned integer power of two");
    }
    if (*a == 0 || (*a & (*a - 1)) != 0) {
      return error("general.alignment " + std::to_string(*a) + " is not a power of two");
    }
    *alignment = *a;
    return Status::ok();
  }

  Result<GgufTensorInfo> read_tensor_info(uint64_t index, uint64_t* relative_offset) {
    GgufTensorInfo info;
    TS_RETURN_IF_ERROR(read_string(&info.name, "the name of tensor " + std::to_string(index)));
    const std::string where = "tensor " + quote(info.name);
    uint32_t n_dims = 0;
    TS_RETURN_IF_ERROR(read_u32(&n_dims, "the dimension count of " + where));
    if (n_dims > kMaxDims) {
      return error(where + ": " + std::to_string(n_dims) + " dimensions (at most " +
                   std::to_string(kMaxDims) + ")");
    }
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = 0;
      TS_RETURN_IF_ERROR(read_u64(&dim, "dimension " + std::to_string(d) + " of " + where));
      if (dim == 0 || dim > uint64_t{INT64_MAX}) {
        return error(where + ": dimension " + std::to_string(d) + " is " + std::to_string(dim) +
                     " (must be between 1 and 2^63-1)");
      }
      info.ne.push_back(static_cast<int64_t>(dim));
    }
    uint32_t type_id = 0;
    TS_RETURN_IF_ERROR(read_u32(&type_id, "the type of " + where));
    TS_RETURN_IF_ERROR(read_u64(relative_offset, "the offset of " + where));

    const GgmlTypeInfo* type = ggml_type_info(type_id);
    if (type == nullptr) {
      return error(where + ": unknown ggml type id " + std::to_string(type_id),
                   StatusCode::kUnimplemented);
    }
    info.type = type->type;
    int64_t numel = 1;
    for (int64_t dim : info.ne) {
      if (__builtin_mul_overflow(numel, dim, &numel)) {
        return error(where + ": ne " + format_ne(info.ne) + " overflows a 64-bit element count");
      }
    }
    if (info.row_length() % type->block_size != 0) {
      return error(where + ": row length ne[0] = " + std::to_string(info.row_length()) +
                   " is not a multiple of " + std::string(type->name) + "'s block size " +
                   std::to_string(type->block_size));
    }
    if (__builtin_mul_overflow(static_cast<uint64_t>(numel / type->block_size),
                               static_cast<uint64_t>(type->block_bytes), &info.nbytes)) {
      return error(where + ": ne " + format_ne(info.ne) + " of " + std::string(type->name) +
                   " overflows a 64-bit byte count");
    }
    return info;
  }

  // Sets `info`'s absolute offset; its data must lie inside the file.
  Status place_tensor(const GgufContents& contents, uint64_t relative, GgufTensorInfo* info) const {
    const std::string where = "tensor " + quote(info->name);
    if (relative % contents.alignment != 0) {
      return error(where + ": offset " + std::to_string(relative) +
                   " is not a multiple of the alignment " + std::to_string(contents.alignment));
    }
    uint64_t begin = 0;
    uint64_t end = 0;
    if (__builtin_add_overflow(contents.data_offset, relative, &begin) ||
        __builtin_add_overflow(begin, info->nbytes, &end) || end > size_) {
      return error(where + ": data at offset " + std::to_string(relative) + " (" +
                   std::to_string(info->nbytes) + " bytes) extends past the end of the file (" +
                   std::to_string(size_) + " bytes; data section at " +
                   std::to_string(contents.data_offset) + "; truncated file?)");
    }
    info->offset = begin;
    return Status::ok();
  }

  Status check_overlaps(const std::vector<GgufTensorInfo>& tensors) const {
    std::vector<const GgufTensorInfo*> sorted;
    sorted.reserve(tensors.size());
    for (const GgufTensorInfo& t : tensors) sorted.push_back(&t);
    std::sort(sorted.begin(), sorted.end(),
              [](const auto* a, const auto* b) { return a->offset < b->offset; });
    // Every tensor has at least one byte; sorted by offset, one overlaps another iff it starts
    // before the end of the previous one.
    for (size_t i = 1; i < sorted.size(); ++i) {
      const GgufTensorInfo& prev = *sorted[i - 1];
      const GgufTensorInfo& cur = *sorted[i];
      if (cur.offset < prev.offset + prev.nbytes) {
        return error("tensor " + quote(cur.name) + " data " +
                     format_range(cur.offset, cur.offset + cur.nbytes) + " overlaps tensor " +
                     quote(prev.name) + " data " +
                     format_range(prev.offset, prev.offset + prev.nbytes));
      }
    }
    return Status::ok();
  }

  const uint8_t* data_;
  size_t size_;
  std::string_view file_;
  size_t pos_ = 0;  // next byte to read
};

}  // namespace

// ---- GgufValue -------------------------------------------------------------------------------

std::string gguf_value_type_name(GgufValueType type) {
  static constexpr const char* kNames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                           "bool", "string", "array", "u64", "i64", "f64"};
  const uint32_t id = static_cast<uint32_t>(type);
  if (id < std::size(kNames)) return kNames[id];
  return "type " + std::to_string(id);
}

size_t GgufValue::array_size() const {
  if (!is_array()) return 0;
  return std::visit(
      [](const auto& v) -> size_t {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, std::string> || std::is_arithmetic_v<V>) {
          return 0;
        } else {
          return v.size();
        }
      },
      storage_);
}

std::optional<uint64_t> GgufValue::as_uint() const {
  if (const auto* u = std::get_if<uint64_t>(&storage_)) return *u;
  if (const auto* i = std::get_if<int64_t>(&storage_); i != nullptr && *i >= 0) {
    return static_cast<uint64_t>(*i);
  }
  return std::nullopt;
}

std::optional<int64_t> GgufValue::as_int() const {
  if (const auto* i = std::get_if<int64_t>(&storage_)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&storage_); u != nullptr && *u <= INT64_MAX) {
    return static_cast<int64_t>(*u);
  }
  return std::nullopt;
}

std::optional<double> GgufValue::as_float() const {
  if (const auto* f = std::get_if<double>(&storage_)) return *f;
  return std::nullopt;
}

std::optional<bool> GgufValue::as_bool() const {
  if (const auto* b = std::get_if<bool>(&storage_)) return *b;
  return std::nullopt;
}

const std::string* GgufValue::as_string() const { return std::get_if<std::string>(&storage_); }
const std::vector<uint64_t>* GgufValue::uints() const {
  return std::get_if<std::vector<uint64_t>>(&storage_);
}
const std::vector<int64_t>* GgufValue::ints() const {
  return std::get_if<std::vector<int64_t>>(&storage_);
}
const std::vector<double>* GgufValue::floats() const {
  return std::get_if<std::vector<double>>(&storage_);
}
const std::vector<bool>* GgufValue::bools() const {
  return std::get_if<std::vector<bool>>(&storage_);
}
const std::vector<std::string>* GgufValue::strings() const {
  return std::get_if<std::vector<std::string>>(&storage_);
}
const std::vector<GgufValue>* GgufValue::arrays() const {
  return std::get_if<std::vector<GgufValue>>(&storage_);
}

std::string GgufValue::describe() const {
  const std::string type = gguf_value_type_name(type_);
  if (is_array()) {
    return "array of " + std::to_string(array_size()) + " " + gguf_value_type_name(element_type_);
  }
  if (const auto* u = std::get_if<uint64_t>(&storage_)) return type + " " + std::to_string(*u);
  if (const auto* i = std::get_if<int64_t>(&storage_)) return type + " " + std::to_string(*i);
  if (const auto* f = std::get_if<double>(&storage_)) return type + " " + format_double(*f);
  if (const auto* b = std::get_if<bool>(&storage_)) return type + (*b ? " true" : " false");
  if (const auto* s = std::get_if<std::string>(&storage_)) return type + " " + quote(*s);
  return type;
}

// ---- GgufTensorInfo and GgufContents -----------------------------------------------------------

std::vector<int64_t> GgufTensorInfo::shape() const { return {ne.rbegin(), ne.rend()}; }

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

const GgufValue* GgufContents::find(std::string_view key) const {
  auto it = keys.find(key);
  return it == keys.end() ? nullptr : &metadata[it->second].value;
}

const GgufTensorInfo* GgufContents::find_tensor(std::string_view name) const {
  auto it = tensor_names.find(name);
  return it == tensor_names.end() ? nullptr : &tensors[it->second];
}

namespace {

// The value of `key` converted by `get` (which returns an optional), or the accessor errors.
template <typename R, typename Get>
Result<R> get_typed(const GgufContents& c, std::string_view key, std::string_view expected,
                    Get get) {
  const GgufValue* value = c.find(key);
  if (value == nullptr)
    return not_found(c.file_name + ": metadata key " + quote(key) + " not found");
  if (std::optional<R> r = get(*value); r.has_value()) return *r;
  return data_loss(c.file_name + ": metadata key " + quote(key) + ": expected " +
                   std::string(expected) + ", found " + value->describe());
}

}  // namespace

Result<uint32_t> GgufContents::get_u32(std::string_view key) const {
  return get_typed<uint32_t>(*this, key, "u32", [](const GgufValue& v) -> std::optional<uint32_t> {
    auto u = v.as_uint();
    if (!u.has_value() || *u > UINT32_MAX) return std::nullopt;
    return static_cast<uint32_t>(*u);
  });
}

Result<uint64_t> GgufContents::get_u64(std::string_view key) const {
  return get_typed<uint64_t>(*this, key, "u64", [](const GgufValue& v) { return v.as_uint(); });
}

Result<int64_t> GgufContents::get_i64(std::string_view key) const {
  return get_typed<int64_t>(*this, key, "i64", [](const GgufValue& v) { return v.as_int(); });
}

Result<float> GgufContents::get_f32(std::string_view key) const {
  return get_typed<float>(*this, key, "f32", [](const GgufValue& v) -> std::optional<float> {
    auto f = v.as_float();
    // A finite double beyond float's range has no float value (converting it is undefined).
    if (!f.has_value() || (std::isfinite(*f) && std::fabs(*f) > FLT_MAX)) return std::nullopt;
    return static_cast<float>(*f);
  });
}

Result<double> GgufContents::get_f64(std::string_view key) const {
  return get_typed<double>(*this, key, "f64", [](const GgufValue& v) { return v.as_float(); });
}

Result<bool> GgufContents::get_bool(std::string_view key) const {
  return get_typed<bool>(*this, key, "bool", [](const GgufValue& v) { return v.as_bool(); });
}

Result<std::string> GgufContents::get_string(std::string_view key) const {
  return get_typed<std::string>(*this, key, "string",
                                [](const GgufValue& v) -> std::optional<std::string> {
                                  if (const std::string* s = v.as_string()) return *s;
                                  return std::nullopt;
                                });
}

Result<const GgufValue*> GgufContents::get_array(std::string_view key,
                                                 GgufValueType element_type) const {
  return get_typed<const GgufValue*>(
      *this, key, "array of " + gguf_value_type_name(element_type),
      [element_type](const GgufValue& v) -> std::optional<const GgufValue*> {
        if (!v.is_array() || v.element_type() != element_type) return std::nullopt;
        return &v;
      });
}

Result<GgufContents> parse_gguf(const uint8_t* data, size_t size, std::string_view file_name) {
  return Parser(data, size, file_name).parse();
}

Status check_gguf_dequantizable(const GgufTensorInfo& tensor, std::string_view file_name) {
  const GgmlTypeInfo* info = ggml_type_info(tensor.type);
  if (info != nullptr && info->dequantize) return Status::ok();
  return unimplemented(std::string(file_name) + ": tensor " + quote(tensor.name) +
                       " has ggml type " + ggml_type_name(tensor.type) +
                       ", which this engine does not load (supported: " + kGgmlDequantizableTypes +
                       ")");
}

// ---- GgufFile --------------------------------------------------------------------------------

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::filesystem::path& path) {
  TS_ASSIGN_OR_RETURN(MappedFile map, MappedFile::open(path, 1, [](size_t) {
                        return std::string("file is empty, expected a GGUF file");
                      }));
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->map_ = std::move(map);
  TS_ASSIGN_OR_RETURN(file->contents_,
                      parse_gguf(file->map_.data(), file->map_.size(), path.string()));
  return file;
}

GgufFile::~GgufFile() = default;

const uint8_t* GgufFile::data(const GgufTensorInfo& tensor) const {
  const auto& tensors = contents_.tensors;
  TS_CHECK(&tensor >= tensors.data() && &tensor < tensors.data() + tensors.size())
      << "tensor '" << tensor.name << "' does not belong to " << path_.string();
  return map_.data() + tensor.offset;
}

Status GgufFile::dequantize(const GgufTensorInfo& tensor, float* dst) const {
  TS_RETURN_IF_ERROR(check_gguf_dequantizable(tensor, path_.string()));
  return dequantize_gguf_row(tensor.type, data(tensor), tensor.numel(), dst);
}

bool is_gguf_path(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext == ".gguf";
}

std::optional<std::filesystem::path> gguf_file_of(const std::filesystem::path& model_path) {
  if (is_gguf_path(model_path)) return model_path;
  std::error_code ec;
  if (!std::filesystem::is_directory(model_path, ec) ||
      std::filesystem::exists(model_path / "config.json", ec)) {
    return std::nullopt;
  }
  std::optional<std::filesystem::path> found;
  for (const auto& e : std::filesystem::directory_iterator(model_path, ec)) {
    if (!is_gguf_path(e.path())) continue;
    if (found) return std::nullopt;  // several: the user has to name one
    found = e.path();
  }
  return found;
}

}  // namespace tierserve
