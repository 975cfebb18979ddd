#include "tokenizer/bpe.h"

#include <queue>

#include "core/error.h"

namespace tessera::tokenizer {

namespace {

uint64_t pair_key(uint32_t left, uint32_t right) {
  return uint64_t(left) << 32 | right;
}

// Words up to this many symbols rescan all pairs after each merge: cheaper than a heap there.
constexpr size_t kScanMaxSymbols = 24;

}  // namespace

BpeModel::BpeModel(std::vector<std::string> token_bytes, const std::vector<Merge>& merges,
                   bool ignore_merges)
    : tokens_(std::move(token_bytes)), ignore_merges_(ignore_merges) {
  ids_.reserve(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id)
    if (!tokens_[id].empty()) ids_.emplace(tokens_[id], uint32_t(id));
  for (int b = 0; b < 256; ++b) {
    const auto id = find(std::string(1, char(b)));
    TS_ASSERT(id.has_value());
    byte_ids_[size_t(b)] = *id;
  }
  rules_.reserve(merges.size());
  // A pair listed twice keeps its last rank, as Hugging Face's reader does.
  for (size_t rank = 0; rank < merges.size(); ++rank)
    rules_.insert_or_assign(pair_key(merges[rank].left, merges[rank].right),
                            Rule{uint32_t(rank), merges[rank].merged});
}

std::optional<uint32_t> BpeModel::find(std::string_view bytes) const {
  const auto it = ids_.find(bytes);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

const BpeModel::Rule* BpeModel::rule(uint32_t left, uint32_t right) const {
  const auto it = rules_.find(pair_key(left, right));
  return it == rules_.end() ? nullptr : &it->second;
}

void BpeModel::encode_word(std::string_view word, std::vector<uint32_t>& out) const {
  if (ignore_merges_) {  // Llama 3: a word that is a token is that token, whatever the merges
    if (const auto id = find(word)) {
      out.push_back(*id);
      return;
    }
  }
  std::vector<uint32_t> ids(word.size());
  for (size_t i = 0; i < word.size(); ++i) ids[i] = byte_ids_[uint8_t(word[i])];
  merge_symbols(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

void BpeModel::merge_symbols(std::vector<uint32_t>& ids, MergeStrategy strategy) const {
  if (strategy == MergeStrategy::automatic)
    strategy = ids.size() <= kScanMaxSymbols ? MergeStrategy::scan : MergeStrategy::heap;
  if (strategy == MergeStrategy::scan) {
    merge_by_scan(ids);
  } else {
    merge_by_heap(ids);
  }
}

void BpeModel::merge_by_scan(std::vector<uint32_t>& ids) const {
  while (ids.size() > 1) {
    const Rule* best = nullptr;
    size_t at = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const Rule* r = rule(ids[i], ids[i + 1]);
      if (r && (!best || r->rank < best->rank)) best = r, at = i;
    }
    if (!best) return;
    ids[at] = best->merged;
    ids.erase(ids.begin() + std::ptrdiff_t(at) + 1);
  }
}

void BpeModel::merge_by_heap(std::vector<uint32_t>& ids) const {
  // Symbols form a linked list over their original positions; the queue holds candidate pairs
  // by (rank, position of the left symbol). A popped candidate is stale when either symbol has
  // merged since: a symbol's id changes exactly when it merges (it grows), so comparing ids
  // tells.
  struct Candidate {
    uint32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  constexpr uint32_t kNone = UINT32_MAX;
  const uint32_t n = uint32_t(ids.size());
  std::vector<uint32_t> next(n), prev(n);
  for (uint32_t i = 0; i < n; ++i) next[i] = i + 1 < n ? i + 1 : kNone, prev[i] = i ? i - 1 : kNone;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push = [&](uint32_t pos) {
    if (pos == kNone || next[pos] == kNone) return;
    if (const Rule* r = rule(ids[pos], ids[next[pos]]))
      queue.push({r->rank, pos, ids[pos], ids[next[pos]]});
  };
  for (uint32_t i = 0; i + 1 < n; ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    const uint32_t right = next[c.pos];
    if (ids[c.pos] != c.left || right == kNone || ids[right] != c.right) continue;
    ids[c.pos] = rule(c.left, c.right)->merged;
    ids[right] = kNone;  // removed
    next[c.pos] = next[right];
    if (next[right] != kNone) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  size_t out = 0;
  for (uint32_t i = 0; i < n; i = next[i]) ids[out++] = ids[i];
  ids.resize(out);
}

}  // namespace tessera::tokenizer
