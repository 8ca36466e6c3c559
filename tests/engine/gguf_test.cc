#include "engine/gguf.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "engine/gguf_model.h"
#include "kernels/q4_weight.h"
#include "kernels/q8_weight.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr const char* kFile = "model.gguf";

// ---- A small writer of GGUF images -----------------------------------------------------------

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_string(std::vector<uint8_t>& out, std::string_view s) {
  put_u64(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

// Encoded value payloads (without the value type id).
std::vector<uint8_t> u32_value(uint32_t v) {
  std::vector<uint8_t> out;
  put_u32(out, v);
  return out;
}
std::vector<uint8_t> string_value(std::string_view s) {
  std::vector<uint8_t> out;
  put_string(out, s);
  return out;
}

struct KeyValue {
  std::string key;
  uint32_t type;                 // GGUF value type id
  std::vector<uint8_t> payload;  // the encoded value
};

struct Tensor {
  std::string name;
  std::vector<uint64_t> ne;  // GGUF order
  uint32_t type;             // ggml type id
  uint64_t offset;           // relative to the data section
};

struct Image {
  uint32_t version = 3;
  std::vector<KeyValue> metadata;
  std::vector<Tensor> tensors;
  uint64_t alignment = 32;  // padding before the data section (general.alignment is separate)
  size_t data_bytes = 0;    // bytes of data section (a byte pattern)
};

std::vector<uint8_t> build(const Image& spec) {
  std::vector<uint8_t> out = {'G', 'G', 'U', 'F'};
  put_u32(out, spec.version);
  put_u64(out, spec.tensors.size());
  put_u64(out, spec.metadata.size());
  for (const KeyValue& kv : spec.metadata) {
    put_string(out, kv.key);
    put_u32(out, kv.type);
    out.insert(out.end(), kv.payload.begin(), kv.payload.end());
  }
  for (const Tensor& t : spec.tensors) {
    put_string(out, t.name);
    put_u32(out, static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) put_u64(out, d);
    put_u32(out, t.type);
    put_u64(out, t.offset);
  }
  out.resize((out.size() + spec.alignment - 1) / spec.alignment * spec.alignment, 0);
  for (size_t i = 0; i < spec.data_bytes; ++i) out.push_back(static_cast<uint8_t>(i * 7 + 1));
  return out;
}

// A valid small file: two metadata entries and two F32 tensors, 16 + 8 bytes of data.
Image small_image() {
  Image spec;
  spec.metadata = {{"general.architecture", 8, string_value("llama")},
                   {"llama.block_count", 4, u32_value(2)}};
  spec.tensors = {{"a", {4}, 0, 0}, {"b", {2}, 0, 32}};
  spec.data_bytes = 40;
  return spec;
}

// Parses an image held in a buffer of exactly its size, so that ASan flags any read past it.
Result<GgufContents> parse(const std::vector<uint8_t>& image) {
  auto exact = std::make_unique<uint8_t[]>(image.size());
  if (!image.empty()) std::memcpy(exact.get(), image.data(), image.size());
  return parse_gguf(image.empty() ? nullptr : exact.get(), image.size(), kFile);
}

// Expects an error of `code` whose message is one line, starts with the file name and contains
// every fragment.
void expect_error(const Status& status, StatusCode code, std::vector<std::string> fragments,
                  const std::string& file = kFile) {
  EXPECT_EQ(status.code(), code) << status.to_string();
  EXPECT_EQ(status.message().rfind(file + ": ", 0), 0u) << status.message();
  EXPECT_EQ(status.message().find('\n'), std::string::npos) << status.message();
  for (const std::string& f : fragments) EXPECT_THAT(status.message(), HasSubstr(f));
}

void expect_parse_error(const Image& spec, StatusCode code, std::vector<std::string> fragments) {
  auto result = parse(build(spec));
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), code, std::move(fragments));
}

// ---- parse_gguf: valid files -----------------------------------------------------------------

TEST(ParseGgufTest, ReadsASmallFile) {
  auto result = parse(build(small_image()));
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const GgufContents& c = result.value();
  EXPECT_EQ(c.version, 3u);
  EXPECT_EQ(c.alignment, 32u);
  ASSERT_EQ(c.metadata.size(), 2u);
  EXPECT_EQ(c.metadata[0].key, "general.architecture");
  EXPECT_EQ(c.get_string("general.architecture").value(), "llama");
  EXPECT_EQ(c.get_u32("llama.block_count").value(), 2u);
  ASSERT_EQ(c.tensors.size(), 2u);
  const size_t header =
      4 + 4 + 8 + 8 + (8 + 20 + 4 + 8 + 5) + (8 + 17 + 4 + 4) + 2 * (8 + 1 + 4 + 8 + 4 + 8);
  EXPECT_EQ(c.data_offset, (header + 31) / 32 * 32);
  EXPECT_EQ(c.tensors[0].name, "a");
  EXPECT_EQ(c.tensors[0].type, GgmlType::kF32);
  EXPECT_THAT(c.tensors[0].ne, ElementsAre(4));
  EXPECT_EQ(c.tensors[0].offset, c.data_offset);
  EXPECT_EQ(c.tensors[0].nbytes, 16u);
  EXPECT_EQ(c.tensors[1].offset, c.data_offset + 32);
  EXPECT_EQ(c.find_tensor("b"), &c.tensors[1]);
  EXPECT_EQ(c.find_tensor("c"), nullptr);
}

TEST(ParseGgufTest, AcceptsVersion2AndFilesWithoutTensors) {
  Image spec = small_image();
  spec.version = 2;
  EXPECT_TRUE(parse(build(spec)).is_ok());

  Image empty;
  std::vector<uint8_t> image = build(empty);
  ASSERT_EQ(image.size(), 32u);  // 24 bytes of header, padded
  image.resize(24);              // a file that ends right after its header is complete
  auto result = parse(image);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_TRUE(result.value().tensors.empty());
}

