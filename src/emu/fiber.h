// User-space context switching for the emulated device's CUDA threads. A block of 256 threads
// that meets a dozen barriers switches context thousands of times, so the switch is a few
// instructions (callee-saved registers, the stack pointer, the SSE and x87 control words)
// rather than swapcontext, which makes a system call each time for the signal mask.
#pragma once
#include <cstddef>

namespace tessera::emu {

// A stack with an inaccessible guard page below it (a kernel that overflows its stack faults
// there and is reported, launch.cpp).
class FiberStack {
 public:
  explicit FiberStack(size_t bytes);
  ~FiberStack();
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  char* top() const { return base_ + bytes_; }
  bool contains_guard(const void* p) const;

 private:
  char* map_ = nullptr;  // guard page, then the stack
  char* base_ = nullptr;
  size_t bytes_ = 0;
};

// A saved context: the stack pointer of a suspended fiber (or of the scheduler).
struct Context {
  void* sp = nullptr;
};

// Prepares `c` to start `entry` (which must never return) on `stack`.
void make_context(Context& c, const FiberStack& stack, void (*entry)());
// Saves the running context in `from` and resumes `to`.
void switch_context(Context& from, const Context& to);

}  // namespace tessera::emu
