// The data model of the chat-template interpreter: a small, Python-like dynamic value (undefined,
// none, bool, int, float, string, list, dict, callable) with the conversions Jinja2 applies when it
// renders, compares and serializes values, so that output matches Python's byte for byte.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tierserve::chat {

// Thrown inside the interpreter for a template error; ChatTemplate turns it into a Status at its
// API boundary, so no exception leaves this module. `line` is 1-based, 0 when unknown.
struct TemplateError : std::runtime_error {
  TemplateError(std::string message, int line_number)
      : std::runtime_error(std::move(message)), line(line_number) {}
  int line;
};

class Value;
using List = std::vector<Value>;

// An insertion-ordered string-keyed dictionary (Python dicts keep insertion order).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(const std::string& key) const;
  Value* find(const std::string& key);
  void set(const std::string& key, Value value);
};

// Arguments of a call: positional then keyword, in source order.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The keyword argument `name`, else positional argument `index`, else nullptr.
  const Value* get(const std::string& name, size_t index) const;
};

// A callable (macro, global function or bound method). It throws TemplateError on failure.
struct Callable {
  std::string name;
  std::function<Value(const CallArgs&)> fn;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable };

  Value() = default;  // undefined
  static Value undefined(std::string hint = "") {
    Value v;
    v.str_ = std::move(hint);
    return v;
  }
  static Value none() { return Value(Kind::kNone); }
  Value(bool b) : kind_(Kind::kBool), int_(b) {}                      // NOLINT: implicit by design
  Value(int v) : kind_(Kind::kInt), int_(v) {}                        // NOLINT
  Value(int64_t v) : kind_(Kind::kInt), int_(v) {}                    // NOLINT
  Value(double v) : kind_(Kind::kFloat), float_(v) {}                 // NOLINT
  Value(std::string s) : kind_(Kind::kString), str_(std::move(s)) {}  // NOLINT
  Value(const char* s) : kind_(Kind::kString), str_(s) {}             // NOLINT
  Value(List list)
      : kind_(Kind::kList), list_(std::make_shared<List>(std::move(list))) {}  // NOLINT
  Value(Dict dict)
      : kind_(Kind::kDict), dict_(std::make_shared<Dict>(std::move(dict))) {}  // NOLINT
  Value(Callable c)
      : kind_(Kind::kCallable), callable_(std::make_shared<Callable>(std::move(c))) {}  // NOLINT
  // A namespace() object: a dict whose entries may be assigned with `set ns.attr = ...`.
  static Value make_namespace(Dict dict) {
    Value v(std::move(dict));
    v.is_namespace_ = true;
    return v;
  }
  static Value from_json(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_callable() const { return kind_ == Kind::kCallable; }
  bool is_namespace() const { return is_namespace_; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return int_; }
  double as_double() const { return is_float() ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return str_; }
  // Why this value is undefined (for error messages); empty if unknown.
  const std::string& undefined_hint() const { return str_; }
  List& list() const { return *list_; }
  Dict& dict() const { return *dict_; }
  const Callable& callable() const { return *callable_; }

  // Python truthiness (undefined is false).
  bool truthy() const;
  // str(value) as Jinja2 renders it: None -> "None", True -> "True", floats as repr, containers as
  // Python repr, undefined -> "".
  std::string to_str() const;
  // repr(value) in Python syntax.
  std::string repr() const;
  // A readable type name for error messages ("str", "dict", ...).
  std::string type_name() const;

 private:
  explicit Value(Kind kind) : kind_(kind) {}
  Kind kind_ = Kind::kUndefined;
  int64_t int_ = 0;
  double float_ = 0;
  std::string str_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Callable> callable_;
  bool is_namespace_ = false;
};

// Python ==, as Jinja2 uses it (1 == 1.0 == True; containers compare deeply; undefined equals only
// undefined).
bool values_equal(const Value& a, const Value& b);
// Python's repr() of a float ("1.0", "1e-05", "1e+16", "inf", "nan").
std::string python_float_repr(double value);
// json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=False) as transformers' tojson
// filter does; indent < 0 means None. Throws TemplateError for values JSON cannot hold.
std::string to_json(const Value& value, int indent);

// UTF-8 helpers: strings are indexed by code point, as Python does.
std::vector<char32_t> utf8_decode(const std::string& s);
std::string utf8_encode(const std::vector<char32_t>& cps);
void utf8_append(std::string& out, char32_t cp);
// Python str.isspace() for one code point.
bool is_python_space(char32_t cp);

}  // namespace tierserve::chat