TEST(ParseGgufTest, ShapeIsNeReversed) {
  Image spec;
  spec.tensors = {{"w", {32, 3, 2}, 8, 0}};  // Q8_0: 6 rows of one block
  spec.data_bytes = 6 * 34;
  auto result = parse(build(spec));
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const GgufTensorInfo& t = result.value().tensors[0];
  EXPECT_THAT(t.ne, ElementsAre(32, 3, 2));
  EXPECT_THAT(t.shape(), ElementsAre(2, 3, 32));
  EXPECT_EQ(t.numel(), 192);
  EXPECT_EQ(t.row_length(), 32);
  EXPECT_EQ(t.num_rows(), 6);
  EXPECT_EQ(t.nbytes, 6u * 34u);
}

TEST(ParseGgufTest, UsesGeneralAlignment) {
  Image spec = small_image();
  spec.metadata.push_back({"general.alignment", 4, u32_value(64)});
  spec.alignment = 64;
  spec.tensors = {{"a", {4}, 0, 0}, {"b", {2}, 0, 64}};
  spec.data_bytes = 72;
  auto result = parse(build(spec));
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_EQ(result.value().alignment, 64u);
  EXPECT_EQ(result.value().data_offset % 64, 0u);
  EXPECT_EQ(result.value().tensors[1].offset, result.value().data_offset + 64);
}

TEST(ParseGgufTest, AcceptsTensorsOfTypesWithoutDequantizer) {
  Image spec;
  spec.tensors = {{"iq2_xxs", {256}, 16, 0}};
  spec.data_bytes = 66;
  auto result = parse(build(spec));
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const GgufTensorInfo& t = result.value().tensors[0];
  EXPECT_EQ(t.type, GgmlType::kIQ2_XXS);
  EXPECT_EQ(t.nbytes, 66u);
  Status status = check_gguf_dequantizable(t, kFile);
  expect_error(status, StatusCode::kUnimplemented,
               {"tensor 'iq2_xxs'", "ggml type IQ2_XXS", kGgmlDequantizableTypes});
  EXPECT_EQ(dequantize_gguf_row(t.type, nullptr, 256, nullptr).code(), StatusCode::kUnimplemented);
}

// ---- parse_gguf: malformed files -------------------------------------------------------------

TEST(ParseGgufTest, RejectsWrongMagicAndVersions) {
  std::vector<uint8_t> image = build(small_image());
  image[3] = 'X';
  auto magic = parse(image);
  ASSERT_FALSE(magic.is_ok());
  expect_error(magic.status(), StatusCode::kDataLoss, {"not a GGUF file", "magic"});

  Image spec = small_image();
  spec.version = 1;
  expect_parse_error(spec, StatusCode::kUnimplemented, {"GGUF version 1 is not supported"});
  spec.version = 4;
  expect_parse_error(spec, StatusCode::kUnimplemented, {"GGUF version 4 is not supported"});
  spec.version = 0;
  expect_parse_error(spec, StatusCode::kDataLoss, {"GGUF version 0"});
  spec.version = 0x03000000;  // a big-endian file's version read little-endian
  expect_parse_error(spec, StatusCode::kUnimplemented, {"big-endian"});
}

TEST(ParseGgufTest, EveryTruncationIsAnError) {
  const std::vector<uint8_t> image = build(small_image());
  for (size_t n = 0; n < image.size(); ++n) {
    auto result = parse(std::vector<uint8_t>(image.begin(), image.begin() + n));
    ASSERT_FALSE(result.is_ok()) << "prefix of " << n << " bytes";
    expect_error(result.status(), StatusCode::kDataLoss, {});
  }
  // Where the cut falls decides the message.
  auto in_counts = parse(std::vector<uint8_t>(image.begin(), image.begin() + 30));
  expect_error(in_counts.status(), StatusCode::kDataLoss,
               {"metadata key/value count 2 cannot fit in the 6 bytes after the header"});
  // Header (24), two entries (45 + 33), then tensor 'a': name (9), n_dims (4), ne[0] from 115.
  auto in_tensor = parse(std::vector<uint8_t>(image.begin(), image.begin() + 122));
  expect_error(in_tensor.status(), StatusCode::kDataLoss,
               {"truncated at byte 115 reading dimension 0 of tensor 'a'"});
  auto in_data = parse(std::vector<uint8_t>(image.begin(), image.end() - 1));
  expect_error(in_data.status(), StatusCode::kDataLoss,
               {"tensor 'b'", "extends past the end of the file"});
}

TEST(ParseGgufTest, RejectsStringsPastTheEnd) {
  Image key = small_image();
  key.metadata[0].key = "k";
  std::vector<uint8_t> image = build(key);
  // The first key's length (at byte 24) becomes 2^40.
  image[24 + 5] = 1;
  auto result = parse(image);
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kDataLoss,
               {"key of metadata entry 0", "string length 1099511627777", "exceeds"});

  Image value = small_image();
  value.metadata[0].payload = {0xff, 0xff, 0, 0, 0, 0, 0, 0, 'x'};
  expect_parse_error(value, StatusCode::kDataLoss,
                     {"metadata key 'general.architecture'", "string length 65535"});
}

