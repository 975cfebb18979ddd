// The emulated NCCL's API (include/nccl.h): argument checks, errors, groups and communicators.
// How the calls run is nccl_exec.h; how ranks connect, nccl_transport.h.
#include <nccl.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "emu/nccl_exec.h"
#include "emu/nccl_reduce.h"
#include "emu/nccl_transport.h"

using tessera::emu::nccl::Comm;
using tessera::emu::nccl::Op;
using tessera::emu::nccl::OpKind;

// The handle behind ncclComm_t. The state it points to lives on in the work still queued after
// ncclCommDestroy or ncclCommAbort.
struct ncclComm {
  std::shared_ptr<Comm> impl;
  bool finalized = false;
};

namespace tessera::emu::nccl {
namespace {

// ---- errors ----

std::mutex g_error_mu;
std::string g_last_error;  // the last failure of any call (what ncclGetLastError(NULL) gives)

// Records `message` as the last error (of `comm` too, when there is one) and returns `r`.
ncclResult_t failure(ncclResult_t r, const std::string& message, ncclComm_t comm = nullptr) {
  {
    std::lock_guard<std::mutex> lock(g_error_mu);
    g_last_error = message;
  }
  if (comm) comm->impl->set_last_error(message);
  return r;
}

double env_seconds(const char* name, double fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  return end && *end == '\0' && s > 0 ? s : fallback;
}

// ---- groups ----

struct Pending {
  std::shared_ptr<Comm> comm;
  Op op;
};

// This thread's open group: nesting depth, the calls collected, and the first error among them.
struct Group {
  int depth = 0;
  std::vector<Pending> calls;
  ncclResult_t error = ncclSuccess;
};
thread_local Group t_group;

// Queues the group's calls, each communicator's as one task (in the order the communicators
// first appear, each one's calls in call order).
ncclResult_t launch_group(std::vector<Pending> calls) {
  std::vector<std::pair<std::shared_ptr<Comm>, std::vector<Op>>> by_comm;
  for (Pending& p : calls) {
    auto it = std::find_if(by_comm.begin(), by_comm.end(),
                           [&](const auto& e) { return e.first == p.comm; });
    if (it == by_comm.end()) it = by_comm.insert(by_comm.end(), {p.comm, {}});
    it->second.push_back(p.op);
  }
  ncclResult_t result = ncclSuccess;
  for (auto& [comm, ops] : by_comm) {
    const ncclResult_t r = launch(comm, std::move(ops));
    if (r != ncclSuccess && result == ncclSuccess)
      result = failure(r, "ncclGroupEnd: ordering the group's streams with events failed");
  }
  return result;
}

// ---- calls ----

// Why `op` cannot be made on `comm`, or "".
std::string argument_problem(const Op& op, const Comm& comm) {
  const size_t es = type_size(op.type);
  if (es == 0) return "invalid data type " + std::to_string(int(op.type));
  if (is_reduction(op.kind)) {
    if (op.red < 0 || op.red >= ncclNumOps)
      return "invalid reduction op " + std::to_string(int(op.red)) +
             " (user-defined operators are not emulated)";
    if (!reducible(op.type)) return type_name(op.type) + " cannot be reduced (not emulated)";
  }
  const int n = comm.nranks();
  if ((has_root(op.kind) || is_point_to_point(op.kind)) && (op.root < 0 || op.root >= n))
    return std::string(is_point_to_point(op.kind) ? "peer " : "root ") + std::to_string(op.root) +
           " out of range for " + std::to_string(n) + " ranks";
  if (op.count > SIZE_MAX / es / size_t(n))
    return "count " + std::to_string(op.count) + " too large";
  if (input_count(op, comm.rank(), n) > 0 && !op.send) return "sendbuff is NULL";
  if (output_count(op, comm.rank(), n) > 0 && !op.recv) return "recvbuff is NULL";
  return "";
}

// Checks a call and queues it (or, inside a group, collects it for ncclGroupEnd).
ncclResult_t submit(ncclComm_t comm, const Op& op) {
  const std::string call = call_name(op.kind);
  ncclResult_t r = ncclSuccess;
  if (!comm) {
    r = failure(ncclInvalidArgument, call + ": comm is NULL");
  } else if (const ncclResult_t e = comm->impl->async_error(); e != ncclSuccess) {
    // The communicator's own message stays the failure's.
    r = failure(e, call + ": the communicator has failed: " + comm->impl->last_error());
  } else if (std::string p = argument_problem(op, *comm->impl); !p.empty()) {
    r = failure(ncclInvalidArgument, call + ": " + comm->impl->describe() + ": " + p, comm);
  }
  if (t_group.depth > 0) {
    if (r == ncclSuccess) t_group.calls.push_back({comm->impl, op});
    if (t_group.error == ncclSuccess) t_group.error = r;
    return r;
  }
  if (r != ncclSuccess) return r;
  r = launch(comm->impl, {op});
  return r == ncclSuccess ? r : failure(r, call + ": ordering streams with events failed", comm);
}

ncclResult_t init(ncclComm_t* out, int nranks, const ncclUniqueId& id, int rank,
                  const ncclConfig_t* config) {
  const std::string call = "ncclCommInitRank";
  if (!out) return failure(ncclInvalidArgument, call + ": comm is NULL");
  *out = nullptr;
  if (t_group.depth > 0)
    return failure(ncclInvalidUsage,
                   call +
                       ": initialising inside ncclGroupStart/End is not emulated (initialise "
                       "each rank from its own thread or process)");
  if (nranks < 1 || rank < 0 || rank >= nranks)
    return failure(ncclInvalidArgument, call + ": rank " + std::to_string(rank) +
                                            " out of range for nranks " + std::to_string(nranks));
  bool blocking = true;
  if (config) {
    if (config->magic != NCCL_CONFIG_MAGIC || config->size != sizeof(ncclConfig_t))
      return failure(ncclInvalidArgument,
                     call + ": the config was not set up with NCCL_CONFIG_INITIALIZER");
    if (config->blocking != NCCL_CONFIG_UNDEF_INT) blocking = config->blocking != 0;
  }
  RendezvousId rid;
  if (!decode_id(id, &rid))
    return failure(ncclInvalidArgument, call + ": the unique id is not from ncclGetUniqueId");
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess)
    return failure(ncclUnhandledCudaError, call + ": cudaGetDevice failed");
  const double timeout_s = env_seconds("TESSERA_EMU_NCCL_TIMEOUT_S", 600);
  Links links;
  try {
    if (nranks > 1)
      links = rendezvous(rid, nranks, rank, env_seconds("TESSERA_EMU_NCCL_INIT_TIMEOUT_S", 60));
  } catch (const RendezvousError& e) {
    const std::string message = call + ": " + e.what();
    if (blocking) return failure(e.result(), message);
    // A non-blocking communicator is handed out anyway, failed, so that the caller can ask it
    // (ncclCommGetAsyncError, ncclGetLastError) and abort it, as with NCCL.
    *out = new ncclComm{std::make_shared<Comm>(rank, nranks, device, timeout_s, Links{})};
    (*out)->impl->fail(e.result(), message);
    return failure(e.result(), message);
  }
  *out = new ncclComm{std::make_shared<Comm>(rank, nranks, device, timeout_s, std::move(links))};
  return ncclSuccess;
}

}  // namespace
}  // namespace tessera::emu::nccl

