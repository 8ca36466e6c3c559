// Comparing a tokenizer with a golden file of tests/tokenizer/reference.py (cases, decode cases
// and a 1 MiB text summarised by its id count and FNV-1a hash), shared by the tokenizer tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/file.h"
#include "engine/tokenizer/tokenizer.h"

namespace tierserve::testing {

using json = nlohmann::json;

inline json read_json(const std::string& path) {
  auto text = read_file(path);
  EXPECT_TRUE(text.is_ok()) << text.status().to_string();
  return text.is_ok() ? json::parse(text.value()) : json();
}

// FNV-1a over the ids' little-endian bytes (reference.py's fnv1a64).
inline uint64_t fnv1a64(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (int32_t id : ids) {
    const auto u = static_cast<uint32_t>(id);
    for (int k = 0; k < 4; ++k) {
      h ^= (u >> (8 * k)) & 0xFF;
      h *= 0x100000001b3ULL;
    }
  }
  return h;
}

// Where a tokenizer disagrees with a golden file (tests/tokenizer/reference.py's format).
struct GoldenDiff {
  int num_cases = 0;                   // encode cases checked
  int num_decodes = 0;                 // decode cases checked
  std::set<std::string> encode_texts;  // texts whose ids differ (either add_special_tokens)
  std::vector<json> decodes;           // differing decode cases, with "got" added
  bool big_matches = false;            // the 1 MiB text's id count and hash
};

inline GoldenDiff compare_with_golden(const Tokenizer& tok, const std::string& data_dir,
                                      const std::string& golden_name) {
  GoldenDiff diff;
  const json golden = read_json(data_dir + "/" + golden_name + "_golden.json");
  for (const auto& c : golden["cases"]) {
    const std::string text = c["text"].get<std::string>();
    auto ids = tok.encode(text, c["add_special_tokens"].get<bool>());
    EXPECT_TRUE(ids.is_ok()) << ids.status().to_string();
    ++diff.num_cases;
    if (!ids.is_ok() || *ids != c["ids"].get<std::vector<int32_t>>()) {
      diff.encode_texts.insert(text);
      ADD_FAILURE_AT(__FILE__, __LINE__)
          << "golden mismatch: " << golden_name << ": \"" << text
          << "\" add_special_tokens=" << c["add_special_tokens"] << ": got "
          << (ids.is_ok() ? json(*ids).dump() : ids.status().to_string()) << ", golden "
          << c["ids"].dump();
    }
  }
  for (const auto& d : golden["decode"]) {
    auto text = tok.decode(d["ids"].get<std::vector<int32_t>>(), d["skip_special_tokens"]);
    EXPECT_TRUE(text.is_ok());
    ++diff.num_decodes;
    if (!text.is_ok() || *text != d["text"].get<std::string>()) {
      json entry = d;
      entry["got"] = text.is_ok() ? *text : text.status().to_string();
      diff.decodes.push_back(std::move(entry));
    }
  }
  // reference.py's big_text(): the base cases joined by newlines, repeated to at least 1 MiB.
  std::string joined;
  const size_t num_base = golden["num_base_cases"].get<size_t>();
  for (size_t i = 0; i < num_base; ++i) {
    const std::string t = golden["cases"][2 * i]["text"].get<std::string>();
    if (t.empty()) continue;
    if (!joined.empty()) joined += "\n";
    joined += t;
  }
  std::string big;
  while (big.size() < (size_t{1} << 20)) big += joined;
  auto ids = tok.encode(big, true);
  EXPECT_TRUE(ids.is_ok());
  if (ids.is_ok()) {
    char hash[17];
    std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(fnv1a64(*ids)));
    diff.big_matches = ids->size() == golden["big"]["num_ids"].get<size_t>() &&
                       std::string(hash) == golden["big"]["fnv1a64"].get<std::string>();
  }
  return diff;
}

}  // namespace tierserve::testing