TEST(ParseGgufTest, RejectsCountsThatCannotFit) {
  for (int which = 0; which < 2; ++which) {
    std::vector<uint8_t> image = build(small_image());
    const size_t at = which == 0 ? 8 : 16;  // tensor count, metadata count
    for (int i = 0; i < 8; ++i) image[at + i] = i == 7 ? 0x40 : 0;
    auto result = parse(image);
    ASSERT_FALSE(result.is_ok());
    expect_error(result.status(), StatusCode::kDataLoss,
                 {which == 0 ? "tensor count 4611686018427387904" : "metadata key/value count",
                  "cannot fit"});
  }
  Image array = small_image();
  std::vector<uint8_t> payload;
  put_u32(payload, 4);  // u32 elements
  put_u64(payload, uint64_t{1} << 61);
  array.metadata.push_back({"big", 9, payload});
  expect_parse_error(array, StatusCode::kDataLoss,
                     {"metadata key 'big'", "array of 2305843009213693952 u32", "cannot fit"});
}

TEST(ParseGgufTest, RejectsBadValues) {
  Image type = small_image();
  type.metadata.push_back({"odd", 13, u32_value(0)});
  expect_parse_error(type, StatusCode::kDataLoss,
                     {"metadata key 'odd'", "unknown value type 13", "0-12"});

  Image elem = small_image();
  std::vector<uint8_t> payload;
  put_u32(payload, 99);
  put_u64(payload, 0);
  elem.metadata.push_back({"arr", 9, payload});
  expect_parse_error(elem, StatusCode::kDataLoss, {"metadata key 'arr'", "unknown value type 99"});

  Image boolean = small_image();
  boolean.metadata.push_back({"flag", 7, {2}});
  expect_parse_error(boolean, StatusCode::kDataLoss, {"bool byte 2", "neither 0 nor 1"});

  Image twice = small_image();
  twice.metadata.push_back({"llama.block_count", 4, u32_value(3)});
  expect_parse_error(twice, StatusCode::kDataLoss,
                     {"metadata key 'llama.block_count' appears twice"});
}

// An array nested `depth` deep around an empty u8 array.
std::vector<uint8_t> nested_array(int depth) {
  std::vector<uint8_t> payload;
  for (int i = 1; i < depth; ++i) {
    put_u32(payload, 9);
    put_u64(payload, 1);
  }
  put_u32(payload, 0);
  put_u64(payload, 0);
  return payload;
}

TEST(ParseGgufTest, BoundsArrayNesting) {
  Image ok = small_image();
  ok.metadata.push_back({"deep", 9, nested_array(8)});
  auto result = parse(build(ok));
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const GgufValue* v = result.value().find("deep");
  for (int i = 1; i < 8; ++i) {
    ASSERT_NE(v->arrays(), nullptr);
    ASSERT_EQ(v->array_size(), 1u);
    v = &(*v->arrays())[0];
  }
  EXPECT_EQ(v->element_type(), GgufValueType::kU8);
  EXPECT_EQ(v->array_size(), 0u);

  Image deep = small_image();
  deep.metadata.push_back({"deep", 9, nested_array(9)});
  expect_parse_error(deep, StatusCode::kDataLoss, {"metadata key 'deep'", "nested deeper than 8"});
}

TEST(ParseGgufTest, RejectsBadAlignment) {
  for (uint32_t alignment : {0u, 48u}) {
    Image spec = small_image();
    spec.metadata.push_back({"general.alignment", 4, u32_value(alignment)});
    expect_parse_error(
        spec, StatusCode::kDataLoss,
        {"general.alignment " + std::to_string(alignment) + " is not a power of two"});
  }
  Image text = small_image();
  text.metadata.push_back({"general.alignment", 8, string_value("32")});
  expect_parse_error(text, StatusCode::kDataLoss,
                     {"general.alignment is string '32'", "expected an unsigned integer"});
}

TEST(ParseGgufTest, RejectsBadTensorInfos) {
  struct Case {
    Tensor tensor;
    StatusCode code;
    std::string fragment;
  };
  const uint64_t big = uint64_t{1} << 32;
  const Case cases[] = {
      {{"t", {1, 1, 1, 1, 1}, 0, 0}, StatusCode::kDataLoss, "tensor 't': 5 dimensions (at most 4)"},
      {{"t", {4, 0}, 0, 0}, StatusCode::kDataLoss, "tensor 't': dimension 1 is 0"},
      {{"t", {uint64_t{1} << 63}, 0, 0},
       StatusCode::kDataLoss,
       "dimension 0 is 9223372036854775808"},
      {{"t", {big, big}, 0, 0}, StatusCode::kDataLoss, "overflows a 64-bit element count"},
      {{"t", {uint64_t{1} << 62}, 0, 0}, StatusCode::kDataLoss, "overflows a 64-bit byte count"},
      {{"t", {100}, 12, 0},
       StatusCode::kDataLoss,
       "row length ne[0] = 100 is not a multiple of Q4_K's block size 256"},
      {{"t", {4}, 99, 0}, StatusCode::kUnimplemented, "tensor 't': unknown ggml type id 99"},
      {{"t", {4}, 4, 0}, StatusCode::kUnimplemented, "unknown ggml type id 4"},  // removed Q4_2
      {{"t", {4}, 0, 16}, StatusCode::kDataLoss, "offset 16 is not a multiple of the alignment 32"},
      {{"t", {4}, 0, 64}, StatusCode::kDataLoss, "extends past the end of the file"},
      {{"t", {4}, 0, ~uint64_t{0} - 31}, StatusCode::kDataLoss, "extends past the end"},
  };
  for (const Case& c : cases) {
    Image spec;
    spec.tensors = {c.tensor};
    spec.data_bytes = 64;
    SCOPED_TRACE(c.fragment);
    expect_parse_error(spec, c.code, {c.fragment});
  }
}

TEST(ParseGgufTest, RejectsOverlapsAndDuplicateNames) {
  Image overlap;
  overlap.tensors = {{"a", {16}, 0, 0}, {"b", {4}, 0, 32}};  // a is 64 bytes
  overlap.data_bytes = 96;
  expect_parse_error(overlap, StatusCode::kDataLoss, {"tensor 'b'", "overlaps tensor 'a'"});

  Image twice;
  twice.tensors = {{"a", {4}, 0, 0}, {"a", {4}, 0, 32}};
  twice.data_bytes = 64;
  expect_parse_error(twice, StatusCode::kDataLoss, {"tensor 'a' appears twice"});
}

