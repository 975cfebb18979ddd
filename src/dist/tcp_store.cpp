#include "dist/tcp_store.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "dist/clock.h"

namespace tessera::dist {
namespace {

// Requests: an op byte, then length-prefixed strings / integers. Replies: 'K' (done), 'V' value,
// 'N' counter, 'T' missing keys (timed out), 'E' reason.
struct Writer {
  std::string s;
  Writer(char op) : s(1, op) {}
  Writer& str(const std::string& v) {
    u64(v.size());
    s += v;
    return *this;
  }
  Writer& u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
    return *this;
  }
};

struct Reader {
  const std::string& s;
  size_t at = 1;
  uint64_t u64() {
    if (s.size() - at < 8) throw ChannelError("malformed store message (truncated integer)");
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + size_t(i)]);
    at += 8;
    return v;
  }
  std::string str() {
    const uint64_t n = u64();
    if (n > s.size() - at) throw ChannelError("malformed store message (string past the end)");
    std::string v = s.substr(at, n);
    at += n;
    return v;
  }
};

addrinfo* resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  const int r = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  TS_CHECK(r == 0 && res, "store: cannot resolve MASTER_ADDR={}: {}", host, ::gai_strerror(r));
  return res;
}

std::string address_text(const sockaddr* a) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  const socklen_t len = a->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::getnameinfo(a, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV))
    return "?";
  return std::string(host) + ":" + serv;
}

constexpr double kHandshakeSeconds = 10;  // an unauthenticated client holds a thread this long
// At most this many connections in their handshake at once: a flood of unauthenticated
// connections cannot make the server start threads without bound.
constexpr int kMaxPendingHandshakes = 64;

}  // namespace

// ---- server ----

TcpStoreServer::TcpStoreServer(StoreOptions opt)
    : opt_(std::move(opt)), hearts_(size_t(std::max(opt_.world_size, 0))) {
  TS_CHECK(!opt_.host.empty(), "store: no address to bind (MASTER_ADDR)");
  addrinfo* res = resolve(opt_.host, opt_.port, false);
  std::string why;
  for (addrinfo* a = res; a && listen_fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      listen_fd_ = fd;
    } else {
      why = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(res);
  TS_CHECK(listen_fd_ >= 0,
           "store: rank 0 cannot listen on MASTER_ADDR={} MASTER_PORT={}: {} (is the port in use, "
           "or the address not one of this host's?)",
           opt_.host, opt_.port, why);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(ss).sin6_port
                                         : reinterpret_cast<sockaddr_in&>(ss).sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

TcpStoreServer::~TcpStoreServer() {
  stopping_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  changed_.notify_all();
  acceptor_.join();
  for (std::thread& t : workers_) t.join();
  ::close(listen_fd_);
}

std::string TcpStoreServer::bound_address() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  return address_text(reinterpret_cast<sockaddr*>(&ss));
}

std::vector<std::string> TcpStoreServer::refusals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return refusals_;
}

std::set<int> TcpStoreServer::connected_ranks() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<int> ranks;
  for (int lane : ranks_)
    if (lane < opt_.world_size) ranks.insert(lane);
  return ranks;
}

std::vector<PeerBeat> TcpStoreServer::beats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return beats_locked();
}

std::vector<PeerBeat> TcpStoreServer::beats_locked() const {
  const double now = monotonic_seconds();
  std::vector<PeerBeat> out;
  for (const Heart& h : hearts_)
    out.push_back(
        {h.state, h.state == BeatState::beating || h.state == BeatState::gone ? now - h.at : 0.0});
  return out;
}

void TcpStoreServer::refuse(const std::string& why) {
  if (opt_.log_refusals) std::fprintf(stderr, "tessera store: %s\n", why.c_str());
  std::lock_guard<std::mutex> lock(mu_);
  refusals_.push_back(why);
}

void TcpStoreServer::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (pending_handshakes_ >= kMaxPendingHandshakes) {
      ::close(fd);
      refuse(fmt::format("refused a connection from {}: {} others are in their handshake",
                         address_text(reinterpret_cast<sockaddr*>(&peer)), kMaxPendingHandshakes));
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      ::close(fd);
      break;
    }
    ++pending_handshakes_;
    open_fds_.insert(fd);
    workers_.emplace_back([this, fd] { serve(fd); });
  }
}

