#include "bench/datasets.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>

namespace tierserve::bench {
namespace {

using Json = nlohmann::json;

// Uniform random ids of ordinary (not special) tokens.
class RandomTokens {
 public:
  RandomTokens(const Tokenizer& t, uint64_t seed) : rng_(seed) {
    for (int32_t id = 0; id < t.vocab_size(); ++id) {
      if (!t.is_special(id) && !t.id_to_piece(id).empty()) ids_.push_back(id);
    }
  }
  bool empty() const { return ids_.empty(); }
  std::vector<int32_t> take(int32_t n) {
    std::uniform_int_distribution<size_t> pick(0, ids_.size() - 1);
    std::vector<int32_t> out(static_cast<size_t>(n));
    for (int32_t& id : out) id = ids_[pick(rng_)];
    return out;
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::mt19937_64 rng_;
  std::vector<int32_t> ids_;
};

int32_t sample_len(int32_t len, double ratio, std::mt19937_64& rng) {
  const int32_t lo = std::max(1, static_cast<int32_t>(std::floor(len * (1 - ratio))));
  const int32_t hi = std::max(lo, static_cast<int32_t>(std::ceil(len * (1 + ratio))));
  return std::uniform_int_distribution<int32_t>(lo, hi)(rng);
}

Result<std::vector<BenchPrompt>> make_random(const DatasetOptions& o) {
  if (o.tokenizer == nullptr) {
    return invalid_argument(
        "--dataset-name random needs a tokenizer: pass --tokenizer MODEL_DIR (the served "
        "model's directory, with tokenizer.json)");
  }
  if (o.random_input_len < 1 || o.random_output_len < 1) {
    return invalid_argument("--random-input-len and --random-output-len must be >= 1");
  }
  if (!(o.random_range_ratio >= 0 && o.random_range_ratio < 1)) {
    return invalid_argument("--random-range-ratio must be in [0, 1), got " +
                            std::to_string(o.random_range_ratio));
  }
  if (o.shared_prefix_len < 0) return invalid_argument("--shared-prefix-len must be >= 0");
  RandomTokens tokens(*o.tokenizer, o.seed);
  if (tokens.empty()) return invalid_argument("the tokenizer has no ordinary tokens");
  const std::vector<int32_t> prefix = tokens.take(o.shared_prefix_len);
  std::vector<BenchPrompt> out;
  for (int64_t i = 0; i < o.num_prompts; ++i) {
    std::vector<int32_t> ids = prefix;
    const std::vector<int32_t> own =
        tokens.take(sample_len(o.random_input_len, o.random_range_ratio, tokens.rng()));
    ids.insert(ids.end(), own.begin(), own.end());
    BenchPrompt p;
    TS_ASSIGN_OR_RETURN(p.text, o.tokenizer->decode(ids, /*skip_special_tokens=*/true));
    p.input_tokens = static_cast<int64_t>(ids.size());
    p.output_tokens = sample_len(o.random_output_len, o.random_range_ratio, tokens.rng());
    out.push_back(std::move(p));
  }
  return out;
}

Result<std::vector<BenchPrompt>> load_jsonl(const DatasetOptions& o) {
  if (o.path.empty()) return invalid_argument("--dataset-name jsonl needs --dataset-path FILE");
  if (o.jsonl_output_len < 1) return invalid_argument("--jsonl-output-len must be >= 1");
  std::ifstream in(o.path);
  if (!in) return not_found("--dataset-path " + o.path + ": cannot open");
  std::vector<BenchPrompt> lines;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = o.path + ":" + std::to_string(n);
    const Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return invalid_argument(where + ": not a JSON object");
    }
    BenchPrompt p;
    auto str = [&j](const char* key) -> const Json* {
      auto it = j.find(key);
      return it != j.end() && it->is_string() ? &*it : nullptr;
    };
    if (const Json* s = str("prompt")) {
      p.text = s->get<std::string>();
    } else if (auto m = j.find("messages"); m != j.end()) {
      if (!m->is_array() || m->empty()) {
        return invalid_argument(where + ": messages must be a non-empty array");
      }
      for (const Json& msg : *m) {
        if (!msg.is_object() || !msg.contains("role") || !msg.contains("content")) {
          return invalid_argument(where + ": each message needs role and content");
        }
        if (msg["content"].is_string()) p.text += msg["content"].get<std::string>() + "\n";
      }
      p.messages = *m;
    } else if (const Json* s = str("question")) {  // OpenQA
      p.text = s->get<std::string>();
    } else if (const Json* s = str("instruction")) {  // LongAlpaca
      p.text = s->get<std::string>();
      if (const Json* extra = str("input");
          extra != nullptr && !extra->get<std::string>().empty()) {
        p.text += "\n" + extra->get<std::string>();
      }
    } else {
      return invalid_argument(where +
                              ": no prompt, messages, question or instruction string field");
    }
    p.output_tokens = o.jsonl_output_len;
    if (auto m = j.find("max_tokens"); m != j.end()) {
      if (!m->is_number_integer() || m->get<int64_t>() < 1 || m->get<int64_t>() > INT32_MAX) {
        return invalid_argument(where + ": max_tokens must be an integer >= 1");
      }
      p.output_tokens = m->get<int32_t>();
    }
    if (o.tokenizer != nullptr) {
      TS_ASSIGN_OR_RETURN(std::vector<int32_t> ids, o.tokenizer->encode(p.text));
      p.input_tokens = static_cast<int64_t>(ids.size());
    }
    lines.push_back(std::move(p));
  }
  if (lines.empty()) return invalid_argument("--dataset-path " + o.path + ": no prompts");
  std::vector<BenchPrompt> out;
  for (int64_t i = 0; i < o.num_prompts; ++i)
    out.push_back(lines[static_cast<size_t>(i) % lines.size()]);
  return out;
}

}  // namespace

Result<std::vector<BenchPrompt>> make_dataset(const DatasetOptions& o) {
  if (o.num_prompts < 1) return invalid_argument("--num-prompts must be >= 1");
  if (o.name == "random") return make_random(o);
  if (o.name == "jsonl") return load_jsonl(o);
  return invalid_argument("--dataset-name must be random or jsonl, got '" + o.name + "'");
}

}  // namespace tierserve::bench
