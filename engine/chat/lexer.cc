#include "engine/chat/lexer.h"

#include <cctype>

#include "engine/chat/value.h"

namespace tierserve::chat {
namespace {

// Python str.rstrip(): removes trailing whitespace code points.
std::string rstrip_python(const std::string& s) {
  std::vector<char32_t> cps = utf8_decode(s);
  while (!cps.empty() && is_python_space(cps.back())) cps.pop_back();
  return utf8_encode(cps);
}

bool all_space_no_newline(const std::string& s, size_t from) {
  if (from >= s.size()) return false;  // Jinja's \s+ needs at least one character
  for (char32_t cp : utf8_decode(s.substr(from))) {
    if (!is_python_space(cp)) return false;
  }
  return true;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t start = find_tag_start(pos_);
      std::string text = src_.substr(pos_, start - pos_);
      int text_line = line_;
      if (start == src_.size()) {
        emit_text(text, text_line);
        advance_to(start);
        break;
      }
      char type = src_[start + 1];
      char sign = start + 2 < src_.size() ? src_[start + 2] : '\0';
      if (sign != '-' && sign != '+') sign = '\0';
      if (sign == '-') {
        text = rstrip_python(text);
      } else if (sign != '+' && type != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && all_space_no_newline(text, l_pos)) text.resize(l_pos);
      }
      emit_text(text, text_line);
      advance_to(start + 2 + (sign ? 1 : 0));
      if (type == '#') {
        line_starting = lex_comment();
      } else if (type == '%' && try_raw()) {
        line_starting = last_consumed_newline_;
      } else {
        line_starting = lex_tag(type == '{');
      }
    }
    tokens_.push_back(Token{TokenKind::kEof, "", 0, 0, line_});
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(const std::string& message) { throw TemplateError(message, line_); }

  size_t find_tag_start(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return src_.size();
  }

  void advance_to(size_t target) {
    for (; pos_ < target; ++pos_) {
      if (src_[pos_] == '\n') ++line_;
    }
  }

  void emit_text(const std::string& text, int line) {
    if (!text.empty()) tokens_.push_back(Token{TokenKind::kText, text, 0, 0, line});
  }

