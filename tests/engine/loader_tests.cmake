# Tests of the model-file loaders (safetensors, config.json); include()d by
# tests/engine/CMakeLists.txt.
tierserve_test(safetensors_test ${CMAKE_CURRENT_LIST_DIR}/safetensors_test.cc
  LIBS tierserve_engine nlohmann_json::nlohmann_json)
tierserve_test(model_config_test ${CMAKE_CURRENT_LIST_DIR}/model_config_test.cc
  LIBS tierserve_engine nlohmann_json::nlohmann_json)
