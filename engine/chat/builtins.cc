#include "engine/chat/builtins.h"

#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

namespace tierserve::chat {
namespace {

[[noreturn]] void fail(const std::string& message) { throw TemplateError(message, 0); }

std::string object_name(const Value& v) { return "'" + v.type_name() + " object'"; }

Value missing_attr(const Value& obj, const std::string& name) {
  return Value::undefined(object_name(obj) + " has no attribute '" + name + "'");
}

// Returns a copy: `fallback` is often a temporary.
Value arg_or(const CallArgs& args, const std::string& name, size_t index, const Value& fallback) {
  const Value* v = args.get(name, index);
  return v ? *v : fallback;
}

std::string require_string(const Value& v, const char* what) {
  if (!v.is_string()) fail(std::string(what) + " expects a string, got " + v.type_name());
  return v.as_string();
}

int64_t normalize_index(int64_t index, int64_t size) { return index < 0 ? index + size : index; }

// Python str.strip/lstrip/rstrip with optional character set.
std::string strip_chars(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<char32_t> cps = utf8_decode(s);
  std::vector<char32_t> set;
  bool whitespace = chars.is_undefined() || chars.is_none();
  if (!whitespace) set = utf8_decode(require_string(chars, "strip"));
  auto strip_it = [&](char32_t cp) {
    return whitespace ? is_python_space(cp) : std::find(set.begin(), set.end(), cp) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  return utf8_encode(std::vector<char32_t>(cps.begin() + static_cast<std::ptrdiff_t>(b),
                                           cps.begin() + static_cast<std::ptrdiff_t>(e)));
}

// Python's str.upper() / str.lower(): full Unicode case mapping (ICU, root locale), so "ß" ->
// "SS" and a final capital sigma lowers to "ς", as in Python.
std::string unicode_case(const std::string& s, bool upper) {
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(s);
  if (upper) {
    u.toUpper(icu::Locale::getRoot());
  } else {
    u.toLower(icu::Locale::getRoot());
  }
  std::string out;
  u.toUTF8String(out);
  return out;
}

// The first code point of `s` and the rest.
std::pair<std::string, std::string> split_first(const std::string& s) {
  std::vector<char32_t> cps = utf8_decode(s);
  if (cps.empty()) return {"", ""};
  return {utf8_encode(std::vector<char32_t>(cps.begin(), cps.begin() + 1)),
          utf8_encode(std::vector<char32_t>(cps.begin() + 1, cps.end()))};
}

// Python's str.capitalize(): the first character title-cased, the rest lower-cased.
std::string capitalize(const std::string& s) {
  auto [head, tail] = split_first(s);
  icu::UnicodeString h = icu::UnicodeString::fromUTF8(head);
  h.toTitle(nullptr, icu::Locale::getRoot(),
            U_TITLECASE_NO_LOWERCASE | U_TITLECASE_NO_BREAK_ADJUSTMENT);
  std::string out;
  h.toUTF8String(out);
  return out + unicode_case(tail, false);
}

// Jinja2's title filter: the text is split before and after runs of [-\s({[<], and each piece
// becomes piece[0].upper() + piece[1:].lower().
std::string title(const std::string& s) {
  auto is_sep = [](char32_t c) {
    return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || u_isUWhiteSpace(c);
  };
  std::vector<char32_t> cps = utf8_decode(s);
  std::string out;
  size_t i = 0;
  while (i < cps.size()) {
    size_t j = i;
    const bool sep = is_sep(cps[i]);
    while (j < cps.size() && is_sep(cps[j]) == sep) ++j;
    std::string piece =
        utf8_encode(std::vector<char32_t>(cps.begin() + static_cast<std::ptrdiff_t>(i),
                                          cps.begin() + static_cast<std::ptrdiff_t>(j)));
    auto [head, tail] = split_first(piece);
    out += unicode_case(head, true) + unicode_case(tail, false);
    i = j;
  }
  return out;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to,
                        int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` around every character
    std::vector<char32_t> cps = utf8_decode(s);
    int64_t done = 0;
    for (char32_t cp : cps) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      utf8_append(out, cp);
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

List split(const std::string& s, const Value& sep, int64_t maxsplit) {
  List out;
  if (sep.is_undefined() || sep.is_none()) {  // runs of whitespace, no empty strings
    std::vector<char32_t> cps = utf8_decode(s);
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && is_python_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      size_t j = i;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
        j = cps.size();
        while (j > i && is_python_space(cps[j - 1])) --j;
      } else {
        while (j < cps.size() && !is_python_space(cps[j])) ++j;
      }
      out.emplace_back(utf8_encode(std::vector<char32_t>(cps.begin() + static_cast<long>(i),
                                                         cps.begin() + static_cast<long>(j))));
      i = j;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) > maxsplit) break;
    }
    return out;
  }
  std::string d = require_string(sep, "split");
  if (d.empty()) fail("empty separator");
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    size_t hit = s.find(d, pos);
    if (hit == std::string::npos) break;
    out.emplace_back(s.substr(pos, hit - pos));
    pos = hit + d.size();
  }
  out.emplace_back(s.substr(pos));
  return out;
}

bool affix_match(const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const Value& a) {
    std::string x = require_string(a, prefix ? "startswith" : "endswith");
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0
                  : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (affix.is_list()) {
    return std::any_of(affix.list().begin(), affix.list().end(), one);
  }
  return one(affix);
}

Value bind_method(const Value& self, const std::string& name,
                  std::function<Value(const Value&, const CallArgs&)> fn) {
  return Value(Callable{name, [self, fn](const CallArgs& args) { return fn(self, args); }});
}

Value string_method(const Value& self, const std::string& name) {
  static const Value kNone = Value::undefined();
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    return bind_method(self, name, [name](const Value& s, const CallArgs& a) {
      return Value(strip_chars(s.as_string(), arg_or(a, "chars", 0, kNone), name != "rstrip",
                               name != "lstrip"));
    });
  }
  if (name == "split") {
    return bind_method(self, name, [](const Value& s, const CallArgs& a) {
      const Value& m = arg_or(a, "maxsplit", 1, Value(-1));
      return Value(split(s.as_string(), arg_or(a, "sep", 0, kNone), m.as_int()));
    });
  }
  if (name == "startswith" || name == "endswith") {
    return bind_method(self, name, [name](const Value& s, const CallArgs& a) {
      if (a.positional.empty()) fail(name + "() takes at least 1 argument");
      return Value(affix_match(s.as_string(), a.positional[0], name == "startswith"));
    });
  }
  if (name == "upper" || name == "lower") {
    return bind_method(self, name, [name](const Value& s, const CallArgs&) {
      return Value(unicode_case(s.as_string(), name == "upper"));
    });
  }
  if (name == "title" || name == "capitalize") {
    return bind_method(self, name, [name](const Value& s, const CallArgs&) {
      return Value(name == "title" ? title(s.as_string()) : capitalize(s.as_string()));
    });
  }
  if (name == "replace") {
    return bind_method(self, name, [](const Value& s, const CallArgs& a) {
      if (a.positional.size() < 2) fail("replace() takes at least 2 arguments");
      const Value& count = arg_or(a, "count", 2, Value(-1));
      return Value(replace_all(s.as_string(), require_string(a.positional[0], "replace"),
                               require_string(a.positional[1], "replace"), count.as_int()));
    });
  }
  if (name == "join") {
    return bind_method(self, name, [](const Value& s, const CallArgs& a) {
      if (a.positional.empty()) fail("join() takes 1 argument");
      std::string out;
      bool first = true;
      for (const Value& item : iterate(a.positional[0])) {
        if (!first) out += s.as_string();
        first = false;
        out += require_string(item, "join");
      }
      return Value(out);
    });
  }
  if (name == "find" || name == "count") {
    return bind_method(self, name, [name](const Value& s, const CallArgs& a) {
      if (a.positional.empty()) fail(name + "() takes 1 argument");
      std::string needle = require_string(a.positional[0], name.c_str());
      const std::string& hay = s.as_string();
      if (name == "find") {
        size_t hit = hay.find(needle);
        if (hit == std::string::npos) return Value(-1);
        return Value(static_cast<int64_t>(utf8_decode(hay.substr(0, hit)).size()));
      }
      if (needle.empty()) return Value(static_cast<int64_t>(utf8_decode(hay).size() + 1));
      int64_t n = 0;
      for (size_t p = hay.find(needle); p != std::string::npos;
           p = hay.find(needle, p + needle.size()))
        ++n;
      return Value(n);
    });
  }
  return missing_attr(self, name);
}

Value dict_method(const Value& self, const std::string& name) {
  if (name == "items") {
    return bind_method(self, name, [](const Value& d, const CallArgs&) {
      List out;
      for (const auto& [k, v] : d.dict().items) out.emplace_back(List{Value(k), v});
      return Value(std::move(out));
    });
  }
  if (name == "keys" || name == "values") {
    return bind_method(self, name, [name](const Value& d, const CallArgs&) {
      List out;
      for (const auto& [k, v] : d.dict().items) out.push_back(name == "keys" ? Value(k) : v);
      return Value(std::move(out));
    });
  }
  if (name == "get") {
    return bind_method(self, name, [](const Value& d, const CallArgs& a) {
      if (a.positional.empty()) fail("get() takes at least 1 argument");
      const Value& key = a.positional[0];
      const Value* found = key.is_string() ? d.dict().find(key.as_string()) : nullptr;
      if (found) return *found;
      return a.positional.size() > 1 ? a.positional[1] : Value::none();
    });
  }
  if (name == "copy") {
    return bind_method(self, name, [](const Value& d, const CallArgs&) { return Value(d.dict()); });
  }
  return Value();  // not a method: the caller looks the key up
}

bool is_unsafe_mutator(const std::string& name) {
  static const char* kNames[] = {"append",  "extend", "insert",  "pop",    "remove",
                                 "clear",   "sort",   "reverse", "update", "setdefault",
                                 "popitem", "add",    "discard"};
  return std::any_of(std::begin(kNames), std::end(kNames),
                     [&](const char* n) { return name == n; });
}

Value attr_of(const Value& item, const std::string& path) {
  Value cur = item;
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = numeric ? get_item(cur, Value(static_cast<int64_t>(std::stoll(part))))
                  : get_item(cur, Value(part));
    if (dot == std::string::npos) return cur;
    pos = dot + 1;
  }
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// select/reject/selectattr/rejectattr.
Value select_items(const Value& seq, const CallArgs& args, bool by_attr, bool keep) {
  size_t first_test_arg = by_attr ? 1 : 0;
  std::string attr;
  if (by_attr) {
    if (args.positional.empty()) fail("selectattr/rejectattr need an attribute name");
    attr = require_string(args.positional[0], "selectattr");
  }
  std::string test;
  CallArgs test_args;
  if (args.positional.size() > first_test_arg) {
    test = require_string(args.positional[first_test_arg], "select");
    test_args.positional.assign(args.positional.begin() + static_cast<long>(first_test_arg) + 1,
                                args.positional.end());
  }
  List out;
  for (const Value& item : iterate(seq)) {
    Value subject = by_attr ? attr_of(item, attr) : item;
    bool pass = test.empty() ? subject.truthy() : apply_test(test, subject, test_args);
    if (pass == keep) out.push_back(item);
  }
  return Value(std::move(out));
}

int64_t to_int(const Value& v, const Value& fallback) {
  if (v.is_int() || v.is_bool()) return v.as_int();
  if (v.is_float()) return static_cast<int64_t>(v.as_double());
  if (v.is_string()) {
    std::string s = strip_chars(v.as_string(), Value(), true, true);
    char* end = nullptr;
    long long i = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && *end == '\0') return i;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0' && std::isfinite(d)) return static_cast<int64_t>(d);
  }
  return fallback.as_int();
}

}  // namespace

void fail_if_undefined(const Value& v) {
  if (v.is_undefined()) fail(v.undefined_hint().empty() ? "undefined value" : v.undefined_hint());
}

Value get_attr(const Value& obj, const std::string& name) {
  fail_if_undefined(obj);
  if (obj.is_dict()) {
    if (obj.is_namespace()) {
      const Value* v = obj.dict().find(name);
      return v ? *v : missing_attr(obj, name);
    }
    if (is_unsafe_mutator(name))
      fail("access to attribute '" + name + "' of 'dict' object is unsafe.");
    Value method = dict_method(obj, name);
    if (!method.is_undefined()) return method;
    const Value* v = obj.dict().find(name);
    return v ? *v : missing_attr(obj, name);
  }
  if (obj.is_string()) return string_method(obj, name);
  if (obj.is_list() && is_unsafe_mutator(name)) {
    fail("access to attribute '" + name + "' of 'list' object is unsafe.");
  }
  return missing_attr(obj, name);
}

Value get_item(const Value& obj, const Value& key) {
  fail_if_undefined(obj);
  if (obj.is_dict() && !obj.is_namespace()) {
    if (key.is_string()) {
      const Value* v = obj.dict().find(key.as_string());
      if (v) return *v;
      Value method = dict_method(obj, key.as_string());
      return method.is_undefined() ? missing_attr(obj, key.as_string()) : method;
    }
    return Value::undefined(object_name(obj) + " has no element " + key.repr());
  }
  if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    if (obj.is_list()) {
      int64_t size = static_cast<int64_t>(obj.list().size());
      int64_t i = normalize_index(key.as_int(), size);
      if (i >= 0 && i < size) return obj.list()[static_cast<size_t>(i)];
    } else {
      std::vector<char32_t> cps = utf8_decode(obj.as_string());
      int64_t size = static_cast<int64_t>(cps.size());
      int64_t i = normalize_index(key.as_int(), size);
      if (i >= 0 && i < size) {
        std::string out;
        utf8_append(out, cps[static_cast<size_t>(i)]);
        return Value(out);
      }
    }
    return Value::undefined(object_name(obj) + " has no element " + key.repr());
  }
  if (key.is_string()) return get_attr(obj, key.as_string());
  return Value::undefined(object_name(obj) + " has no element " + key.repr());
}

Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  fail_if_undefined(obj);
  auto opt = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    if (!v.is_int() && !v.is_bool()) fail(std::string("slice ") + what + " must be an integer");
    return v.as_int();
  };
  int64_t st = opt(step, "step").value_or(1);
  if (st == 0) fail("slice step cannot be zero");
  std::vector<char32_t> cps;
  int64_t size;
  if (obj.is_list()) {
    size = static_cast<int64_t>(obj.list().size());
  } else if (obj.is_string()) {
    cps = utf8_decode(obj.as_string());
    size = static_cast<int64_t>(cps.size());
  } else {
    fail("'" + obj.type_name() + "' object is not subscriptable");
  }
  // Python's slice.indices().
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v < 0 ? *v + size : *v;
    if (st > 0) return std::clamp<int64_t>(x, 0, size);
    return std::clamp<int64_t>(x, -1, size - 1);
  };
  int64_t b = clamp(opt(start, "start"), st > 0 ? 0 : size - 1);
  int64_t e = clamp(opt(stop, "stop"), st > 0 ? size : -1);
  List items;
  std::vector<char32_t> out_cps;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) {
    if (obj.is_list()) {
      items.push_back(obj.list()[static_cast<size_t>(i)]);
    } else {
      out_cps.push_back(cps[static_cast<size_t>(i)]);
    }
  }
  if (obj.is_list()) return Value(std::move(items));
  return Value(utf8_encode(out_cps));
}

bool contains(const Value& haystack, const Value& needle) {
  if (haystack.is_string()) {
    if (!needle.is_string()) fail("'in <string>' requires string as left operand");
    return haystack.as_string().find(needle.as_string()) != std::string::npos;
  }
  if (haystack.is_dict()) return needle.is_string() && haystack.dict().find(needle.as_string());
  if (haystack.is_list()) {
    return std::any_of(haystack.list().begin(), haystack.list().end(),
                       [&](const Value& v) { return values_equal(v, needle); });
  }
  if (haystack.is_undefined()) return false;
  fail("argument of type '" + haystack.type_name() + "' is not iterable");
}

List iterate(const Value& v) {
  if (v.is_list()) return v.list();
  if (v.is_undefined()) return {};
  if (v.is_dict() && !v.is_namespace()) {
    List keys;
    for (const auto& [k, item] : v.dict().items) keys.emplace_back(k);
    return keys;
  }
  if (v.is_string()) {
    List chars;
    for (char32_t cp : utf8_decode(v.as_string())) {
      std::string s;
      utf8_append(s, cp);
      chars.emplace_back(s);
    }
    return chars;
  }
  fail("'" + v.type_name() + "' object is not iterable");
}

namespace {

using FilterFn = Value (*)(const Value&, const CallArgs&);

int64_t length_of(const Value& v) {
  if (v.is_string()) return static_cast<int64_t>(utf8_decode(v.as_string()).size());
  if (v.is_list()) return static_cast<int64_t>(v.list().size());
  if (v.is_dict()) return static_cast<int64_t>(v.dict().items.size());
  if (v.is_undefined()) return 0;
  fail("object of type '" + v.type_name() + "' has no len()");
}

const std::map<std::string, FilterFn>& filters() {
  static const Value kUndef;
  static const std::map<std::string, FilterFn> table = {
      {"trim",
       [](const Value& v, const CallArgs& a) {
         return Value(strip_chars(v.to_str(), arg_or(a, "chars", 0, kUndef), true, true));
       }},
      {"length", [](const Value& v, const CallArgs&) { return Value(length_of(v)); }},
      {"count", [](const Value& v, const CallArgs&) { return Value(length_of(v)); }},
      {"tojson",
       [](const Value& v, const CallArgs& a) {
         const Value& indent = arg_or(a, "indent", 0, kUndef);
         int n = indent.is_int() ? static_cast<int>(indent.as_int()) : -1;
         if (n > 64) fail("tojson indent too large");
         return Value(to_json(v, n));
       }},
      {"selectattr",
       [](const Value& v, const CallArgs& a) { return select_items(v, a, true, true); }},
      {"rejectattr",
       [](const Value& v, const CallArgs& a) { return select_items(v, a, true, false); }},
      {"select", [](const Value& v, const CallArgs& a) { return select_items(v, a, false, true); }},
      {"reject",
       [](const Value& v, const CallArgs& a) { return select_items(v, a, false, false); }},
      {"map",
       [](const Value& v, const CallArgs& a) {
         List out;
         const Value* attr = a.get("attribute", static_cast<size_t>(-1));
         if (attr) {
           const Value* dflt = a.get("default", static_cast<size_t>(-1));
           for (const Value& item : iterate(v)) {
             Value x = attr_of(item, require_string(*attr, "map"));
             out.push_back(x.is_undefined() && dflt ? *dflt : x);
           }
           return Value(std::move(out));
         }
         if (a.positional.empty()) fail("map() needs a filter name or attribute=");
         std::string name = require_string(a.positional[0], "map");
         CallArgs rest;
         rest.positional.assign(a.positional.begin() + 1, a.positional.end());
         rest.keyword = a.keyword;
         for (const Value& item : iterate(v)) out.push_back(apply_filter(name, item, rest));
         return Value(std::move(out));
       }},
      {"list", [](const Value& v, const CallArgs&) { return Value(iterate(v)); }},
      {"join",
       [](const Value& v, const CallArgs& a) {
         std::string sep = arg_or(a, "d", 0, Value("")).to_str();
         const Value* attr = a.get("attribute", 1);
         std::string out;
         bool first = true;
         for (const Value& item : iterate(v)) {
           if (!first) out += sep;
           first = false;
           out += (attr ? attr_of(item, attr->to_str()) : item).to_str();
         }
         return Value(out);
       }},
      {"upper",
       [](const Value& v, const CallArgs&) { return Value(unicode_case(v.to_str(), true)); }},
      {"lower",
       [](const Value& v, const CallArgs&) { return Value(unicode_case(v.to_str(), false)); }},
      {"capitalize", [](const Value& v, const CallArgs&) { return Value(capitalize(v.to_str())); }},
      {"title", [](const Value& v, const CallArgs&) { return Value(title(v.to_str())); }},
      {"replace",
       [](const Value& v, const CallArgs& a) {
         if (a.positional.size() < 2) fail("replace needs 2 arguments");
         const Value& count = arg_or(a, "count", 2, Value::none());
         return Value(replace_all(v.to_str(), a.positional[0].to_str(), a.positional[1].to_str(),
                                  count.is_int() ? count.as_int() : -1));
       }},
      {"default",
       [](const Value& v, const CallArgs& a) {
         const Value& dflt = arg_or(a, "default_value", 0, Value(""));
         bool boolean = arg_or(a, "boolean", 1, Value(false)).truthy();
         if (v.is_undefined() || (boolean && !v.truthy())) return dflt;
         return v;
       }},
      {"items",
       [](const Value& v, const CallArgs&) {
         if (v.is_undefined()) return Value(List{});
         if (!v.is_dict()) fail("items filter expects a mapping, got " + v.type_name());
         List out;
         for (const auto& [k, item] : v.dict().items) out.emplace_back(List{Value(k), item});
         return Value(std::move(out));
       }},
      {"first",
       [](const Value& v, const CallArgs&) {
         List items = iterate(v);
         return items.empty() ? Value::undefined("No first item, sequence was empty.")
                              : items.front();
       }},
      {"last",
       [](const Value& v, const CallArgs&) {
         List items = iterate(v);
         return items.empty() ? Value::undefined("No last item, sequence was empty.")
                              : items.back();
       }},
      {"reverse",
       [](const Value& v, const CallArgs&) {
         if (v.is_string()) return get_slice(v, Value(), Value(), Value(-1));
         List items = iterate(v);
         std::reverse(items.begin(), items.end());
         return Value(std::move(items));
       }},
      {"string", [](const Value& v, const CallArgs&) { return Value(v.to_str()); }},
      {"int",
       [](const Value& v, const CallArgs& a) {
         return Value(to_int(v, arg_or(a, "default", 0, Value(0))));
       }},
      {"float",
       [](const Value& v, const CallArgs& a) {
         if (v.is_number()) return Value(v.as_double());
         if (v.is_string()) {
           char* end = nullptr;
           std::string s = strip_chars(v.as_string(), Value(), true, true);
           double d = std::strtod(s.c_str(), &end);
           if (!s.empty() && *end == '\0') return Value(d);
         }
         return Value(arg_or(a, "default", 0, Value(0.0)).as_double());
       }},
      {"abs",
       [](const Value& v, const CallArgs&) {
         if (v.is_float()) return Value(std::fabs(v.as_double()));
         if (v.is_number()) return Value(static_cast<int64_t>(std::llabs(v.as_int())));
         fail("bad operand type for abs(): '" + v.type_name() + "'");
       }},
      {"safe", [](const Value& v, const CallArgs&) { return v; }},
      {"e", [](const Value& v, const CallArgs&) { return Value(html_escape(v.to_str())); }},
      {"escape", [](const Value& v, const CallArgs&) { return Value(html_escape(v.to_str())); }},
      {"indent",
       [](const Value& v, const CallArgs& a) {
         const Value& w = arg_or(a, "width", 0, Value(4));
         std::string pad =
             w.is_string()
                 ? w.as_string()
                 : std::string(static_cast<size_t>(std::clamp<int64_t>(w.as_int(), 0, 256)), ' ');
         bool first = arg_or(a, "first", 1, Value(false)).truthy();
         bool blank = arg_or(a, "blank", 2, Value(false)).truthy();
         std::string s = v.to_str(), out;
         List lines = split(s, Value("\n"), -1);
         for (size_t i = 0; i < lines.size(); ++i) {
           const std::string& line = lines[i].as_string();
           if (i > 0) out += '\n';
           if ((i > 0 || first) && (blank || !line.empty())) out += pad;
           out += line;
         }
         return Value(out);
       }},
  };
  return table;
}

}  // namespace

bool has_filter(const std::string& name) { return filters().count(name) != 0 || name == "d"; }

Value apply_filter(const std::string& name, const Value& subject, const CallArgs& args) {
  auto it = filters().find(name == "d" ? "default" : name);
  if (it == filters().end()) fail("No filter named '" + name + "'.");
  return it->second(subject, args);
}

bool has_test(const std::string& name) {
  static const char* kTests[] = {"defined", "undefined",   "none",     "string",   "mapping",
                                 "number",  "integer",     "float",    "sequence", "iterable",
                                 "boolean", "true",        "false",    "eq",       "equalto",
                                 "==",      "ne",          "!=",       "in",       "odd",
                                 "even",    "divisibleby", "callable", "lower",    "upper",
                                 "sameas",  "gt",          "ge",       "lt",       "le",
                                 ">",       ">=",          "<",        "<=",       "greaterthan",
                                 "lessthan"};
  return std::any_of(std::begin(kTests), std::end(kTests),
                     [&](const char* t) { return name == t; });
}

bool apply_test(const std::string& name, const Value& v, const CallArgs& args) {
  auto arg = [&]() -> const Value& {
    if (args.positional.empty()) fail("test '" + name + "' needs an argument");
    return args.positional[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict() && !v.is_namespace();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "sequence") return v.is_string() || v.is_list() || (v.is_dict() && !v.is_namespace());
  if (name == "iterable") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "callable") return v.is_callable();
  if (name == "eq" || name == "equalto" || name == "==") return values_equal(v, arg());
  if (name == "ne" || name == "!=") return !values_equal(v, arg());
  if (name == "sameas") {
    const Value& o = arg();
    if (v.is_none() || v.is_bool()) return v.kind() == o.kind() && v.as_int() == o.as_int();
    return false;
  }
  if (name == "in") return contains(arg(), v);
  if (name == "odd" || name == "even") {
    if (!v.is_int()) fail("test '" + name + "' needs an integer");
    return (std::llabs(v.as_int()) % 2 == 1) == (name == "odd");
  }
  if (name == "divisibleby") {
    int64_t d = arg().as_int();
    if (d == 0) fail("integer division or modulo by zero");
    return v.as_int() % d == 0;
  }
  if (name == "lower" || name == "upper") {
    std::string s = v.to_str();
    return s == unicode_case(s, name == "upper");
  }
  if (name == "gt" || name == ">" || name == "greaterthan" || name == "ge" || name == ">=" ||
      name == "lt" || name == "<" || name == "lessthan" || name == "le" || name == "<=") {
    const Value& o = arg();
    if (!v.is_number() || !o.is_number()) fail("test '" + name + "' needs numbers");
    double x = v.as_double(), y = o.as_double();
    if (name == "gt" || name == ">" || name == "greaterthan") return x > y;
    if (name == "ge" || name == ">=") return x >= y;
    if (name == "lt" || name == "<" || name == "lessthan") return x < y;
    return x <= y;
  }
  fail("No test named '" + name + "'.");
}

}  // namespace tierserve::chat
