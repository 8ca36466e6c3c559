# Tests of the model-file loaders (safetensors, config.json); include()d by
# tests/engine/CMakeLists.txt.
tierserve_test(safetensors_test ${CMAKE_CURRENT_LIST_DIR}/safetensors_test.cc
  LIBS tierserve_engine nlohmann_json::nlohmann_json)
tierserve_test(model_config_test ${CMAKE_CURRENT_LIST_DIR}/model_config_test.cc
  LIBS tierserve_engine nlohmann_json::nlohmann_json)

# The GGUF reader: hand-built malformed images, and the files that fixtures_make_gguf writes with
# their numpy reference values (tests/fixtures/make_gguf.py).
tierserve_test(gguf_test ${CMAKE_CURRENT_LIST_DIR}/gguf_test.cc
  LIBS tierserve_engine nlohmann_json::nlohmann_json)
target_compile_definitions(gguf_test PRIVATE
  TIERSERVE_GGUF_FIXTURES_DIR="${TIERSERVE_GGUF_FIXTURES_DIR}")
set_tests_properties(gguf_test PROPERTIES FIXTURES_REQUIRED tierserve_gguf)