TEST(ParseGgufTest, QuotesNamesSafely) {
  Image spec;
  spec.tensors = {{std::string("x\ny") + std::string(200, 'z'), {4, 0}, 0, 0}};
  auto result = parse(build(spec));
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kDataLoss, {"tensor 'x\\x0ay", "zzz...'"});
}

// ---- Metadata accessors ----------------------------------------------------------------------

TEST(GgufContentsTest, TypedAccessorsConvertWhereTheValueFits) {
  Image spec;
  std::vector<uint8_t> i32_minus_one = u32_value(0xffffffffu);
  std::vector<uint8_t> u64_big;
  put_u64(u64_big, uint64_t{1} << 40);
  std::vector<uint8_t> strings;
  put_u32(strings, 8);
  put_u64(strings, 2);
  put_string(strings, "a");
  put_string(strings, "bc");
  spec.metadata = {{"u8", 0, {200}},
                   {"neg", 5, i32_minus_one},
                   {"big", 10, u64_big},
                   {"name", 8, string_value("abc")},
                   {"f", 6, u32_value(0x3f000000)},  // 0.5f
                   {"flag", 7, {1}},
                   {"list", 9, strings}};
  auto result = parse(build(spec));
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const GgufContents& c = result.value();
  EXPECT_EQ(c.get_u32("u8").value(), 200u);
  EXPECT_EQ(c.get_i64("u8").value(), 200);
  EXPECT_EQ(c.get_i64("neg").value(), -1);
  EXPECT_EQ(c.get_u64("big").value(), uint64_t{1} << 40);
  EXPECT_EQ(c.get_f32("f").value(), 0.5f);
  EXPECT_EQ(c.get_f64("f").value(), 0.5);
  EXPECT_TRUE(c.get_bool("flag").value());
  EXPECT_EQ(c.get_string("name").value(), "abc");
  auto list = c.get_array("list", GgufValueType::kString);
  ASSERT_TRUE(list.is_ok()) << list.status().to_string();
  ASSERT_NE(list.value()->strings(), nullptr);
  EXPECT_THAT(*list.value()->strings(), ElementsAre("a", "bc"));

  expect_error(c.get_u32("name").status(), StatusCode::kDataLoss,
               {"metadata key 'name': expected u32, found string 'abc'"});
  expect_error(c.get_u32("neg").status(), StatusCode::kDataLoss, {"expected u32, found i32 -1"});
  expect_error(c.get_u32("big").status(), StatusCode::kDataLoss,
               {"expected u32, found u64 1099511627776"});
  expect_error(c.get_f32("u8").status(), StatusCode::kDataLoss, {"expected f32, found u8 200"});
  expect_error(c.get_string("flag").status(), StatusCode::kDataLoss,
               {"expected string, found bool true"});
  expect_error(c.get_array("list", GgufValueType::kI32).status(), StatusCode::kDataLoss,
               {"expected array of i32, found array of 2 string"});
  expect_error(c.get_u32("missing").status(), StatusCode::kNotFound,
               {"metadata key 'missing' not found"});
}

// ---- Dequantization of hand-made blocks ------------------------------------------------------

constexpr uint16_t kF16One = 0x3C00;   // 1.0
constexpr uint16_t kF16Half = 0x3800;  // 0.5

void put_u16_at(std::vector<uint8_t>& block, size_t at, uint16_t v) {
  block[at] = static_cast<uint8_t>(v);
  block[at + 1] = static_cast<uint8_t>(v >> 8);
}

TEST(DequantizeGgufTest, Q4_0LowNibblesAreTheFirstHalf) {
  std::vector<uint8_t> block(18);
  put_u16_at(block, 0, kF16Half);
  for (int i = 0; i < 16; ++i) block[2 + i] = static_cast<uint8_t>(i | ((15 - i) << 4));
  float y[32];
  ASSERT_TRUE(dequantize_gguf_row(GgmlType::kQ4_0, block.data(), 32, y).is_ok());
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(y[i], 0.5f * static_cast<float>(i - 8)) << i;
    EXPECT_EQ(y[16 + i], 0.5f * static_cast<float>(7 - i)) << i;
  }
}

TEST(DequantizeGgufTest, Q8_0IsSignedBytesTimesScale) {
  std::vector<uint8_t> blocks(2 * 34);
  put_u16_at(blocks, 0, kF16One);
  put_u16_at(blocks, 34, 0xC000);  // -2.0
  for (int i = 0; i < 32; ++i) {
    blocks[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
    blocks[36 + i] = static_cast<uint8_t>(i == 0 ? 0x80 : i);  // -128, then 1..31
  }
  float y[64];
  ASSERT_TRUE(dequantize_gguf_row(GgmlType::kQ8_0, blocks.data(), 64, y).is_ok());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], static_cast<float>(i - 16));
  EXPECT_EQ(y[32], 256.0f);
  EXPECT_EQ(y[33], -2.0f);
}

