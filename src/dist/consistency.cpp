#include "dist/consistency.h"

#include <map>

#include <nlohmann/json.hpp>

namespace tessera::dist {

void check_same_on_all_ranks(Communicator& comm, const Entries& entries, const std::string& what) {
  if (comm.world_size() == 1) return;
  const std::string text = nlohmann::json(entries).dump();
  uint64_t h = 1469598103934665603ull;  // FNV-1a: the same on every build and machine
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  const std::vector<std::string> hashes = comm.all_gather_bytes(std::to_string(h));
  bool same = true;
  for (const std::string& other : hashes) same = same && other == hashes[0];
  if (same) return;

  const std::vector<std::string> texts = comm.all_gather_bytes(text);
  std::vector<std::map<std::string, std::string>> maps;
  std::vector<std::vector<std::string>> order;
  for (const std::string& t : texts) {
    maps.emplace_back();
    order.emplace_back();
    for (const auto& [k, v] : nlohmann::json::parse(t).get<Entries>()) {
      maps.back()[k] = v;
      order.back().push_back(k);
    }
  }
  auto value = [&](size_t r, const std::string& key) {
    auto it = maps[r].find(key);
    return it == maps[r].end() ? std::string("(absent)") : it->second;
  };
  // The first key, in rank 0's order then any other rank's, whose value is not the same on all.
  for (size_t src = 0; src < order.size(); ++src) {
    for (const std::string& key : order[src]) {
      std::string detail;
      bool differs = false;
      for (size_t r = 0; r < maps.size(); ++r) {
        if (value(r, key) != value(0, key)) differs = true;
      }
      if (!differs) continue;
      for (size_t r = 0; r < maps.size(); ++r) {
        if (r > 0 && value(r, key) == value(0, key)) continue;
        detail += fmt::format("{}{} on rank {}", detail.empty() ? "" : ", ", value(r, key), r);
      }
      fail(
          "ranks were started with different {}s: they disagree on {}: {} (every rank must "
          "resolve the same config and build the same model)",
          what, key, detail);
    }
  }
  fail("ranks were started with different {}s (hashes differ, no key found)", what);
}

}  // namespace tessera::dist
