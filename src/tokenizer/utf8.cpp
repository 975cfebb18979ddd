#include "tokenizer/utf8.h"

#include <unordered_map>

#include "core/error.h"

namespace tessera::tokenizer {

namespace {

// The length of the well-formed sequence starting at text[i], or 0 (RFC 3629, table 3-7 of the
// Unicode standard: the second byte's range depends on the first byte).
size_t sequence_length(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return uint8_t(text[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t len = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (i + len > text.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k)
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  return len;
}

// Decodes one code point of valid UTF-8 at text[i], advancing i.
char32_t decode_one(std::string_view text, size_t& i) {
  const size_t len = sequence_length(text, i);
  if (len == 0) return char32_t(-1);
  const uint8_t b0 = uint8_t(text[i]);
  char32_t c = len == 1 ? b0 : b0 & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) c = c << 6 | (uint8_t(text[i + k]) & 0x3F);
  i += len;
  return c;
}

std::array<char32_t, 256> make_byte_level_chars() {
  // Printable bytes stand for themselves; the rest take U+0100, U+0101, ... in byte order.
  std::array<char32_t, 256> chars{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    chars[size_t(b)] = printable ? char32_t(b) : next++;
  }
  return chars;
}

}  // namespace

size_t first_invalid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    // ASCII runs dominate real text: skip 8 bytes at a time while none has the top bit set.
    while (i + 8 <= text.size()) {
      uint64_t word = 0;
      for (int k = 0; k < 8; ++k) word |= uint64_t(uint8_t(text[i + size_t(k)])) << (8 * k);
      if (word & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= text.size()) break;
    const size_t len = sequence_length(text, i);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

void check_utf8(std::string_view text, const std::string& source) {
  const size_t bad = first_invalid_utf8(text);
  if (bad == std::string_view::npos) return;
  fail("{}: invalid UTF-8 at byte offset {} (byte 0x{:02X}): expected UTF-8 text", source, bad,
       uint8_t(text[bad]));
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

const std::array<char32_t, 256>& byte_level_chars() {
  static const std::array<char32_t, 256> chars = make_byte_level_chars();
  return chars;
}

std::string to_byte_level(std::string_view bytes) {
  const auto& chars = byte_level_chars();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char b : bytes) append_utf8(out, chars[uint8_t(b)]);
  return out;
}

bool from_byte_level(std::string_view text, std::string& bytes) {
  static const std::unordered_map<char32_t, uint8_t> byte_of = [] {
    std::unordered_map<char32_t, uint8_t> m;
    for (int b = 0; b < 256; ++b) m[byte_level_chars()[size_t(b)]] = uint8_t(b);
    return m;
  }();
  bytes.clear();
  for (size_t i = 0; i < text.size();) {
    const auto it = byte_of.find(decode_one(text, i));
    if (it == byte_of.end()) return false;
    bytes += char(it->second);
  }
  return true;
}

}  // namespace tessera::tokenizer
