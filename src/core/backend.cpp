#include "core/backend.h"

#include <atomic>

#include "core/error.h"
#include "core/meta_device.h"

namespace tessera {

namespace {

constexpr int kDeviceTypes = int(DeviceType::meta) + 1;

// Replacements from register_backend; constant-initialised to null, so a lookup from a static
// constructor elsewhere is safe.
std::atomic<const DeviceBackend*> g_registered[kDeviceTypes];

const char* type_label(DeviceType t) {
  switch (t) {
    case DeviceType::cpu:
      return "CPU";
    case DeviceType::cuda:
      return "CUDA";
    case DeviceType::meta:
      return "meta";
  }
  return "?";
}

}  // namespace

void register_backend(DeviceType t, const DeviceBackend* backend) {
  TS_CHECK(t != DeviceType::cpu,
           "register_backend: the CPU is the host; its code is called directly, not through a "
           "device backend");
  g_registered[int(t)].store(backend, std::memory_order_release);
}

const DeviceBackend* find_backend(DeviceType t) {
  if (t == DeviceType::cpu) return nullptr;
  if (const DeviceBackend* b = g_registered[int(t)].load(std::memory_order_acquire)) return b;
  if (t == DeviceType::meta) return &meta_backend();  // every build has it: it is host code
  return built_in_backend(t);
}

const DeviceBackend& backend_for(Device d, const char* what) {
  if (const DeviceBackend* b = find_backend(d.type)) return *b;
  const std::string prefix = what ? std::string(what) + ": " : std::string();
  // A caller that reaches here with a CPU device skipped its host branch: a Tessera bug.
  TS_CHECK(!d.is_cpu(), "internal error: {}backend_for(cpu): the CPU has no device backend",
           prefix);
  fail(
      "{}device {} is not available: this build has no {} backend (configure with nvcc, or "
      "-DTESSERA_CUDA_EMULATION=ON)",
      prefix, d.str(), type_label(d.type));
}

}  // namespace tessera
