// The SIMT emulator's scheduler (fibers) and the CUDA runtime calls the kernels, the runtime and
// the checks make (device memory is host memory). See simt.h; simt_device.cc has the device's
// other entry points.
#include "tests/cuda/simt/simt.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/core/error.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define MOREH_SIMT_ASAN 1
// The emulator keeps its fiber stacks and the communicators' threads for the process's life: no
// leak report at exit (ASAN_OPTIONS still overrides).
extern "C" const char* __asan_default_options() { return "detect_leaks=0"; }
#endif

namespace moreh::simt {

const ThreadCoords g_host_coords;
const ThreadCoords* g_current = &g_host_coords;

namespace {

// Hopper's limits (what a launch is checked against).
constexpr unsigned kMaxThreads = 1024;
constexpr unsigned kMaxGridYZ = 65535;
constexpr size_t kDefaultDynamicSmem = 48 << 10;
constexpr size_t kOptinDynamicSmem = 227 << 10;
constexpr size_t kStackBytes = 256 << 10;
constexpr size_t kLaneSlotBytes = 32;  // the most one lane passes in a warp exchange
constexpr size_t kWarpSlotBytes = 32 * kLaneSlotBytes;

// --- fibers: a stack each, switched in user space ---
// A warp shuffle is a barrier for each of 32 lanes, so a kernel's run is millions of switches;
// swapcontext saves the signal mask with a system call each time, this switch is a few
// instructions.
#if defined(__x86_64__)
// Pushes the callee-saved registers, stores the stack pointer in *from, and pops the same from
// the stack `to`. The SSE and x87 control words are not switched: no kernel changes them.
extern "C" void moreh_simt_switch(void** from, void* to);
asm(R"(
  .text
  .globl moreh_simt_switch
  .type moreh_simt_switch, @function
moreh_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size moreh_simt_switch, .-moreh_simt_switch
)");

struct Context {
  void* sp = nullptr;
};
void Switch(Context* from, Context* to) { moreh_simt_switch(&from->sp, to->sp); }
// A context that starts entry() (which must never return) on the given stack.
void MakeContext(Context* c, char* stack, size_t bytes, void (*entry)()) {
  auto* top =
      reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15});
  top[-1] = 0;  // entry's return address: entered as if called, with the ABI's alignment
  top[-2] = reinterpret_cast<uint64_t>(entry);  // where the switch returns to
  for (int k = 3; k <= 8; ++k) top[-k] = 0;     // rbp, rbx, r12-r15
  c->sp = top - 8;
}
#else
struct Context {
  ucontext_t uc;
};
void Switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
void MakeContext(Context* c, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = bytes;
  c->uc.uc_link = nullptr;
  makecontext(&c->uc, entry, 0);
}
#endif

enum class State { kReady, kBlockBarrier, kWarpBarrier, kDone };

struct PendingCopy {
  void* dst;
  const void* src;
  size_t bytes, zero_fill;
  int group;  // the commit group (the number of commits before it)
};

struct Fiber {
  Context context;
  char* stack = nullptr;  // kStackBytes
  ThreadCoords coords;
  State state = State::kReady;
  std::vector<PendingCopy> copies;  // cp.async not landed yet
  int committed = 0;
#ifdef MOREH_SIMT_ASAN
  void* fake_stack = nullptr;  // while it waits at a barrier
#endif
};

// One block's run: its threads, the barrier counts and the warp exchange slots.
struct Block {
  const char* kernel = "";
  std::vector<Fiber>* fibers = nullptr;
  int live = 0;
  int block_arrived = 0;
  int block_and = 1, block_or = 0;
  int result_and = 1, result_or = 0;
  std::vector<int> warp_arrived, warp_live;
  // Per warp: two sets of 32 lanes x kLaneSlotBytes, used by turns (the lanes read one set while
  // the next exchange fills the other, so one barrier per exchange suffices), and the turn.
  std::vector<unsigned char> slots;
  std::vector<int> turn;
  unsigned char* dynamic_smem = nullptr;  // 128-byte aligned, of exactly the launch's bytes
  size_t dynamic_smem_bytes = 0;
  int current = -1;
  int n = 0;             // threads
  bool reverse = false;  // the run order: thread order or its reverse
  int woken = 0;         // the earliest place in the run order a barrier released a thread at
  Context scheduler;
  const std::function<void()>* body = nullptr;
  std::exception_ptr error;  // thrown by a thread; the launch rethrows it
#ifdef MOREH_SIMT_ASAN
  void* fake_stack = nullptr;             // the scheduler's, while a thread runs
  const void* scheduler_stack = nullptr;  // its bounds, learnt by the first thread started
  size_t scheduler_stack_size = 0;
#endif
};

