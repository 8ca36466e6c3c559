// libFuzzer target for the chat-template interpreter: whatever the template text, parsing and
// rendering must not crash, hang or read out of bounds (ASan), and every failure must carry a
// message (DESIGN.md §5: a template error is a clear error, never a crash).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/chat/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tierserve::chat::ChatTemplate;
  const std::string source(reinterpret_cast<const char*>(data), size);
  auto parsed = ChatTemplate::parse(source, "fuzz.jinja");
  if (!parsed.is_ok()) {
    if (parsed.status().message().empty()) std::abort();
    return 0;
  }
  static const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi \u4e2d\u6587 \ud83d\ude00"},
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
      "function": {"name": "f", "arguments": {"x": 1}}}]},
    {"role": "tool", "content": "42"}
  ])");
  tierserve::chat::RenderOptions options;
  options.now = [] { return std::tm{}; };
  options.limits.max_steps = 200000;  // keep each input fast; the limits themselves are tested
  options.limits.max_output_bytes = 1 << 20;
  options.limits.max_range = 10000;
  auto out = parsed.value().render(
      tierserve::chat::make_chat_context(messages, true, "<s>", "</s>"), options);
  if (!out.is_ok() && out.status().message().empty()) std::abort();
  return 0;
}
