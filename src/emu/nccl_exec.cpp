#include "emu/nccl_exec.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <stdexcept>

#include "emu/device.h"
#include "emu/nccl_reduce.h"

namespace tessera::emu::nccl {

const char* call_name(OpKind kind) {
  switch (kind) {
    case OpKind::all_reduce:
      return "ncclAllReduce";
    case OpKind::reduce_scatter:
      return "ncclReduceScatter";
    case OpKind::all_gather:
      return "ncclAllGather";
    case OpKind::broadcast:
      return "ncclBroadcast";
    case OpKind::reduce:
      return "ncclReduce";
    case OpKind::send:
      return "ncclSend";
    case OpKind::recv:
      return "ncclRecv";
  }
  return "nccl?";
}

bool is_point_to_point(OpKind kind) {
  return kind == OpKind::send || kind == OpKind::recv;
}

bool is_reduction(OpKind kind) {
  return kind == OpKind::all_reduce || kind == OpKind::reduce_scatter || kind == OpKind::reduce;
}

bool has_root(OpKind kind) {
  return kind == OpKind::broadcast || kind == OpKind::reduce;
}

size_t input_count(const Op& op, int rank, int nranks) {
  switch (op.kind) {
    case OpKind::reduce_scatter:
      return op.count * size_t(nranks);
    case OpKind::broadcast:
      return rank == op.root ? op.count : 0;
    case OpKind::recv:
      return 0;
    default:
      return op.count;
  }
}

size_t output_count(const Op& op, int rank, int nranks) {
  switch (op.kind) {
    case OpKind::all_gather:
      return op.count * size_t(nranks);
    case OpKind::reduce:
      return rank == op.root ? op.count : 0;
    case OpKind::send:
      return 0;
    default:
      return op.count;
  }
}

namespace {

// A failure inside a task, with the NCCL result ncclCommGetAsyncError will give for it. The
// message is complete (call, rank, cause).
class TaskError : public std::runtime_error {
 public:
  TaskError(ncclResult_t result, const std::string& message)
      : std::runtime_error(message), result_(result) {}
  ncclResult_t result() const { return result_; }

 private:
  ncclResult_t result_;
};

// What a rank sends rank 0 before its input: the call it made, so that rank 0 can check that
// every rank made the same one.
struct CallHeader {
  uint64_t magic;
  uint64_t seq;  // the communicator's collective number
  int32_t kind;
  int32_t type;
  int32_t red;
  int32_t root;
  uint64_t count;
  uint64_t bytes;  // input bytes that follow
};
constexpr uint64_t kCallMagic = 0x6c6c61436d455354ull;  // "TSEmCall"

// Rank 0's answer: result ncclSuccess and `bytes` of output, or an error and `bytes` of message.
struct Reply {
  uint64_t magic;
  uint64_t seq;
  int32_t result;
  int32_t reserved;
  uint64_t bytes;
};
constexpr uint64_t kReplyMagic = 0x796c7065526d4554ull;  // "TEmReply"

// What precedes the data of an ncclSend on a pair link.
struct PairHeader {
  uint64_t magic;
  uint64_t count;
  int32_t type;
  int32_t reserved;
  uint64_t bytes;
};
constexpr uint64_t kPairMagic = 0x726961506d455354ull;  // "TSEmPair"

CallHeader header_of(const Op& op, uint64_t seq, uint64_t bytes) {
  return CallHeader{.magic = kCallMagic,
                    .seq = seq,
                    .kind = int32_t(op.kind),
                    .type = int32_t(op.type),
                    .red = int32_t(op.red),
                    .root = op.root,
                    .count = op.count,
                    .bytes = bytes};
}

bool same_call(const CallHeader& a, const CallHeader& b) {
  return a.seq == b.seq && a.kind == b.kind && a.type == b.type && a.count == b.count &&
         a.bytes == b.bytes && (!is_reduction(OpKind(a.kind)) || a.red == b.red) &&
         (!has_root(OpKind(a.kind)) || a.root == b.root);
}

// "ncclReduce(count 5, ncclFloat32, ncclSum, root 1)"
std::string describe_call(const CallHeader& h) {
  const auto kind = OpKind(h.kind);
  std::string s = std::string(call_name(kind)) + "(count " + std::to_string(h.count) + ", " +
                  type_name(ncclDataType_t(h.type));
  if (is_reduction(kind)) s += ", " + op_name(ncclRedOp_t(h.red));
  if (has_root(kind)) s += ", root " + std::to_string(h.root);
  return s + ")";
}

struct Segment {
  const void* data;
  size_t bytes;
};

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}

void copy_bytes(void* dst, const void* src, size_t bytes) {
  if (bytes > 0 && dst != src) std::memmove(dst, src, bytes);
}

}  // namespace