TEST(DequantizeGgufTest, Q4_KUnpacksSixBitScalesAndMins) {
  // Sub-block scales and mins, packed as ggml's make_qkx / quantize_row_q4_K_ref packs them.
  const uint8_t sc[8] = {1, 2, 3, 4, 17, 33, 50, 63};
  const uint8_t mn[8] = {0, 1, 2, 3, 20, 40, 60, 5};
  std::vector<uint8_t> block(144);
  put_u16_at(block, 0, kF16One);   // d
  put_u16_at(block, 2, kF16Half);  // dmin
  for (int j = 0; j < 4; ++j) {
    block[4 + j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    block[8 + j] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    block[12 + j] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
  for (int i = 0; i < 128; ++i)
    block[16 + i] = static_cast<uint8_t>((i % 16) | ((15 - i % 16) << 4));
  float y[256];
  ASSERT_TRUE(dequantize_gguf_row(GgmlType::kQ4_K, block.data(), 256, y).is_ok());
  for (int e = 0; e < 256; ++e) {
    const int sub = e / 32;
    const int byte = (sub / 2) * 32 + e % 32;
    const int q = sub % 2 == 0 ? byte % 16 : 15 - byte % 16;
    EXPECT_EQ(y[e], static_cast<float>(sc[sub] * q) - 0.5f * static_cast<float>(mn[sub])) << e;
  }
}

TEST(DequantizeGgufTest, Q5_KAddsTheFifthBitFromQh) {
  std::vector<uint8_t> block(176);
  put_u16_at(block, 0, kF16One);   // d
  put_u16_at(block, 2, kF16Half);  // dmin
  // Sub-block scales 1..8 and mins 0..7 (all below 16: only the low bits are used).
  for (int j = 0; j < 4; ++j) {
    block[4 + j] = static_cast<uint8_t>(j + 1);
    block[8 + j] = static_cast<uint8_t>(j);
    block[12 + j] = static_cast<uint8_t>((j + 5) | ((j + 4) << 4));
  }
  for (int l = 0; l < 32; ++l) block[16 + l] = static_cast<uint8_t>(l * 37 + 3);   // qh
  for (int i = 0; i < 128; ++i) block[48 + i] = static_cast<uint8_t>(i * 29 + 7);  // qs
  float y[256];
  ASSERT_TRUE(dequantize_gguf_row(GgmlType::kQ5_K, block.data(), 256, y).is_ok());
  for (int e = 0; e < 256; ++e) {
    // Element e: sub-block j = e / 32, position l; nibble of qs[32 * (j / 2) + l] (high for odd
    // j), plus 16 when bit j of qh[l] is set.
    const int j = e / 32, l = e % 32;
    const int byte = block[48 + 32 * (j / 2) + l];
    const int q = (j % 2 == 0 ? byte & 15 : byte >> 4) + 16 * ((block[16 + l] >> j) & 1);
    EXPECT_EQ(y[e], static_cast<float>((j + 1) * q) - 0.5f * static_cast<float>(j)) << e;
  }
}

TEST(DequantizeGgufTest, Q6_KCombinesLowAndHighBits) {
  std::vector<uint8_t> block(210);
  for (int i = 0; i < 128; ++i) block[i] = static_cast<uint8_t>(i * 37 + 11);      // ql
  for (int i = 0; i < 64; ++i) block[128 + i] = static_cast<uint8_t>(i * 91 + 5);  // qh
  for (int i = 0; i < 16; ++i) block[192 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 8));
  put_u16_at(block, 208, kF16Half);
  float y[256];
  ASSERT_TRUE(dequantize_gguf_row(GgmlType::kQ6_K, block.data(), 256, y).is_ok());
  for (int e = 0; e < 256; ++e) {
    // Element e: half h, position p in the half; quarter k = p / 32 picks the nibble of ql
    // (k >= 2: high) at ql[64h + p % 64] and the bit pair 2k of qh[32h + p % 32].
    const int h = e / 128;
    const int p = e % 128;
    const int k = p / 32;
    const int low = k < 2 ? block[64 * h + p % 64] & 15 : block[64 * h + p % 64] >> 4;
    const int high = (block[128 + 32 * h + p % 32] >> (2 * k)) & 3;
    const int q = (low | (high << 4)) - 32;
    const int scale = static_cast<int8_t>(block[192 + e / 16]);
    EXPECT_EQ(y[e], 0.5f * static_cast<float>(scale) * static_cast<float>(q)) << e;
  }
}

// Q4_0 and Q4_K gemm weights are repacked into 4-bit blobs at load, not dequantized: the blob
// must give back exactly ggml's values, element for element.
TEST(GgufQ4Test, Q4_0AndQ4_KRepackExactly) {
  std::mt19937 rng(11);
  const int64_t rows = 5, cols = 512;
  for (const GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ4_K}) {
    const GgmlTypeInfo& info = *ggml_type_info(type);
    const int64_t blocks = rows * cols / info.block_size;
    std::vector<uint8_t> data(static_cast<size_t>(blocks * info.block_bytes));
    for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
    for (int64_t b = 0; b < blocks; ++b) {  // finite f16 scales (d, and dmin for Q4_K)
      for (int h = 0; h < (type == GgmlType::kQ4_K ? 2 : 1); ++h) {
        const float v = static_cast<float>(rng() % 2000) * 1e-6f;
        put_u16_at(data, static_cast<size_t>(b * info.block_bytes + 2 * h), f32_to_f16(v));
      }
    }
    const Q4Source src = type == GgmlType::kQ4_K ? q4_k_to_q4(data.data(), rows, cols)
                                                 : q4_0_to_q4(data.data(), rows, cols);
    auto layout = Q4Layout::make(rows, cols, 32, false, type == GgmlType::kQ4_K);
    ASSERT_TRUE(layout.is_ok()) << layout.status().to_string();
    std::vector<uint8_t> blob(layout.value().bytes);
    pack_q4(src, layout.value(), blob.data());
    const std::vector<float> got = dequantize_q4(blob.data(), layout.value());
    std::vector<float> want(static_cast<size_t>(rows * cols));
    ASSERT_TRUE(dequantize_gguf_row(type, data.data(), rows * cols, want.data()).is_ok());
    for (size_t e = 0; e < want.size(); ++e) {
      ASSERT_EQ(got[e], want[e]) << ggml_type_name(type) << " element " << e;
    }
  }
}

