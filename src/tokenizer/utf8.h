// UTF-8 validation and the byte-level alphabet of GPT-2's tokenizers.
//
// Byte-level BPE works on bytes, but its vocabulary files (tokenizer.json) store tokens as text:
// GPT-2 maps each of the 256 bytes to a printable Unicode character (printable Latin-1 bytes to
// themselves, the others to U+0100 and up), so " the" is stored as "Ġthe".
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tessera::tokenizer {

// The offset of the first byte that does not start a well-formed UTF-8 sequence (overlong
// forms, surrogates and code points above U+10FFFF are ill-formed), or npos when all are.
size_t first_invalid_utf8(std::string_view text);

// Throws Error "<source>: invalid UTF-8 at byte offset N (...)" unless text is valid UTF-8.
void check_utf8(std::string_view text, const std::string& source);

void append_utf8(std::string& out, char32_t c);

// GPT-2's bytes_to_unicode(): the character that stands for each byte.
const std::array<char32_t, 256>& byte_level_chars();

// Bytes -> their byte-level text ("\xff a" -> "ÿĠa").
std::string to_byte_level(std::string_view bytes);

// Byte-level text -> bytes; false when `text` holds a character outside the byte-level alphabet
// (or is not valid UTF-8).
bool from_byte_level(std::string_view text, std::string& bytes);

}  // namespace tessera::tokenizer
