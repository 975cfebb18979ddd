// The authenticated connection between a rank and rank 0's store (tcp_store.h), over a TCP
// socket. The job token (job_token.h) never crosses the wire.
//
// Handshake (fixed sizes, so nothing is allocated from what a peer says):
//   server -> client  "TSS1", server nonce (32 random bytes)
//   client -> server  client nonce (32), rank (u32), world size (u32),
//                     HMAC-SHA256(token, "client" | server nonce | client nonce | rank | world)
//   server -> client  'A', HMAC-SHA256(token, "server" | server nonce | client nonce)
//                     or 'R' and the connection closes (wrong token, rank taken or out of range)
// Both sides then key every message with
//   session key = HMAC-SHA256(token, "session" | server nonce | client nonce)
// (fresh per connection, so a message from another connection does not verify on this one).
//
// Message: sequence number (u64), payload length (u32), payload, then
//   HMAC-SHA256(session key, direction | sequence | length | payload)
// (direction 'C' client->server, 'S' server->client, so a message cannot be reflected back).
// The receiver refuses, and the connection is dropped: a length over kMaxStorePayload (checked
// before anything is allocated), a MAC that does not verify (forged or altered), a sequence
// number other than the next one (replayed, dropped or reordered). MACs are compared in constant
// time (CRYPTO_memcmp). Integers are little-endian.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

namespace tessera::dist {

constexpr size_t kStoreNonceBytes = 32;
constexpr size_t kStoreMacBytes = 32;
constexpr uint32_t kMaxStorePayload = 1u << 20;  // 1 MiB: ids, hashes, scalars; never tensors
using StoreNonce = std::array<unsigned char, kStoreNonceBytes>;
using StoreMac = std::array<unsigned char, kStoreMacBytes>;

// A refused peer or message: the connection cannot continue (the reason says why).
struct ChannelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

StoreNonce random_nonce();
StoreMac hmac_sha256(const std::string& key, const std::string& data);
bool macs_equal(const StoreMac& a, const StoreMac& b);  // constant time

// Whole reads and writes on a socket, giving up at `deadline` (steady-clock seconds, see
// clock.h; <= 0: no deadline). Throw ChannelError on a timeout, a closed peer or an error.
void write_all(int fd, const void* data, size_t n, double deadline);
void read_all(int fd, void* data, size_t n, double deadline);

// A message stream after the handshake. Owns no socket.
class StoreChannel {
 public:
  StoreChannel(int fd, std::string session_key, bool is_server)
      : fd_(fd), key_(std::move(session_key)), server_(is_server) {}

  void send(const std::string& payload, double deadline);
  std::string receive(double deadline);

  // The bytes send() would write next (tests craft forged and replayed messages from these).
  std::string frame(const std::string& payload, uint64_t seq) const;
  uint64_t next_send_seq() const { return send_seq_; }

 private:
  StoreMac mac(char direction, uint64_t seq, const std::string& payload) const;
  int fd_;
  std::string key_;
  bool server_;
  uint64_t send_seq_ = 0, recv_seq_ = 0;
};

// The client's side of the handshake: proves the token for (rank, world) and checks that the
// server knows it too. Returns the session key. Throws ChannelError when refused.
std::string store_client_handshake(int fd, const std::string& token, int rank, int world,
                                   double deadline);

// The server's side: the client's claimed rank and world size and the session key, or throws
// ChannelError (wrong token). `admit(rank, world)` returns "" to accept, else the reason
// to refuse (the server then sends 'R').
struct ServerHandshake {
  int rank = -1, world = 0;
  std::string session_key;
};
ServerHandshake store_server_handshake(
    int fd, const std::string& token, double deadline,
    const std::function<std::string(int rank, int world)>& admit);

}  // namespace tessera::dist