// ---- Comm: state ----

Comm::Comm(int rank, int nranks, int device, double timeout_s, Links links)
    : rank_(rank),
      nranks_(nranks),
      device_(device),
      timeout_s_(timeout_s),
      links_(std::move(links)) {}

std::string Comm::describe() const {
  return "rank " + std::to_string(rank_) + " of " + std::to_string(nranks_);
}

ncclResult_t Comm::async_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

std::string Comm::last_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_error_;
}

void Comm::set_last_error(const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  last_error_ = message;
}

void Comm::fail(ncclResult_t result, const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_ == ncclSuccess) error_ = result;
    last_error_ = message;
  }
  // The peers would otherwise wait for this rank's part of the collectives to come.
  shut_down_links();
  cv_.notify_all();
}

void Comm::abort() {
  {
    std::lock_guard<std::mutex> lock(mu_);  // a waiter between its check and its wait must see it
    aborted_ = true;
  }
  shut_down_links();
  cv_.notify_all();
}

void Comm::shut_down_links() {
  for (const Link& l : links_.star) l.shut_down();
  for (const Link& l : links_.pair) l.shut_down();
}

std::shared_ptr<Comm::Ticket> Comm::take_ticket(const std::shared_ptr<Comm>& comm) {
  std::lock_guard<std::mutex> lock(comm->mu_);
  const uint64_t id = comm->next_ticket_++;
  comm->outstanding_.insert(id);
  return std::make_shared<Ticket>(comm, id);
}

void Comm::retire(uint64_t ticket, bool ran) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    outstanding_.erase(ticket);
  }
  cv_.notify_all();
  if (!ran && !aborted_) {
    const std::string why = "the device had faulted: " + sticky_report();
    fail(ncclUnhandledCudaError, describe() + ": queued NCCL work was dropped unrun (" + why + ")");
  }
}

ncclResult_t Comm::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  const bool done = cv_.wait_for(lock, std::chrono::duration<double>(timeout_s_), [&] {
    return outstanding_.empty() || error_ != ncclSuccess || aborted_;
  });
  if (error_ != ncclSuccess) return error_;
  if (done) return ncclSuccess;
  last_error_ = describe() + ": " + std::to_string(outstanding_.size()) +
                " queued collective(s) did not run within " + seconds_text(timeout_s_) +
                " (TESSERA_EMU_NCCL_TIMEOUT_S): their streams are held, or wait for work that "
                "never comes";
  return ncclSystemError;
}

// A task's turn in issue order: waits until every earlier ticket has retired; retires its own
// when destroyed (however the task ends).
class Comm::Turn {
 public:
  Turn(Comm& c, uint64_t ticket, const std::string& what) : c_(c), ticket_(ticket) {
    std::unique_lock<std::mutex> lock(c.mu_);
    const bool mine = c.cv_.wait_for(lock, std::chrono::duration<double>(c.timeout_s_), [&] {
      return c.outstanding_.empty() || *c.outstanding_.begin() >= ticket ||
             c.error_ != ncclSuccess || c.aborted_;
    });
    if (!mine)
      throw TaskError(ncclSystemError,
                      what + ": " + c.describe() + ": the communicator's earlier work (issued " +
                          "before this, on another stream) did not run within " +
                          seconds_text(c.timeout_s_) + " (TESSERA_EMU_NCCL_TIMEOUT_S)");
  }
  ~Turn() { c_.retire(ticket_, true); }
  Turn(const Turn&) = delete;
  Turn& operator=(const Turn&) = delete;

 private:
  Comm& c_;
  uint64_t ticket_;
};

// ---- Comm: running a task ----

