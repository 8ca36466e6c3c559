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
