// The CUDA runtime API of the emulated device (runtime.h): devices, errors, copies, streams,
// events. Memory is in memory.cpp, streams' threads in stream.cpp, kernels in launch.cpp.
#include "emu/runtime.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "emu/device.h"
#include "emu/memory.h"
#include "emu/stream.h"

namespace tessera::emu {
namespace {

std::atomic<uint64_t> g_host_waits{0};
thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;

struct Sticky {
  std::mutex mu;
  cudaError_t code = cudaSuccess;
  std::string report;
};
Sticky& sticky() {
  static auto* s = new Sticky();
  return *s;
}

std::mutex g_attr_mu;
std::map<const void*, size_t> g_shared_limits;

int device_count() {
  static const int n = [] {
    const char* e = std::getenv("TESSERA_EMU_DEVICES");
    const int v = e ? std::atoi(e) : 1;
    return v < 0 ? 0 : v;
  }();
  return n;
}

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// Every call answers the sticky error once there is one, as CUDA does after a device fault.
cudaError_t status() {
  return sticky_error();
}

// A bad argument found at call time: the report goes to stderr and the device is poisoned,
// since a GPU would have corrupted memory or faulted later.
cudaError_t refuse(const std::string& report) {
  raise_sticky(cudaErrorIllegalAddress, report);
  return cudaErrorIllegalAddress;
}

cudaMemcpyKind infer(const void* dst, const void* src) {
  const bool d = is_device_pointer(dst), s = is_device_pointer(src);
  return d ? (s ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
           : (s ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
}

// Checks the device side(s) of a copy; "" when fine.
std::string check_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                       const char* call) {
  try {
    if (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice)
      check_device_range(dst, bytes, Access::write, std::string(call) + ": dst");
    if (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice)
      check_device_range(src, bytes, Access::read, std::string(call) + ": src");
    if (kind == cudaMemcpyHostToDevice && is_device_pointer(src))
      return std::string(call) + ": cudaMemcpyHostToDevice from device memory";
    if (kind == cudaMemcpyDeviceToHost && is_device_pointer(dst))
      return std::string(call) + ": cudaMemcpyDeviceToHost into device memory";
  } catch (const DeviceFault& f) {
    return f.what();
  }
  return "";
}

// Queues the copy on s; the source bytes of a host-to-device copy from pageable memory are
// taken now (CUDA stages them before returning, so the caller may reuse its buffer).
// Pinned memory is read and written through the streams' view of it, and the host's view stays
// closed until the host has seen the copy done (memory.h).
void queue_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
  if (kind == cudaMemcpyHostToDevice && !is_pinned(src, bytes)) {
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + bytes);
    enqueue(s, "cudaMemcpyAsync (host to device)", [dst, staged] {
      streamrace::access(dst, staged->size(), true);
      std::memcpy(dst, staged->data(), staged->size());
    });
    return;
  }
  const std::string what = kind == cudaMemcpyHostToDevice   ? "a cudaMemcpyAsync to the device"
                           : kind == cudaMemcpyDeviceToHost ? "a cudaMemcpyAsync from the device"
                                                            : "a cudaMemcpyAsync";
  CUstream_st* st = resolve(s);
  void* to = stream_view(dst);
  const void* from = stream_view(src);
  const uint64_t pos = st->push(what,
                                [to, from, bytes] {
                                  streamrace::access(from, bytes, false);
                                  streamrace::access(to, bytes, true);
                                  std::memmove(to, from, bytes);
                                },
                                {});
  if (from != src) pinned_in_use(src, false, st, pos, what);
  if (to != dst) pinned_in_use(dst, true, st, pos, what);
}

}  // namespace

void raise_sticky(cudaError_t code, const std::string& report) {
  Sticky& s = sticky();
  std::lock_guard lk(s.mu);
  if (s.code != cudaSuccess) return;
  s.code = code;
  s.report = report;
  std::fprintf(stderr, "tessera emulated device: %s\n", report.c_str());
  std::fflush(stderr);
  if (const char* e = std::getenv("TESSERA_EMU_FAULT"); e && std::strcmp(e, "abort") == 0)
    std::abort();
}

cudaError_t sticky_error() {
  Sticky& s = sticky();
  std::lock_guard lk(s.mu);
  return s.code;
}

std::string sticky_report() {
  Sticky& s = sticky();
  std::lock_guard lk(s.mu);
  return s.report;
}

