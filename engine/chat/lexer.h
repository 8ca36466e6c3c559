// Tokenizer for the Jinja2 subset: splits a template into text and tag tokens, applying Jinja2's
// whitespace rules as transformers configures them (trim_blocks and lstrip_blocks on,
// keep_trailing_newline off), including the `-` and `+` modifiers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tierserve::chat {

enum class TokenKind {
  kText,        // literal template data (already whitespace-processed)
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,        // identifier or keyword
  kString,      // string literal, escapes decoded
  kInt,
  kFloat,
  kOp,  // operator or punctuation, text holds it ("==", "(", "|", ...)
  kEof,
};

struct Token {
  TokenKind kind;
  std::string text;  // text, name, decoded string or operator
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;  // 1-based line of the token's first character
};

// Tokenizes `source`. Throws TemplateError (with the line) on an unterminated tag, comment or
// string, or an unexpected character.
std::vector<Token> tokenize(const std::string& source);

}  // namespace tierserve::chat
