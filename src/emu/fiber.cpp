#include "emu/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <new>

#if !defined(__x86_64__)
#error "the emulated CUDA device's context switch is written for x86-64"
#endif

// tessera_emu_switch(void** save_sp, void* new_sp): pushes the callee-saved registers and the
// MXCSR / x87 control words, stores the stack pointer in *save_sp, loads new_sp and pops the
// same frame from there. A new fiber's stack is laid out as such a frame whose return address
// is its entry function.
asm(R"(
  .pushsection .text
  .globl tessera_emu_switch
  .type tessera_emu_switch,@function
tessera_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size tessera_emu_switch,.-tessera_emu_switch
  .popsection
)");

extern "C" void tessera_emu_switch(void** save_sp, void* new_sp);

namespace tessera::emu {
namespace {
size_t page_size() {
  static const size_t p = size_t(sysconf(_SC_PAGESIZE));
  return p;
}
}  // namespace

FiberStack::FiberStack(size_t bytes) {
  const size_t page = page_size();
  bytes_ = (bytes + page - 1) / page * page;
  void* m = mmap(nullptr, bytes_ + page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  map_ = static_cast<char*>(m);
  mprotect(map_, page, PROT_NONE);
  base_ = map_ + page;
}

FiberStack::~FiberStack() {
  if (map_) munmap(map_, bytes_ + page_size());
}

bool FiberStack::contains_guard(const void* p) const {
  const char* c = static_cast<const char*>(p);
  return c >= map_ && c < base_;
}

void make_context(Context& c, const FiberStack& stack, void (*entry)()) {
  // Top, 16-byte aligned; below it a dummy slot so that after `ret` into entry the stack
  // pointer is 8 mod 16, as after a call. Then the return address, six registers (zero) and
  // the control words of the current thread.
  auto top = reinterpret_cast<uintptr_t>(stack.top()) & ~uintptr_t(15);
  auto* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;  // dummy: entry never returns
  *--sp = reinterpret_cast<uint64_t>(entry);
  for (int i = 0; i < 6; ++i) *--sp = 0;
  uint32_t mxcsr = 0;
  uint16_t fpucw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  uint64_t words = mxcsr | (uint64_t(fpucw) << 32);
  *--sp = words;
  c.sp = sp;
}

void switch_context(Context& from, const Context& to) {
  tessera_emu_switch(&from.sp, to.sp);
}

}  // namespace tessera::emu
