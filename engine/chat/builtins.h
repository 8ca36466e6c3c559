// Jinja2's built-in filters, tests, attribute/item lookup and the Python methods of str, dict and
// list that chat templates call, with Python semantics (code-point indexing, Undefined results for
// missing keys). Every function throws TemplateError (line 0; the caller fills in the line).
#pragma once

#include <string>

#include "engine/chat/value.h"

namespace tierserve::chat {

// `obj.name`: a dict key (or one of dict's methods), a str/list method bound to obj, or an
// Undefined that remembers what was missing. Attribute access on an Undefined throws.
Value get_attr(const Value& obj, const std::string& name);
// `obj[key]`: list/str index (negative from the end), dict key; missing -> Undefined.
Value get_item(const Value& obj, const Value& key);
// `obj[start:stop:step]` for lists and strings; null Values (undefined) mean "omitted".
Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);

// Applies filter `name` to `subject`. Throws for an unknown filter or bad arguments.
Value apply_filter(const std::string& name, const Value& subject, const CallArgs& args);
// Evaluates test `name` (without negation).
bool apply_test(const std::string& name, const Value& subject, const CallArgs& args);
// Whether a filter/test of that name exists (checked at parse-independent render time).
bool has_filter(const std::string& name);
bool has_test(const std::string& name);

// Python `needle in haystack` (substring, list membership, dict key).
bool contains(const Value& haystack, const Value& needle);
// The items of an iterable as Jinja2 iterates it: list items, dict keys, string characters;
// undefined is empty. Throws for other types.
List iterate(const Value& v);
// Throws "'<hint>' is undefined"-style errors when `v` is undefined.
void fail_if_undefined(const Value& v);

}  // namespace tierserve::chat
