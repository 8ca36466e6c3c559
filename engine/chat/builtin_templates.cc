// Built-in fallback templates for models whose directory carries no chat template. Each is the
// family's canonical format in its simplest form (no tool calling).
#include <cstring>

#include "engine/chat/chat_template.h"

namespace tierserve::chat {
namespace {

constexpr const char* kLlama3 =
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}";

constexpr const char* kChatMl =
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

constexpr const char* kMistral =
    "{{- bos_token }}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- elif message['role'] == 'system' %}{{- '[INST] ' + message['content'] + '[/INST]' }}"
    "{%- endif %}{%- endfor %}";

constexpr const char* kChatGlm3 =
    "{% for message in messages %}{% if loop.first %}[gMASK]sop<|{{ message['role'] }}|>\n "
    "{{ message['content'] }}{% else %}<|{{ message['role'] }}|>\n {{ message['content'] }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

constexpr const char* kBaichuan2 =
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{- message['content'] -}}"
    "{%- elif message['role'] == 'user' -%}{{- '<reserved_106>' + message['content'] -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- '<reserved_107>' + message['content'] -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt and messages[-1]['role'] != 'assistant' -%}"
    "{{- '<reserved_107>' -}}{%- endif -%}";

}  // namespace

const char* builtin_template_for_architecture(const std::string& architecture) {
  struct Entry {
    const char* architecture;
    const char* text;
  };
  static const Entry kTable[] = {
      {"LlamaForCausalLM", kLlama3},       {"Qwen2ForCausalLM", kChatMl},
      {"Qwen3ForCausalLM", kChatMl},       {"MistralForCausalLM", kMistral},
      {"ChatGLMModel", kChatGlm3},         {"ChatGLMForConditionalGeneration", kChatGlm3},
      {"BaichuanForCausalLM", kBaichuan2},
  };
  for (const Entry& e : kTable) {
    if (architecture == e.architecture) return e.text;
  }
  return nullptr;
}

}  // namespace tierserve::chat
