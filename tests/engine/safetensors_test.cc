#include "engine/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tierserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// ---- A small writer of safetensors images -----------------------------------------------------

struct TensorSpec {
  std::string name;
  std::string dtype;           // "F32", "BF16", ...
  std::vector<int64_t> shape;  // the header's shape
  std::vector<uint8_t> bytes;  // the tensor's data; filled with a pattern when empty
};

size_t spec_dtype_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  if (dtype == "I64") return 8;
  return 1;
}

// An image from raw header text and `data_bytes` zero bytes of data section.
std::vector<uint8_t> image_from_header(const std::string& header, size_t data_bytes = 0) {
  std::vector<uint8_t> image(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) image[i] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(image.data() + 8, header.data(), header.size());
  return image;
}

// A valid image: tensors laid out contiguously in the given order, the header padded with spaces
// to a multiple of 8 bytes, as the safetensors library writes it.
std::vector<uint8_t> build_safetensors(std::vector<TensorSpec> tensors,
                                       const json& metadata = nullptr) {
  json header = json::object();
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  std::vector<uint8_t> data;
  for (TensorSpec& t : tensors) {
    if (t.bytes.empty()) {
      size_t numel = 1;
      for (int64_t d : t.shape) numel *= static_cast<size_t>(d);
      t.bytes.resize(numel * spec_dtype_size(t.dtype));
      for (size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<uint8_t>(i * 7 + 1);
    }
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data.insert(data.end(), t.bytes.begin(), t.bytes.end());
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::vector<uint8_t> image = image_from_header(text);
  image.insert(image.end(), data.begin(), data.end());
  return image;
}

std::vector<uint8_t> floats(std::initializer_list<float> values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.begin(), bytes.size());
  return bytes;
}

// Parses an image held in a buffer of exactly its size, so that ASan flags any read past it.
Result<std::vector<SafetensorsEntry>> parse(const std::vector<uint8_t>& image,
                                            std::string_view file = "model.safetensors") {
  auto exact = std::make_unique<uint8_t[]>(image.size());
  if (!image.empty()) std::memcpy(exact.get(), image.data(), image.size());
  return parse_safetensors(image.empty() ? nullptr : exact.get(), image.size(), file);
}

// Parses a one-tensor header `{"x": <entry>}` over `data_bytes` bytes of data.
Result<std::vector<SafetensorsEntry>> parse_entry(const std::string& entry, size_t data_bytes) {
  return parse(image_from_header("{\"x\": " + entry + "}", data_bytes));
}

// Expects an error of `code` whose message is one line, starts with the file name and contains
// every fragment.
void expect_error(const Status& status, StatusCode code, std::vector<std::string> fragments,
                  const std::string& file = "model.safetensors") {
  EXPECT_EQ(status.code(), code) << status.to_string();
  EXPECT_EQ(status.message().rfind(file + ": ", 0), 0u) << status.message();
  EXPECT_EQ(status.message().find('\n'), std::string::npos) << status.message();
  for (const std::string& f : fragments) EXPECT_THAT(status.message(), HasSubstr(f));
}

// ---- parse_safetensors: valid files --------------------------------------------------------

TEST(ParseSafetensorsTest, ReadsFloatTensorsInDataOrder) {
  std::vector<uint8_t> image = build_safetensors({{"b.weight", "F32", {2, 3}, {}},
                                                  {"a.weight", "BF16", {4}, {}},
                                                  {"c.bias", "F16", {1, 1, 2}, {}}});
  auto result = parse(image);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const auto& e = result.value();
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].name, "b.weight");
  EXPECT_EQ(e[0].dtype, DType::kF32);
  EXPECT_THAT(e[0].shape, ElementsAre(2, 3));
  EXPECT_EQ(e[0].begin, 0u);
  EXPECT_EQ(e[0].end, 24u);
  EXPECT_EQ(e[1].name, "a.weight");
  EXPECT_EQ(e[1].dtype, DType::kBF16);
  EXPECT_EQ(e[1].begin, 24u);
  EXPECT_EQ(e[1].end, 32u);
  EXPECT_EQ(e[2].name, "c.bias");
  EXPECT_EQ(e[2].dtype, DType::kF16);
  EXPECT_THAT(e[2].shape, ElementsAre(1, 1, 2));
  EXPECT_EQ(e[2].end, 36u);
}