void Comm::run(const std::vector<Op>& ops, Ticket& ticket, const std::string& what) {
  ticket.mark_ran();
  // Passes the turn on when run() ends: after a failure has been recorded, so that no later
  // task can start without seeing it.
  std::unique_ptr<Turn> turn;
  ncclResult_t result = ncclSuccess;
  std::string message;
  cudaError_t code = cudaErrorLaunchFailure;
  try {
    turn = std::make_unique<Turn>(*this, ticket.id(), what);
    if (aborted_) return;
    if (const ncclResult_t e = async_error(); e != ncclSuccess)
      throw TaskError(
          e, what + ": " + describe() + ": the communicator failed earlier: " + last_error());
    for (const Op& op : ops)
      if (!is_point_to_point(op.kind)) run_collective(op);
    run_point_to_point(ops);
    return;
  } catch (const TaskError& e) {
    result = e.result(), message = e.what();
  } catch (const DeviceFault& e) {
    result = ncclUnhandledCudaError, message = e.what(), code = e.code();
  } catch (const std::exception& e) {
    result = ncclInternalError, message = what + ": " + describe() + ": " + e.what();
  }
  if (aborted_) return;  // the links were shut down on purpose: nothing to report
  fail(result, message);
  throw DeviceFault(code, message);
}

void Comm::run_collective(const Op& op) {
  const std::string what = call_name(op.kind);
  const size_t es = type_size(op.type);
  check_device_range(op.send, input_count(op, rank_, nranks_) * es, Access::read,
                     what + ": sendbuff");
  check_device_range(op.recv, output_count(op, rank_, nranks_) * es, Access::write,
                     what + ": recvbuff");
  const uint64_t seq = collectives_++;
  if (rank_ == 0) {
    root_collective(op, seq);
  } else {
    leaf_collective(op, seq);
  }
}

namespace {

// Wraps a transfer with `peer` so that its failure reads as what happened to the collective.
template <class F>
void with_peer(const std::string& what, const std::string& me, int peer, double timeout_s,
               F&& transfer) {
  try {
    transfer();
  } catch (const TransportError& e) {
    const std::string who = what + ": " + me + ": ";
    const std::string p = "peer rank " + std::to_string(peer);
    switch (e.kind()) {
      case TransportError::Kind::closed:
        throw TaskError(ncclRemoteError,
                        who + p +
                            " closed the connection (it aborted or destroyed its communicator, "
                            "failed, or its process ended)");
      case TransportError::Kind::timeout:
        throw TaskError(ncclSystemError,
                        who + p + ": " + e.what() +
                            " (TESSERA_EMU_NCCL_TIMEOUT_S = " + seconds_text(timeout_s) +
                            "): it hangs, or has not issued the matching call");
      case TransportError::Kind::system:
        break;
    }
    throw TaskError(ncclSystemError, who + "link to " + p + ": " + e.what());
  }
}

void send_segments(const Link& link, const std::vector<Segment>& parts, double timeout_s) {
  for (const Segment& s : parts) link.send_all(s.data, s.bytes, timeout_s);
}

void send_reply(const Link& link, uint64_t seq, ncclResult_t result,
                const std::vector<Segment>& parts, double timeout_s) {
  Reply r{kReplyMagic, seq, int32_t(result), 0, 0};
  for (const Segment& s : parts) r.bytes += s.bytes;
  link.send_all(&r, sizeof r, timeout_s);
  send_segments(link, parts, timeout_s);
}

}  // namespace

