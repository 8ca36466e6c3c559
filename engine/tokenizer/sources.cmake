# Tokenizers (engine/tokenizer/): include()d by engine/CMakeLists.txt.
find_package(PkgConfig REQUIRED)
pkg_check_modules(ICU REQUIRED IMPORTED_TARGET icu-uc icu-i18n)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
list(APPEND TIERSERVE_ENGINE_SOURCES
  tokenizer/added_tokens.cc
  tokenizer/bpe_model.cc
  tokenizer/byte_level.cc
  tokenizer/decoder.cc
  tokenizer/gguf_tokenizer.cc
  tokenizer/hf_tokenizer.cc
  tokenizer/merge_map.cc
  tokenizer/normalizer.cc
  tokenizer/post_processor.cc
  tokenizer/pre_tokenizer.cc
  tokenizer/sp_tokenizer.cc
  tokenizer/split_scanner.cc
  tokenizer/tiktoken_file.cc
  tokenizer/tokenizer.cc
  tokenizer/unicode_class.cc
  tokenizer/utf8.cc
)
list(APPEND TIERSERVE_ENGINE_LIBS PkgConfig::ICU PkgConfig::SENTENCEPIECE)
