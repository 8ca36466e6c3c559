# Chat templates: a Jinja2-subset interpreter (lexer, parser, interpreter, built-ins) and the
# template loader. Included by engine/CMakeLists.txt.
list(APPEND TIERSERVE_ENGINE_SOURCES
  chat/builtin_templates.cc
  chat/builtins.cc
  chat/chat_template.cc
  chat/interpreter.cc
  chat/lexer.cc
  chat/parser.cc
  chat/value.cc
)