TEST(ParseSafetensorsTest, ReadsIntegerDTypesScalarsAndEmptyTensors) {
  std::vector<uint8_t> image = build_safetensors({{"ids", "I64", {3}, {}},
                                                  {"count", "I32", {}, {}},
                                                  {"mask", "U8", {5}, {}},
                                                  {"nothing", "F32", {0, 4}, {}}});
  auto result = parse(image);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const auto& e = result.value();
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0].dtype, DType::kI64);
  EXPECT_EQ(e[1].name, "count");
  EXPECT_EQ(e[1].dtype, DType::kI32);
  EXPECT_TRUE(e[1].shape.empty());
  EXPECT_EQ(e[1].end - e[1].begin, 4u);
  EXPECT_EQ(e[2].dtype, DType::kU8);
  EXPECT_EQ(e[3].name, "nothing");
  EXPECT_EQ(e[3].begin, e[3].end);
}

TEST(ParseSafetensorsTest, SkipsMetadataAndAcceptsEmptyHeader) {
  auto with_metadata =
      parse(build_safetensors({{"w", "F32", {1}, {}}}, json{{"format", "pt"}, {"note", "x"}}));
  ASSERT_TRUE(with_metadata.is_ok()) << with_metadata.status().to_string();
  ASSERT_EQ(with_metadata.value().size(), 1u);
  EXPECT_EQ(with_metadata.value()[0].name, "w");

  auto empty = parse(image_from_header("{}"));
  ASSERT_TRUE(empty.is_ok()) << empty.status().to_string();
  EXPECT_TRUE(empty.value().empty());
}

TEST(ParseSafetensorsTest, AcceptsGapsTrailingBytesAndUnpaddedHeader) {
  const std::string header = R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]},)"
                             R"( "b": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})";
  auto result = parse(image_from_header(header, 10));
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  ASSERT_EQ(result.value().size(), 2u);
  EXPECT_EQ(result.value()[0].name, "b");
  EXPECT_EQ(result.value()[1].name, "a");
}

TEST(ParseSafetensorsTest, EmptyTensorsInsideOthersAreNotOverlaps) {
  const std::string header = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                             R"( "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})";
  EXPECT_TRUE(parse(image_from_header(header, 8)).is_ok());
}

// ---- parse_safetensors: malformed files ----------------------------------------------------

TEST(ParseSafetensorsTest, RejectsFilesTooShortForTheLength) {
  for (size_t size : {0, 1, 7}) {
    auto result = parse(std::vector<uint8_t>(size, 0));
    ASSERT_FALSE(result.is_ok());
    expect_error(result.status(), StatusCode::kDataLoss,
                 {std::to_string(size) + " bytes", "too short", "8-byte header length"});
  }
}

TEST(ParseSafetensorsTest, RejectsHeaderLengthBeyondTheFile) {
  std::vector<uint8_t> image = image_from_header("{}");
  image[0] = 0x40;  // header length 64, file 10 bytes
  auto result = parse(image);
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kDataLoss, {"header length 64 exceeds file size 10"});
}

TEST(ParseSafetensorsTest, RejectsHugeHeaderLength) {
  for (uint64_t length : {uint64_t{100} * 1024 * 1024 + 1, ~uint64_t{0}}) {
    std::vector<uint8_t> image(16, ' ');
    for (int i = 0; i < 8; ++i) image[i] = static_cast<uint8_t>(length >> (8 * i));
    auto result = parse(image);
    ASSERT_FALSE(result.is_ok());
    expect_error(result.status(), StatusCode::kDataLoss,
                 {"header length " + std::to_string(length), "exceeds the limit"});
  }
}

TEST(ParseSafetensorsTest, RejectsMalformedJsonWithItsPosition) {
  auto result = parse(image_from_header(R"({"x": {"dtype": "F32",, }})"));
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kDataLoss,
               {"malformed JSON header", "line 1, column 23"});

  auto utf8 = parse(image_from_header("{\"\xff\": 1}"));
  ASSERT_FALSE(utf8.is_ok());
  expect_error(utf8.status(), StatusCode::kDataLoss, {"malformed JSON header"});
}

TEST(ParseSafetensorsTest, RejectsHeadersThatAreNotObjectsOfEntries) {
  auto array = parse(image_from_header("[1, 2]"));
  ASSERT_FALSE(array.is_ok());
  expect_error(array.status(), StatusCode::kDataLoss, {"header is not a JSON object", "[1,2]"});

  auto entry = parse(image_from_header(R"({"x": 5})"));
  ASSERT_FALSE(entry.is_ok());
  expect_error(entry.status(), StatusCode::kDataLoss,
               {"tensor 'x'", "expected an object with dtype, shape and data_offsets", "got 5"});

  auto metadata = parse(image_from_header(R"({"__metadata__": "pt"})"));
  ASSERT_FALSE(metadata.is_ok());
  expect_error(metadata.status(), StatusCode::kDataLoss, {"__metadata__ is not an object"});
}