void TcpStoreServer::serve(int fd) {
  int rank = -1;
  try {
    // This connection counts as pending until its handshake ends, however it ends.
    ServerHandshake h;
    try {
      h = store_server_handshake(
          fd, opt_.token, monotonic_seconds() + kHandshakeSeconds, [&](int r, int world) {
            if (world != opt_.world_size)
              return fmt::format("it says the job has {} ranks, rank 0 says {}", world,
                                 opt_.world_size);
            // [world, 2 world): the ranks' heartbeat lanes.
            if (r < 0 || r >= 2 * opt_.world_size)
              return fmt::format("rank out of range [0, {})", opt_.world_size);
            std::lock_guard<std::mutex> lock(mu_);
            if (!ranks_.insert(r).second) return std::string("that rank is already connected");
            rank = r;  // released below however the handshake ends
            return std::string();
          });
    } catch (...) {
      --pending_handshakes_;
      throw;
    }
    --pending_handshakes_;
    rank = h.rank;
    StoreChannel ch(fd, h.session_key, /*is_server=*/true);
    while (!stopping_) {
      const std::string reply = handle(ch.receive(0), rank);  // may wait: deadline after it
      ch.send(reply, monotonic_seconds() + opt_.timeout_s);
    }
  } catch (const std::exception& e) {
    // A peer that left after its last request is the normal end, not a refusal.
    const std::string what = e.what();
    if (!stopping_ && what != "the peer closed the connection")
      refuse(rank >= 0 ? fmt::format("rank {}: {}; dropped the connection", rank, what)
                       : what + "; dropped the connection");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (rank >= 0) ranks_.erase(rank);
  if (rank >= opt_.world_size) {
    Heart& h = hearts_[size_t(rank - opt_.world_size)];
    if (h.state != BeatState::left) h = {BeatState::gone, monotonic_seconds()};
  }
  open_fds_.erase(fd);
  ::close(fd);
}

std::string TcpStoreServer::handle(const std::string& request, int lane) {
  if (request.empty()) throw ChannelError("malformed store message (empty)");
  Reader in{request};
  std::unique_lock<std::mutex> lock(mu_);
  switch (request[0]) {
    case 'S': {
      std::string key = in.str();
      data_[key] = in.str();
      changed_.notify_all();
      return "K";
    }
    case 'A': {
      const std::string key = in.str();
      const int64_t n = int64_t(in.u64());
      int64_t v = 0;
      if (auto it = data_.find(key); it != data_.end()) v = std::stoll(it->second);
      v += n;
      data_[key] = std::to_string(v);
      changed_.notify_all();
      return Writer('N').u64(uint64_t(v)).s;
    }
    case 'D':
      data_.erase(in.str());
      return "K";
    case 'R': {
      std::vector<int> ranks;
      for (int r : ranks_)
        if (r < opt_.world_size) ranks.push_back(r);
      Writer w('N');
      w.u64(ranks.size());
      for (int r : ranks) w.u64(uint64_t(r));
      return w.s;
    }
    case 'B': {  // a beat (0) or a goodbye (1); only on a heartbeat lane
      if (lane < opt_.world_size) throw ChannelError("a heartbeat on a rank's main connection");
      const bool leaving = in.u64() != 0;
      Heart& h = hearts_[size_t(lane - opt_.world_size)];
      if (leaving) h.state = BeatState::left;
      if (h.state != BeatState::left) h = {BeatState::beating, monotonic_seconds()};
      Writer w('N');
      for (const PeerBeat& b : beats_locked())
        w.u64(uint64_t(b.state)).u64(uint64_t(b.age_s * 1e6));
      return w.s;
    }
    case 'G':
    case 'W': {
      const auto wait = std::chrono::milliseconds(in.u64());
      const uint64_t count = request[0] == 'G' ? 1 : in.u64();
      std::vector<std::string> keys;
      for (uint64_t i = 0; i < count; ++i) keys.push_back(in.str());
      auto missing = [&] {
        std::vector<std::string> m;
        for (const std::string& k : keys)
          if (!data_.count(k)) m.push_back(k);
        return m;
      };
      changed_.wait_for(lock, wait, [&] { return stopping_ || missing().empty(); });
      const std::vector<std::string> m = missing();
      if (!m.empty()) {
        Writer w('T');
        w.u64(m.size());
        for (const std::string& k : m) w.str(k);
        return w.s;
      }
      return request[0] == 'G' ? Writer('V').str(data_[keys[0]]).s : "K";
    }
    default:
      throw ChannelError(fmt::format("malformed store message (op {})", int(request[0])));
  }
}

// ---- client ----

TcpStoreClient::TcpStoreClient(StoreOptions opt, int rank, StoreLane lane)
    : opt_(std::move(opt)), rank_(rank), lane_(lane) {
  const double deadline = monotonic_seconds() + opt_.timeout_s;
  std::string why = "no attempt";
  double pause = 0.02;
  while (fd_ < 0) {
    addrinfo* res = resolve(opt_.host, opt_.port, false);
    for (addrinfo* a = res; a && fd_ < 0; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        fd_ = fd;
      } else {
        why = std::strerror(errno);
        ::close(fd);
      }
    }
    ::freeaddrinfo(res);
    if (fd_ >= 0) break;
    TS_CHECK(monotonic_seconds() + pause < deadline,
             "rank {}: could not reach {} within {} s ({}): is rank 0 running, with the same "
             "MASTER_ADDR and MASTER_PORT?",
             rank_, where(), opt_.timeout_s, why);
    std::this_thread::sleep_for(std::chrono::duration<double>(pause));
    pause = std::min(pause * 2, 0.5);
  }
  try {
    const int identity = lane_ == StoreLane::heartbeat ? opt_.world_size + rank_ : rank_;
    const std::string key = store_client_handshake(fd_, opt_.token, identity, opt_.world_size,
                                                   monotonic_seconds() + kHandshakeSeconds);
    channel_ = std::make_unique<StoreChannel>(fd_, key, /*is_server=*/false);
  } catch (const std::exception& e) {
    ::close(fd_);
    fail("rank {}: {}: {}", rank_, where(), e.what());
  }
}