void reset_device() {
  (void)cudaDeviceSynchronize();
  Sticky& s = sticky();
  std::lock_guard lk(s.mu);
  s.code = cudaSuccess;
  s.report.clear();
  t_last_error = cudaSuccess;
}

uint64_t host_waits() {
  return g_host_waits.load();
}
void count_host_wait() {
  g_host_waits.fetch_add(1);
}

void set_last_error(cudaError_t err) {
  t_last_error = err;
}

cudaError_t set_kernel_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || size_t(value) > kOptinSharedBytes) return cudaErrorInvalidValue;
  std::lock_guard lk(g_attr_mu);
  g_shared_limits[kernel] = size_t(value);
  return cudaSuccess;
}

size_t kernel_shared_limit(const void* kernel) {
  std::lock_guard lk(g_attr_mu);
  auto it = g_shared_limits.find(kernel);
  return it == g_shared_limits.end() ? kDefaultSharedBytes : it->second;
}

}  // namespace tessera::emu

using namespace tessera::emu;

// ---- devices and errors ----
cudaError_t cudaGetDeviceCount(int* count) {
  *count = device_count();
  return *count > 0 ? cudaSuccess : cudaErrorNoDevice;
}
cudaError_t cudaGetDevice(int* device) {
  *device = t_device;
  return status();
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= device_count()) return cudaErrorInvalidDevice;
  t_device = device;
  return status();
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= device_count()) return cudaErrorInvalidDevice;
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "Tessera emulated CUDA device (H200 limits)");
  prop->totalGlobalMem = size_t(141) << 30;
  prop->sharedMemPerBlock = kDefaultSharedBytes;
  prop->sharedMemPerBlockOptin = kOptinSharedBytes;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = kMaxThreadsPerBlock;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = kSmCount;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  cudaDeviceProp p;
  if (const cudaError_t e = cudaGetDeviceProperties(&p, device); e != cudaSuccess) return e;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
      *value = p.maxThreadsPerBlock;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = int(p.sharedMemPerBlock);
      break;
    case cudaDevAttrWarpSize:
      *value = p.warpSize;
      break;
    case cudaDevAttrMultiProcessorCount:
      *value = p.multiProcessorCount;
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *value = p.major;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = p.minor;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = int(p.sharedMemPerBlockOptin);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  bool waited = false;
  for (CUstream_st* s : all_streams()) {
    if (s->destroyed) continue;
    const uint64_t pos = s->position();
    waited = s->host_observes(pos) || waited;
    s->wait_for(pos);
  }
  if (waited) count_host_wait();
  return status();
}
cudaError_t cudaGetLastError() {
  const cudaError_t sticky_code = status();
  if (sticky_code != cudaSuccess) return sticky_code;
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() {
  const cudaError_t sticky_code = status();
  return sticky_code != cudaSuccess ? sticky_code : t_last_error;
}
const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError:
      return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer:
      return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection:
      return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources:
      return "cudaErrorLaunchOutOfResources";
    case cudaErrorAssert:
      return "cudaErrorAssert";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    default:
      return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t err) {
  // The sticky error's own report (which kernel, block, thread, address) is what a reader
  // needs; it stays valid until reset_device().
  static thread_local std::string text;
  if (err != cudaSuccess && err == sticky_error()) {
    text = sticky_report();
    return text.c_str();
  }
  switch (err) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorNoDevice:
      return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    default:
      return cudaGetErrorName(err);
  }
}