TEST(ParseSafetensorsTest, RejectsBadDTypes) {
  auto missing = parse_entry(R"({"shape": [1], "data_offsets": [0, 4]})", 4);
  ASSERT_FALSE(missing.is_ok());
  expect_error(missing.status(), StatusCode::kDataLoss, {"tensor 'x'", "missing \"dtype\""});

  auto not_string = parse_entry(R"({"dtype": 3, "shape": [1], "data_offsets": [0, 4]})", 4);
  ASSERT_FALSE(not_string.is_ok());
  expect_error(not_string.status(), StatusCode::kDataLoss, {"\"dtype\" is not a string"});

  auto fp8 = parse_entry(R"({"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]})", 4);
  ASSERT_FALSE(fp8.is_ok());
  expect_error(fp8.status(), StatusCode::kUnimplemented,
               {"unsupported dtype 'F8_E4M3' (expected F32, F16, BF16, I32, I64 or U8)"});

  auto unknown = parse_entry(R"({"dtype": "Q4_K", "shape": [4], "data_offsets": [0, 4]})", 4);
  ASSERT_FALSE(unknown.is_ok());
  expect_error(unknown.status(), StatusCode::kDataLoss,
               {"unknown dtype 'Q4_K'", "expected F32, F16, BF16, I32, I64 or U8"});
}

TEST(ParseSafetensorsTest, RejectsBadShapes) {
  struct Case {
    std::string entry;
    std::string fragment;
  };
  const Case cases[] = {
      {R"({"dtype": "F32", "data_offsets": [0, 4]})", "missing \"shape\""},
      {R"({"dtype": "F32", "shape": 4, "data_offsets": [0, 4]})", "\"shape\" is not an array"},
      {R"({"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 4]})",
       "negative dimension -3 in shape [2,-3]"},
      {R"({"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]})", "not an integer: 1.5"},
      {R"({"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]})", "not an integer: \"1\""},
      {R"({"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 4]})",
       "dimension 18446744073709551615 in shape [18446744073709551615] is too large"},
      {R"({"dtype": "F32", "shape": [1e30], "data_offsets": [0, 4]})", "not an integer"},
      {R"({"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]})",
       "overflows a 64-bit element count"},
      {R"({"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 4]})",
       "overflows a 64-bit byte count"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.entry);
    auto result = parse_entry(c.entry, 4);
    ASSERT_FALSE(result.is_ok());
    expect_error(result.status(), StatusCode::kDataLoss, {"tensor 'x'", c.fragment});
  }
}

TEST(ParseSafetensorsTest, RejectsBadOffsets) {
  struct Case {
    std::string entry;
    std::string fragment;
  };
  const Case cases[] = {
      {R"({"dtype": "F32", "shape": [1]})", "missing \"data_offsets\""},
      {R"({"dtype": "F32", "shape": [1], "data_offsets": [0]})",
       "\"data_offsets\" is not [begin, end] with non-negative integers: [0]"},
      {R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]})", "is not [begin, end]"},
      {R"({"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]})", "is not [begin, end]"},
      {R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 4.0]})", "is not [begin, end]"},
      {R"({"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]})", "is not [begin, end]"},
      {R"({"dtype": "F32", "shape": [1], "data_offsets": {"begin": 0}})", "is not [begin, end]"},
      {R"({"dtype": "F32", "shape": [0], "data_offsets": [8, 4]})",
       "data_offsets [8, 4]: end is before begin"},
      {R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]})",
       "data_offsets [0, 4] hold 4 bytes but shape [2] of f32 needs 8"},
      {R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]})",
       "data_offsets [0, 16] end beyond the data section of 8 bytes"},
      {R"({"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551614, )"
       R"(18446744073709551615]})",
       "end beyond the data section"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.entry);
    auto result = parse_entry(c.entry, 8);
    ASSERT_FALSE(result.is_ok());
    expect_error(result.status(), StatusCode::kDataLoss, {"tensor 'x'", c.fragment});
  }
}

