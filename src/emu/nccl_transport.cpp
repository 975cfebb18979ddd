#include "emu/nccl_transport.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <system_error>
#include <thread>

namespace tessera::emu::nccl {

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

namespace {

using Kind = TransportError::Kind;

std::string errno_text(const char* call) {
  return std::string(call) + ": " + std::error_code(errno, std::generic_category()).message();
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}

// poll()'s timeout for `s` seconds: rounded up, so that a wait never ends before its deadline.
int poll_ms(double s) {
  if (s <= 0) return 0;
  return int(std::min(std::ceil(s * 1000), 3.6e6));
}

// Waits until fd is ready for `events`, or has an error or hang-up (which the next send or
// receive reports), for at most timeout_s. False on timeout.
bool wait_ready(int fd, short events, double timeout_s) {
  const double deadline = now_seconds() + timeout_s;
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, poll_ms(deadline - now_seconds()));
    if (r > 0) return true;
    if (r == 0 && now_seconds() >= deadline) return false;
    if (r < 0 && errno != EINTR) throw TransportError(Kind::system, errno_text("poll"));
  }
}

bool peer_gone(int err) {
  return err == EPIPE || err == ECONNRESET || err == ENOTCONN;
}

}  // namespace

// ---- Link ----

Link::~Link() {
  if (fd_ >= 0) ::close(fd_);
}