// The block being run (grids are serialised by g_launch_mu; each runs on its stream's thread).
Block* g_block = nullptr;

// Leaked: stream threads may still run a grid while the process exits.
std::mutex& g_launch_mu = *new std::mutex;            // one grid runs at a time
thread_local cudaError_t g_last_error = cudaSuccess;  // per host thread, as CUDA's
thread_local int g_device = 0;                        // the host thread's current device
std::map<const void*, size_t> g_smem_optin;  // cudaFuncSetAttribute's dynamic shared memory

// -1: not chosen yet (MOREH_SIMT_ORDER decides at the first launch), 0 forward, 1 reverse.
int g_reverse = -1;

bool ReverseOrder() {
  if (g_reverse < 0) {
    const char* e = std::getenv("MOREH_SIMT_ORDER");
    const std::string v = e == nullptr ? "" : e;
    MOREH_CHECK(v.empty() || v == "forward" || v == "reverse",
                "MOREH_SIMT_ORDER='{}': expected forward or reverse", v);
    g_reverse = v == "reverse";
  }
  return g_reverse == 1;
}

Fiber& Me() { return (*g_block->fibers)[g_block->current]; }
int WarpOf(const Fiber& f) { return static_cast<int>(f.coords.thread_idx.x / 32); }

void SwitchToScheduler() {
  Block* b = g_block;
  Fiber& me = Me();
#ifdef MOREH_SIMT_ASAN
  __sanitizer_start_switch_fiber(&me.fake_stack, b->scheduler_stack, b->scheduler_stack_size);
#endif
  Switch(&me.context, &b->scheduler);
#ifdef MOREH_SIMT_ASAN
  __sanitizer_finish_switch_fiber(me.fake_stack, nullptr, nullptr);
#endif
}

// Thread i may go on; the scheduler goes back to it if it comes before the one running.
void Wake(Block* b, int i) {
  (*b->fibers)[i].state = State::kReady;
  b->woken = std::min(b->woken, b->reverse ? b->n - 1 - i : i);
}

void ReleaseBlock(Block* b) {
  for (int i = 0; i < b->n; ++i) {
    if ((*b->fibers)[i].state == State::kBlockBarrier) Wake(b, i);
  }
  b->result_and = b->block_and;
  b->result_or = b->block_or;
  b->block_arrived = 0;
  b->block_and = 1;
  b->block_or = 0;
}

void ReleaseWarp(Block* b, int w) {
  const int end = std::min(b->n, (w + 1) * 32);
  for (int i = w * 32; i < end; ++i) {
    if ((*b->fibers)[i].state == State::kWarpBarrier) Wake(b, i);
  }
  b->warp_arrived[w] = 0;
  b->turn[w] ^= 1;
}

void FiberEntry() {
#ifdef MOREH_SIMT_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_block->scheduler_stack,
                                  &g_block->scheduler_stack_size);
#endif
  try {
    (*g_block->body)();
  } catch (...) {  // an exception cannot cross the fiber's bottom frame
    g_block->error = std::current_exception();
  }
  Block* b = g_block;
  Fiber& me = Me();
  me.state = State::kDone;
  const int w = WarpOf(me);
  --b->live;
  --b->warp_live[w];
  // A barrier the remaining threads wait at may now be complete.
  if (b->live > 0 && b->block_arrived == b->live) ReleaseBlock(b);
  if (b->warp_live[w] > 0 && b->warp_arrived[w] == b->warp_live[w]) ReleaseWarp(b, w);
#ifdef MOREH_SIMT_ASAN
  __sanitizer_start_switch_fiber(nullptr, b->scheduler_stack, b->scheduler_stack_size);
#endif
  Switch(&me.context, &b->scheduler);  // never resumed
  std::abort();
}

