#include "engine/chat/interpreter.h"

#include <cmath>
#include <deque>
#include <unordered_map>

#include "engine/chat/builtins.h"

namespace tierserve::chat {
namespace {

enum class Flow { kNormal, kBreak, kContinue };

using Scope = std::unordered_map<std::string, Value>;

class Interpreter {
 public:
  Interpreter(const Dict& context, const std::function<std::tm()>& now, const RenderLimits& limits)
      : now_(now), limits_(limits) {
    scopes_.emplace_back();
    for (const auto& [k, v] : context.items) scopes_.back()[k] = v;
    install_globals();
    scopes_.emplace_back();  // template top level
    active_ = {&scopes_[0], &scopes_[1]};
  }

  std::string run(const Body& body) {
    exec_body(body);
    return std::move(out_);
  }

 private:
  [[noreturn]] static void fail(const std::string& message, int line) {
    throw TemplateError(message, line);
  }

  void step(int line) {
    if (++steps_ > limits_.max_steps) fail("template exceeded its evaluation step limit", line);
  }

  void emit(const std::string& s, int line) {
    if (out_.size() + s.size() > limits_.max_output_bytes) {
      fail("template output exceeded " + std::to_string(limits_.max_output_bytes) + " bytes", line);
    }
    out_ += s;
  }

  Value lookup(const std::string& name) const {
    for (auto it = active_.rbegin(); it != active_.rend(); ++it) {
      auto found = (*it)->find(name);
      if (found != (*it)->end()) return found->second;
    }
    return Value::undefined("'" + name + "' is undefined");
  }

  void install_globals() {
    Scope& g = scopes_[0];
    g["raise_exception"] = Value(Callable{
        "raise_exception", [](const CallArgs& a) -> Value {
          throw TemplateError(a.positional.empty() ? std::string() : a.positional[0].to_str(), 0);
        }});
    g["strftime_now"] = Value(Callable{
        "strftime_now", [this](const CallArgs& a) {
          if (a.positional.empty() || !a.positional[0].is_string()) {
            throw TemplateError("strftime_now() expects a format string", 0);
          }
          std::tm tm = now_();
          char buf[512];
          size_t n = std::strftime(buf, sizeof(buf), a.positional[0].as_string().c_str(), &tm);
          return Value(std::string(buf, n));
        }});
    g["namespace"] = Value(Callable{"namespace", [](const CallArgs& a) {
                                      Dict d;
                                      for (const Value& p : a.positional) {
                                        if (!p.is_dict())
                                          throw TemplateError(
                                              "namespace() positional argument must be a dict", 0);
                                        for (const auto& [k, v] : p.dict().items) d.set(k, v);
                                      }
                                      for (const auto& [k, v] : a.keyword) d.set(k, v);
                                      return Value::make_namespace(std::move(d));
                                    }});
    g["dict"] = Value(Callable{"dict", [](const CallArgs& a) {
                                 Dict d;
                                 for (const auto& [k, v] : a.keyword) d.set(k, v);
                                 return Value(std::move(d));
                               }});
    g["range"] =
        Value(Callable{"range", [this](const CallArgs& a) {
                         int64_t start = 0, stop = 0, stride = 1;
                         for (const Value& v : a.positional) {
                           if (!v.is_int())
                             throw TemplateError("range() arguments must be integers", 0);
                         }
                         if (a.positional.size() == 1) {
                           stop = a.positional[0].as_int();
                         } else if (a.positional.size() >= 2) {
                           start = a.positional[0].as_int();
                           stop = a.positional[1].as_int();
                           if (a.positional.size() > 2) stride = a.positional[2].as_int();
                         } else {
                           throw TemplateError("range expected at least 1 argument", 0);
                         }
                         if (stride == 0) throw TemplateError("range() arg 3 must not be zero", 0);
                         List out;
                         for (int64_t i = start; stride > 0 ? i < stop : i > stop; i += stride) {
                           if (static_cast<int64_t>(out.size()) >= limits_.max_range) {
                             throw TemplateError("range() too large", 0);
                           }
                           out.emplace_back(i);
                         }
                         return Value(std::move(out));
                       }});
  }

  // ---- statements ----

