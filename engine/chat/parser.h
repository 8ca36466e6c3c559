// Parser for the Jinja2 subset: tokens (lexer.h) to a statement tree (ast.h), with Jinja2's
// operator precedence (filters and tests bind tighter than arithmetic, `~` between + and *).
#pragma once

#include <string>

#include "engine/chat/ast.h"

namespace tierserve::chat {

// Parses a whole template. Throws TemplateError naming the line of the first syntax error
// (unknown tag, unclosed block, unexpected token, nesting deeper than a fixed limit).
Body parse_template(const std::string& source);

}  // namespace tierserve::chat