// Rank 0: collects every rank's call and input, checks that the calls agree, and answers each
// rank with its output (or with the disagreement).
void Comm::root_collective(const Op& op, uint64_t seq) {
  const std::string what = call_name(op.kind);
  const size_t es = type_size(op.type);
  const CallHeader mine = header_of(op, seq, input_count(op, 0, nranks_) * es);
  std::vector<std::vector<char>> inputs(static_cast<size_t>(nranks_));
  std::vector<const void*> in(static_cast<size_t>(nranks_), op.send);
  std::string mismatch;
  for (int r = 1; r < nranks_; ++r) {
    const Link& link = links_.star[size_t(r)];
    CallHeader h{};
    with_peer(what, describe(), r, timeout_s_, [&] { link.recv_all(&h, sizeof h, timeout_s_); });
    if (h.magic != kCallMagic)
      throw TaskError(ncclInternalError, what + ": " + describe() + ": rank " + std::to_string(r) +
                                             " sent a corrupt header");
    const CallHeader want = header_of(op, seq, input_count(op, r, nranks_) * es);
    if (!same_call(h, want) && mismatch.empty())
      mismatch =
          "collective #" + std::to_string(seq) + " differs between ranks: rank 0 called " +
          describe_call(mine) + ", rank " + std::to_string(r) + " called " +
          (h.seq == seq ? describe_call(h)
                        : "its collective #" + std::to_string(h.seq) + " " + describe_call(h));
    std::vector<char>& buf = inputs[size_t(r)];
    buf.resize(h.bytes);  // read even when it disagrees: the sender is blocked until it is
    with_peer(what, describe(), r, timeout_s_,
              [&] { link.recv_all(buf.data(), buf.size(), timeout_s_); });
    in[size_t(r)] = buf.data();
  }
  if (!mismatch.empty()) {
    for (int r = 1; r < nranks_; ++r) {
      try {
        send_reply(links_.star[size_t(r)], seq, ncclInvalidUsage,
                   {{mismatch.data(), mismatch.size()}}, timeout_s_);
      } catch (const TransportError&) {
        // That rank has gone: it learns nothing more, and the mismatch is reported here.
      }
    }
    throw TaskError(ncclInvalidUsage, what + ": " + describe() + ": " + mismatch);
  }
  const size_t bytes = op.count * es;
  auto answer = [&](int r, const std::vector<Segment>& parts) {
    with_peer(what, describe(), r, timeout_s_,
              [&] { send_reply(links_.star[size_t(r)], seq, ncclSuccess, parts, timeout_s_); });
  };
  std::vector<char> out(is_reduction(op.kind) ? bytes : 0);
  switch (op.kind) {
    case OpKind::all_reduce:
    case OpKind::reduce:
      reduce(in, out.data(), op.count, op.type, op.red);
      for (int r = 1; r < nranks_; ++r)
        answer(r, op.kind == OpKind::all_reduce || r == op.root
                      ? std::vector<Segment>{{out.data(), bytes}}
                      : std::vector<Segment>{});
      if (op.kind == OpKind::all_reduce || op.root == 0) copy_bytes(op.recv, out.data(), bytes);
      break;
    case OpKind::reduce_scatter: {
      // Rank 0's own block last: in place, it overwrites the input block only it reads.
      std::vector<const void*> block(in.size());
      for (int r = nranks_ - 1; r >= 0; --r) {
        for (size_t q = 0; q < in.size(); ++q)
          block[q] = static_cast<const char*>(in[q]) + size_t(r) * bytes;
        reduce(block, out.data(), op.count, op.type, op.red);
        if (r > 0) answer(r, {{out.data(), bytes}});
      }
      copy_bytes(op.recv, out.data(), bytes);
      break;
    }
    case OpKind::all_gather: {
      std::vector<Segment> parts;
      for (const void* p : in) parts.push_back({p, bytes});
      for (int r = 1; r < nranks_; ++r) answer(r, parts);
      for (size_t q = 0; q < in.size(); ++q)
        copy_bytes(static_cast<char*>(op.recv) + q * bytes, in[q], bytes);
      break;
    }
    case OpKind::broadcast: {
      const void* data = in[size_t(op.root)];
      for (int r = 1; r < nranks_; ++r)
        answer(r, r == op.root ? std::vector<Segment>{} : std::vector<Segment>{{data, bytes}});
      copy_bytes(op.recv, data, bytes);
      break;
    }
    case OpKind::send:
    case OpKind::recv:
      break;
  }
}

// Rank r > 0: sends its call and input to rank 0, then receives its output.
void Comm::leaf_collective(const Op& op, uint64_t seq) {
  const std::string what = call_name(op.kind);
  const size_t es = type_size(op.type);
  const Link& link = links_.star[0];
  const CallHeader h = header_of(op, seq, input_count(op, rank_, nranks_) * es);
  // The root of a broadcast keeps its own data: rank 0 sends it nothing back.
  const bool own_data = op.kind == OpKind::broadcast && op.root == rank_;
  const size_t out_bytes = own_data ? 0 : output_count(op, rank_, nranks_) * es;
  Reply reply{};
  with_peer(what, describe(), 0, timeout_s_, [&] {
    link.send_all(&h, sizeof h, timeout_s_);
    link.send_all(op.send, h.bytes, timeout_s_);
    link.recv_all(&reply, sizeof reply, timeout_s_);
  });
  if (reply.magic != kReplyMagic || reply.seq != seq)
    throw TaskError(ncclInternalError, what + ": " + describe() + ": rank 0 sent a corrupt reply");
  if (reply.result != ncclSuccess) {
    std::string message(reply.bytes, '\0');
    with_peer(what, describe(), 0, timeout_s_,
              [&] { link.recv_all(message.data(), message.size(), timeout_s_); });
    throw TaskError(ncclResult_t(reply.result), what + ": " + describe() + ": " + message);
  }
  if (reply.bytes != out_bytes)
    throw TaskError(ncclInternalError, what + ": " + describe() + ": rank 0 sent " +
                                           std::to_string(reply.bytes) + " bytes, expected " +
                                           std::to_string(out_bytes));
  with_peer(what, describe(), 0, timeout_s_,
            [&] { link.recv_all(op.recv, out_bytes, timeout_s_); });
  if (own_data) copy_bytes(op.recv, op.send, op.count * es);
}