namespace nccl = tessera::emu::nccl;

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return nccl::failure(ncclInvalidArgument, "ncclGetVersion: version is NULL");
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
  if (!uniqueId) return nccl::failure(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
  nccl::encode_id(nccl::new_rendezvous_id(), uniqueId);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
  return nccl::init(comm, nranks, commId, rank, nullptr);
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t* config) {
  return nccl::init(comm, nranks, commId, rank, config);
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  if (!comm) return nccl::failure(ncclInvalidArgument, "ncclCommFinalize: comm is NULL");
  comm->finalized = true;
  const ncclResult_t r = comm->impl->drain();
  return r == ncclSuccess ? r : nccl::failure(r, "ncclCommFinalize: " + comm->impl->last_error());
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  if (!comm->finalized) (void)comm->impl->drain();
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  comm->impl->abort();
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  if (!comm || !asyncError)
    return nccl::failure(ncclInvalidArgument, "ncclCommGetAsyncError: NULL argument");
  *asyncError = comm->impl->async_error();
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!comm || !count) return nccl::failure(ncclInvalidArgument, "ncclCommCount: NULL argument");
  *count = comm->impl->nranks();
  return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (!comm || !device)
    return nccl::failure(ncclInvalidArgument, "ncclCommCuDevice: NULL argument");
  *device = comm->impl->device();
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!comm || !rank) return nccl::failure(ncclInvalidArgument, "ncclCommUserRank: NULL argument");
  *rank = comm->impl->rank();
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error (see ncclGetLastError)";
    case ncclSystemError:
      return "unhandled system error (see ncclGetLastError)";
    case ncclInternalError:
      return "internal error (see ncclGetLastError)";
    case ncclInvalidArgument:
      return "invalid argument (see ncclGetLastError)";
    case ncclInvalidUsage:
      return "invalid usage (see ncclGetLastError)";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    case ncclNumResults:
      break;
  }
  return "unknown result code";
}

const char* ncclGetLastError(ncclComm_t comm) {
  // A copy per thread: the text must stay valid while another thread records a new error.
  thread_local std::string text;
  text = comm ? comm->impl->last_error() : std::string();
  if (text.empty()) {
    std::lock_guard<std::mutex> lock(nccl::g_error_mu);
    text = nccl::g_last_error;
  }
  return text.c_str();
}

ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
  return nccl::submit(comm,
                      Op{OpKind::reduce, sendbuff, recvbuff, count, datatype, op, root, stream});
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  return nccl::submit(
      comm, Op{OpKind::broadcast, sendbuff, recvbuff, count, datatype, ncclSum, root, stream});
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  return nccl::submit(comm,
                      Op{OpKind::all_reduce, sendbuff, recvbuff, count, datatype, op, 0, stream});
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
  return nccl::submit(
      comm, Op{OpKind::reduce_scatter, sendbuff, recvbuff, recvcount, datatype, op, 0, stream});
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
  return nccl::submit(
      comm, Op{OpKind::all_gather, sendbuff, recvbuff, sendcount, datatype, ncclSum, 0, stream});
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  return nccl::submit(comm,
                      Op{OpKind::send, sendbuff, nullptr, count, datatype, ncclSum, peer, stream});
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  return nccl::submit(comm,
                      Op{OpKind::recv, nullptr, recvbuff, count, datatype, ncclSum, peer, stream});
}

ncclResult_t ncclGroupStart() {
  ++nccl::t_group.depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  nccl::Group& g = nccl::t_group;
  if (g.depth == 0)
    return nccl::failure(ncclInvalidUsage, "ncclGroupEnd: no ncclGroupStart to end");
  if (--g.depth > 0) return ncclSuccess;
  std::vector<nccl::Pending> calls = std::move(g.calls);
  const ncclResult_t error = g.error;
  g = nccl::Group{};
  // As NCCL does, a call that failed inside the group fails the whole group: nothing runs.
  if (error != ncclSuccess) return error;
  return nccl::launch_group(std::move(calls));
}

}  // extern "C"
