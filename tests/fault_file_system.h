// A fault-injecting file system for checkpoint tests (core/file_system.h): it runs every
// operation on the real files under a scratch folder, and can
//   - kill the "process" at byte N of everything written since arming (the write that crosses N
//     writes only the bytes before N) or at operation K (of every call: creates, appends,
//     writes, fsyncs, closes, truncations, reads, renames, mkdirs, removes, listings, folder
//     fsyncs); from then on every operation throws, as if the process had died, until revive();
//   - cut the power: power_cut() rewrites the real tree to what was durable;
//   - run out of space: writes past a byte budget fail with ENOSPC (the process lives on).
//
// The durability model (ext4-like, data=ordered without its implicit flushes, so the strictest
// a POSIX program may assume):
//   - a file's contents are durable as of its last fsync (never synced: empty); a truncation
//     (create over an existing file) is no more durable than the data that follows it;
//   - a folder's entries (files and folders created, renamed in or out, removed) are durable as
//     of that folder's last fsync; a rename is two entry changes, each durable with its own
//     folder's fsync (the checkpoint code only renames within one folder);
//   - what existed when the model was (re)built from disk (reset()) is durable.
// power_cut() rebuilds the tree from the durable entries of each folder, starting at the root,
// with each file's durable contents; removals not yet durable come back, creations go.
#pragma once

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_system.h"

namespace tessera::testing {

class FaultFileSystem final : public FileSystem {
 public:
  explicit FaultFileSystem(std::string root) : root_(normal(root)) { reset(); }

  // Forgets every fault and rebuilds the durability model from what is on disk now.
  void reset() {
    std::lock_guard<std::mutex> lock(mu_);
    nodes_.clear();
    live_.clear();
    ops_ = 0, bytes_ = 0, dead_ = false;
    kill_at_op_.reset(), kill_at_byte_.reset(), space_.reset();
    log_.clear();
    scan("", new_node(true));
  }
  void kill_at_op(uint64_t k) { kill_at_op_ = k; }
  void kill_at_byte(uint64_t n) { kill_at_byte_ = n; }
  void limit_space(uint64_t bytes) { space_ = bytes; }
  void revive() { dead_ = false, kill_at_op_.reset(), kill_at_byte_.reset(); }
  bool dead() const { return dead_; }
  uint64_t ops() const { return ops_; }      // operations started (the failing one included)
  uint64_t bytes() const { return bytes_; }  // bytes written
  // One line per operation: "<op> <path>[ -> <path>]"; the counting pass finds phases in it.
  const std::vector<std::string>& log() const { return log_; }

  // Drops everything not durable (see the model above) from the real tree, then revives.
  void power_cut() {
    std::lock_guard<std::mutex> lock(mu_);
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(root_))
      std::filesystem::remove_all(e.path(), ec);
    rebuild(0, root_);
    dead_ = false, kill_at_op_.reset(), kill_at_byte_.reset();
    nodes_.clear(), live_.clear();
    scan("", new_node(true));
  }

  // ---- FileSystem ----
  std::unique_ptr<WritableFile> create_file(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    step("create", path);
    auto inner = posix_file_system().create_file(path);
    int id = -1;
    if (auto rel = relative(path)) {
      auto it = live_.find(*rel);
      id = it != live_.end() ? it->second : (live_[*rel] = new_node(false));
    }
    return std::make_unique<File>(*this, path, std::move(inner), id);
  }
  // An append keeps what the file holds now (durable or not: an fsync through this handle makes
  // all of it durable, as fsync(2) does); a file it creates is a new entry of its folder.
  std::unique_ptr<WritableFile> append_file(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    step("append", path);
    auto inner = posix_file_system().append_file(path);
    int id = -1;
    if (auto rel = relative(path)) {
      auto it = live_.find(*rel);
      id = it != live_.end() ? it->second : (live_[*rel] = new_node(false));
    }
    return std::make_unique<File>(*this, path, std::move(inner), id, read_real(path));
  }
  std::unique_ptr<ReadableFile> open_file(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    step("open", path);
    return posix_file_system().open_file(path);
  }
  void rename(const std::string& from, const std::string& to) override {
    std::lock_guard<std::mutex> lock(mu_);
    step("rename", from + " -> " + to);
    posix_file_system().rename(from, to);
    auto a = relative(from), b = relative(to);
    if (!a || !b) return;
    std::map<std::string, int> moved;
    for (auto it = live_.begin(); it != live_.end();) {
      if (it->first == *b || it->first.rfind(*b + "/", 0) == 0) {
        it = live_.erase(it);  // replaced
      } else if (it->first == *a || it->first.rfind(*a + "/", 0) == 0) {
        moved[*b + it->first.substr(a->size())] = it->second;
        it = live_.erase(it);
      } else {
        ++it;
      }
    }
    live_.insert(moved.begin(), moved.end());
  }
  bool create_directory(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    step("mkdir", path);
    const bool made = posix_file_system().create_directory(path);
    if (auto rel = relative(path); rel && made) live_[*rel] = new_node(true);
    return made;
  }
  bool remove(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    step("remove", path);
    const bool removed = posix_file_system().remove(path);
    if (auto rel = relative(path)) live_.erase(*rel);
    return removed;
  }
  std::vector<DirEntry> list_directory(const std::string& dir) override {
    std::lock_guard<std::mutex> lock(mu_);
    step("list", dir);
    return posix_file_system().list_directory(dir);
  }
  FileType type(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    step("stat", path);
    return posix_file_system().type(path);
  }
  void sync_directory(const std::string& dir) override {
    std::lock_guard<std::mutex> lock(mu_);
    step("syncdir", dir);
    posix_file_system().sync_directory(dir);
    auto rel = relative(dir);
    if (!rel) return;
    auto self = live_.find(*rel);
    if (self == live_.end()) return;
    Node& n = nodes_[size_t(self->second)];
    n.entries.clear();
    const std::string prefix = rel->empty() ? "" : *rel + "/";
    for (const auto& [p, id] : live_)
      if (p.size() > prefix.size() && p.rfind(prefix, 0) == 0 &&
          p.find('/', prefix.size()) == std::string::npos)
        n.entries[p.substr(prefix.size())] = id;
  }

