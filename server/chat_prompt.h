// Turning a --messages JSON array into a prompt: the model's chat template rendered as
// transformers' apply_chat_template(messages, add_generation_prompt=True) does.
#pragma once

#include <string>

#include "common/status.h"
#include "engine/tokenizer/tokenizer.h"

namespace tierserve {

// Renders `messages_json` (a JSON array of {"role", "content"} objects) with the chat template of
// `model_dir` (chat_template.jinja, tokenizer_config.json, or the built-in one for the
// architecture in config.json). Errors name --messages (bad JSON) or the template and its line.
Result<std::string> render_chat_prompt(const std::string& model_dir, const Tokenizer& tokenizer,
                                       const std::string& messages_json);

}  // namespace tierserve
