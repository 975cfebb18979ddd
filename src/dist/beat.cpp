#include "dist/beat.h"

#include <fmt/format.h>

namespace tessera::dist {
namespace {

constexpr std::string_view kKindNames[] = {
    "nothing", "all_reduce", "reduce_scatter", "all_gather",       "broadcast",
    "barrier", "send",       "recv",           "all_gather_bytes", "operation",
};
constexpr int kKinds = int(std::size(kKindNames));

}  // namespace

OpKind op_kind_of(std::string_view what) {
  const std::string_view word = what.substr(0, what.find(' '));
  for (int k = 1; k < kKinds - 1; ++k)
    if (word == kKindNames[k]) return OpKind(k);
  return OpKind::other;
}

Beat::Wire Beat::encode() const {
  // The kind and the peer share a word: kind + kKinds * (peer + 1).
  return {submitted * 2 + (waiting ? 1 : 0), oldest_index,
          int(oldest_kind) + kKinds * (static_cast<long long>(oldest_peer) + 1)};
}

Beat Beat::decode(const Wire& w) {
  Beat b;
  b.submitted = w[0] >> 1;
  b.waiting = (w[0] & 1) != 0;
  b.oldest_index = w[1] < 0 ? -1 : w[1];
  const long long kind = w[2] % kKinds, peer = w[2] / kKinds - 1;
  b.oldest_kind = w[2] < 0 ? OpKind::other : OpKind(kind);
  b.oldest_peer = w[2] < 0 || peer < 0 || peer > (1 << 30) ? -1 : int(peer);
  return b;
}

std::string Beat::oldest() const {
  if (oldest_kind == OpKind::none || oldest_index < 0) return "nothing unfinished";
  const std::string_view name = kKindNames[int(oldest_kind)];
  if (oldest_kind == OpKind::send)
    return fmt::format("#{} send to rank {}", oldest_index, oldest_peer);
  if (oldest_kind == OpKind::recv)
    return fmt::format("#{} recv from rank {}", oldest_index, oldest_peer);
  return fmt::format("#{} {}", oldest_index, name);
}

}  // namespace tessera::dist