void BlockBarrier(int predicate) {
  Block* b = g_block;
  Fiber& me = Me();
  b->block_and &= predicate != 0;
  b->block_or |= predicate != 0;
  me.state = State::kBlockBarrier;
  if (++b->block_arrived == b->live) ReleaseBlock(b);
  SwitchToScheduler();
}

void WarpBarrier(unsigned mask) {
  Block* b = g_block;
  Fiber& me = Me();
  const int w = WarpOf(me);
  // Every use in the kernels names the whole warp; a partial mask would need per-lane tracking.
  const int lanes_in_block = std::min(32, b->n - w * 32);
  const unsigned full = lanes_in_block == 32 ? 0xffffffffu : (1u << lanes_in_block) - 1;
  if ((mask & full) != full) {
    throw Error(
        fmt::format("simt: kernel {}: warp operation with mask {:#x} (only whole warps are "
                    "emulated)",
                    b->kernel, mask));
  }
  me.state = State::kWarpBarrier;
  if (++b->warp_arrived[w] == b->warp_live[w]) ReleaseWarp(b, w);
  SwitchToScheduler();
}

[[noreturn]] void Deadlock(const Block& b) {
  int at_block = 0, at_warp = 0, done = 0;
  for (const Fiber& f : *b.fibers) {
    at_block += f.state == State::kBlockBarrier;
    at_warp += f.state == State::kWarpBarrier;
    done += f.state == State::kDone;
  }
  throw Error(fmt::format(
      "simt: kernel {}: deadlock in block ({}, {}, {}): {} thread(s) wait at __syncthreads, {} at "
      "a warp barrier (shuffle or __syncwarp), {} returned — a barrier that not every thread "
      "reaches",
      b.kernel, (*b.fibers)[0].coords.block_idx.x, (*b.fibers)[0].coords.block_idx.y,
      (*b.fibers)[0].coords.block_idx.z, at_block, at_warp, done));
}

// Runs one block to completion.
void RunBlock(Block& b) {
  std::vector<Fiber>& fibers = *b.fibers;
  const int n = static_cast<int>(fibers.size());
  for (Fiber& f : fibers) {
    f.state = State::kReady;
    f.copies.clear();
    f.committed = 0;
#ifdef MOREH_SIMT_ASAN
    // The last block's frames on this stack never returned: their redzones are still marked.
    ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);
#endif
    MakeContext(&f.context, f.stack, kStackBytes, FiberEntry);
  }
  b.live = n;
  b.block_arrived = 0;
  b.block_and = 1;
  b.block_or = 0;
  std::fill(b.warp_arrived.begin(), b.warp_arrived.end(), 0);
  for (int w = 0; w < static_cast<int>(b.warp_live.size()); ++w) {
    b.warp_live[w] = std::min(32, n - w * 32);
  }
  // Dynamic shared memory starts as garbage on a GPU: NaN bytes here, so a read before any write
  // shows.
  if (b.dynamic_smem_bytes > 0) std::memset(b.dynamic_smem, 0xff, b.dynamic_smem_bytes);
  b.reverse = ReverseOrder();
  // Always the first ready thread in the run order: the early threads run ahead as far as their
  // barriers let them (in thread order thread 0 reaches the next row first; in reverse, last),
  // so that a shared value read or written without the barrier it needs shows in one order.
  int k = 0;  // no thread before place k of the run order is ready
  while (b.live > 0) {
    while (k < n && fibers[b.reverse ? n - 1 - k : k].state != State::kReady) ++k;
    if (k == n) Deadlock(b);
    {
      const int i = b.reverse ? n - 1 - k : k;
      b.woken = n;
      b.current = i;
      g_current = &fibers[i].coords;
#ifdef MOREH_SIMT_ASAN
      __sanitizer_start_switch_fiber(&b.fake_stack, fibers[i].stack, kStackBytes);
#endif
      Switch(&b.scheduler, &fibers[i].context);
#ifdef MOREH_SIMT_ASAN
      __sanitizer_finish_switch_fiber(b.fake_stack, nullptr, nullptr);
#endif
      b.current = -1;
      g_current = &g_host_coords;
      if (b.error) std::rethrow_exception(b.error);
      k = std::min(k, b.woken);
    }
  }
}

}  // namespace