TEST(ParseSafetensorsTest, RejectsOverlapsNamingBothTensors) {
  const std::string header =
      R"({"model.layers.0.mlp.up_proj.weight": {"dtype": "U8", "shape": [100],)"
      R"( "data_offsets": [0, 100]},)"
      R"( "model.layers.0.mlp.down_proj.weight": {"dtype": "U8", "shape": [10],)"
      R"( "data_offsets": [95, 105]}})";
  auto result = parse(image_from_header(header, 200));
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kDataLoss,
               {"tensor 'model.layers.0.mlp.down_proj.weight' data_offsets [95, 105] overlap "
                "tensor 'model.layers.0.mlp.up_proj.weight' data_offsets [0, 100]"});

  const std::string same = R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
                           R"( "b": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})";
  auto identical = parse(image_from_header(same, 4));
  ASSERT_FALSE(identical.is_ok());
  expect_error(identical.status(), StatusCode::kDataLoss, {"overlap"});
}

TEST(ParseSafetensorsTest, RejectsDuplicateNames) {
  const std::string header = R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},)"
                             R"( "w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})";
  auto result = parse(image_from_header(header, 2));
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kDataLoss, {"tensor 'w' appears twice"});
}

TEST(ParseSafetensorsTest, ErrorsStayOneLineWhateverTheNames) {
  const std::string long_name(5000, 'n');
  auto control = parse(image_from_header(
      R"({"a\nb\u0001": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", 8));
  ASSERT_FALSE(control.is_ok());
  expect_error(control.status(), StatusCode::kUnimplemented, {"tensor 'a\\x0ab\\x01'"});
  auto long_result = parse(image_from_header(
      "{\"" + long_name + R"(": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", 8));
  ASSERT_FALSE(long_result.is_ok());
  EXPECT_LT(long_result.status().message().size(), 400u);
  EXPECT_THAT(long_result.status().message(), HasSubstr("...'"));
}

TEST(ParseSafetensorsTest, EveryTruncationOfAValidFileFailsCleanly) {
  std::vector<uint8_t> image =
      build_safetensors({{"a", "F32", {3}, {}}, {"b", "BF16", {2, 2}, {}}}, json{{"k", "v"}});
  ASSERT_TRUE(parse(image).is_ok());
  for (size_t size = 0; size < image.size(); ++size) {
    std::vector<uint8_t> prefix(image.begin(), image.begin() + static_cast<ptrdiff_t>(size));
    auto result = parse(prefix, "cut.safetensors");
    ASSERT_FALSE(result.is_ok()) << "prefix of " << size << " bytes parsed";
    EXPECT_EQ(result.status().code(), StatusCode::kDataLoss);
    EXPECT_EQ(result.status().message().rfind("cut.safetensors: ", 0), 0u);
  }
}

// ---- SafetensorsFile and Checkpoint --------------------------------------------------------

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::path(::testing::TempDir()) / "safetensors_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path write(const std::string& name, const std::vector<uint8_t>& bytes) {
    const fs::path path = dir_ / name;
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good());
    return path;
  }
  fs::path write_text(const std::string& name, const std::string& text) {
    return write(name, std::vector<uint8_t>(text.begin(), text.end()));
  }

  fs::path dir_;
};

using SafetensorsFileTest = TempDirTest;

TEST_F(SafetensorsFileTest, MapsTensorsAndReportsFileOffsets) {
  std::vector<uint8_t> image = build_safetensors(
      {{"w", "F32", {2, 2}, floats({1.5f, -2.0f, 3.25f, 0.0f})}, {"b", "F32", {}, floats({7.0f})}});
  const fs::path path = write("model.safetensors", image);
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  const SafetensorsFile& f = *file.value();
  EXPECT_EQ(f.path(), path);
  ASSERT_EQ(f.entries().size(), 2u);
  EXPECT_EQ(f.find("missing"), nullptr);

  const SafetensorsEntry* w = f.find("w");
  ASSERT_NE(w, nullptr);
  float values[4];
  std::memcpy(values, f.data(*w), sizeof(values));
  EXPECT_THAT(values, ElementsAre(1.5f, -2.0f, 3.25f, 0.0f));

  const SafetensorsEntry* b = f.find("b");
  ASSERT_NE(b, nullptr);
  const uint64_t offset = f.file_offset(*b);
  ASSERT_LE(offset + 4, image.size());
  float scalar = 0;
  std::memcpy(&scalar, image.data() + offset, 4);
  EXPECT_EQ(scalar, 7.0f);
  EXPECT_EQ(offset % 8, 0u);  // the writer pads the header to 8 bytes and w is 16 bytes
}