 private:
  struct Node {
    bool dir = false;
    std::string data;                    // a file's durable contents
    std::map<std::string, int> entries;  // a folder's durable entries
  };

  class File final : public WritableFile {
   public:
    File(FaultFileSystem& fs, std::string path, std::unique_ptr<WritableFile> inner, int id,
         std::string contents = {})
        : fs_(fs),
          path_(std::move(path)),
          inner_(std::move(inner)),
          id_(id),
          written_(std::move(contents)) {}
    void append(const void* data, uint64_t n) override {
      std::lock_guard<std::mutex> lock(fs_.mu_);
      fs_.step("write", path_);
      uint64_t take = n;
      bool die = false, full = false;
      if (fs_.kill_at_byte_ && fs_.bytes_ + n > *fs_.kill_at_byte_)
        take = *fs_.kill_at_byte_ - fs_.bytes_, die = true;
      if (fs_.space_ && fs_.bytes_ + take > *fs_.space_)
        take = *fs_.space_ - std::min(*fs_.space_, fs_.bytes_), full = true, die = false;
      inner_->append(data, take);
      written_.append(static_cast<const char*>(data), size_t(take));
      fs_.bytes_ += take;
      if (die) {
        fs_.dead_ = true;
        fail("writing '{}' failed: simulated crash at byte {}", path_, fs_.bytes_);
      }
      TS_CHECK(!full, "writing '{}' failed: {}", path_, std::strerror(ENOSPC));
    }
    void sync() override {
      std::lock_guard<std::mutex> lock(fs_.mu_);
      fs_.step("sync", path_);
      inner_->sync();
      if (id_ >= 0) fs_.nodes_[size_t(id_)].data = written_;
    }
    void close() override {
      std::lock_guard<std::mutex> lock(fs_.mu_);
      fs_.step("close", path_);
      inner_->close();
    }
    void truncate(uint64_t size) override {
      std::lock_guard<std::mutex> lock(fs_.mu_);
      fs_.step("truncate", path_);
      inner_->truncate(size);
      written_.resize(size_t(size), '\0');
    }

   private:
    FaultFileSystem& fs_;
    std::string path_;
    std::unique_ptr<WritableFile> inner_;
    int id_;
    std::string written_;  // the file's contents: since the create (which truncated), or
                           // what it held when opened for appending, and what came after
  };

  static std::string normal(const std::string& p) {
    return std::filesystem::path(p).lexically_normal().string();
  }
  // The path relative to the root ("" for the root), or nothing when it lies outside.
  std::optional<std::string> relative(const std::string& path) const {
    const std::string p = normal(path);
    if (p == root_) return std::string();
    if (p.rfind(root_ + "/", 0) != 0) return std::nullopt;
    return p.substr(root_.size() + 1);
  }
  // Every operation starts here: a dead process does nothing; the K-th operation dies.
  void step(const char* op, const std::string& what) {
    if (dead_) fail("simulated crash: {} '{}' after the process died", op, what);
    log_.push_back(std::string(op) + " " + what);
    if (kill_at_op_ && ops_ == *kill_at_op_) {
      ++ops_;
      dead_ = true;
      fail("simulated crash at operation {}: {} '{}'", ops_ - 1, op, what);
    }
    ++ops_;
  }
  static std::string read_real(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }
  int new_node(bool dir) {
    nodes_.push_back(Node{dir, {}, {}});
    return int(nodes_.size()) - 1;
  }
  // Adds the real tree at rel (node id) to the model, all of it durable.
  void scan(const std::string& rel, int id) {
    live_[rel] = id;
    const std::string path = rel.empty() ? root_ : root_ + "/" + rel;
    if (!nodes_[size_t(id)].dir) {
      nodes_[size_t(id)].data = read_real(path);
      return;
    }
    for (const auto& e : std::filesystem::directory_iterator(path)) {
      const std::string name = e.path().filename().string();
      const int child = new_node(e.is_directory());
      nodes_[size_t(id)].entries[name] = child;
      scan(rel.empty() ? name : rel + "/" + name, child);
    }
  }
  void rebuild(int id, const std::string& path) {
    for (const auto& [name, child] : nodes_[size_t(id)].entries) {
      const std::string p = path + "/" + name;
      if (nodes_[size_t(child)].dir) {
        std::filesystem::create_directory(p);
        rebuild(child, p);
      } else {
        std::ofstream(p, std::ios::binary) << nodes_[size_t(child)].data;
      }
    }
  }

  std::mutex mu_;
  std::string root_;
  std::vector<Node> nodes_;
  std::map<std::string, int> live_;  // the current tree: relative path -> node
  uint64_t ops_ = 0, bytes_ = 0;
  bool dead_ = false;
  std::optional<uint64_t> kill_at_op_, kill_at_byte_, space_;
  std::vector<std::string> log_;
};

}  // namespace tessera::testing
