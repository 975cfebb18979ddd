#include "tokenizer/added_tokens.h"

#include <algorithm>

namespace tessera::tokenizer {

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) : tokens_(tokens) {
  std::stable_sort(tokens_.begin(), tokens_.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  for (uint32_t i = 0; i < tokens_.size(); ++i)
    if (!tokens_[i].content.empty()) by_first_[uint8_t(tokens_[i].content[0])].push_back(i);
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& out) const {
  size_t plain = 0;
  for (size_t i = 0; i < text.size();) {
    const auto& candidates = by_first_[uint8_t(text[i])];
    const AddedToken* hit = nullptr;
    for (uint32_t c : candidates) {
      if (text.substr(i).starts_with(tokens_[c].content)) {
        hit = &tokens_[c];
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    if (i > plain) out.push_back({text.substr(plain, i - plain)});
    out.push_back({text.substr(i, hit->content.size()), int64_t(hit->id)});
    i += hit->content.size();
    plain = i;
  }
  if (text.size() > plain) out.push_back({text.substr(plain)});
}

}  // namespace tessera::tokenizer
