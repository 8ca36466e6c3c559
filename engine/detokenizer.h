// StreamingDetokenizer: turns generated token ids into text incrementally, emitting each piece of
// text as soon as it is final, and cutting the output at stop strings.
//
// Text is final when decoding more tokens can no longer change it: the decode of the newest
// tokens does not end in U+FFFD (a partial UTF-8 sequence from byte-level or byte-fallback
// pieces), and no suffix of it could still grow into a stop string. Each step decodes a short
// window of tokens twice (with and without the newest) and emits the difference, so the
// SentencePiece leading space comes out exactly as Hugging Face's decode of the whole sequence
// gives it (the window starts a few tokens back, in the prompt for the first tokens).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace tierserve {

// Decodes ids[begin, end) as Hugging Face's tokenizer.decode would (incomplete UTF-8 becomes
// U+FFFD).
using DecodeFn =
    std::function<std::string(const std::vector<int32_t>& ids, size_t begin, size_t end)>;

class StreamingDetokenizer {
 public:
  // Tokens of the prompt before generation starts; the last few give the first generated token
  // its context (they are never emitted). Stop strings must be non-empty.
  // `include_stop_str`: the text ends after a matched stop string instead of before it (vLLM's
  // include_stop_str_in_output).
  StreamingDetokenizer(DecodeFn decode, const std::vector<int32_t>& prompt,
                       std::vector<std::string> stop_strings, bool include_stop_str = false);

  // Adds one generated token and returns the text that became final (possibly empty). After a
  // stop string matched, stopped() is true, the returned text ends right before the stop string
  // (after it with include_stop_str), and further tokens are ignored. When several stop strings
  // occur, the one that starts first wins.
  std::string add(int32_t token);
  // Ends generation: returns everything still held back (a partial UTF-8 tail decoded as U+FFFD,
  // a prefix of a stop string that never completed).
  std::string finish();

  bool stopped() const { return stopped_; }
  // The stop string that matched; "" while !stopped().
  const std::string& matched_stop() const { return matched_stop_; }
  // The whole output text so far (emitted, and held back until finish()).
  const std::string& text() const { return text_; }

 private:
  // Emits what is final in text_ and checks the stop strings.
  std::string release();

  DecodeFn decode_;
  std::vector<std::string> stop_strings_;
  std::vector<int32_t> ids_;  // prompt tail + generated tokens
  size_t prefix_offset_;      // start of the decode window
  size_t read_offset_;        // end of the part already turned into text_
  std::string text_;          // decoded output text (not including the prompt)
  size_t emitted_ = 0;        // bytes of text_ returned to the caller
  bool stopped_ = false;
  bool include_stop_str_ = false;
  std::string matched_stop_;
};

}  // namespace tierserve