void SyncThreads() { BlockBarrier(1); }

int SyncThreadsAnd(int predicate) {
  BlockBarrier(predicate);
  return g_block->result_and;
}

int SyncThreadsOr(int predicate) {
  BlockBarrier(predicate);
  return g_block->result_or;
}

void SyncWarp(unsigned mask) { WarpBarrier(mask); }

namespace {
// Puts this lane's `bytes` in its slot of the warp's current set and waits for the warp; returns
// the set, lane l's bytes at l * kLaneSlotBytes (the last lane in flipped the turn, so the next
// exchange fills the other set).
const unsigned char* DepositAndWait(unsigned mask, const void* value, size_t bytes) {
  Block* b = g_block;
  MOREH_CHECK(bytes <= kLaneSlotBytes, "simt: a warp exchange of {} bytes", bytes);
  const int w = WarpOf(Me());
  unsigned char* slots =
      b->slots.data() + (static_cast<size_t>(w) * 2 + b->turn[w]) * kWarpSlotBytes;
  std::memcpy(slots + (Me().coords.thread_idx.x % 32) * kLaneSlotBytes, value, bytes);
  WarpBarrier(mask);
  return slots;
}
}  // namespace

void WarpExchange(unsigned mask, const void* value, size_t bytes, int (*src_lane)(int, int),
                  int arg, void* out) {
  const unsigned char* slots = DepositAndWait(mask, value, bytes);
  const int lane = static_cast<int>(Me().coords.thread_idx.x % 32), w = WarpOf(Me());
  const int src = src_lane(lane, arg);
  const bool valid = src >= 0 && src < 32 && w * 32 + src < g_block->n;
  // A source lane outside the warp reads the lane's own value (the hardware's rule for xor
  // offsets past the width).
  std::memcpy(out, slots + (valid ? src : lane) * kLaneSlotBytes, bytes);
}

// Every lane of a whole warp passes `bytes`; `all` receives the 32 lanes' bytes in lane order.
void WarpGather(const void* value, size_t bytes, void* all) {
  const unsigned char* slots = DepositAndWait(0xffffffffu, value, bytes);
  for (int l = 0; l < 32; ++l) {
    std::memcpy(static_cast<unsigned char*>(all) + l * bytes, slots + l * kLaneSlotBytes, bytes);
  }
}

float Bf16Half(uint32_t pair, int half) {
  const uint32_t bits = (half ? pair >> 16 : pair & 0xffffu) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

void MmaM16N8K16Bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  struct Frag {
    uint32_t a[4], b[2];
  };
  const Frag mine{{a[0], a[1], a[2], a[3]}, {b0, b1}};
  Frag all[32];
  WarpGather(&mine, sizeof mine, all);
  if (g_block->n < 32 * (WarpOf(Me()) + 1)) {
    throw Error(fmt::format("simt: kernel {}: mma.sync in a partial warp", g_block->kernel));
  }
  // The PTX ISA's m16n8k16 layouts (g = lane / 4, t = lane % 4): A row g (+8), columns 2t, 2t+1
  // (+8) in a0..a3; B rows (k) 2t, 2t+1 (+8), column (n) g in b0, b1; C rows g, g+8, columns 2t,
  // 2t+1. The low half of a register holds the lower column (row of B).
  auto A = [&](int row, int k) {
    const Frag& f = all[(row % 8) * 4 + (k % 8) / 2];
    return Bf16Half(f.a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2);
  };
  auto B = [&](int k, int n) {
    const Frag& f = all[n * 4 + (k % 8) / 2];
    return Bf16Half(f.b[k >= 8 ? 1 : 0], k % 2);
  };
  const int lane = static_cast<int>(Me().coords.thread_idx.x % 32), g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e % 2);
    float sum = 0.0f;
    for (int k = 0; k < 16; ++k) sum += A(row, k) * B(k, col);
    c[e] += sum;
  }
}

