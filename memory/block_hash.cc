#include "memory/block_hash.h"

#include <openssl/evp.h>

#include "common/check.h"

namespace tierserve {
namespace {

// One-shot SHA-256 of two byte ranges.
BlockHash sha256(const void* a, size_t a_len, const void* b, size_t b_len) {
  BlockHash out;
  unsigned int len = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  TS_CHECK(ctx != nullptr) << "EVP_MD_CTX_new";
  const bool ok = EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx, a, a_len) == 1 && EVP_DigestUpdate(ctx, b, b_len) == 1 &&
                  EVP_DigestFinal_ex(ctx, out.data(), &len) == 1;
  EVP_MD_CTX_free(ctx);
  TS_CHECK(ok && len == out.size()) << "SHA-256 failed";
  return out;
}

}  // namespace

BlockHash hash_salt(std::string_view salt) { return sha256(salt.data(), salt.size(), "", 0); }

BlockHash hash_block(const BlockHash& parent, const int32_t* tokens, int32_t num_tokens) {
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token bytes are hashed as stored");
  return sha256(parent.data(), parent.size(), tokens,
                static_cast<size_t>(num_tokens) * sizeof(int32_t));
}

}  // namespace tierserve
