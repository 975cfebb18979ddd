#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "core/error.h"

namespace tessera::tokenizer {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string pattern_by_name(const std::string& name_or_pattern) {
  if (name_or_pattern == "gpt2") return kGpt2Pattern;
  if (name_or_pattern == "llama3") return kLlama3Pattern;
  return name_or_pattern;
}

namespace {

// Long texts are cut into pieces of about this size, for threads.
constexpr size_t kPieceBytes = 64 << 10;

bool is_ascii_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// The first cut at or after `from` (see cut_for_threads), or npos.
size_t next_cut(std::string_view text, size_t from) {
  for (size_t i = std::max<size_t>(from, 1); i + 1 < text.size(); ++i) {
    i = text.find('\n', i);
    if (i == std::string_view::npos || i + 1 >= text.size()) break;
    if (text[i - 1] > ' ' && text[i - 1] < 0x7F && is_ascii_letter(text[i + 1])) return i + 1;
  }
  return std::string_view::npos;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof buf);
  return n < 0 ? "unknown PCRE2 error " + std::to_string(code) : std::string(buf, buf + n);
}

// A thread's matching state, made once per thread and used for every pattern: PCRE2's match
// data (only the whole match is read, so one pair of offsets; a pattern with groups then
// returns 0, "too small", still a match) and a JIT stack large enough for long runs of
// whitespace or punctuation (the default 32 KiB machine stack is not). Encoding calls split()
// once per text piece, many times per thread.
struct MatchState {
  MatchState()
      : data(pcre2_match_data_create(1, nullptr)),
        context(pcre2_match_context_create(nullptr)),
        stack(pcre2_jit_stack_create(64 << 10, 8 << 20, nullptr)) {
    TS_CHECK(data && context && stack, "tokenizer regex: out of memory for PCRE2 match state");
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;

  pcre2_match_data* data;
  pcre2_match_context* context;
  pcre2_jit_stack* stack;
};

MatchState& thread_match_state() {
  thread_local MatchState state;
  return state;
}

// The byte length of the UTF-8 character that starts with `lead`.
size_t char_length(uint8_t lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

}  // namespace

bool pattern_allows_cuts(const std::string& pattern) {
  return pattern == kGpt2Pattern || pattern == kLlama3Pattern;
}

std::vector<std::string_view> cut_for_threads(std::string_view text) {
  std::vector<std::string_view> pieces;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.size() - begin > 2 * kPieceBytes ? next_cut(text, begin + kPieceBytes)
                                                       : std::string_view::npos;
    if (end == std::string_view::npos) end = text.size();
    pieces.push_back(text.substr(begin, end - begin));
    begin = end;
  }
  return pieces;
}

struct Regex::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pattern, const std::string& source)
    : pattern_(pattern), source_(source), compiled_(std::make_unique<Compiled>()) {
  int code = 0;
  PCRE2_SIZE offset = 0;
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                  PCRE2_UTF | PCRE2_UCP, &code, &offset, nullptr);
  TS_CHECK(compiled_->code, "{}: pre-tokenization regex does not compile at offset {}: {}", source,
           offset, pcre2_message(code));
  // Without JIT (a platform PCRE2 does not support), the interpreter gives the same matches.
  compiled_->jit = pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() = default;

void Regex::split(std::string_view text, std::vector<Span>& pieces) const {
  TS_CHECK(text.size() < (size_t(1) << 32), "{}: text of {} bytes: expected under 4 GiB", source_,
           text.size());
  MatchState& state = thread_match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap = 0, at = 0;
  while (at < text.size()) {
    // The caller validated the UTF-8, so PCRE2 need not check it again on every call.
    // pcre2_jit_match skips pcre2_match's per-call checks: one call per word adds up.
    const int rc = compiled_->jit ? pcre2_jit_match(compiled_->code, subject, text.size(), at,
                                                    PCRE2_NO_UTF_CHECK, state.data, state.context)
                                  : pcre2_match(compiled_->code, subject, text.size(), at,
                                                PCRE2_NO_UTF_CHECK, state.data, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    TS_CHECK(rc >= 0, "{}: pre-tokenization regex failed at byte {}: {}", source_, at,
             pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state.data);
    const size_t begin = ov[0], end = ov[1];
    if (end == begin) {  // an empty match: look again one character further on
      at = begin + char_length(uint8_t(text[begin < text.size() ? begin : text.size() - 1]));
      continue;
    }
    if (begin > gap) pieces.push_back({uint32_t(gap), uint32_t(begin)});
    pieces.push_back({uint32_t(begin), uint32_t(end)});
    gap = at = end;
  }
  if (gap < text.size()) pieces.push_back({uint32_t(gap), uint32_t(text.size())});
}

}  // namespace tessera::tokenizer
