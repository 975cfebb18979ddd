// The emulated NCCL's transport (see include/nccl.h): connected Unix-domain stream sockets in the
// abstract namespace (no files to clean up; they vanish with the process), and the rendezvous
// that connects a communicator's ranks.
//
// Every rank has one "star" link to rank 0 (rank 0 has one to every rank), which carries the
// collectives, and one "pair" link to every other rank, which carries ncclSend/ncclRecv. The
// two are separate so that point-to-point traffic between two ranks can never be read as
// collective traffic, whatever order the ranks issued them in.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <nccl.h>

namespace tessera::emu::nccl {

// Seconds on the monotonic clock.
double now_seconds();

// A failure of the socket layer. The caller adds who and what was being transferred.
class TransportError : public std::runtime_error {
 public:
  enum class Kind {
    closed,   // the peer closed its end (an abort, a failure on its side, or its process ended)
    timeout,  // no progress within the timeout
    system,   // a system call failed
  };
  TransportError(Kind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// One connected socket; closes it on destruction.
class Link {
 public:
  Link() = default;
  explicit Link(int fd) : fd_(fd) {}
  ~Link();
  Link(Link&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Link& operator=(Link&& other) noexcept;
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  // Block until all n bytes have moved; throw TransportError when the peer closes, or when
  // nothing moves for timeout_s.
  void send_all(const void* p, size_t n, double timeout_s) const;
  void recv_all(void* p, size_t n, double timeout_s) const;
  // One non-blocking step: the bytes moved (0 when the socket is not ready); throws as above.
  size_t send_some(const void* p, size_t n) const;
  size_t recv_some(void* p, size_t n) const;
  // Wakes every call blocked on this socket, here and at the peer (they fail as `closed`). The
  // descriptor stays open (no other thread can be handed it by a new socket meanwhile).
  void shut_down() const;

 private:
  int fd_ = -1;
};

// What a unique id carries.
struct RendezvousId {
  std::string name;    // the abstract socket name prefix; rank r listens on "<name>.<r>"
  uint64_t token = 0;  // random: checked by every connection, so strangers are refused
};

// A fresh random id, and its encoding in and out of an ncclUniqueId (decode returns false when
// the bytes are not from encode_id).
RendezvousId new_rendezvous_id();
void encode_id(const RendezvousId& id, ncclUniqueId* out);
bool decode_id(const ncclUniqueId& in, RendezvousId* out);

// A rank's connections to the others.
struct Links {
  std::vector<Link> star;  // rank 0: star[r] for r > 0; another rank: star[0]
  std::vector<Link> pair;  // pair[q] for q != rank
};

// Why a rendezvous failed: the NCCL result to return and a message for ncclGetLastError.
class RendezvousError : public std::runtime_error {
 public:
  RendezvousError(ncclResult_t result, const std::string& message)
      : std::runtime_error(message), result_(result) {}
  ncclResult_t result() const { return result_; }

 private:
  ncclResult_t result_;
};

// Connects rank `rank` of `nranks` (> 1) to the others: rank 0 waits up to timeout_s for all of
// them, the others retry reaching rank 0 for as long. Throws RendezvousError.
Links rendezvous(const RendezvousId& id, int nranks, int rank, double timeout_s);

}  // namespace tessera::emu::nccl