// ---- point to point ----

namespace {

// One ncclSend or ncclRecv in flight: its header, then its data, `done` bytes of both so far.
struct Transfer {
  const Op* op = nullptr;
  PairHeader head{};
  char* data = nullptr;
  size_t bytes = 0;
  size_t done = 0;

  size_t total() const { return sizeof head + bytes; }
  // Where the next byte goes or comes from, and how many follow it in the same piece.
  std::pair<char*, size_t> next() {
    if (done < sizeof head) return {reinterpret_cast<char*>(&head) + done, sizeof head - done};
    return {data + (done - sizeof head), total() - done};
  }
};

std::string transfer_name(const Op& op) {
  return std::string(call_name(op.kind)) + (op.kind == OpKind::send ? " to rank " : " from rank ") +
         std::to_string(op.root);
}

// Why a received header does not match the receive, or "".
std::string header_problem(const Transfer& t) {
  if (t.head.magic != kPairMagic) return "a corrupt header arrived";
  if (t.head.bytes == t.bytes && t.head.type == int32_t(t.op->type)) return "";
  return "rank " + std::to_string(t.op->root) + " sent count " + std::to_string(t.head.count) +
         " of " + type_name(ncclDataType_t(t.head.type)) + ", the receive expects count " +
         std::to_string(t.op->count) + " of " + type_name(t.op->type) +
         " (sends and receives between two ranks must match one to one, in order)";
}

// Pairs sends to this rank with receives from it, in order (a copy each).
std::string run_local(const std::vector<const Op*>& sends, const std::vector<const Op*>& recvs) {
  if (sends.size() != recvs.size())
    return std::to_string(sends.size()) + " ncclSend(s) to this rank but " +
           std::to_string(recvs.size()) + " ncclRecv(s) from it in the group";
  for (size_t i = 0; i < sends.size(); ++i) {
    const size_t in = sends[i]->count * type_size(sends[i]->type);
    const size_t out = recvs[i]->count * type_size(recvs[i]->type);
    if (in != out || sends[i]->type != recvs[i]->type)
      return "ncclSend to this rank of count " + std::to_string(sends[i]->count) +
             " does not match its ncclRecv of count " + std::to_string(recvs[i]->count);
    copy_bytes(recvs[i]->recv, sends[i]->send, in);
  }
  return "";
}

// Sends what the socket takes now of the queued sends, in order.
void progress_sends(const Link& link, std::deque<Transfer>& queue) {
  while (!queue.empty()) {
    Transfer& t = queue.front();
    const auto [p, len] = t.next();
    const size_t k = link.send_some(p, len);
    if (k == 0) return;
    if ((t.done += k) == t.total()) queue.pop_front();
  }
}

// Receives what has arrived for the queued receives, in order. Returns why a header that has
// just arrived does not match its receive (that receive stays first in the queue), or "".
std::string progress_recvs(const Link& link, std::deque<Transfer>& queue) {
  while (!queue.empty()) {
    Transfer& t = queue.front();
    const auto [p, len] = t.next();
    const size_t k = link.recv_some(p, len);
    if (k == 0) return "";
    const bool header_done = t.done < sizeof t.head && t.done + k >= sizeof t.head;
    t.done += k;
    if (header_done) {
      std::string why = header_problem(t);
      if (!why.empty()) return why;
    }
    if (t.done == t.total()) queue.pop_front();
  }
  return "";
}

}  // namespace