Link& Link::operator=(Link&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

size_t Link::send_some(const void* p, size_t n) const {
  for (;;) {
    // MSG_NOSIGNAL: a peer that has gone must be an error here, not a SIGPIPE that kills us.
    const ssize_t k = ::send(fd_, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (k >= 0) return size_t(k);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    if (peer_gone(errno)) throw TransportError(Kind::closed, "the peer closed the connection");
    throw TransportError(Kind::system, errno_text("send"));
  }
}

size_t Link::recv_some(void* p, size_t n) const {
  for (;;) {
    const ssize_t k = ::recv(fd_, p, n, MSG_DONTWAIT);
    if (k > 0) return size_t(k);
    if (k == 0) throw TransportError(Kind::closed, "the peer closed the connection");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    if (peer_gone(errno)) throw TransportError(Kind::closed, "the peer closed the connection");
    throw TransportError(Kind::system, errno_text("recv"));
  }
}

void Link::send_all(const void* p, size_t n, double timeout_s) const {
  const auto* c = static_cast<const char*>(p);
  for (size_t done = 0; done < n;) {
    const size_t k = send_some(c + done, n - done);
    done += k;
    if (k == 0 && !wait_ready(fd_, POLLOUT, timeout_s))
      throw TransportError(Kind::timeout, "the peer read nothing for " + seconds_text(timeout_s) +
                                              " (" + std::to_string(done) + " of " +
                                              std::to_string(n) + " bytes sent)");
  }
}

void Link::recv_all(void* p, size_t n, double timeout_s) const {
  auto* c = static_cast<char*>(p);
  for (size_t done = 0; done < n;) {
    const size_t k = recv_some(c + done, n - done);
    done += k;
    if (k == 0 && !wait_ready(fd_, POLLIN, timeout_s))
      throw TransportError(Kind::timeout, "nothing arrived for " + seconds_text(timeout_s) + " (" +
                                              std::to_string(done) + " of " + std::to_string(n) +
                                              " bytes received)");
  }
}

void Link::shut_down() const {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

// ---- unique ids ----

namespace {

constexpr char kIdMagic[8] = {'T', 's', 'E', 'm', 'N', 'c', 'c', 'l'};
constexpr size_t kTokenOffset = sizeof kIdMagic;
constexpr size_t kNameOffset = kTokenOffset + sizeof(uint64_t);
// Room for the name and ".<rank>" within sockaddr_un's 107 usable abstract bytes.
constexpr size_t kMaxName = 80;
static_assert(kNameOffset + kMaxName + 1 <= NCCL_UNIQUE_ID_BYTES);

uint64_t random_u64() {
  static std::mutex mu;
  static std::mt19937_64 gen = [] {
    std::random_device rd;
    std::seed_seq seq{rd(),
                      rd(),
                      rd(),
                      rd(),
                      unsigned(::getpid()),
                      unsigned(std::chrono::steady_clock::now().time_since_epoch().count())};
    return std::mt19937_64(seq);
  }();
  std::lock_guard<std::mutex> lock(mu);
  return gen();
}

}  // namespace

RendezvousId new_rendezvous_id() {
  // The pid and a counter make names unique within this machine even if the random numbers
  // repeated; the random part keeps them unguessable to other processes.
  static std::atomic<uint64_t> counter{0};
  char name[kMaxName + 1];
  std::snprintf(name, sizeof name, "tessera-nccl-%d-%llu-%016llx", int(::getpid()),
                static_cast<unsigned long long>(counter++),
                static_cast<unsigned long long>(random_u64()));
  return RendezvousId{name, random_u64()};
}

void encode_id(const RendezvousId& id, ncclUniqueId* out) {
  std::memset(out->internal, 0, sizeof out->internal);
  std::memcpy(out->internal, kIdMagic, sizeof kIdMagic);
  std::memcpy(out->internal + kTokenOffset, &id.token, sizeof id.token);
  std::memcpy(out->internal + kNameOffset, id.name.data(), std::min(id.name.size(), kMaxName));
}

bool decode_id(const ncclUniqueId& in, RendezvousId* out) {
  if (std::memcmp(in.internal, kIdMagic, sizeof kIdMagic) != 0) return false;
  const char* name = in.internal + kNameOffset;
  const size_t len = strnlen(name, kMaxName + 1);
  if (len == 0 || len > kMaxName) return false;
  out->name.assign(name, len);
  std::memcpy(&out->token, in.internal + kTokenOffset, sizeof out->token);
  return true;
}

// ---- sockets ----

namespace {

std::string rank_address(const RendezvousId& id, int rank) {
  return id.name + "." + std::to_string(rank);
}

// The abstract-namespace address of `name` (sun_path starts with a NUL byte).
sockaddr_un abstract_address(const std::string& name, socklen_t* len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const size_t n = std::min(name.size(), sizeof a.sun_path - 1);
  std::memcpy(a.sun_path + 1, name.data(), n);
  *len = socklen_t(offsetof(sockaddr_un, sun_path) + 1 + n);
  return a;
}

int new_socket() {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw RendezvousError(ncclSystemError, errno_text("socket"));
  // Larger buffers: fewer wake-ups per megabyte of gradients (the kernel may cap the size).
  const int bytes = 4 << 20;
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  return fd;
}

class Listener {
 public:
  Listener(const std::string& name, int backlog) : sock_(new_socket()), name_(name) {
    socklen_t len = 0;
    const sockaddr_un a = abstract_address(name, &len);
    if (::bind(sock_.fd(), reinterpret_cast<const sockaddr*>(&a), len) != 0) {
      if (errno == EADDRINUSE)
        throw RendezvousError(ncclInvalidUsage,
                              "rendezvous address @" + name +
                                  " is in use: the same unique id and rank are being used by "
                                  "another communicator that is still initialising");
      throw RendezvousError(ncclSystemError, errno_text("bind") + " (@" + name + ")");
    }
    if (::listen(sock_.fd(), backlog) != 0)
      throw RendezvousError(ncclSystemError, errno_text("listen") + " (@" + name + ")");
  }

  // The next connection, or an invalid Link once `deadline` has passed.
  Link accept_until(double deadline) {
    for (;;) {
      if (!wait_ready(sock_.fd(), POLLIN, deadline - now_seconds())) return Link();
      const int fd = ::accept4(sock_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) return Link(fd);
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
        throw RendezvousError(ncclSystemError, errno_text("accept") + " (@" + name_ + ")");
    }
  }

 private:
  Link sock_;
  std::string name_;
};

// Connects to `name`, retrying while nobody listens there yet; an invalid Link once `deadline`
// has passed.
Link connect_until(const std::string& name, double deadline) {
  socklen_t len = 0;
  const sockaddr_un a = abstract_address(name, &len);
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    Link s(new_socket());
    if (::connect(s.fd(), reinterpret_cast<const sockaddr*>(&a), len) == 0) return s;
    if (errno != ECONNREFUSED && errno != ENOENT && errno != EAGAIN && errno != EINTR)
      throw RendezvousError(ncclSystemError, errno_text("connect") + " (@" + name + ")");
    if (now_seconds() >= deadline) return Link();
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

// ---- the rendezvous protocol ----

enum class LinkKind : int32_t { star = 1, pair = 2 };

// The first message on every connection: who connects, and for which communicator.
struct Hello {
  uint64_t magic;
  uint64_t token;
  int32_t kind;
  int32_t rank;
  int32_t nranks;
  int32_t reserved;
};
constexpr uint64_t kHelloMagic = 0x6f6c6c6548534554ull;  // "TESHello"

// Rank 0's answer on a star link once every rank has arrived, or it gave up: the result, then
// message_bytes of explanation.
struct Welcome {
  uint64_t magic;
  int32_t result;
  uint32_t message_bytes;
};
constexpr uint64_t kWelcomeMagic = 0x656d6f636c655754ull;  // "TWelcome"

void send_hello(const Link& link, const RendezvousId& id, LinkKind kind, int rank, int nranks,
                double timeout_s) {
  const Hello h{kHelloMagic, id.token, int32_t(kind), rank, nranks, 0};
  link.send_all(&h, sizeof h, timeout_s);
}

// Why `h` cannot join as a `kind` link to a rank of `nranks` whose links so far are `have`, or
// "" when it can.
std::string refusal(const Hello& h, const RendezvousId& id, LinkKind kind, int nranks,
                    const std::vector<Link>& have) {
  if (h.magic != kHelloMagic) return "a connection that is not a Tessera NCCL rank reached it";
  if (h.token != id.token)
    return "rank " + std::to_string(h.rank) + " joined with another unique id (same address, " +
           "different token)";
  if (h.kind != int32_t(kind)) return "rank " + std::to_string(h.rank) + " sent the wrong hello";
  if (h.nranks != nranks)
    return "rank " + std::to_string(h.rank) + " joined with nranks = " + std::to_string(h.nranks) +
           ", this rank has nranks = " + std::to_string(nranks);
  if (h.rank < 0 || h.rank >= nranks)
    return "a rank joined as rank " + std::to_string(h.rank) + ", out of range for " +
           std::to_string(nranks) + " ranks";
  if (have[size_t(h.rank)].valid())
    return "two ranks both joined as rank " + std::to_string(h.rank);
  return "";
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) s += i + 1 == ranks.size() ? " and " : ", ";
    s += std::to_string(ranks[i]);
  }
  return s;
}

void send_welcome(const Link& link, ncclResult_t result, const std::string& message) {
  const Welcome w{kWelcomeMagic, int32_t(result), uint32_t(message.size())};
  try {
    link.send_all(&w, sizeof w, 5);
    link.send_all(message.data(), message.size(), 5);
  } catch (const TransportError&) {
    // That rank has gone; it has nothing left to be told.
  }
}

// Rank 0: accepts the other ranks' star links until all have arrived, one is refused, or the
// deadline passes; then tells every rank that reached it the outcome.
void gather_star(Listener& listener, const RendezvousId& id, int nranks, double timeout_s,
                 std::vector<Link>& star) {
  const double deadline = now_seconds() + timeout_s;
  std::vector<Link> refused;
  std::string problem;
  for (int arrived = 0; arrived < nranks - 1 && problem.empty();) {
    Link c = listener.accept_until(deadline);
    if (!c.valid()) break;
    Hello h{};
    try {
      c.recv_all(&h, sizeof h, std::max(1.0, deadline - now_seconds()));
    } catch (const TransportError&) {
      continue;  // gone before saying who it is: it never joined
    }
    problem = refusal(h, id, LinkKind::star, nranks, star);
    if (problem.empty() && h.rank == 0) problem = "a second rank 0 joined";
    if (!problem.empty()) {
      refused.push_back(std::move(c));
    } else {
      star[size_t(h.rank)] = std::move(c);
      ++arrived;
    }
  }
  ncclResult_t result = problem.empty() ? ncclSuccess : ncclInvalidUsage;
  if (!problem.empty()) {
    problem = "rendezvous @" + id.name + " (rank 0 of " + std::to_string(nranks) + "): " + problem;
  } else {
    std::vector<int> missing;
    for (int r = 1; r < nranks; ++r)
      if (!star[size_t(r)].valid()) missing.push_back(r);
    if (!missing.empty()) {
      result = ncclSystemError;
      problem = "rendezvous @" + id.name + ": rank 0 of " + std::to_string(nranks) + " waited " +
                seconds_text(timeout_s) + " and rank" + (missing.size() > 1 ? "s " : " ") +
                rank_list(missing) +
                " never arrived (every rank must call ncclCommInitRank with this id; "
                "TESSERA_EMU_NCCL_INIT_TIMEOUT_S sets the wait)";
    }
  }
  for (const Link& l : star)
    if (l.valid()) send_welcome(l, result, problem);
  for (const Link& l : refused) send_welcome(l, result, problem);
  if (result != ncclSuccess) throw RendezvousError(result, problem);
}

// Rank r > 0: reaches rank 0, says who it is, and waits for rank 0's verdict.
Link join_star(const RendezvousId& id, int nranks, int rank, double timeout_s) {
  const std::string where = "rendezvous @" + id.name + " (rank " + std::to_string(rank) + " of " +
                            std::to_string(nranks) + "): ";
  Link c = connect_until(rank_address(id, 0), now_seconds() + timeout_s);
  if (!c.valid())
    throw RendezvousError(ncclSystemError,
                          where + "rank 0 could not be reached within " + seconds_text(timeout_s) +
                              " (it has not called ncclCommInitRank with this id, or it gave up "
                              "waiting; TESSERA_EMU_NCCL_INIT_TIMEOUT_S sets the wait)");
  Welcome w{};
  try {
    send_hello(c, id, LinkKind::star, rank, nranks, timeout_s);
    // Rank 0 answers once the last rank arrives: at most its own timeout after we connected.
    c.recv_all(&w, sizeof w, timeout_s + 10);
  } catch (const TransportError& e) {
    throw RendezvousError(ncclSystemError, where + "no answer from rank 0: " + e.what());
  }
  if (w.magic != kWelcomeMagic)
    throw RendezvousError(ncclInternalError, where + "rank 0 answered with garbage");
  if (w.result == ncclSuccess) return c;
  std::string message(w.message_bytes, '\0');
  try {
    c.recv_all(message.data(), message.size(), 5);
  } catch (const TransportError&) {
    message = "(its message was lost)";
  }
  throw RendezvousError(ncclResult_t(w.result),
                        where + "rank 0 refused the communicator: " + message);
}

// Every rank: one pair link to each other rank. Rank r connects to the ranks below it and
// accepts the ones above; every listener exists before rank 0 welcomes anyone, so no connect
// has to wait for a listener.
void connect_pairs(Listener& listener, const RendezvousId& id, int nranks, int rank,
                   double timeout_s, std::vector<Link>& pair) {
  const std::string where = "rendezvous @" + id.name + " (rank " + std::to_string(rank) + " of " +
                            std::to_string(nranks) + "): ";
  const double deadline = now_seconds() + timeout_s;
  try {
    for (int q = 0; q < rank; ++q) {
      Link c = connect_until(rank_address(id, q), deadline);
      if (!c.valid())
        throw RendezvousError(ncclSystemError, where + "rank " + std::to_string(q) +
                                                   " could not be reached for a point-to-point "
                                                   "link");
      send_hello(c, id, LinkKind::pair, rank, nranks, timeout_s);
      pair[size_t(q)] = std::move(c);
    }
    for (int expected = nranks - 1 - rank; expected > 0; --expected) {
      Link c = listener.accept_until(deadline);
      if (!c.valid())
        throw RendezvousError(ncclSystemError,
                              where +
                                  "the ranks above this one did not all open their "
                                  "point-to-point links within " +
                                  seconds_text(timeout_s));
      Hello h{};
      c.recv_all(&h, sizeof h, std::max(1.0, deadline - now_seconds()));
      std::string problem = refusal(h, id, LinkKind::pair, nranks, pair);
      if (problem.empty() && h.rank <= rank) problem = "a rank below this one connected twice";
      if (!problem.empty()) throw RendezvousError(ncclInvalidUsage, where + problem);
      pair[size_t(h.rank)] = std::move(c);
    }
  } catch (const TransportError& e) {
    throw RendezvousError(ncclSystemError, where + "point-to-point links: " + e.what());
  }
}

}  // namespace

Links rendezvous(const RendezvousId& id, int nranks, int rank, double timeout_s) {
  // Listen first: the other ranks' pair links may arrive as soon as rank 0 has seen everyone.
  Listener listener(rank_address(id, rank), nranks + 16);
  Links links;
  links.pair.resize(size_t(nranks));
  if (rank == 0) {
    links.star.resize(size_t(nranks));
    gather_star(listener, id, nranks, timeout_s, links.star);
  } else {
    links.star.push_back(join_star(id, nranks, rank, timeout_s));
  }
  connect_pairs(listener, id, nranks, rank, timeout_s, links.pair);
  return links;  // the listener closes: the address is free again
}

}  // namespace tessera::emu::nccl
