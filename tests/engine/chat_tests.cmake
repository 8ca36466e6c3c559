# Chat-template tests. chat_golden_test compares with tests/chat/golden.json, which
# tests/chat/make_golden.py renders with Debian's python3-jinja2 (as transformers configures it).
tierserve_test(chat_template_test chat_template_test.cc chat_golden_test.cc
               LIBS tierserve_engine nlohmann_json::nlohmann_json LABELS golden)
target_compile_definitions(chat_template_test PRIVATE
  TIERSERVE_CHAT_TEST_DIR="${PROJECT_SOURCE_DIR}/tests/chat")

# The committed golden renders must be what jinja2 renders today (guards against stale data).
add_test(NAME chat_reference_check
         COMMAND ${TIERSERVE_PYTHON} ${PROJECT_SOURCE_DIR}/tests/chat/make_golden.py --check)
set_tests_properties(chat_reference_check PROPERTIES LABELS "reference" TIMEOUT 120)

# The committed templates that come from real tokenizer_config.json files (tests/npm, installed by
# scripts/setup) must still be byte-identical to them; a missing tests/npm/node_modules fails.
add_test(NAME chat_templates_npm_check
         COMMAND ${TIERSERVE_PYTHON} ${PROJECT_SOURCE_DIR}/tests/chat/make_golden.py
                 --check-npm ${PROJECT_SOURCE_DIR}/tests/npm)
set_tests_properties(chat_templates_npm_check PROPERTIES LABELS "reference" TIMEOUT 60)
# The same templates loaded from those model directories (template and special tokens, as the
# server reads them) render like Jinja2; needs tests/npm/node_modules.
tierserve_test(chat_npm_test chat_npm_test.cc LIBS tierserve_engine nlohmann_json::nlohmann_json
               LABELS reference)
target_compile_definitions(chat_npm_test PRIVATE
  TIERSERVE_CHAT_TEST_DIR="${PROJECT_SOURCE_DIR}/tests/chat"
  TIERSERVE_NPM_DIR="${PROJECT_SOURCE_DIR}/tests/npm")