TEST_F(SafetensorsFileTest, ErrorsNameThePath) {
  const fs::path missing = dir_ / "missing.safetensors";
  auto not_found = SafetensorsFile::open(missing);
  ASSERT_FALSE(not_found.is_ok());
  expect_error(not_found.status(), StatusCode::kNotFound, {"not found"}, missing.string());

  const fs::path tiny = write("tiny.safetensors", {1, 2, 3});
  auto short_file = SafetensorsFile::open(tiny);
  ASSERT_FALSE(short_file.is_ok());
  expect_error(short_file.status(), StatusCode::kDataLoss, {"3 bytes", "too short"}, tiny.string());

  std::vector<uint8_t> image = build_safetensors({{"w", "F32", {16}, {}}});
  image.resize(image.size() - 10);
  const fs::path truncated = write("truncated.safetensors", image);
  auto cut = SafetensorsFile::open(truncated);
  ASSERT_FALSE(cut.is_ok());
  expect_error(cut.status(), StatusCode::kDataLoss, {"tensor 'w'", "end beyond the data section"},
               truncated.string());

  auto directory = SafetensorsFile::open(dir_);
  ASSERT_FALSE(directory.is_ok());
  expect_error(directory.status(), StatusCode::kInvalidArgument, {"not a regular file"},
               dir_.string());
}

using CheckpointTest = TempDirTest;

TEST_F(CheckpointTest, OpensASingleFile) {
  write("model.safetensors", build_safetensors({{"b", "F16", {2}, {}}, {"a", "F32", {1}, {}}}));
  write("other.safetensors", build_safetensors({{"ignored", "F32", {1}, {}}}));
  auto checkpoint = Checkpoint::open(dir_);
  ASSERT_TRUE(checkpoint.is_ok()) << checkpoint.status().to_string();
  EXPECT_THAT(checkpoint.value()->names(), ElementsAre("a", "b"));
  EXPECT_EQ(checkpoint.value()->files().size(), 1u);
  auto a = checkpoint.value()->find("a");
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(a.value().entry->name, "a");
  EXPECT_EQ(a.value().file, checkpoint.value()->files()[0].get());
  EXPECT_EQ(a.value().data, a.value().file->data(*a.value().entry));

  auto missing = checkpoint.value()->find("lm_head.weight");
  ASSERT_FALSE(missing.is_ok());
  expect_error(missing.status(), StatusCode::kNotFound, {"tensor 'lm_head.weight' not found"},
               dir_.string());
}

TEST_F(CheckpointTest, OpensShardsThroughTheIndex) {
  write("model-00001-of-00002.safetensors",
        build_safetensors({{"embed", "BF16", {4, 2}, {}}, {"layer0", "BF16", {2, 2}, {}}}));
  write("model-00002-of-00002.safetensors",
        build_safetensors({{"layer1", "BF16", {2, 2}, {}}, {"norm", "F32", {2}, {}}}));
  write("stale.safetensors", build_safetensors({{"embed", "BF16", {4, 2}, {}}}));
  write_text("model.safetensors.index.json", json{{"metadata", {{"total_size", 36}}},
                                                  {"weight_map",
                                                   {{"embed", "model-00001-of-00002.safetensors"},
                                                    {"layer0", "model-00001-of-00002.safetensors"},
                                                    {"layer1", "model-00002-of-00002.safetensors"},
                                                    {"norm", "model-00002-of-00002.safetensors"}}}}
                                                 .dump(2));
  auto checkpoint = Checkpoint::open(dir_);
  ASSERT_TRUE(checkpoint.is_ok()) << checkpoint.status().to_string();
  const Checkpoint& c = *checkpoint.value();
  EXPECT_THAT(c.names(), ElementsAre("embed", "layer0", "layer1", "norm"));
  ASSERT_EQ(c.files().size(), 2u);
  EXPECT_EQ(c.find("embed").value().file, c.files()[0].get());
  EXPECT_EQ(c.find("norm").value().file, c.files()[1].get());
  EXPECT_EQ(c.find("norm").value().entry->dtype, DType::kF32);
}