  Flow exec_body(const Body& body) {
    for (const StmtPtr& s : body) {
      Flow f = exec(*s);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Flow exec(const Stmt& s) {
    step(s.line);
    switch (s.kind) {
      case StmtKind::kText:
        emit(s.text, s.line);
        return Flow::kNormal;
      case StmtKind::kOutput: {
        Value v = eval(*s.expr);
        emit(v.to_str(), s.line);
        return Flow::kNormal;
      }
      case StmtKind::kIf:
        for (const auto& [cond, body] : s.branches) {
          if (eval(*cond).truthy()) return exec_body(body);
        }
        return exec_body(s.else_body);
      case StmtKind::kFor:
        exec_for(s);
        return Flow::kNormal;
      case StmtKind::kSet:
        exec_set(s);
        return Flow::kNormal;
      case StmtKind::kMacro:
        define_macro(s);
        return Flow::kNormal;
      case StmtKind::kBreak:
        return Flow::kBreak;
      case StmtKind::kContinue:
        return Flow::kContinue;
      case StmtKind::kBlock:
        return exec_body(s.body);
    }
    return Flow::kNormal;
  }

  void assign(Scope& scope, const std::vector<std::string>& targets, const Value& v, int line) {
    if (targets.size() == 1) {
      scope[targets[0]] = v;
      return;
    }
    List items = iterate_at(v, line);
    if (items.size() != targets.size()) {
      fail("cannot unpack " + std::to_string(items.size()) + " values into " +
               std::to_string(targets.size()) + " names",
           line);
    }
    for (size_t i = 0; i < targets.size(); ++i) scope[targets[i]] = items[i];
  }

  List iterate_at(const Value& v, int line) {
    try {
      return iterate(v);
    } catch (const TemplateError& e) {
      fail(e.what(), line);
    }
  }

  void exec_set(const Stmt& s) {
    Value v;
    if (s.expr) {
      v = eval(*s.expr);
    } else {
      std::string saved;
      saved.swap(out_);
      exec_body(s.body);
      v = Value(out_);
      out_.swap(saved);
    }
    if (!s.attr.empty()) {
      Value ns = lookup(s.text);
      if (!ns.is_namespace()) fail("can only assign attributes of namespace objects", s.line);
      ns.dict().set(s.attr, v);
      return;
    }
    assign(*active_.back(), s.targets, v, s.line);
  }

  void exec_for(const Stmt& s) {
    List items = iterate_at(eval(*s.expr), s.line);
    if (s.filter) {
      List kept;
      for (const Value& item : items) {
        Scope probe;
        assign(probe, s.targets, item, s.line);
        active_.push_back(&probe);
        bool keep = eval(*s.filter).truthy();
        active_.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      exec_body(s.else_body);
      return;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      Scope scope;
      Dict loop;
      loop.set("index", Value(i + 1));
      loop.set("index0", Value(i));
      loop.set("revindex", Value(n - i));
      loop.set("revindex0", Value(n - i - 1));
      loop.set("first", Value(i == 0));
      loop.set("last", Value(i == n - 1));
      loop.set("length", Value(n));
      loop.set("depth", Value(1));
      loop.set("depth0", Value(0));
      loop.set("previtem", i > 0 ? items[static_cast<size_t>(i - 1)]
                                 : Value::undefined("there is no previous item"));
      loop.set("nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)]
                                     : Value::undefined("there is no next item"));
      loop.set("cycle",
               Value(Callable{"cycle", [i](const CallArgs& a) {
                                if (a.positional.empty())
                                  throw TemplateError("no items for cycling given", 0);
                                return a.positional[static_cast<size_t>(i) % a.positional.size()];
                              }}));
      scope["loop"] = Value(std::move(loop));
      assign(scope, s.targets, items[static_cast<size_t>(i)], s.line);
      active_.push_back(&scope);
      Flow f = exec_body(s.body);
      active_.pop_back();
      if (f == Flow::kBreak) break;
    }
  }

  void define_macro(const Stmt& s) {
    const Stmt* macro = &s;
    active_.back()->operator[](s.text) =
        Value(Callable{s.text, [this, macro](const CallArgs& a) { return call_macro(*macro, a); }});
  }

  Value call_macro(const Stmt& m, const CallArgs& a) {
    if (call_depth_ >= limits_.max_call_depth) {
      fail("macro call depth limit (" + std::to_string(limits_.max_call_depth) + ") exceeded",
           m.line);
    }
    if (a.positional.size() > m.params.size()) {
      fail("macro '" + m.text + "' takes not more than " + std::to_string(m.params.size()) +
               " argument(s)",
           m.line);
    }
    Scope scope;
    std::vector<Scope*> saved = active_;
    active_ = {&scopes_[0], &scopes_[1]};
    for (size_t i = 0; i < m.params.size(); ++i) {
      const auto& [name, dflt] = m.params[i];
      const Value* given = a.get(name, i);
      if (given) {
        scope[name] = *given;
      } else if (dflt) {
        active_.push_back(&scope);
        scope[name] = eval(*dflt);
        active_.pop_back();
      } else {
        scope[name] = Value::undefined("'" + name + "' is undefined");
      }
    }
    for (const auto& [k, v] : a.keyword) {
      bool known = false;
      for (const auto& p : m.params) known = known || p.first == k;
      if (!known) fail("macro '" + m.text + "' takes no keyword argument '" + k + "'", m.line);
    }
    active_.push_back(&scope);
    std::string saved_out;
    saved_out.swap(out_);
    ++call_depth_;
    exec_body(m.body);
    --call_depth_;
    out_.swap(saved_out);
    active_ = std::move(saved);
    return Value(std::move(saved_out));
  }

  // ---- expressions ----

  CallArgs eval_args(const Expr& e) {
    CallArgs args;
    for (const ExprPtr& a : e.args) args.positional.push_back(eval(*a));
    for (const auto& [k, v] : e.kwargs) args.keyword.emplace_back(k, eval(*v));
    return args;
  }

  Value eval(const Expr& e) {
    step(e.line);
    try {
      return eval_inner(e);
    } catch (const TemplateError& err) {
      if (err.line != 0) throw;
      throw TemplateError(err.what(), e.line);
    }
  }

  Value eval_inner(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kLiteral:
        return e.value;
      case ExprKind::kName:
        return lookup(e.name);
      case ExprKind::kList: {
        List items;
        for (const ExprPtr& a : e.args) items.push_back(eval(*a));
        return Value(std::move(items));
      }
      case ExprKind::kDict: {
        Dict d;
        for (size_t i = 0; i < e.keys.size(); ++i) {
          Value k = eval(*e.keys[i]);
          if (!k.is_string()) fail("only string dict keys are supported", e.line);
          d.set(k.as_string(), eval(*e.args[i]));
        }
        return Value(std::move(d));
      }
      case ExprKind::kGetAttr:
        return get_attr(eval(*e.object), e.name);
      case ExprKind::kGetItem: {
        Value obj = eval(*e.object);
        return get_item(obj, eval(*e.a));
      }
      case ExprKind::kSlice: {
        Value obj = eval(*e.object);
        Value a = e.a ? eval(*e.a) : Value(), b = e.b ? eval(*e.b) : Value(),
              c = e.c ? eval(*e.c) : Value();
        return get_slice(obj, a, b, c);
      }
      case ExprKind::kCall: {
        Value callee = eval(*e.object);
        fail_if_undefined(callee);
        if (!callee.is_callable())
          fail("'" + callee.type_name() + "' object is not callable", e.line);
        CallArgs args = eval_args(e);
        return callee.callable().fn(args);
      }
      case ExprKind::kFilter: {
        if (!has_filter(e.name)) fail("No filter named '" + e.name + "'.", e.line);
        Value subject = eval(*e.object);
        return apply_filter(e.name, subject, eval_args(e));
      }
      case ExprKind::kTest: {
        if (!has_test(e.name)) fail("No test named '" + e.name + "'.", e.line);
        Value subject = eval(*e.object);
        return Value(apply_test(e.name, subject, eval_args(e)) != e.negated);
      }
      case ExprKind::kUnary: {
        Value v = eval(*e.object);
        if (e.name == "not") return Value(!v.truthy());
        fail_if_undefined(v);
        if (v.is_float()) return Value(e.name == "-" ? -v.as_double() : v.as_double());
        if (v.is_number()) return Value(e.name == "-" ? -v.as_int() : v.as_int());
        fail("bad operand type for unary " + e.name + ": '" + v.type_name() + "'", e.line);
      }
      case ExprKind::kBinary:
        return eval_binary(e);
      case ExprKind::kCompare: {
        Value left = eval(*e.object);
        for (const auto& [op, operand] : e.ops) {
          Value right = eval(*operand);
          if (!compare(op, left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case ExprKind::kCondExpr:
        if (eval(*e.a).truthy()) return eval(*e.b);
        return e.c ? eval(*e.c)
                   : Value::undefined(
                         "the inline if-expression evaluated to false and no else section was "
                         "defined.");
    }
    return Value();
  }

  static bool compare(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return values_equal(a, b);
    if (op == "!=") return !values_equal(a, b);
    if (op == "in") return contains(b, a);
    if (op == "notin") return !contains(b, a);
    fail_if_undefined(a);
    fail_if_undefined(b);
    int c;
    if (a.is_number() && b.is_number()) {
      double x = a.as_double(), y = b.as_double();
      if (!a.is_float() && !b.is_float()) {
        c = a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
      } else {
        c = x < y ? -1 : x > y ? 1 : 0;
      }
    } else if (a.is_string() && b.is_string()) {
      c = a.as_string().compare(b.as_string());
    } else {
      throw TemplateError("'" + op + "' not supported between instances of '" + a.type_name() +
                              "' and '" + b.type_name() + "'",
                          0);
    }
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;
  }

  Value eval_binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value left = eval(*e.object);
      return left.truthy() ? eval(*e.a) : left;
    }
    if (op == "or") {
      Value left = eval(*e.object);
      return left.truthy() ? left : eval(*e.a);
    }
    Value l = eval(*e.object);
    Value r = eval(*e.a);
    if (op == "~") return Value(l.to_str() + r.to_str());
    fail_if_undefined(l);
    fail_if_undefined(r);
    auto type_error = [&]() {
      fail("unsupported operand type(s) for " + op + ": '" + l.type_name() + "' and '" +
               r.type_name() + "'",
           e.line);
    };
    if (op == "+") {
      if (l.is_string() && r.is_string()) return Value(l.as_string() + r.as_string());
      if (l.is_list() && r.is_list()) {
        List items = l.list();
        items.insert(items.end(), r.list().begin(), r.list().end());
        return Value(std::move(items));
      }
    }
    if (op == "*" && (l.is_string() || l.is_list()) && (r.is_int() || r.is_bool())) {
      std::swap(l, r);
    }
    if (op == "*" && (l.is_int() || l.is_bool()) && (r.is_string() || r.is_list())) {
      int64_t n = std::max<int64_t>(0, l.as_int());
      size_t unit = r.is_string() ? r.as_string().size() : r.list().size();
      if (unit != 0 && static_cast<uint64_t>(n) > limits_.max_output_bytes / unit) {
        fail("repetition too large", e.line);
      }
      if (r.is_string()) {
        std::string out;
        for (int64_t i = 0; i < n; ++i) out += r.as_string();
        return Value(out);
      }
      List out;
      for (int64_t i = 0; i < n; ++i) out.insert(out.end(), r.list().begin(), r.list().end());
      return Value(std::move(out));
    }
    if (!l.is_number() || !r.is_number()) type_error();
    bool floats = l.is_float() || r.is_float();
    if (op == "/") {
      if (r.as_double() == 0) fail("division by zero", e.line);
      return Value(l.as_double() / r.as_double());
    }
    if (op == "**") {
      if (!floats && r.as_int() >= 0) {
        int64_t base = l.as_int(), result = 1;
        for (int64_t exp = r.as_int(); exp > 0; exp >>= 1) {  // squaring: O(log exp) steps
          if ((exp & 1) && __builtin_mul_overflow(result, base, &result)) {
            fail("integer power too large", e.line);
          }
          if (exp > 1 && __builtin_mul_overflow(base, base, &base)) {
            fail("integer power too large", e.line);
          }
        }
        return Value(result);
      }
      return Value(std::pow(l.as_double(), r.as_double()));
    }
    if (floats) {
      double x = l.as_double(), y = r.as_double();
      if (op == "+") return Value(x + y);
      if (op == "-") return Value(x - y);
      if (op == "*") return Value(x * y);
      if (y == 0) fail("float division by zero", e.line);
      if (op == "//") return Value(std::floor(x / y));
      if (op == "%") return Value(x - std::floor(x / y) * y);
      type_error();
    }
    int64_t x = l.as_int(), y = r.as_int();
    int64_t out;
    if (op == "+") {
      if (__builtin_add_overflow(x, y, &out)) fail("integer overflow", e.line);
      return Value(out);
    }
    if (op == "-") {
      if (__builtin_sub_overflow(x, y, &out)) fail("integer overflow", e.line);
      return Value(out);
    }
    if (op == "*") {
      if (__builtin_mul_overflow(x, y, &out)) fail("integer overflow", e.line);
      return Value(out);
    }
    if (y == 0) fail("integer division or modulo by zero", e.line);
    if (x == INT64_MIN && y == -1) fail("integer overflow", e.line);
    int64_t q = x / y, m = x % y;
    if (m != 0 && ((m < 0) != (y < 0))) {  // Python floors
      --q;
      m += y;
    }
    if (op == "//") return Value(q);
    if (op == "%") return Value(m);
    type_error();
    return Value();
  }

  std::function<std::tm()> now_;
  RenderLimits limits_;
  std::deque<Scope> scopes_;  // [0] globals and context, [1] template top level
  std::vector<Scope*> active_;
  std::string out_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
};

}  // namespace

std::string render_body(const Body& body, const Dict& context, const std::function<std::tm()>& now,
                        const RenderLimits& limits) {
  Interpreter interpreter(context, now, limits);
  return interpreter.run(body);
}

}  // namespace tierserve::chat