// ---- memory ----
cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (const cudaError_t e = status(); e != cudaSuccess) return e;
  return device_malloc(ptr, bytes);
}
cudaError_t cudaFree(void* ptr) {
  if (!ptr) return status();
  (void)cudaDeviceSynchronize();  // cudaFree waits for the device, as CUDA's does
  return device_free(ptr);
}
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned) {
  return pinned_malloc(ptr, bytes);
}
cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  return pinned_malloc(ptr, bytes);
}
cudaError_t cudaFreeHost(void* ptr) {
  (void)cudaDeviceSynchronize();
  return pinned_free(ptr);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (const cudaError_t e = status(); e != cudaSuccess) return e;
  if (bytes == 0) return cudaSuccess;
  if (kind == cudaMemcpyDefault) kind = infer(dst, src);
  if (const std::string bad = check_copy(dst, src, bytes, kind, "cudaMemcpyAsync"); !bad.empty())
    return refuse(bad);
  queue_copy(dst, src, bytes, kind, stream);
  // Into pageable host memory the copy is synchronous (CUDA returns once it is done).
  if (kind == cudaMemcpyDeviceToHost && !is_pinned(dst, bytes)) wait_stream(stream);
  return status();
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (const cudaError_t e = status(); e != cudaSuccess) return e;
  if (bytes == 0) return cudaSuccess;
  if (kind == cudaMemcpyDefault) kind = infer(dst, src);
  if (const std::string bad = check_copy(dst, src, bytes, kind, "cudaMemcpy"); !bad.empty())
    return refuse(bad);
  queue_copy(dst, src, bytes, kind, nullptr);
  wait_stream(nullptr);
  return status();
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (const cudaError_t e = status(); e != cudaSuccess) return e;
  try {
    check_device_range(dst, bytes, Access::write, "cudaMemsetAsync");
  } catch (const DeviceFault& f) {
    return refuse(f.what());
  }
  if (bytes)
    enqueue(stream, "cudaMemsetAsync", [=] {
      streamrace::access(dst, bytes, true);
      std::memset(dst, value, bytes);
    });
  return status();
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  const cudaError_t e = cudaMemsetAsync(dst, value, bytes, nullptr);
  if (e != cudaSuccess) return e;
  wait_stream(nullptr);
  return status();
}

// ---- streams ----
cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  return cudaStreamCreateWithPriority(stream, flags, 0);
}
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned flags, int priority) {
  *stream = create_stream(flags, priority);
  return status();
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (!stream || stream->destroyed) return cudaErrorInvalidResourceHandle;
  stream->shutdown();
  return status();
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (stream && stream->destroyed) return cudaErrorInvalidResourceHandle;
  wait_stream(stream);
  return status();
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  CUstream_st* s = resolve(stream);
  if (const cudaError_t e = status(); e != cudaSuccess) return e;
  return s->reached(s->position()) ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  if (const cudaError_t e = status(); e != cudaSuccess) return e;
  if (!event) return cudaErrorInvalidResourceHandle;
  CUstream_st::Dep dep{nullptr, 0};
  {
    std::lock_guard lk(event->state->mu);
    dep = {event->state->stream, event->state->pos};
  }
  if (!dep.stream) return cudaSuccess;  // never recorded: nothing to wait for
  resolve(stream)->push("cudaStreamWaitEvent", nullptr, {dep});
  return cudaSuccess;
}
cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* user_data) {
  if (const cudaError_t e = status(); e != cudaSuccess) return e;
  enqueue(stream, "cudaLaunchHostFunc", [fn, user_data] { fn(user_data); });
  return cudaSuccess;
}

// ---- events ----
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  *event = new CUevent_st();
  (*event)->flags = flags;
  return status();
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (!event) return cudaErrorInvalidResourceHandle;
  delete event;  // a pending record task holds the state, not the handle
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (const cudaError_t e = status(); e != cudaSuccess) return e;
  if (!event) return cudaErrorInvalidResourceHandle;
  CUstream_st* s = resolve(stream);
  std::shared_ptr<EventState> st = event->state;
  // The position is taken under the event's lock together with the push, so that a concurrent
  // cudaStreamWaitEvent sees either the old record or this one, whole.
  std::lock_guard lk(st->mu);
  st->pos = s->push("cudaEventRecord", [st] { st->ran_at_ms = now_ms(); }, {});
  st->stream = s;
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (const cudaError_t e = status(); e != cudaSuccess) return e;
  if (!event) return cudaErrorInvalidResourceHandle;
  std::lock_guard lk(event->state->mu);
  if (!event->state->stream) return cudaSuccess;
  if (!event->state->stream->reached(event->state->pos)) return cudaErrorNotReady;
  event->state->stream->host_observes(event->state->pos);  // seen done without waiting
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return cudaErrorInvalidResourceHandle;
  CUstream_st::Dep dep{nullptr, 0};
  {
    std::lock_guard lk(event->state->mu);
    dep = {event->state->stream, event->state->pos};
  }
  if (dep.stream && dep.stream->host_observes(dep.pos)) count_host_wait();
  if (dep.stream) dep.stream->wait_for(dep.pos);
  return status();
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end) return cudaErrorInvalidResourceHandle;
  if ((start->flags | end->flags) & cudaEventDisableTiming) return cudaErrorInvalidResourceHandle;
  if (cudaEventQuery(start) != cudaSuccess || cudaEventQuery(end) != cudaSuccess)
    return cudaErrorNotReady;
  *ms = float(end->state->ran_at_ms - start->state->ran_at_ms);
  return cudaSuccess;
}