TEST_F(CheckpointTest, IndexErrorsNameTheIndexTheShardAndTheTensor) {
  const std::string index = (dir_ / "model.safetensors.index.json").string();
  write("shard1.safetensors", build_safetensors({{"a", "F32", {1}, {}}}));

  write_text(
      "model.safetensors.index.json",
      json{{"weight_map", {{"a", "shard1.safetensors"}, {"b", "shard2.safetensors"}}}}.dump());
  auto missing_shard = Checkpoint::open(dir_);
  ASSERT_FALSE(missing_shard.is_ok());
  expect_error(missing_shard.status(), StatusCode::kNotFound,
               {"shard 'shard2.safetensors'", "tensor 'b'", "not found"}, index);

  write_text(
      "model.safetensors.index.json",
      json{{"weight_map", {{"a", "shard1.safetensors"}, {"ghost", "shard1.safetensors"}}}}.dump());
  auto missing_tensor = Checkpoint::open(dir_);
  ASSERT_FALSE(missing_tensor.is_ok());
  expect_error(missing_tensor.status(), StatusCode::kDataLoss,
               {"tensor 'ghost' is mapped to shard 'shard1.safetensors', which does not hold it"},
               index);

  struct Case {
    std::string text;
    std::string fragment;
  };
  const Case cases[] = {
      {R"({"weight_map": {"a": "shard1.safetensors",}})", "malformed JSON"},
      {R"([1])", "not a JSON object"},
      {R"({"metadata": {}})", "missing \"weight_map\""},
      {R"({"weight_map": {}})", "\"weight_map\" is empty"},
      {R"({"weight_map": {"a": 1}})", "tensor 'a' maps to a non-string shard: 1"},
      {R"({"weight_map": {"a": "../shard1.safetensors"}})", "not a file inside the model"},
      {R"({"weight_map": {"a": "/etc/shard1.safetensors"}})", "not a file inside the model"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    write_text("model.safetensors.index.json", c.text);
    auto result = Checkpoint::open(dir_);
    ASSERT_FALSE(result.is_ok());
    expect_error(result.status(), StatusCode::kDataLoss, {c.fragment}, index);
  }
}

TEST_F(CheckpointTest, BadShardIsNamed) {
  write("shard1.safetensors", {8, 0, 0, 0, 0, 0, 0, 0, '{', '}'});
  write_text("model.safetensors.index.json", R"({"weight_map": {"a": "shard1.safetensors"}})");
  auto result = Checkpoint::open(dir_);
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kDataLoss, {"header length 8 exceeds file size 10"},
               (dir_ / "shard1.safetensors").string());
}

TEST_F(CheckpointTest, FallsBackToEverySafetensorsFileSorted) {
  write("b.safetensors", build_safetensors({{"y", "F32", {1}, {}}}));
  write("a.safetensors", build_safetensors({{"x", "F32", {1}, {}}}));
  write_text("notes.txt", "not weights");
  auto checkpoint = Checkpoint::open(dir_);
  ASSERT_TRUE(checkpoint.is_ok()) << checkpoint.status().to_string();
  ASSERT_EQ(checkpoint.value()->files().size(), 2u);
  EXPECT_EQ(checkpoint.value()->files()[0]->path().filename(), "a.safetensors");
  EXPECT_EQ(checkpoint.value()->files()[1]->path().filename(), "b.safetensors");
  EXPECT_THAT(checkpoint.value()->names(), ElementsAre("x", "y"));
}

TEST_F(CheckpointTest, RejectsATensorInTwoFiles) {
  write("a.safetensors", build_safetensors({{"x", "F32", {1}, {}}}));
  write("b.safetensors", build_safetensors({{"x", "F32", {1}, {}}}));
  auto result = Checkpoint::open(dir_);
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kDataLoss,
               {"tensor 'x' is in both a.safetensors and b.safetensors"}, dir_.string());
}

TEST_F(CheckpointTest, RefusesPyTorchWeights) {
  write_text("pytorch_model.bin", "pickle");
  write_text("config.json", "{}");
  auto result = Checkpoint::open(dir_);
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kUnimplemented,
               {"PyTorch .bin", "not loaded (no pickle)", "convert them to safetensors"},
               dir_.string());
}

TEST_F(CheckpointTest, MissingDirectoryOrWeightsIsNotFound) {
  auto empty = Checkpoint::open(dir_);
  ASSERT_FALSE(empty.is_ok());
  expect_error(empty.status(), StatusCode::kNotFound,
               {"no model weights", "model.safetensors", "*.safetensors"}, dir_.string());

  const fs::path missing = dir_ / "nope";
  auto no_dir = Checkpoint::open(missing);
  ASSERT_FALSE(no_dir.is_ok());
  expect_error(no_dir.status(), StatusCode::kNotFound, {"model directory not found"},
               missing.string());
  EXPECT_THAT(no_dir.status().message(), Not(HasSubstr("\n")));
}

}  // namespace
}  // namespace tierserve
