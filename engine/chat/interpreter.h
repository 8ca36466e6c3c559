// Renders a parsed template (ast.h) against a context, with Jinja2's scoping: `set` inside a for
// loop or macro stays local to it, namespace() objects are shared, macros see the template's
// top-level variables. Bounded: call depth, evaluation steps and output size are limited so that
// no template can hang or exhaust memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <string>

#include "engine/chat/ast.h"

namespace tierserve::chat {

struct RenderLimits {
  int max_call_depth = 64;              // nested macro calls
  int64_t max_steps = 20'000'000;       // evaluated statements and expressions
  size_t max_output_bytes = 64u << 20;  // rendered text
  int64_t max_range = 1'000'000;        // elements one range() may produce
};

// Renders `body` with `context` as the global variables (plus the built-in globals namespace(),
// range(), dict(), raise_exception(), strftime_now()). `now` supplies the local time that
// strftime_now formats. Throws TemplateError (with a line) on any template error.
std::string render_body(const Body& body, const Dict& context, const std::function<std::tm()>& now,
                        const RenderLimits& limits);

}  // namespace tierserve::chat