// Every quantized type's gemm weights can be repacked into 8-bit blobs (the Q4 types load as Q4
// blobs, the others as these): the same values as ggml's, element for element, mins included.
TEST(GgufQ8Test, QuantizedTypesRepackExactly) {
  std::mt19937 rng(13);
  const int64_t rows = 3, cols = 512;
  struct Case {
    GgmlType type;
    std::vector<int64_t> f16_offsets;  // of the block's f16 fields (d, and m or dmin)
  };
  const Case cases[] = {
      {GgmlType::kQ8_0, {0}},      {GgmlType::kQ4_0, {0}},    {GgmlType::kQ5_0, {0}},
      {GgmlType::kQ3_K, {108}},    {GgmlType::kQ6_K, {208}},  {GgmlType::kIQ4_NL, {0}},
      {GgmlType::kIQ4_XS, {0}},    {GgmlType::kQ4_1, {0, 2}}, {GgmlType::kQ5_1, {0, 2}},
      {GgmlType::kQ2_K, {80, 82}}, {GgmlType::kQ4_K, {0, 2}}, {GgmlType::kQ5_K, {0, 2}},
  };
  for (const Case& c : cases) {
    const GgmlTypeInfo& info = *ggml_type_info(c.type);
    SCOPED_TRACE(info.name);
    ASSERT_GT(info.q8_group, 0);
    const int64_t blocks = rows * cols / info.block_size;
    std::vector<uint8_t> data(static_cast<size_t>(blocks * info.block_bytes));
    for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
    for (int64_t b = 0; b < blocks; ++b) {  // finite f16 fields of either sign
      for (const int64_t at : c.f16_offsets) {
        const float v = static_cast<float>(static_cast<int>(rng() % 4001) - 2000) * 1e-6f;
        put_u16_at(data, static_cast<size_t>(b * info.block_bytes + at), f32_to_f16(v));
      }
    }
    auto layout = Q8Layout::make(rows, cols, static_cast<int32_t>(info.q8_group), info.q8_mins);
    ASSERT_TRUE(layout.is_ok()) << layout.status().to_string();
    std::vector<uint8_t> blob(layout.value().bytes, 0xAB);
    ggml_to_q8(c.type, data.data(), layout.value(), blob.data());
    std::vector<float> got(static_cast<size_t>(rows * cols)), want(got.size());
    dequantize_q8_rows(blob.data(), layout.value(), 0, rows, got.data());
    ASSERT_TRUE(dequantize_gguf_row(c.type, data.data(), rows * cols, want.data()).is_ok());
    for (size_t e = 0; e < want.size(); ++e) {
      ASSERT_EQ(std::bit_cast<uint32_t>(got[e]), std::bit_cast<uint32_t>(want[e]))
          << "element " << e;
    }
  }
}

TEST(DequantizeGgufTest, PlainFloatTypes) {
  const uint16_t halves[3] = {kF16One, 0x0001, 0xFC00};  // 1, smallest subnormal, -inf
  float y[3];
  ASSERT_TRUE(
      dequantize_gguf_row(GgmlType::kF16, reinterpret_cast<const uint8_t*>(halves), 3, y).is_ok());
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], std::ldexp(1.0f, -24));
  EXPECT_EQ(y[2], -std::numeric_limits<float>::infinity());
  const uint16_t bf[2] = {0x3F80, 0xC040};  // 1, -3
  ASSERT_TRUE(
      dequantize_gguf_row(GgmlType::kBF16, reinterpret_cast<const uint8_t*>(bf), 2, y).is_ok());
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -3.0f);
}

TEST(DequantizeGgufTest, RejectsPartialBlocks) {
  std::vector<uint8_t> block(34);
  float y[32];
  Status status = dequantize_gguf_row(GgmlType::kQ8_0, block.data(), 31, y);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("31 elements of Q8_0: not a multiple of its block size 32"));
  EXPECT_EQ(dequantize_gguf_row(GgmlType::kQ8_0, block.data(), -32, y).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(dequantize_gguf_row(GgmlType::kQ8_0, block.data(), 0, y).is_ok());
}

TEST(GgmlTypeTest, LayoutsMatchGgml) {
  struct Case {
    GgmlType type;
    int64_t block_size;
    int64_t block_bytes;
    bool dequantize;
    int64_t q8_group;
    bool q8_mins;
  };
  const Case cases[] = {
      {GgmlType::kF32, 1, 4, true, 0, false},       {GgmlType::kF16, 1, 2, true, 0, false},
      {GgmlType::kBF16, 1, 2, true, 0, false},      {GgmlType::kQ8_0, 32, 34, true, 32, false},
      {GgmlType::kQ8_1, 32, 36, false, 0, false},   {GgmlType::kQ4_0, 32, 18, true, 32, false},
      {GgmlType::kQ4_1, 32, 20, true, 32, true},    {GgmlType::kQ5_0, 32, 22, true, 32, false},
      {GgmlType::kQ5_1, 32, 24, true, 32, true},    {GgmlType::kQ4_K, 256, 144, true, 32, true},
      {GgmlType::kQ6_K, 256, 210, true, 16, false}, {GgmlType::kQ5_K, 256, 176, true, 32, true},
      {GgmlType::kQ2_K, 256, 84, true, 16, true},   {GgmlType::kQ3_K, 256, 110, true, 16, false},
      {GgmlType::kIQ4_NL, 32, 18, true, 32, false}, {GgmlType::kIQ4_XS, 256, 136, true, 32, false},
      {GgmlType::kQ8_K, 256, 292, false, 0, false}, {GgmlType::kIQ2_XXS, 256, 66, false, 0, false},
  };
  for (const Case& c : cases) {
    const GgmlTypeInfo* info = ggml_type_info(c.type);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->block_size, c.block_size) << info->name;
    EXPECT_EQ(info->block_bytes, c.block_bytes) << info->name;
    EXPECT_EQ(info->dequantize, c.dequantize) << info->name;
    EXPECT_EQ(info->q8_group, c.q8_group) << info->name;
    EXPECT_EQ(info->q8_mins, c.q8_mins) << info->name;
  }
  EXPECT_EQ(ggml_type_info(4u), nullptr);
  EXPECT_EQ(ggml_type_name(GgmlType::kQ4_K), "Q4_K");
  EXPECT_EQ(ggml_type_name(static_cast<GgmlType>(77)), "unknown type 77");
}