void LoadMatrixX4(uint32_t r[4], const void* row_address, bool trans) {
  const void* rows[32];
  WarpGather(&row_address, sizeof row_address, rows);
  const int lane = static_cast<int>(Me().coords.thread_idx.x % 32);
  auto at = [&](int m, int row, int col) {  // element [row][col] of matrix m
    uint16_t v;
    std::memcpy(&v, static_cast<const unsigned char*>(rows[8 * m + row]) + 2 * col, 2);
    return static_cast<uint32_t>(v);
  };
  for (int m = 0; m < 4; ++m) {
    const int i = lane / 4, j = 2 * (lane % 4);
    r[m] = trans ? at(m, j, i) | at(m, j + 1, i) << 16 : at(m, i, j) | at(m, i, j + 1) << 16;
  }
}

void Mma16x16x16(float d[256], const float a[256], const float b[256], const float c[256]) {
  const int lane = static_cast<int>(Me().coords.thread_idx.x % 32);
  float mine[8];  // outputs 8 lane .. 8 lane + 7
  for (int e = 0; e < 8; ++e) {
    const int o = 8 * lane + e, row = o / 16, col = o % 16;
    float sum = 0.0f;
    for (int k = 0; k < 16; ++k) sum += a[row * 16 + k] * b[k * 16 + col];
    mine[e] = c[o] + sum;
  }
  WarpGather(mine, sizeof mine, d);  // d may be c: every lane has read c before any writes d
}

// cp.async: each thread's copies wait in its list until a wait lets them land (as late as the
// commit groups allow, so that a read the wait does not cover sees the stale bytes).
void CpAsync(void* dst, const void* src, size_t bytes, size_t zero_fill) {
  MOREH_CHECK(zero_fill <= bytes && (bytes == 4 || bytes == 8 || bytes == 16),
              "simt: cp.async of {} bytes, {} zero-filled", bytes, zero_fill);
  Fiber& me = Me();
  me.copies.push_back({dst, src, bytes, zero_fill, me.committed});
}

void CpAsyncCommit() { ++Me().committed; }

void CpAsyncWaitPrior(int n) {
  Fiber& me = Me();
  std::vector<PendingCopy> later;
  for (const PendingCopy& c : me.copies) {
    if (c.group < me.committed - n) {
      std::memcpy(c.dst, c.src, c.bytes - c.zero_fill);
      std::memset(static_cast<unsigned char*>(c.dst) + c.bytes - c.zero_fill, 0, c.zero_fill);
    } else {
      later.push_back(c);
    }
  }
  me.copies.swap(later);
}

void* DynamicShared() { return g_block->dynamic_smem; }

int EnvInt(const char* name, int fallback, int lo, int hi) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return fallback;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  MOREH_CHECK(*end == '\0' && v >= lo && v <= hi, "{}='{}': expected an integer from {} to {}",
              name, e, lo, hi);
  return static_cast<int>(v);
}

int EmulatedDevices() {
  static const int n = EnvInt("MOREH_SIMT_DEVICES", 1, 1, 8);
  return n;
}

void SetReverseOrder(bool reverse) {
  std::lock_guard<std::mutex> lock(g_launch_mu);
  g_reverse = reverse ? 1 : 0;
}

namespace {

// Runs a launch that was checked: the grid one block at a time, on the stream's thread.
void RunGrid(const char* kernel, dim3 grid, dim3 block, size_t smem,
             const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(g_launch_mu);
  const size_t threads = block.x;
  // The stacks outlive the launch: the next one reuses them.
  static auto* stacks = new std::vector<std::unique_ptr<char[]>>;
  while (stacks->size() < threads) stacks->emplace_back(new char[kStackBytes]);
  std::vector<Fiber> fibers(threads);
  for (size_t t = 0; t < threads; ++t) fibers[t].stack = (*stacks)[t].get();
  Block b;
  b.kernel = kernel;
  b.fibers = &fibers;
  b.n = static_cast<int>(threads);
  const size_t warps = (threads + 31) / 32;
  b.warp_arrived.assign(warps, 0);
  b.warp_live.assign(warps, 0);
  b.slots.assign(warps * 2 * kWarpSlotBytes, 0);
  b.turn.assign(warps, 0);
  std::unique_ptr<void, decltype(&std::free)> dynamic_smem(nullptr, &std::free);
  if (smem > 0) {
    void* p = nullptr;
    MOREH_CHECK(posix_memalign(&p, 128, smem) == 0, "simt: {} bytes of shared memory", smem);
    dynamic_smem.reset(p);
  }
  b.dynamic_smem = static_cast<unsigned char*>(dynamic_smem.get());
  b.dynamic_smem_bytes = smem;
  b.body = &body;
  Block* outer = g_block;
  g_block = &b;
  try {
    for (unsigned z = 0; z < grid.z; ++z) {
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x) {
          for (unsigned t = 0; t < threads; ++t) {
            fibers[t].coords = ThreadCoords{{t, 0, 0}, {x, y, z}, block, grid};
          }
          RunBlock(b);
        }
      }
    }
  } catch (...) {
    g_block = outer;
    throw;
  }
  g_block = outer;
}

}  // namespace