  // Consumes the end of a tag whose closing delimiter `close` starts at pos_, after the optional
  // sign: "-" eats all following whitespace, "+" nothing, otherwise one newline when `trim`.
  // Returns whether the consumed text ended with a newline (Jinja2's line_starting).
  bool consume_end(char sign, size_t close_len, bool trim) {
    advance_to(pos_ + close_len);
    bool newline = false;
    if (sign == '-') {
      while (pos_ < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos_]))) {
        newline = src_[pos_] == '\n';
        advance_to(pos_ + 1);
      }
    } else if (sign != '+' && trim && pos_ < src_.size() && src_[pos_] == '\n') {
      advance_to(pos_ + 1);
      newline = true;
    }
    return newline;
  }

  bool lex_comment() {
    size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) fail("Missing end of comment tag");
    char sign = end > pos_ && (src_[end - 1] == '-' || src_[end - 1] == '+') ? src_[end - 1] : '\0';
    advance_to(end);
    return consume_end(sign, 2, true);
  }

  // Handles `{% raw %}...{% endraw %}` when the block at pos_ is one; returns false otherwise.
  bool try_raw() {
    size_t p = pos_;
    while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
    char sign = '\0';
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
    if (src_.compare(p, 2, "%}") != 0) return false;
    advance_to(p);
    consume_end(sign == '-' ? '-' : '+', 2, false);  // "raw %}" never trims a newline
    for (size_t i = pos_; i + 1 < src_.size(); ++i) {
      if (src_[i] != '{' || src_[i + 1] != '%') continue;
      size_t q = i + 2;
      char open_sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q++] : '\0';
      while (q < src_.size() && std::isspace(static_cast<unsigned char>(src_[q]))) ++q;
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      while (q < src_.size() && std::isspace(static_cast<unsigned char>(src_[q]))) ++q;
      char close_sign = '\0';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) close_sign = src_[q++];
      if (src_.compare(q, 2, "%}") != 0) continue;
      std::string text = src_.substr(pos_, i - pos_);
      if (open_sign == '-') text = rstrip_python(text);
      emit_text(text, line_);
      advance_to(q);
      last_consumed_newline_ = consume_end(close_sign, 2, true);
      return true;
    }
    fail("Missing end of raw directive");
  }

  bool lex_tag(bool variable) {
    tokens_.push_back(
        Token{variable ? TokenKind::kVarBegin : TokenKind::kBlockBegin, "", 0, 0, line_});
    int depth = 0;
    while (true) {
      while (pos_ < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos_]))) {
        advance_to(pos_ + 1);
      }
      if (pos_ >= src_.size())
        fail(variable ? "unexpected end of template, expected '}}'"
                      : "unexpected end of template, expected '%}'");
      char c = src_[pos_];
      const char* close = variable ? "}}" : "%}";
      if (depth == 0) {
        char sign = (c == '-' || (c == '+' && !variable)) ? c : '\0';
        size_t at = pos_ + (sign ? 1 : 0);
        if (src_.compare(at, 2, close) == 0) {
          tokens_.push_back(
              Token{variable ? TokenKind::kVarEnd : TokenKind::kBlockEnd, "", 0, 0, line_});
          advance_to(at);
          return consume_end(sign, 2, !variable);
        }
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t start = pos_;
        while (pos_ < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) {
          ++pos_;
        }
        tokens_.push_back(Token{TokenKind::kName, src_.substr(start, pos_ - start), 0, 0, line_});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        lex_number();
      } else if (c == '\'' || c == '"') {
        lex_string(c);
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                     "/",  "%",  "~",  "<",  ">",  "=",  ".", ",", ":",
                                     "|",  "(",  ")",  "[",  "]",  "{",  "}"};
        const char* found = nullptr;
        for (const char* op : kOps) {
          if (src_.compare(pos_, std::char_traits<char>::length(op), op) == 0) {
            found = op;
            break;
          }
        }
        if (!found) fail(std::string("unexpected char '") + c + "'");
        std::string op(found);
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) fail("unexpected '" + op + "'");
          --depth;
        }
        tokens_.push_back(Token{TokenKind::kOp, op, 0, 0, line_});
        pos_ += op.size();
      }
    }
  }

  void lex_number() {
    size_t start = pos_;
    bool is_float = false;
    auto digits = [&] {
      while (pos_ < src_.size() &&
             (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) {
        ++pos_;
      }
    };
    digits();
    if (pos_ + 1 < src_.size() && src_[pos_] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
      is_float = true;
      ++pos_;
      digits();
    }
    if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      size_t save = pos_++;
      if (pos_ < src_.size() && (src_[pos_] == '+' || src_[pos_] == '-')) ++pos_;
      if (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) {
        is_float = true;
        digits();
      } else {
        pos_ = save;
      }
    }
    std::string text;
    for (size_t i = start; i < pos_; ++i) {
      if (src_[i] != '_') text += src_[i];
    }
    Token token{is_float ? TokenKind::kFloat : TokenKind::kInt, text, 0, 0, line_};
    try {
      if (is_float) {
        token.float_value = std::stod(text);
      } else {
        token.int_value = std::stoll(text);
      }
    } catch (const std::exception&) {
      fail("number out of range: " + text);
    }
    tokens_.push_back(token);
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  void lex_string(char quote) {
    int start_line = line_;
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= src_.size()) {
        line_ = start_line;
        fail("unexpected end of string literal");
      }
      char c = src_[pos_];
      if (c == quote) break;
      if (c == '\n') ++line_;
      if (c != '\\' || pos_ + 1 >= src_.size()) {
        out += c;
        ++pos_;
        continue;
      }
      char e = src_[pos_ + 1];
      pos_ += 2;
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\n':
          ++line_;
          break;  // line continuation
        case 'x':
        case 'u':
        case 'U': {
          size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          char32_t cp = 0;
          for (size_t k = 0; k < n; ++k) {
            int h = pos_ + k < src_.size() ? hex_value(src_[pos_ + k]) : -1;
            if (h < 0) fail("truncated \\" + std::string(1, e) + " escape in string literal");
            cp = cp * 16 + static_cast<char32_t>(h);
          }
          pos_ += n;
          utf8_append(out, cp);
          break;
        }
        default:
          out += '\\';
          out += e;
      }
    }
    ++pos_;
    tokens_.push_back(Token{TokenKind::kString, out, 0, 0, start_line});
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  bool last_consumed_newline_ = false;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(const std::string& source) {
  // Jinja2 normalizes \r\n and \r to \n and drops one trailing newline.
  std::string normalized;
  normalized.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalized += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalized += source[i];
    }
  }
  if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
  return Lexer(std::move(normalized)).run();
}

}  // namespace tierserve::chat