// ---- Files written by make_gguf.py, against its numpy reference -------------------------------

const fs::path kFixtures = TIERSERVE_GGUF_FIXTURES_DIR;

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool is_unsigned_name(const std::string& t) {
  return t == "u8" || t == "u16" || t == "u32" || t == "u64";
}
bool is_signed_name(const std::string& t) {
  return t == "i8" || t == "i16" || t == "i32" || t == "i64";
}

// Compares one array value with make_gguf.py's {"element_type", "value"} description.
void expect_array(const GgufValue& v, const json& expected, const std::string& where) {
  const std::string elem = expected.at("element_type");
  const json& items = expected.at("value");
  EXPECT_EQ(v.type(), GgufValueType::kArray) << where;
  EXPECT_EQ(gguf_value_type_name(v.element_type()), elem) << where;
  ASSERT_EQ(v.array_size(), items.size()) << where;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (is_unsigned_name(elem)) {
      ASSERT_NE(v.uints(), nullptr) << at;
      EXPECT_EQ((*v.uints())[i], items[i].get<uint64_t>()) << at;
    } else if (is_signed_name(elem)) {
      ASSERT_NE(v.ints(), nullptr) << at;
      EXPECT_EQ((*v.ints())[i], items[i].get<int64_t>()) << at;
    } else if (elem == "f32" || elem == "f64") {
      ASSERT_NE(v.floats(), nullptr) << at;
      EXPECT_EQ((*v.floats())[i], items[i].get<double>()) << at;
    } else if (elem == "bool") {
      ASSERT_NE(v.bools(), nullptr) << at;
      EXPECT_EQ((*v.bools())[i], items[i].get<bool>()) << at;
    } else if (elem == "string") {
      ASSERT_NE(v.strings(), nullptr) << at;
      EXPECT_EQ((*v.strings())[i], items[i].get<std::string>()) << at;
    } else {
      ASSERT_EQ(elem, "array") << at;
      ASSERT_NE(v.arrays(), nullptr) << at;
      expect_array((*v.arrays())[i], items[i], at);
    }
  }
}

void expect_value(const GgufValue& v, const json& expected, const std::string& where) {
  const std::string type = expected.at("type");
  const json& value = expected.at("value");
  EXPECT_EQ(gguf_value_type_name(v.type()), type) << where;
  if (type == "array") return expect_array(v, value, where);
  if (is_unsigned_name(type)) {
    EXPECT_EQ(v.as_uint(), value.get<uint64_t>()) << where;
  } else if (is_signed_name(type)) {
    EXPECT_EQ(v.as_int(), value.get<int64_t>()) << where;
  } else if (type == "f32" || type == "f64") {
    EXPECT_EQ(v.as_float(), value.get<double>()) << where;
  } else if (type == "bool") {
    EXPECT_EQ(v.as_bool(), value.get<bool>()) << where;
  } else {
    ASSERT_EQ(type, "string") << where;
    ASSERT_NE(v.as_string(), nullptr) << where;
    EXPECT_EQ(*v.as_string(), value.get<std::string>()) << where;
  }
}

uint32_t float_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