// A configuration the GPU would refuse fails here, at the launch (the calling thread's last
// error); the grid runs on the stream.
void Launch(const char* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            const void* kernel_id, std::function<void()> body) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > kMaxGridYZ || grid.z > kMaxGridYZ) {
    std::fprintf(stderr, "simt: kernel %s: invalid launch: grid (%u, %u, %u), block (%u, %u, %u)\n",
                 kernel, grid.x, grid.y, grid.z, block.x, block.y, block.z);
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  size_t smem_limit = kDefaultDynamicSmem;
  {
    std::lock_guard<std::mutex> lock(g_launch_mu);
    const auto optin = g_smem_optin.find(kernel_id);
    if (optin != g_smem_optin.end()) smem_limit = optin->second;
  }
  if (smem > smem_limit) {
    std::fprintf(stderr,
                 "simt: kernel %s: %zu bytes of dynamic shared memory, %zu allowed (above 48 KiB "
                 "takes cudaFuncSetAttribute)\n",
                 kernel, smem, smem_limit);
    g_last_error = cudaErrorInvalidValue;
    return;
  }
  MOREH_CHECK(block.y == 1 && block.z == 1, "simt: kernel {}: only 1-D blocks are emulated",
              kernel);
  Enqueue(stream, [kernel, grid, block, smem, body = std::move(body)] {
    RunGrid(kernel, grid, block, smem, body);
  });
}

cudaError_t RecordError(cudaError_t e) {
  if (e != cudaSuccess) g_last_error = e;
  return e;
}

}  // namespace moreh::simt

// --- the CUDA runtime's device and error calls (memory, streams, events: simt_streams.cc) ------

namespace {
using moreh::simt::g_last_error;
using moreh::simt::RecordError;

// The errors the emulator returns, with the runtime's names and messages.
struct ErrorText {
  cudaError_t error;
  const char* name;
  const char* text;
};
constexpr ErrorText kErrors[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration",
     "invalid configuration argument"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
};
const ErrorText& ErrorInfo(cudaError_t e) {
  static constexpr ErrorText kUnknown{cudaErrorUnknown, "cudaErrorUnknown", "unknown error"};
  for (const ErrorText& t : kErrors) {
    if (t.error == e) return t;
  }
  return kUnknown;
}
}  // namespace

extern "C" {

cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return g_last_error; }
const char* cudaGetErrorString(cudaError_t e) { return ErrorInfo(e).text; }
const char* cudaGetErrorName(cudaError_t e) { return ErrorInfo(e).name; }
cudaError_t cudaGetDeviceCount(int* n) {
  *n = moreh::simt::EmulatedDevices();
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = moreh::simt::g_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (d < 0 || d >= moreh::simt::EmulatedDevices()) return RecordError(cudaErrorInvalidDevice);
  moreh::simt::g_device = d;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= moreh::simt::EmulatedDevices()) {
    return RecordError(cudaErrorInvalidDevice);
  }
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(moreh::simt::kOptinDynamicSmem);
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:  // few: grids sized by it loop over several rows
      *value = 4;
      return cudaSuccess;
    case cudaDevAttrMemoryPoolsSupported:
      *value = 1;  // cudaMallocAsync (simt_streams.cc)
      return cudaSuccess;
    default:
      return RecordError(cudaErrorInvalidValue);
  }
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > moreh::simt::kOptinDynamicSmem) {
    return RecordError(cudaErrorInvalidValue);
  }
  std::lock_guard<std::mutex> lock(moreh::simt::g_launch_mu);
  moreh::simt::g_smem_optin[func] = static_cast<size_t>(value);
  return cudaSuccess;
}

}  // extern "C"
