// A small key-value store over TCP for the start-up of a torchrun-style job (RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT; no MPI): rank 0 hosts the server, every rank (0 included) connects
// as a client, and the ranks exchange NCCL's unique id and the start-up checks through it
// (store_comm.h). Like torch.distributed's TCPStore, but every connection is authenticated with
// the job token (job_token.h) and every message carries a MAC and a sequence number
// (store_channel.h), so a process that does not know the token can neither join nor forge,
// alter or replay a message. Nothing is encrypted: the values (the NCCL unique id, config
// hashes) can be read by whoever sees the traffic.
//
// The server binds only to MASTER_ADDR (resolved; never the wildcard address), serves one
// thread per connection, and refuses (logging why, on stderr and in refusals()) a client with a
// wrong token, a rank out of range or already connected, and any refused message (the
// connection is dropped; the other clients are served on). Values are at most
// kMaxStorePayload bytes.
//
// Heartbeats. Each rank may open a second connection, its heartbeat lane (store_heartbeat.h),
// which identifies in the handshake as rank world_size + r (so it is authenticated like the
// first, and a rank's two connections never wait on each other). On it the rank sends a beat
// every second or so; the server stamps each beat with its own clock and answers with every
// rank's state and the seconds since its last beat. One clock measures every age, so the ranks'
// clocks need not agree.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dist/store_channel.h"

namespace tessera::dist {

struct StoreOptions {
  std::string host = "127.0.0.1";  // MASTER_ADDR: the server binds here, clients connect here
  int port = 0;                    // MASTER_PORT; 0 on the server: any free port (tests)
  std::string token;               // the job token
  int world_size = 1;
  double timeout_s = 60;  // connecting, the rendezvous, and get()
  // How long a collective after the rendezvous waits for a rank that is still connected (a peer
  // may be busy for minutes; the trainer sets parallel.stuck_timeout_s, infinity for 0); one
  // whose connection closed is reported at once.
  double collective_timeout_s = 600;
  bool log_refusals = true;  // print refusals on stderr (tests turn it off)
  // Heartbeats after the rendezvous (store_heartbeat.h): the period (0: min(1 s, timeout_s / 5));
  // a rank whose beats stop for timeout_s is named by the others; < 0 turns them off.
  double heartbeat_s = 0;
};

// A rank's state as the server sees it through its heartbeat lane.
enum class BeatState : uint8_t {
  not_started,  // no heartbeat lane yet
  beating,      // age = seconds since its last beat
  left,         // said goodbye (a normal end); its lane may be closed
  gone,         // its lane closed without a goodbye (its process ended); age = seconds since
};
struct PeerBeat {
  BeatState state = BeatState::not_started;
  double age_s = 0;
};

class TcpStoreServer {
 public:
  // Binds and listens at once (throws Error naming the address when it cannot), then serves on
  // a background thread until destroyed.
  explicit TcpStoreServer(StoreOptions opt);
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  int port() const { return port_; }          // the bound port
  std::string bound_address() const;          // getsockname's "127.0.0.1:29500"
  std::vector<std::string> refusals() const;  // every refusal so far, with its reason
  std::set<int> connected_ranks() const;      // ranks that passed the handshake
  std::vector<PeerBeat> beats() const;        // every rank's heartbeat, as now

 private:
  void accept_loop();
  void serve(int fd);
  // `lane` is the connection's identity from the handshake: a rank, or world_size + rank for
  // that rank's heartbeat lane.
  std::string handle(const std::string& request, int lane);
  std::vector<PeerBeat> beats_locked() const;
  void refuse(const std::string& why);

  StoreOptions opt_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> pending_handshakes_{0};
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::string> data_;
  std::set<int> ranks_;  // connected lanes: ranks, and world_size + r for heartbeat lanes
  struct Heart {
    BeatState state = BeatState::not_started;
    double at = 0;  // the last beat (beating) or the lane's end (gone), on the server's clock
  };
  std::vector<Heart> hearts_;  // per rank
  std::vector<std::string> refusals_;
  std::set<int> open_fds_;
  std::thread acceptor_;
  std::vector<std::thread> workers_;
};

enum class StoreLane { main, heartbeat };

// A rank's connection to rank 0's store. Calls are blocking and serialised (one request at a
// time on the connection; thread-safe).
class TcpStoreClient {
 public:
  // Connects to opt.host:opt.port, retrying until opt.timeout_s (rank 0's server may start
  // after this rank), and authenticates as `rank` (on the heartbeat lane: as world_size +
  // rank). Throws Error naming the address and what went wrong (unreachable, refused: wrong
  // token?).
  TcpStoreClient(StoreOptions opt, int rank, StoreLane lane = StoreLane::main);
  ~TcpStoreClient();
  TcpStoreClient(const TcpStoreClient&) = delete;
  TcpStoreClient& operator=(const TcpStoreClient&) = delete;

  void set(const std::string& key, const std::string& value);
  // The value of key, waiting for it up to timeout_s; throws Error naming the key on timeout.
  std::string get(const std::string& key);
  // Adds n to the counter at key (absent = 0) and returns the new value.
  int64_t add(const std::string& key, int64_t n);
  // Waits until every key is present; on timeout returns the missing ones (empty: all there).
  std::vector<std::string> wait(const std::vector<std::string>& keys, double timeout_s);
  void erase(const std::string& key);
  // The ranks connected to the server now.
  std::set<int> connected_ranks();
  // Heartbeat lane only: records a beat (or this rank's goodbye) and returns every rank's
  // state. Throws Error when the server does not answer within timeout_s.
  std::vector<PeerBeat> beat(bool leaving);

  int rank() const { return rank_; }
  const StoreOptions& options() const { return opt_; }
  // "rank 0's store at 127.0.0.1:29500"
  std::string where() const;

 private:
  std::string call(const std::string& request, double wait_s);
  StoreOptions opt_;
  int rank_;
  StoreLane lane_;
  int fd_ = -1;
  std::unique_ptr<StoreChannel> channel_;
  std::mutex mu_;
};

}  // namespace tessera::dist