void Comm::run_point_to_point(const std::vector<Op>& ops) {
  const auto n = static_cast<size_t>(nranks_);
  std::vector<std::deque<Transfer>> sends(n), recvs(n);
  std::vector<const Op*> self_sends, self_recvs;
  for (const Op& op : ops) {
    if (!is_point_to_point(op.kind)) continue;
    const size_t bytes = op.count * type_size(op.type);
    const std::string what = transfer_name(op);
    Transfer t;
    t.op = &op;
    t.bytes = bytes;
    if (op.kind == OpKind::send) {
      check_device_range(op.send, bytes, Access::read, what + ": sendbuff");
      t.head = PairHeader{kPairMagic, op.count, int32_t(op.type), 0, bytes};
      t.data = static_cast<char*>(const_cast<void*>(op.send));
      if (op.root == rank_) {
        self_sends.push_back(&op);
      } else {
        sends[size_t(op.root)].push_back(t);
      }
    } else {
      check_device_range(op.recv, bytes, Access::write, what + ": recvbuff");
      t.data = static_cast<char*>(op.recv);
      if (op.root == rank_) {
        self_recvs.push_back(&op);
      } else {
        recvs[size_t(op.root)].push_back(t);
      }
    }
  }
  if (std::string p = run_local(self_sends, self_recvs); !p.empty())
    throw TaskError(ncclInvalidUsage, "ncclSend/ncclRecv: " + describe() + ": " + p);

  // Progress every transfer at once: poll the links that have one pending, and move what each
  // socket takes. Transfers with one peer go in call order in each direction.
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<int> peers;
    for (int q = 0; q < nranks_; ++q) {
      const auto events =
          short((sends[size_t(q)].empty() ? 0 : POLLOUT) | (recvs[size_t(q)].empty() ? 0 : POLLIN));
      if (events == 0) continue;
      fds.push_back(pollfd{links_.pair[size_t(q)].fd(), events, 0});
      peers.push_back(q);
    }
    if (fds.empty()) return;
    const int ready = ::poll(fds.data(), fds.size(), int(std::min(timeout_s_ * 1000, 3.6e6)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      const int q = peers[0];
      const Op& op = *(sends[size_t(q)].empty() ? recvs : sends)[size_t(q)].front().op;
      throw TaskError(ncclSystemError,
                      transfer_name(op) + ": " + describe() + ": no progress for " +
                          seconds_text(timeout_s_) +
                          " (TESSERA_EMU_NCCL_TIMEOUT_S): the peer hangs, or has not posted the "
                          "matching call");
    }
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      const int q = peers[i];
      const Link& link = links_.pair[size_t(q)];
      std::deque<Transfer>& out = sends[size_t(q)];
      std::deque<Transfer>& in = recvs[size_t(q)];
      const std::string what = transfer_name(*(out.empty() ? in : out).front().op);
      std::string problem;
      with_peer(what, describe(), q, timeout_s_, [&] {
        progress_sends(link, out);
        problem = progress_recvs(link, in);
      });
      if (!problem.empty())
        throw TaskError(ncclInvalidUsage,
                        transfer_name(*in.front().op) + ": " + describe() + ": " + problem);
    }
  }
}

// ---- launching ----

namespace {

// Makes `to` wait for the work queued on `from` so far.
bool order_after(cudaStream_t to, cudaStream_t from) {
  cudaEvent_t e = nullptr;
  if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) return false;
  const bool ok =
      cudaEventRecord(e, from) == cudaSuccess && cudaStreamWaitEvent(to, e, 0) == cudaSuccess;
  (void)cudaEventDestroy(e);  // legal while the wait is pending
  return ok;
}

// "ncclAllReduce", or "ncclGroupEnd (ncclReduce x 3)" for several calls.
std::string work_name(const std::vector<Op>& ops) {
  if (ops.size() == 1) return call_name(ops[0].kind);
  std::string s = "ncclGroupEnd (";
  for (size_t i = 0; i < ops.size();) {
    size_t j = i;
    while (j < ops.size() && ops[j].kind == ops[i].kind) ++j;
    if (i > 0) s += ", ";
    s += call_name(ops[i].kind);
    if (j - i > 1) s += " x " + std::to_string(j - i);
    i = j;
  }
  return s + ")";
}

}  // namespace

ncclResult_t launch(const std::shared_ptr<Comm>& comm, std::vector<Op> ops) {
  std::vector<cudaStream_t> streams;
  for (const Op& op : ops)
    if (std::find(streams.begin(), streams.end(), op.stream) == streams.end())
      streams.push_back(op.stream);
  const cudaStream_t main = streams[0];
  std::lock_guard<std::mutex> issuing(comm->issue_mutex());
  for (size_t i = 1; i < streams.size(); ++i)
    if (!order_after(main, streams[i])) return ncclUnhandledCudaError;
  std::shared_ptr<Comm::Ticket> ticket = Comm::take_ticket(comm);
  std::string what = work_name(ops);
  enqueue(main, what, [ticket = std::move(ticket), ops = std::move(ops), what] {
    ticket->comm().run(ops, *ticket, what);
  });
  for (size_t i = 1; i < streams.size(); ++i)
    if (!order_after(streams[i], main)) return ncclUnhandledCudaError;
  return ncclSuccess;
}

}  // namespace tessera::emu::nccl