// Opens <stem>.gguf and checks everything <stem>.json and <stem>.f32 say it holds.
void check_fixture(const std::string& stem) {
  const fs::path path = kFixtures / (stem + ".gguf");
  std::ifstream json_in(kFixtures / (stem + ".json"));
  ASSERT_TRUE(json_in) << "missing " << (kFixtures / (stem + ".json"))
                       << " (written by the fixtures_make_gguf test)";
  const json ref = json::parse(json_in);
  const std::vector<uint8_t> value_bytes =
      read_bytes(kFixtures / ref.at("values_file").get<std::string>());
  std::vector<float> values(value_bytes.size() / 4);
  std::memcpy(values.data(), value_bytes.data(), values.size() * 4);

  auto file = GgufFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  const GgufContents& c = file.value()->contents();
  EXPECT_EQ(c.version, ref.at("version").get<uint32_t>());
  EXPECT_EQ(c.alignment, ref.at("alignment").get<uint64_t>());
  EXPECT_EQ(c.data_offset, ref.at("data_offset").get<uint64_t>());

  const json& metadata = ref.at("metadata");
  ASSERT_EQ(c.metadata.size(), metadata.size());
  for (size_t i = 0; i < metadata.size(); ++i) {
    const std::string key = metadata[i].at("key");
    EXPECT_EQ(c.metadata[i].key, key);
    const GgufValue* v = c.find(key);
    ASSERT_NE(v, nullptr) << key;
    expect_value(*v, metadata[i], key);
  }

  const json& tensors = ref.at("tensors");
  ASSERT_EQ(c.tensors.size(), tensors.size());
  int checked = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const json& want = tensors[i];
    const GgufTensorInfo& t = c.tensors[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, want.at("name").get<std::string>());
    EXPECT_EQ(static_cast<uint32_t>(t.type), want.at("type").get<uint32_t>());
    EXPECT_EQ(ggml_type_name(t.type), want.at("type_name").get<std::string>());
    EXPECT_EQ(t.ne, want.at("ne").get<std::vector<int64_t>>());
    EXPECT_EQ(t.offset, want.at("offset").get<uint64_t>());
    EXPECT_EQ(t.nbytes, want.at("nbytes").get<uint64_t>());
    const bool dequantizable = want.at("dequantize").get<bool>();
    EXPECT_EQ(check_gguf_dequantizable(t, path.string()).is_ok(), dequantizable);
    if (!dequantizable) continue;

    // Row by row from the mapping, as a loader would.
    const size_t begin = want.at("values_offset").get<size_t>();
    ASSERT_LE(begin + t.numel(), values.size());
    const GgmlTypeInfo* info = ggml_type_info(t.type);
    const int64_t row_bytes = t.row_length() / info->block_size * info->block_bytes;
    // Every type bit for bit: the reference rounds each product and difference in ggml's order.
    std::vector<float> rows(t.numel());
    for (int64_t r = 0; r < t.num_rows(); ++r) {
      float* row = rows.data() + r * t.row_length();
      ASSERT_TRUE(
          dequantize_gguf_row(t.type, file.value()->data(t) + r * row_bytes, t.row_length(), row)
              .is_ok());
      for (int64_t e = 0; e < t.row_length(); ++e) {
        const float want_v = values[begin + r * t.row_length() + e];
        ASSERT_EQ(float_bits(row[e]), float_bits(want_v))
            << "row " << r << " element " << e << ": " << row[e] << " vs " << want_v;
      }
    }
    // The whole tensor at once gives the same values as row by row.
    std::vector<float> all(t.numel());
    ASSERT_TRUE(file.value()->dequantize(t, all.data()).is_ok());
    for (int64_t e = 0; e < t.numel(); ++e) ASSERT_EQ(float_bits(all[e]), float_bits(rows[e])) << e;
    ++checked;
  }
  EXPECT_GT(checked, 0);

  // Every prefix of the file that cuts into its last tensor's data or before is an error, never
  // a crash or an out-of-bounds read (the padding after the last tensor is not needed).
  const std::vector<uint8_t> image = read_bytes(path);
  uint64_t data_end = 0;
  for (const GgufTensorInfo& t : c.tensors) data_end = std::max(data_end, t.offset + t.nbytes);
  ASSERT_LE(data_end, image.size());
  EXPECT_TRUE(parse(std::vector<uint8_t>(image.begin(), image.begin() + data_end)).is_ok());
  for (size_t n = 0; n < data_end; ++n) {
    auto result = parse(std::vector<uint8_t>(image.begin(), image.begin() + n));
    ASSERT_FALSE(result.is_ok()) << "prefix of " << n << " bytes";
    ASSERT_EQ(result.status().code(), StatusCode::kDataLoss) << result.status().to_string();
  }
}

TEST(GgufFixtureTest, AllTypes) {
  check_fixture("all_types");
  // Spot checks that do not go through the JSON.
  auto file = GgufFile::open(kFixtures / "all_types.gguf");
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  const GgufContents& c = file.value()->contents();
  EXPECT_EQ(c.get_string("general.architecture").value(), "llama");
  EXPECT_EQ(c.get_u32("test.u32").value(), 4000000000u);
  EXPECT_EQ(c.get_i64("test.i8").value(), -100);
  EXPECT_EQ(c.get_u64("test.u64").value(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(c.get_i64("test.i64").value(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(c.get_f32("test.f32").value(), 0.1f);
  EXPECT_EQ(c.get_f64("test.f64").value(), -1.0 / 3.0);
  EXPECT_FALSE(c.get_bool("test.bool_false").value());
  EXPECT_EQ(c.get_string("test.string_utf8").value(), "h\xc3\xa9llo \xe2\x9c\x93");
  EXPECT_EQ(c.get_string("test.string_nul").value(), std::string("a\0b", 3));
  EXPECT_EQ(c.get_string("test.string_empty").value(), "");
  auto nested = c.get_array("test.array_nested", GgufValueType::kArray);
  ASSERT_TRUE(nested.is_ok()) << nested.status().to_string();
  const std::vector<GgufValue>& inner = *nested.value()->arrays();
  ASSERT_EQ(inner.size(), 3u);
  EXPECT_THAT(*inner[0].ints(), ElementsAre(1, -2));
  EXPECT_THAT(*inner[1].strings(), ElementsAre("x"));
  EXPECT_THAT(*(*inner[2].arrays())[0].uints(), ElementsAre(7u));
  const GgufTensorInfo* q4 = file.value()->find("q4_0.weight");
  ASSERT_NE(q4, nullptr);
  EXPECT_THAT(q4->shape(), ElementsAre(2, 1, 4, 32));
  const GgufTensorInfo* iq2 = file.value()->find("iq2_xxs.unsupported");
  ASSERT_NE(iq2, nullptr);
  std::vector<float> out(iq2->numel());
  expect_error(file.value()->dequantize(*iq2, out.data()), StatusCode::kUnimplemented,
               {"tensor 'iq2_xxs.unsupported' has ggml type IQ2_XXS"},
               (kFixtures / "all_types.gguf").string());
}

TEST(GgufFixtureTest, Aligned64Version2) { check_fixture("aligned64_v2"); }

TEST(GgufFileTest, OpenErrorsNameThePath) {
  const fs::path missing = kFixtures / "missing.gguf";
  auto result = GgufFile::open(missing);
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kNotFound, {"not found"}, missing.string());

  auto dir = GgufFile::open(kFixtures);
  ASSERT_FALSE(dir.is_ok());
  EXPECT_EQ(dir.status().code(), StatusCode::kInvalidArgument) << dir.status().to_string();
}

}  // namespace
}  // namespace tierserve
