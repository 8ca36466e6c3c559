// Syntax tree of a parsed chat template. Nodes are plain structs owned through unique_ptr by their
// parent; the tree is immutable after parsing and may be rendered from several threads at once.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/chat/value.h"

namespace tierserve::chat {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class ExprKind {
  kLiteral,   // value
  kName,      // name
  kList,      // items
  kDict,      // keys (literal strings in `name`-less key exprs) and values: items pairs
  kGetAttr,   // object.name
  kGetItem,   // object[index]
  kSlice,     // object[a:b:c]; a, b, c may be null
  kCall,      // callee(args)
  kFilter,    // object | name(args)
  kTest,      // object is [not] name(args)
  kUnary,     // op in {"not", "-", "+"}
  kBinary,    // op in {"and", "or", "+", "-", "*", "/", "//", "%", "**", "~"}
  kCompare,   // chained comparisons: object, then (op, operand) pairs
  kCondExpr,  // then_expr if cond else else_expr (else may be null)
};

struct Expr {
  ExprKind kind;
  int line = 0;
  Value value;                // kLiteral
  std::string name;           // kName, kGetAttr, kFilter, kTest; operator for kUnary/kBinary
  ExprPtr object;             // operand / callee / left side / condition's subject
  ExprPtr a, b, c;            // kBinary right = a; kSlice start/stop/step; kCondExpr cond/then/else
  std::vector<ExprPtr> args;  // call/filter/test positional args; list items; dict values
  std::vector<std::pair<std::string, ExprPtr>> kwargs;  // keyword args
  std::vector<ExprPtr> keys;                            // kDict keys
  std::vector<std::pair<std::string, ExprPtr>> ops;     // kCompare: (op, operand)
  bool negated = false;                                 // kTest: `is not`
  int height = 1;  // 1 + the largest child height; bounded by the parser (recursion depth)
};

enum class StmtKind {
  kText,    // text
  kOutput,  // {{ expr }}
  kIf,      // branches: (cond, body)...; else_body
  kFor,     // targets in iter [if filter] body [else else_body]
  kSet,     // targets (or ns.attr via attr_object) = expr; or block set when expr is null
  kMacro,   // name(params = defaults) body
  kBreak,
  kContinue,
  kBlock,  // a body with no effect of its own ({% generation %})
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  int line = 0;
  std::string text;                                     // kText; macro name; set namespace target
  ExprPtr expr;                                         // output / for iterable / set value
  ExprPtr filter;                                       // for ... if filter
  std::vector<std::pair<ExprPtr, Body>> branches;       // kIf
  Body body;                                            // for/macro/block-set/kBlock body
  Body else_body;                                       // if/for else
  std::vector<std::string> targets;                     // for/set names (several: unpacking)
  std::string attr;                                     // `set ns.attr = ...`: attribute name
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters and defaults (or null)
};

}  // namespace tierserve::chat
