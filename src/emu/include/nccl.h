// The emulated NCCL (TESSERA_CUDA_EMULATION builds): the part of NCCL 2.28's API that Tessera
// calls, with NCCL's numeric values and struct layouts, implemented over Unix-domain sockets
// between the ranks' processes on one machine (src/emu/nccl*.cpp; docs/CUDA.md, "The emulated
// device").
//
// What it keeps from NCCL:
// - Collectives run as stream work, in stream order, after everything queued on the stream
//   before them; the call returns once they are queued. ncclGroupStart/End collect calls and
//   queue them at the outermost ncclGroupEnd.
// - Every rank must issue a communicator's collectives in the same order; a rank that issues a
//   different one (kind, count, type, op or root) makes the collective fail on every rank with a
//   report naming both calls.
// - In place works for every collective (sendbuff == recvbuff, or the rank's own part for
//   reduce-scatter and all-gather).
// - A peer that aborts its communicator or whose process ends makes the collectives waiting on it
//   fail (a device fault naming the peer) instead of hanging.
//
// What differs:
// - Results are deterministic: rank 0 reduces the contributions in rank order 0, 1, 2, ...;
//   bf16 and f16 are accumulated in f32 and rounded once at the end. ncclAvg sums (in the
//   accumulation type) and divides the sum by nranks once; integer averages truncate. ncclMax
//   and ncclMin on floating types are fmax and fmin (a NaN loses to a number), as in NCCL.
// - fp8 types move (all-gather, broadcast, send/recv) but are not reduced: ncclInvalidArgument.
// - Initialisation completes before ncclCommInitRank* returns, also for non-blocking configs
//   (which then answer ncclSuccess instead of ncclInProgress).
// - Every collective passes through rank 0 (a star over Unix-domain sockets in the abstract
//   namespace): the ranks must be processes, or threads, of one machine.
// - Calls on one communicator run in the order they were made even when they are on different
//   streams (a later call's stream waits for the earlier calls).
// - Not emulated: ncclCommInitRank inside a group (ncclInvalidUsage; initialise each rank from
//   its own thread or process), user-defined reduction operators, and the rest of NCCL's API.
// - ncclGetLastError gives the emulator's own messages (the rendezvous, which ranks never
//   arrived, which collective failed).
// Environment: TESSERA_EMU_NCCL_INIT_TIMEOUT_S (default 60) bounds the rendezvous,
// TESSERA_EMU_NCCL_TIMEOUT_S (default 600) any wait inside a collective.
#pragma once
#include <climits>
#include <cstddef>

#include "emu/runtime.h"

#define NCCL_MAJOR 2
#define NCCL_MINOR 28
#define NCCL_PATCH 9
#define NCCL_SUFFIX ""

// Codes up to 2.8 were major * 1000 + minor * 100 + patch; later ones major * 10000 + ...
#define NCCL_VERSION(X, Y, Z) \
  (((X) <= 2 && (Y) <= 8) ? (X)*1000 + (Y)*100 + (Z) : (X)*10000 + (Y)*100 + (Z))
#define NCCL_VERSION_CODE 22809

