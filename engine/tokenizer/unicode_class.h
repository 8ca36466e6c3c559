// Unicode character classes that the pre-tokenizer regexes use, from ICU.
#pragma once

#include <cstdint>

namespace tierserve::tokenizer {

// Bit flags describing one code point.
enum CharClassBits : uint8_t {
  kClassLetter = 1,   // \p{L}: general category Lu, Ll, Lt, Lm, Lo
  kClassNumber = 2,   // \p{N}: Nd, Nl, No
  kClassSpace = 4,    // \s: the Unicode White_Space property
  kClassNewline = 8,  // \r or \n (also kClassSpace)
  kClassWord = 16,    // \w as Unicode regexes define it (Alphabetic, M, Nd, Pc, Join_Control)
  kClassAny = 32,     // set for every code point, so that 0 means "no character"
};

// The class bits of `cp`. ASCII is answered from a table filled from ICU on first use.
uint8_t char_class(char32_t cp);

}  // namespace tierserve::tokenizer