TcpStoreClient::~TcpStoreClient() {
  if (fd_ >= 0) ::close(fd_);
}

std::string TcpStoreClient::where() const {
  return fmt::format("rank 0's store at {}:{}", opt_.host, opt_.port);
}

std::string TcpStoreClient::call(const std::string& request, double wait_s) {
  std::lock_guard<std::mutex> lock(mu_);
  TS_CHECK(channel_, "rank {}: {}: the connection was lost earlier", rank_, where());
  try {
    // The server answers a wait when it ends; allow for the round trip beyond it.
    const double deadline = monotonic_seconds() + wait_s + opt_.timeout_s;
    channel_->send(request, deadline);
    std::string reply = channel_->receive(deadline);
    TS_CHECK(!reply.empty(), "rank {}: {}: empty reply", rank_, where());
    return reply;
  } catch (const ChannelError& e) {
    channel_.reset();
    fail("rank {}: lost {} ({}): did rank 0 exit?", rank_, where(), e.what());
  }
}

void TcpStoreClient::set(const std::string& key, const std::string& value) {
  call(Writer('S').str(key).str(value).s, 0);
}

std::string TcpStoreClient::get(const std::string& key) {
  const std::string reply =
      call(Writer('G').u64(uint64_t(opt_.timeout_s * 1000)).str(key).s, opt_.timeout_s);
  TS_CHECK(reply[0] == 'V', "rank {}: {}: key '{}' did not appear within {} s", rank_, where(), key,
           opt_.timeout_s);
  Reader r{reply};
  return r.str();
}

int64_t TcpStoreClient::add(const std::string& key, int64_t n) {
  const std::string reply = call(Writer('A').str(key).u64(uint64_t(n)).s, 0);
  Reader r{reply};
  return int64_t(r.u64());
}

std::vector<std::string> TcpStoreClient::wait(const std::vector<std::string>& keys,
                                              double timeout_s) {
  Writer w('W');
  w.u64(uint64_t(timeout_s * 1000)).u64(keys.size());
  for (const std::string& k : keys) w.str(k);
  const std::string reply = call(w.s, timeout_s);
  if (reply[0] == 'K') return {};
  Reader r{reply};
  std::vector<std::string> missing(r.u64());
  for (std::string& k : missing) k = r.str();
  return missing;
}

void TcpStoreClient::erase(const std::string& key) {
  call(Writer('D').str(key).s, 0);
}

std::vector<PeerBeat> TcpStoreClient::beat(bool leaving) {
  TS_CHECK(lane_ == StoreLane::heartbeat, "rank {}: a beat on the main connection", rank_);
  const std::string reply = call(Writer('B').u64(leaving ? 1 : 0).s, 0);
  Reader r{reply};
  std::vector<PeerBeat> beats(size_t(opt_.world_size));
  for (PeerBeat& b : beats) {
    const uint64_t state = r.u64();
    TS_CHECK(state <= uint64_t(BeatState::gone), "rank {}: {}: a beat state {} out of range", rank_,
             where(), state);
    b.state = BeatState(state);
    b.age_s = double(r.u64()) * 1e-6;
  }
  return beats;
}

std::set<int> TcpStoreClient::connected_ranks() {
  const std::string reply = call("R", 0);
  Reader r{reply};
  std::set<int> ranks;
  for (uint64_t n = r.u64(); n > 0; --n) ranks.insert(int(r.u64()));
  return ranks;
}

}  // namespace tessera::dist
