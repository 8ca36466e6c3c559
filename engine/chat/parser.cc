#include "engine/chat/parser.h"

#include <algorithm>

#include "engine/chat/lexer.h"

namespace tierserve::chat {
namespace {

constexpr int kMaxNesting = 200;  // expression and block nesting; keeps the parser's stack small

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Body parse() {
    std::vector<std::string> no_end;
    std::string end;
    Body body = parse_body({}, &end);
    return body;
  }

 private:
  struct DepthGuard {
    explicit DepthGuard(Parser* p) : parser(p) {
      if (++parser->depth_ > kMaxNesting) parser->fail("template nested too deeply");
    }
    ~DepthGuard() { --parser->depth_; }
    Parser* parser;
  };

  static StmtPtr new_stmt(StmtKind kind, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = line;
    return s;
  }
  const Token& cur() const { return tokens_[pos_]; }
  const Token& peek(size_t ahead = 1) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  void next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  [[noreturn]] void fail(const std::string& message) const {
    throw TemplateError(message, cur().line);
  }
  bool is_op(const char* op) const { return cur().kind == TokenKind::kOp && cur().text == op; }
  bool is_name(const char* name) const {
    return cur().kind == TokenKind::kName && cur().text == name;
  }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TokenKind::kEof:
        return "end of template";
      case TokenKind::kBlockEnd:
        return "end of statement block";
      case TokenKind::kVarEnd:
        return "end of print statement";
      case TokenKind::kString:
        return "string";
      case TokenKind::kInt:
        return "integer";
      case TokenKind::kFloat:
        return "float";
      default:
        return "'" + t.text + "'";
    }
  }
  void expect_op(const char* op) {
    if (!is_op(op)) fail(std::string("expected '") + op + "', got " + describe(cur()));
    next();
  }
  std::string expect_name() {
    if (cur().kind != TokenKind::kName) fail("expected a name, got " + describe(cur()));
    std::string name = cur().text;
    next();
    return name;
  }
  void expect_block_end() {
    if (cur().kind != TokenKind::kBlockEnd) {
      fail("expected end of statement block, got " + describe(cur()));
    }
    next();
  }

  // Parses statements until a `{% name %}` whose name is in `ends` (left unconsumed after the
  // block-begin token: *end_name is set and the caller parses the tag). At top level `ends` is
  // empty and the body runs to the end of the template.
  Body parse_body(const std::vector<std::string>& ends, std::string* end_name) {
    DepthGuard guard(this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.kind == TokenKind::kEof) {
        if (!ends.empty()) {
          std::string expected;
          for (const std::string& e : ends)
            expected += (expected.empty() ? "'" : " or '") + e + "'";
          fail("unexpected end of template; expected " + expected);
        }
        return body;
      }
      if (t.kind == TokenKind::kText) {
        auto s = new_stmt(StmtKind::kText, t.line);
        s->text = t.text;
        body.push_back(std::move(s));
        next();
      } else if (t.kind == TokenKind::kVarBegin) {
        auto s = new_stmt(StmtKind::kOutput, t.line);
        next();
        s->expr = parse_tuple_or_expr();
        if (cur().kind != TokenKind::kVarEnd) {
          fail("expected end of print statement, got " + describe(cur()));
        }
        next();
        body.push_back(std::move(s));
      } else if (t.kind == TokenKind::kBlockBegin) {
        next();
        if (cur().kind != TokenKind::kName)
          fail("expected a statement name, got " + describe(cur()));
        std::string name = cur().text;
        for (const std::string& e : ends) {
          if (name == e) {
            *end_name = name;
            next();
            return body;
          }
        }
        body.push_back(parse_statement(name));
      } else {
        fail("unexpected " + describe(t));
      }
    }
  }

  StmtPtr parse_statement(const std::string& name) {
    int line = cur().line;
    next();  // the statement name
    if (name == "if") return parse_if(line);
    if (name == "for") return parse_for(line);
    if (name == "set") return parse_set(line);
    if (name == "macro") return parse_macro(line);
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail("'" + name + "' outside of a loop");
      expect_block_end();
      return new_stmt(name == "break" ? StmtKind::kBreak : StmtKind::kContinue, line);
    }
    if (name == "generation") {
      expect_block_end();
      auto s = new_stmt(StmtKind::kBlock, line);
      std::string end;
      s->body = parse_body({"endgeneration"}, &end);
      expect_block_end();
      return s;
    }
    throw TemplateError("unknown or unsupported tag '" + name + "'", line);
  }

  StmtPtr parse_if(int line) {
    auto s = new_stmt(StmtKind::kIf, line);
    ExprPtr cond = parse_expr();
    expect_block_end();
    while (true) {
      std::string end;
      Body body = parse_body({"elif", "else", "endif"}, &end);
      s->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "elif") {
        cond = parse_expr();
        expect_block_end();
        continue;
      }
      if (end == "else") {
        expect_block_end();
        s->else_body = parse_body({"endif"}, &end);
      }
      expect_block_end();
      return s;
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> targets;
    bool paren = is_op("(");
    if (paren) next();
    targets.push_back(expect_name());
    while (is_op(",")) {
      next();
      if (cur().kind != TokenKind::kName) break;
      targets.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return targets;
  }

  StmtPtr parse_for(int line) {
    auto s = new_stmt(StmtKind::kFor, line);
    s->targets = parse_targets();
    if (!is_name("in")) fail("expected 'in', got " + describe(cur()));
    next();
    s->expr = parse_or();  // `if` after the iterable is the loop filter, not a conditional
    if (is_name("if")) {
      next();
      s->filter = parse_expr();
    }
    if (is_name("recursive")) fail("recursive loops are not supported");
    expect_block_end();
    ++loop_depth_;
    std::string end;
    s->body = parse_body({"else", "endfor"}, &end);
    --loop_depth_;
    if (end == "else") {
      expect_block_end();
      s->else_body = parse_body({"endfor"}, &end);
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_set(int line) {
    auto s = new_stmt(StmtKind::kSet, line);
    if (cur().kind == TokenKind::kName && peek().kind == TokenKind::kOp && peek().text == ".") {
      s->text = expect_name();
      next();
      s->attr = expect_name();
      s->targets.push_back(s->text);
    } else {
      s->targets = parse_targets();
    }
    if (is_op("=")) {
      next();
      s->expr = parse_tuple_or_expr();
      expect_block_end();
      return s;
    }
    if (!s->attr.empty() || s->targets.size() != 1) fail("expected '='");
    expect_block_end();
    std::string end;
    s->body = parse_body({"endset"}, &end);
    expect_block_end();
    return s;
  }

  StmtPtr parse_macro(int line) {
    auto s = new_stmt(StmtKind::kMacro, line);
    s->text = expect_name();
    expect_op("(");
    while (!is_op(")")) {
      std::string param = expect_name();
      ExprPtr def;
      if (is_op("=")) {
        next();
        def = parse_expr();
      }
      s->params.emplace_back(param, std::move(def));
      if (!is_op(",")) break;
      next();
    }
    expect_op(")");
    expect_block_end();
    int saved_loops = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    s->body = parse_body({"endmacro"}, &end);
    loop_depth_ = saved_loops;
    if (cur().kind == TokenKind::kName) next();  // {% endmacro name %}
    expect_block_end();
    return s;
  }

  // ---- expressions ----

  // Sets e's height from its children and rejects trees too deep to evaluate (or free) with
  // bounded recursion. Left-leaning chains built by loops (a+b+c..., x.a.b..., x|f|g...) are
  // caught here rather than by DepthGuard.
  ExprPtr& sized(ExprPtr& e) {
    int h = 0;
    auto see = [&h](const ExprPtr& c) {
      if (c) h = std::max(h, c->height);
    };
    see(e->object);
    see(e->a);
    see(e->b);
    see(e->c);
    for (const ExprPtr& x : e->args) see(x);
    for (const ExprPtr& x : e->keys) see(x);
    for (const auto& kv : e->kwargs) see(kv.second);
    for (const auto& op : e->ops) see(op.second);
    e->height = h + 1;
    if (e->height > kMaxNesting) fail("template nested too deeply");
    return e;
  }

  ExprPtr make(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // `a, b` without brackets is a tuple (a list here), as in `{% set x = a, b %}`.
  ExprPtr parse_tuple_or_expr() {
    int line = cur().line;
    ExprPtr first = parse_expr();
    if (!is_op(",")) return first;
    auto list = make(ExprKind::kList, line);
    list->args.push_back(std::move(first));
    while (is_op(",")) {
      next();
      if (cur().kind == TokenKind::kBlockEnd || cur().kind == TokenKind::kVarEnd) break;
      list->args.push_back(parse_expr());
    }
    return list;
  }

  ExprPtr parse_expr() {
    DepthGuard guard(this);
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      int line = cur().line;
      next();
      auto cond = make(ExprKind::kCondExpr, line);
      cond->b = std::move(expr);
      cond->a = parse_or();
      if (is_name("else")) {
        next();
        cond->c = parse_expr();
      }
      expr = std::move(sized(cond));
    }
    return expr;
  }

  ExprPtr binary(const std::string& op, ExprPtr left, ExprPtr right, int line) {
    auto e = make(ExprKind::kBinary, line);
    e->name = op;
    e->object = std::move(left);
    e->a = std::move(right);
    return std::move(sized(e));
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      int line = cur().line;
      next();
      left = binary("or", std::move(left), parse_and(), line);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      int line = cur().line;
      next();
      left = binary("and", std::move(left), parse_not(), line);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(this);
      auto e = make(ExprKind::kUnary, cur().line);
      next();
      e->name = "not";
      e->object = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    int line = cur().line;
    ExprPtr left = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().kind == TokenKind::kOp &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && peek().kind == TokenKind::kName && peek().text == "in") {
        op = "notin";
        next();
        next();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(ExprKind::kCompare, line);
        cmp->object = std::move(left);
      }
      cmp->ops.emplace_back(op, parse_math1());
      sized(cmp);
    }
    return cmp ? std::move(cmp) : std::move(left);
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().text;
      int line = cur().line;
      next();
      left = binary(op, std::move(left), parse_concat(), line);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      int line = cur().line;
      next();
      left = binary("~", std::move(left), parse_math2(), line);
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().text;
      int line = cur().line;
      next();
      left = binary(op, std::move(left), parse_pow(), line);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      int line = cur().line;
      next();
      left = binary("**", std::move(left), parse_unary(true), line);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      node = make(ExprKind::kUnary, cur().line);
      node->name = cur().text;
      next();
      node->object = parse_unary(false);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    int line = t.line;
    if (t.kind == TokenKind::kName) {
      std::string n = t.text;
      next();
      if (n == "true" || n == "True") return literal(Value(true), line);
      if (n == "false" || n == "False") return literal(Value(false), line);
      if (n == "none" || n == "None") return literal(Value::none(), line);
      auto e = make(ExprKind::kName, line);
      e->name = n;
      return e;
    }
    if (t.kind == TokenKind::kString) {
      std::string s;
      while (cur().kind == TokenKind::kString) {  // adjacent literals concatenate
        s += cur().text;
        next();
      }
      return literal(Value(s), line);
    }
    if (t.kind == TokenKind::kInt) {
      Value v(static_cast<int64_t>(t.int_value));
      next();
      return literal(v, line);
    }
    if (t.kind == TokenKind::kFloat) {
      Value v(t.float_value);
      next();
      return literal(v, line);
    }
    if (is_op("(")) {
      next();
      if (is_op(")")) {  // empty tuple
        next();
        return make(ExprKind::kList, line);
      }
      ExprPtr inner = parse_expr();
      if (is_op(",")) {
        auto list = make(ExprKind::kList, line);
        list->args.push_back(std::move(inner));
        while (is_op(",")) {
          next();
          if (is_op(")")) break;
          list->args.push_back(parse_expr());
        }
        inner = std::move(list);
      }
      expect_op(")");
      return inner;
    }
    if (is_op("[")) {
      next();
      auto list = make(ExprKind::kList, line);
      while (!is_op("]")) {
        list->args.push_back(parse_expr());
        if (!is_op(",")) break;
        next();
      }
      expect_op("]");
      return list;
    }
    if (is_op("{")) {
      next();
      auto dict = make(ExprKind::kDict, line);
      while (!is_op("}")) {
        dict->keys.push_back(parse_expr());
        expect_op(":");
        dict->args.push_back(parse_expr());
        if (!is_op(",")) break;
        next();
      }
      expect_op("}");
      return dict;
    }
    fail("unexpected " + describe(t));
  }

  ExprPtr literal(Value v, int line) {
    auto e = make(ExprKind::kLiteral, line);
    e->value = std::move(v);
    return e;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      int line = cur().line;
      if (is_op(".")) {
        next();
        auto e = make(ExprKind::kGetAttr, line);
        if (cur().kind == TokenKind::kInt) {  // foo.0 is foo[0]
          e->kind = ExprKind::kGetItem;
          e->a = literal(Value(static_cast<int64_t>(cur().int_value)), line);
          next();
        } else {
          e->name = expect_name();
        }
        e->object = std::move(node);
        node = std::move(sized(e));
      } else if (is_op("[")) {
        next();
        node = parse_subscript(std::move(node), line);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr object, int line) {
    ExprPtr parts[3];
    int idx = 0;
    bool is_slice = false;
    while (true) {
      if (is_op(":")) {
        is_slice = true;
        if (++idx > 2) fail("invalid slice");
        next();
        continue;
      }
      if (is_op("]")) break;
      if (parts[idx]) fail("expected ']' or ':'");
      parts[idx] = parse_expr();
    }
    expect_op("]");
    if (!is_slice) {
      auto e = make(ExprKind::kGetItem, line);
      e->object = std::move(object);
      e->a = std::move(parts[0]);
      if (!e->a) fail("expected an index");
      return std::move(sized(e));
    }
    auto e = make(ExprKind::kSlice, line);
    e->object = std::move(object);
    e->a = std::move(parts[0]);
    e->b = std::move(parts[1]);
    e->c = std::move(parts[2]);
    return std::move(sized(e));
  }

  void parse_args(Expr* e) {
    expect_op("(");
    while (!is_op(")")) {
      if (cur().kind == TokenKind::kName && peek().kind == TokenKind::kOp && peek().text == "=") {
        std::string key = cur().text;
        next();
        next();
        e->kwargs.emplace_back(key, parse_expr());
      } else {
        if (!e->kwargs.empty()) fail("positional argument follows keyword argument");
        e->args.push_back(parse_expr());
      }
      if (!is_op(",")) break;
      next();
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = make(ExprKind::kCall, cur().line);
    e->object = std::move(callee);
    parse_args(e.get());
    return std::move(sized(e));
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        int line = cur().line;
        next();
        auto e = make(ExprKind::kFilter, line);
        e->name = expect_name();
        while (is_op(".")) {
          next();
          e->name += "." + expect_name();
        }
        e->object = std::move(node);
        if (is_op("(")) parse_args(e.get());
        node = std::move(sized(e));
      } else if (is_name("is")) {
        int line = cur().line;
        next();
        auto e = make(ExprKind::kTest, line);
        if (is_name("not")) {
          e->negated = true;
          next();
        }
        e->name = expect_name();
        e->object = std::move(node);
        if (is_op("(")) {
          parse_args(e.get());
        } else if ((cur().kind == TokenKind::kName || cur().kind == TokenKind::kString ||
                    cur().kind == TokenKind::kInt || cur().kind == TokenKind::kFloat ||
                    is_op("(") || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) fail("You cannot chain multiple tests with is");
          e->args.push_back(parse_postfix(parse_primary()));
        }
        node = std::move(sized(e));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Body parse_template(const std::string& source) { return Parser(tokenize(source)).parse(); }

}  // namespace tierserve::chat
