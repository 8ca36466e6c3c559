#include "engine/tokenizer/tiktoken_file.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer/byte_level.h"

namespace tierserve::tokenizer {

const char* const kGlm4SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

namespace {

// The value of a standard base64 character, or -1.
int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Decodes padded base64 (RFC 4648); nullopt when malformed.
std::optional<std::string> base64_decode(std::string_view in) {
  if (in.empty() || in.size() % 4 != 0) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < in.size(); i += 4) {
    std::array<int, 4> v{};
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      const char c = in[i + static_cast<size_t>(j)];
      if (c == '=' && i + 4 == in.size() && j >= 2) {
        ++pad;
        v[static_cast<size_t>(j)] = 0;
        continue;
      }
      if (pad > 0) return std::nullopt;  // data after padding
      v[static_cast<size_t>(j)] = base64_value(c);
      if (v[static_cast<size_t>(j)] < 0) return std::nullopt;
    }
    const uint32_t n = (static_cast<uint32_t>(v[0]) << 18) | (static_cast<uint32_t>(v[1]) << 12) |
                       (static_cast<uint32_t>(v[2]) << 6) | static_cast<uint32_t>(v[3]);
    out.push_back(static_cast<char>(n >> 16));
    if (pad < 2) out.push_back(static_cast<char>((n >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(n & 0xff));
  }
  return out;
}

bool is_base64_line_start(std::string_view line) {
  const size_t space = line.find(' ');
  if (space == std::string_view::npos || space == 0 || space % 4 != 0) return false;
  for (size_t i = 0; i < space; ++i) {
    if (base64_value(line[i]) < 0 && line[i] != '=') return false;
  }
  const std::string_view rank = line.substr(space + 1);
  return !rank.empty() &&
         std::all_of(rank.begin(), rank.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

bool looks_like_tiktoken(std::string_view head) {
  const size_t end = head.find('\n');
  std::string_view line = head.substr(0, end);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return is_base64_line_start(line);
}

Result<std::string> tiktoken_to_tokenizer_json(std::string_view text, const std::string& file,
                                               std::string_view pattern,
                                               const nlohmann::json& added_tokens) {
  // Tokens by rank.
  std::vector<std::string> tokens;
  std::unordered_map<std::string, int32_t> rank_of;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const std::string where = file + ":" + std::to_string(line_no) + ": ";
    const size_t space = line.find(' ');
    if (space == std::string_view::npos) return data_loss(where + "expected '<base64> <rank>'");
    const std::optional<std::string> token = base64_decode(line.substr(0, space));
    if (!token) return data_loss(where + "malformed base64 token");
    int64_t rank = -1;
    const std::string_view rank_text = line.substr(space + 1);
    const auto [ptr, ec] =
        std::from_chars(rank_text.data(), rank_text.data() + rank_text.size(), rank);
    if (ec != std::errc() || ptr != rank_text.data() + rank_text.size() || rank < 0 ||
        rank >= (int64_t{1} << 24)) {
      return data_loss(where + "bad rank '" + std::string(rank_text) + "'");
    }
    if (static_cast<size_t>(rank) >= tokens.size()) tokens.resize(static_cast<size_t>(rank) + 1);
    if (!tokens[static_cast<size_t>(rank)].empty()) {
      return data_loss(where + "rank " + std::to_string(rank) + " given twice");
    }
    if (!rank_of.emplace(*token, static_cast<int32_t>(rank)).second) {
      return data_loss(where + "token given twice");
    }
    tokens[static_cast<size_t>(rank)] = *token;
  }
  for (size_t r = 0; r < tokens.size(); ++r) {
    if (tokens[r].empty()) return data_loss(file + ": no token has rank " + std::to_string(r));
  }
  for (int b = 0; b < 256; ++b) {
    if (!rank_of.count(std::string(1, static_cast<char>(b)))) {
      return data_loss(file + ": byte " + std::to_string(b) + " has no token");
    }
  }

  nlohmann::json vocab = nlohmann::json::object();
  nlohmann::json merges = nlohmann::json::array();
  for (size_t r = 0; r < tokens.size(); ++r) {
    const std::string& t = tokens[r];
    vocab[bytes_to_unicode_text(t)] = r;
    // Every split into two tokens, ordered by the parts' ranks (TikTokenConverter).
    std::vector<std::pair<int32_t, int32_t>> splits;
    for (size_t i = 1; i < t.size(); ++i) {
      const auto left = rank_of.find(t.substr(0, i)), right = rank_of.find(t.substr(i));
      if (left != rank_of.end() && right != rank_of.end()) {
        splits.emplace_back(left->second, right->second);
      }
    }
    std::sort(splits.begin(), splits.end());
    for (const auto& [l, rr] : splits) {
      merges.push_back({bytes_to_unicode_text(tokens[static_cast<size_t>(l)]),
                        bytes_to_unicode_text(tokens[static_cast<size_t>(rr)])});
    }
  }
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", added_tokens.is_array() ? added_tokens : nlohmann::json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", std::string(pattern)}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", false}}}}}},
      {"post_processor", nullptr},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},  // tiktoken takes a piece that is a token whole
        {"vocab", std::move(vocab)},
        {"merges", std::move(merges)}}},
  };
  return j.dump();
}

}  // namespace tierserve::tokenizer
