// Turning a --messages JSON array (or a chat request's messages) into a prompt: the model's chat
// template rendered as transformers' apply_chat_template(messages, add_generation_prompt,
// continue_final_message, **chat_template_kwargs) does.
#pragma once

#include <string>

#include "common/status.h"
#include "engine/tokenizer/tokenizer.h"

namespace tierserve {

struct ChatPromptOptions {
  bool add_generation_prompt = true;    // end with the assistant's header
  bool continue_final_message = false;  // cut the prompt right after the last message's content,
                                        // so the model continues it (not with the above)
  std::string chat_template_kwargs_json = "{}";  // a JSON object merged into the template's
                                                 // variables
};

// Renders `messages_json` (a JSON array of {"role", "content"} objects) with the chat template of
// `model_dir` (chat_template.jinja, tokenizer_config.json, or the built-in one for the
// architecture in config.json). Errors name --messages (bad JSON), chat_template_kwargs, the
// template and its line, or a final message that the rendered prompt does not contain.
Result<std::string> render_chat_prompt(const std::string& model_dir, const Tokenizer& tokenizer,
                                       const std::string& messages_json,
                                       const ChatPromptOptions& options = {});

}  // namespace tierserve