extern "C" {

typedef struct ncclComm* ncclComm_t;
#define NCCL_COMM_NULL NULL

#define NCCL_UNIQUE_ID_BYTES 128
// Opaque to callers. Here: a magic, a random token and the rendezvous socket's name.
typedef struct {
  char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef enum {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7,
  ncclNumResults = 8
} ncclResult_t;

#define NCCL_CONFIG_UNDEF_INT INT_MIN
#define NCCL_CONFIG_UNDEF_PTR NULL
#define NCCL_SPLIT_NOCOLOR -1
#define NCCL_UNDEF_FLOAT -1.0f

// NCCL 2.28's layout (ncclConfig_v22800), so that code filling it compiles and sizes match. The
// emulator reads `blocking` only (and checks size, magic and version, which the initializer
// sets).
typedef struct ncclConfig_v22800 {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
  int cgaClusterSize;
  int minCTAs;
  int maxCTAs;
  const char* netName;
  int splitShare;
  int trafficClass;
  const char* commName;
  int collnetEnable;
  int CTAPolicy;
  int shrinkShare;
  int nvlsCTAs;
  int nChannelsPerNetPeer;
  int nvlinkCentricSched;
} ncclConfig_t;

#define NCCL_CONFIG_MAGIC 0xcafebeef
// Every config must start from this (a config without the magic is refused).
#define NCCL_CONFIG_INITIALIZER                                                                \
  {                                                                                            \
    sizeof(ncclConfig_t), NCCL_CONFIG_MAGIC, NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH), \
        NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT,                   \
        NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_PTR, NCCL_CONFIG_UNDEF_INT,                   \
        NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_PTR, NCCL_CONFIG_UNDEF_INT,                   \
        NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT,                   \
        NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT                                           \
  }

typedef enum { ncclNumOps_dummy = 5 } ncclRedOp_dummy_t;
typedef enum {
  ncclSum = 0,
  ncclProd = 1,
  ncclMax = 2,
  ncclMin = 3,
  ncclAvg = 4,
  ncclNumOps = 5,  // user-defined operators (ncclRedOpCreatePreMulSum) are not emulated
  ncclMaxRedOp = 0x7fffffff >> (32 - 8 * sizeof(ncclRedOp_dummy_t))
} ncclRedOp_t;

typedef enum {
  ncclInt8 = 0,
  ncclChar = 0,
  ncclUint8 = 1,
  ncclInt32 = 2,
  ncclInt = 2,
  ncclUint32 = 3,
  ncclInt64 = 4,
  ncclUint64 = 5,
  ncclFloat16 = 6,
  ncclHalf = 6,
  ncclFloat32 = 7,
  ncclFloat = 7,
  ncclFloat64 = 8,
  ncclDouble = 8,
  ncclBfloat16 = 9,
  ncclFloat8e4m3 = 10,
  ncclFloat8e5m2 = 11,
  ncclNumTypes = 12
} ncclDataType_t;

// ---- library and communicators ----
ncclResult_t ncclGetVersion(int* version);
// A fresh rendezvous (random socket name and token): ids never collide.
ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId);
// Blocks until all nranks ranks have joined with the same id (or the rendezvous times out:
// ncclSystemError, ncclGetLastError names the ranks that never arrived). A rank that disagrees
// on nranks or carries another id makes every rank that reached rank 0 fail with
// ncclInvalidUsage. The communicator belongs to the device current at the call.
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank);
// config may be NULL. With config->blocking == 0, *comm is set even when initialisation fails,
// so that ncclCommGetAsyncError and ncclGetLastError(comm) describe the failure.
ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t* config);
// Waits (at most TESSERA_EMU_NCCL_TIMEOUT_S) for every collective issued on comm to finish.
ncclResult_t ncclCommFinalize(ncclComm_t comm);
// Finalizes (if not done) and frees comm.
ncclResult_t ncclCommDestroy(ncclComm_t comm);
// Frees comm at once: its queued collectives do nothing when they run, the ones running stop,
// and its peers' collectives fail (their connection to this rank is closed).
ncclResult_t ncclCommAbort(ncclComm_t comm);
// ncclSuccess, or the error of the collective that failed on comm.
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError);
ncclResult_t ncclCommCount(const ncclComm_t comm, int* count);
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device);
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank);

const char* ncclGetErrorString(ncclResult_t result);
// The message of the last failure on comm: of a call on it, or of its work on the stream
// (comm NULL, or no failure on comm: the last failure of any call in this process). Valid until
// the next ncclGetLastError on this thread.
const char* ncclGetLastError(ncclComm_t comm);

// ---- collectives (queued on stream) ----
ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream);
// recvbuff on rank i gets block i (recvcount elements) of the reduced nranks * recvcount.
ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream);
// recvbuff gets rank i's sendcount elements at offset i * sendcount.
ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);

// Point to point: peer must post the matching ncclRecv / ncclSend (same count and type). Pairs
// that depend on each other (a send and a receive between two ranks) must share a group.
ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream);

// Calls between them (per thread; groups nest) are queued at the outermost ncclGroupEnd, each
// communicator's as one piece of stream work: its collectives in call order, then its sends
// and receives, progressed together.
ncclResult_t ncclGroupStart();
ncclResult_t ncclGroupEnd();

}  // extern "C"
