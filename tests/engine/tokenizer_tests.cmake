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

# The committed tokenizers and golden ids must be what the reference produces today: regenerate
# them into the build tree and compare.
add_test(NAME tokenizer_reference_check
         COMMAND bash -c "rm -rf \"$1\" && \"$2\" \"$3\" generate \"$1\" >/dev/null && diff -r \"$1\" \"$4\""
                 check ${CMAKE_CURRENT_BINARY_DIR}/tokenizer_reference ${TIERSERVE_PYTHON}
                 ${PROJECT_SOURCE_DIR}/tests/tokenizer/reference.py
                 ${PROJECT_SOURCE_DIR}/tests/tokenizer/data)
set_tests_properties(tokenizer_reference_check PROPERTIES LABELS "reference" TIMEOUT 300)
