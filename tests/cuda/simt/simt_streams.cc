// The emulated device's streams, events and memory: every operation on a stream runs later, on
// that stream's own host thread, in the stream's order, as a GPU runs it (see simt.h).
//
// What this checks that running each call at once would hide: a missing wait between streams (a
// communicator's stream reading a buffer that the compute stream has not written yet, or the
// compute stream reusing one that a queued send still has to read), a buffer freed in stream order
// while another stream still uses it (the address sanitizer sees the late access), and a host that
// reads results before it synchronizes. Every stream waits a random 0..N microseconds before each
// operation (MOREH_SIMT_STREAM_DELAY_US=N, default 1000; 0 for none), so that one stream lags
// another by turns: without the delays, a missing wait before a collective went unseen (the
// emulated operations are quick); with them the NCCL tests fail, and a pipeline send whose buffer
// goes back to the allocator too early fails the four-device daemons check.
// MOREH_SIMT_STREAMS=sync runs every operation when it is called (the call's own thread: a
// kernel's failure then throws from its launch).
#include <execinfo.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/core/allocator.h"
#include "runtime/core/error.h"
#include "tests/cuda/simt/simt.h"

namespace moreh::simt {
namespace {

using Clock = std::chrono::steady_clock;

double Now() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

// A stream: its queue and the thread that runs it. Counts, not flags, say how far it is: an
// operation's position is the number queued before it plus one.
struct Stream {
  int device = 0;
  bool legacy = false;    // the device's default stream (cudaStreamLegacy, or a null stream)
  bool blocking = false;  // created without cudaStreamNonBlocking: ordered with the legacy stream
  std::mutex mu;
  std::condition_variable changed;
  std::deque<std::function<void()>> queue;
  uint64_t queued = 0, done = 0;
  bool destroyed = false;  // cudaStreamDestroy: the thread ends when the queue is empty
  uint32_t seed = 0;
};
using StreamPtr = std::shared_ptr<Stream>;

// The live streams by handle (and each device's legacy stream). Leaked: stream threads may still
// run while the process exits.
struct Registry {
  std::mutex mu;
  std::map<const void*, StreamPtr> streams;
  StreamPtr legacy[8];
  // Destroyed with work still queued (cudaDeviceSynchronize waits for them).
  std::vector<StreamPtr> draining;
  uint32_t created = 0;
};
Registry& Streams() {
  static auto* r = new Registry;
  return *r;
}

// The first exception an operation threw on a stream thread; the next call that waits rethrows it.
std::mutex& ErrorMu() {
  static auto* m = new std::mutex;
  return *m;
}
std::exception_ptr& AsyncError() {
  static auto* e = new std::exception_ptr;
  return *e;
}
void ThrowAsyncError() {
  std::exception_ptr e;
  {
    std::lock_guard<std::mutex> lock(ErrorMu());
    e = std::exchange(AsyncError(), nullptr);
  }
  if (e) std::rethrow_exception(e);
}

int DelayMicros() {
  static const int d = EnvInt("MOREH_SIMT_STREAM_DELAY_US", 1000, 0, 1000000);
  return d;
}

void RunStream(StreamPtr s) {
  cudaSetDevice(s->device);
  std::mt19937 rng(s->seed);
  std::unique_lock<std::mutex> lock(s->mu);
  while (true) {
    s->changed.wait(lock, [&] { return !s->queue.empty() || s->destroyed; });
    if (s->queue.empty()) break;  // destroyed and drained
    std::function<void()> op = std::move(s->queue.front());
    s->queue.pop_front();
    lock.unlock();
    if (DelayMicros() > 0) {
      std::this_thread::sleep_for(
          std::chrono::microseconds(std::uniform_int_distribution<int>(0, DelayMicros())(rng)));
    }
    try {
      op();
    } catch (...) {
      const std::exception_ptr e = std::current_exception();
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        std::fprintf(stderr, "simt: an operation on a stream of device %d failed: %s\n", s->device,
                     x.what());
      } catch (...) {
      }
      std::lock_guard<std::mutex> error_lock(ErrorMu());
      if (!AsyncError()) AsyncError() = e;
    }
    op = nullptr;  // what it captured goes before the count says it is done
    lock.lock();
    ++s->done;
    s->changed.notify_all();
  }
}

StreamPtr NewStream(int device, bool legacy, bool blocking) {
  auto s = std::make_shared<Stream>();
  s->device = device;
  s->legacy = legacy;
  s->blocking = blocking;
  s->seed = 0x5eed + Streams().created++;  // under the registry's lock
  if (!SynchronousStreams()) std::thread(RunStream, s).detach();
  return s;
}

int CurrentDevice() {
  int d = 0;
  cudaGetDevice(&d);
  return d;
}

// The stream a handle names (null: not a stream of this emulator).
StreamPtr Find(cudaStream_t handle) {
  Registry& r = Streams();
  std::lock_guard<std::mutex> lock(r.mu);
  if (handle == nullptr || handle == cudaStreamLegacy) {
    const int d = CurrentDevice();
    if (!r.legacy[d]) r.legacy[d] = NewStream(d, true, true);
    return r.legacy[d];
  }
  const auto it = r.streams.find(handle);
  return it == r.streams.end() ? nullptr : it->second;
}

StreamPtr Get(cudaStream_t handle) {
  StreamPtr s = Find(handle);
  MOREH_CHECK(s != nullptr, "simt: stream {} is not a live stream of the emulator{}",
              static_cast<const void*>(handle),
              handle == cudaStreamPerThread ? " (cudaStreamPerThread is not emulated)" : "");
  return s;
}

uint64_t Queued(Stream& s) {
  std::lock_guard<std::mutex> lock(s.mu);
  return s.queued;
}
// The host's waits for stream work (HostWaits). MOREH_SIMT_TRACE_WAITS=1 prints each with the
// calls that led to it (where a program drains the GPU's queue; symbolize with addr2line).
std::atomic<uint64_t> g_host_waits{0};
void HostWait(const char* call) {
  const uint64_t n = ++g_host_waits;
  static const bool trace = EnvInt("MOREH_SIMT_TRACE_WAITS", 0, 0, 1) == 1;
  if (!trace) return;
  void* frames[24];
  const int depth = backtrace(frames, 24);
  std::fprintf(stderr, "simt: host wait %llu (%s), from:\n", static_cast<unsigned long long>(n),
               call);
  backtrace_symbols_fd(frames + 1, depth - 1, 2);
}

// Waits until the stream has run its first `n` operations.
void WaitFor(Stream& s, uint64_t n) {
  std::unique_lock<std::mutex> lock(s.mu);
  s.changed.wait(lock, [&] { return s.done >= n; });
}

void Push(const StreamPtr& s, std::function<void()> op) {
  if (SynchronousStreams()) {
    op();
    return;
  }
  // The legacy stream's ordering: its work waits for the blocking streams' earlier work, and
  // theirs for its (streams made with cudaStreamNonBlocking are not ordered with it).
  std::vector<std::pair<StreamPtr, uint64_t>> after;
  {
    Registry& r = Streams();
    std::lock_guard<std::mutex> lock(r.mu);
    if (s->legacy) {
      for (const auto& [handle, t] : r.streams) {
        if (t->device == s->device && t->blocking) after.emplace_back(t, Queued(*t));
      }
    } else if (s->blocking && r.legacy[s->device]) {
      after.emplace_back(r.legacy[s->device], Queued(*r.legacy[s->device]));
    }
  }
  if (!after.empty()) {
    op = [after = std::move(after), op = std::move(op)] {
      for (const auto& [t, n] : after) WaitFor(*t, n);
      op();
    };
  }
  std::lock_guard<std::mutex> lock(s->mu);
  s->queue.push_back(std::move(op));
  ++s->queued;
  s->changed.notify_all();
}

// Waits for every operation queued so far on the current device's streams.
void SynchronizeDevice() {
  const int d = CurrentDevice();
  std::vector<StreamPtr> all;
  {
    Registry& r = Streams();
    std::lock_guard<std::mutex> lock(r.mu);
    if (r.legacy[d]) all.push_back(r.legacy[d]);
    for (const auto& [handle, s] : r.streams) {
      if (s->device == d) all.push_back(s);
    }
    std::vector<StreamPtr> still;
    for (StreamPtr& s : r.draining) {
      std::lock_guard<std::mutex> stream_lock(s->mu);
      if (s->done == s->queued) continue;
      if (s->device == d) all.push_back(s);
      still.push_back(std::move(s));
    }
    r.draining.swap(still);
  }
  for (const StreamPtr& s : all) WaitFor(*s, Queued(*s));
}

// An event: how many records were queued and how many the streams have reached; the time of the
// last one reached.
struct EventState {
  unsigned flags = 0;
  uint64_t recorded = 0, reached = 0;
  double seconds = 0;
};
// Leaked, as everything stream threads touch: they may still run while the process exits.
std::mutex& g_event_mu = *new std::mutex;
std::condition_variable& g_event_reached = *new std::condition_variable;
struct EventHandle {
  std::shared_ptr<EventState> state;
};
EventHandle* Handle(cudaEvent_t e) { return reinterpret_cast<EventHandle*>(e); }

// Device allocations (start -> bytes): what cudaMemcpyDefault and the asynchronous copies need to
// tell device memory from the host's.
std::mutex& g_alloc_mu = *new std::mutex;
std::map<uintptr_t, size_t>& g_allocations = *new std::map<uintptr_t, size_t>;
int64_t g_allocated = 0;  // bytes, under g_alloc_mu

// The device memory: MOREH_SIMT_DEVICE_MEMORY (e.g. 64M, all devices together) is what
// cudaMemGetInfo reports and the most cudaMalloc gives out (beyond it, out of memory, as a full
// GPU); unset, 8 GiB are reported and nothing is refused.
int64_t MemoryLimit() {
  static const int64_t limit = [] {
    const char* e = std::getenv("MOREH_SIMT_DEVICE_MEMORY");
    if (e == nullptr || *e == '\0') return int64_t{0};
    const int64_t bytes = runtime::ParseMemoryBytes(e);
    MOREH_CHECK(bytes > 0, "MOREH_SIMT_DEVICE_MEMORY='{}' is not a size (e.g. 64M)", e);
    return bytes;
  }();
  return limit;
}

bool OnDevice(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(g_alloc_mu);
  auto it = g_allocations.upper_bound(a);
  if (it == g_allocations.begin()) return false;
  --it;
  return a < it->first + std::max<size_t>(it->second, 1);
}

void* AllocateDevice(size_t bytes) {
  // 256-byte alignment as cudaMalloc gives; the exact size, so that an access past the end is out
  // of bounds for the address sanitizer.
  std::lock_guard<std::mutex> lock(g_alloc_mu);
  const int64_t limit = MemoryLimit();
  if (limit > 0 && g_allocated + static_cast<int64_t>(bytes) > limit) return nullptr;
  void* p = nullptr;
  if (posix_memalign(&p, 256, std::max<size_t>(bytes, 1)) != 0) return nullptr;
  g_allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  g_allocated += static_cast<int64_t>(bytes);
  return p;
}
void FreeDevice(void* p) {
  if (p == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(g_alloc_mu);
    const auto it = g_allocations.find(reinterpret_cast<uintptr_t>(p));
    if (it != g_allocations.end()) {
      g_allocated -= static_cast<int64_t>(it->second);
      g_allocations.erase(it);
    }
  }
  std::free(p);
}

// A copy that touches host memory the host may reuse once the call returns (pageable memory, as
// every host buffer here is): the call waits for it, as CUDA's does.
bool TouchesHost(const void* dst, const void* src, cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyDeviceToDevice:
      return false;
    case cudaMemcpyDefault:
      return !OnDevice(dst) || !OnDevice(src);
    default:
      return true;
  }
}

}  // namespace

bool SynchronousStreams() {
  static const bool sync = [] {
    const char* e = std::getenv("MOREH_SIMT_STREAMS");
    const std::string v = e == nullptr ? "" : e;
    MOREH_CHECK(v.empty() || v == "async" || v == "sync",
                "MOREH_SIMT_STREAMS='{}': expected async (the default) or sync", v);
    return v == "sync";
  }();
  return sync;
}

void Enqueue(cudaStream_t stream, std::function<void()> op) { Push(Get(stream), std::move(op)); }

uint64_t HostWaits() { return g_host_waits.load(); }

}  // namespace moreh::simt

// --- the CUDA runtime's memory, stream and event calls ------------------------------------------

using moreh::simt::RecordError;

extern "C" {

cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = moreh::simt::AllocateDevice(bytes);
  return *p ? cudaSuccess : RecordError(cudaErrorMemoryAllocation);
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
// As CUDA's, it waits for the device first.
cudaError_t cudaFree(void* p) {
  moreh::simt::HostWait("cudaFree");
  moreh::simt::SynchronizeDevice();
  moreh::simt::FreeDevice(p);
  moreh::simt::ThrowAsyncError();
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t s) {
  moreh::simt::Enqueue(s, [p] { moreh::simt::FreeDevice(p); });
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s) {
  if (bytes == 0) return cudaSuccess;
  moreh::simt::Enqueue(s, [=] { std::memmove(dst, src, bytes); });
  if (moreh::simt::TouchesHost(dst, src, kind)) return cudaStreamSynchronize(s);
  return cudaSuccess;
}
// On the legacy stream, and the host waits for it.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes == 0) return cudaSuccess;
  moreh::simt::Enqueue(cudaStreamLegacy, [=] { std::memmove(dst, src, bytes); });
  return cudaStreamSynchronize(cudaStreamLegacy);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s) {
  if (bytes) moreh::simt::Enqueue(s, [=] { std::memset(p, value, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  return cudaMemsetAsync(p, value, bytes, cudaStreamLegacy);
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  const int64_t limit = moreh::simt::MemoryLimit();
  if (limit == 0) {
    *free_bytes = *total_bytes = size_t{8} << 30;
    return cudaSuccess;
  }
  std::lock_guard<std::mutex> lock(moreh::simt::g_alloc_mu);
  *total_bytes = static_cast<size_t>(limit);
  *free_bytes = static_cast<size_t>(limit - moreh::simt::g_allocated);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  moreh::simt::HostWait("cudaDeviceSynchronize");
  moreh::simt::SynchronizeDevice();
  moreh::simt::ThrowAsyncError();
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t handle) {
  const moreh::simt::StreamPtr s = moreh::simt::Get(handle);
  moreh::simt::HostWait("cudaStreamSynchronize");
  moreh::simt::WaitFor(*s, moreh::simt::Queued(*s));
  moreh::simt::ThrowAsyncError();
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t handle) {
  const moreh::simt::StreamPtr s = moreh::simt::Get(handle);
  std::lock_guard<std::mutex> lock(s->mu);
  return s->done == s->queued ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* handle, unsigned flags) {
  moreh::simt::Registry& r = moreh::simt::Streams();
  std::lock_guard<std::mutex> lock(r.mu);
  moreh::simt::StreamPtr s = moreh::simt::NewStream(moreh::simt::CurrentDevice(), false,
                                                    (flags & cudaStreamNonBlocking) == 0);
  *handle = reinterpret_cast<cudaStream_t>(s.get());
  r.streams[s.get()] = std::move(s);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* handle) {
  return cudaStreamCreateWithFlags(handle, cudaStreamDefault);
}
// Returns at once; the stream's thread runs what is queued, then ends.
cudaError_t cudaStreamDestroy(cudaStream_t handle) {
  moreh::simt::StreamPtr s;
  {
    moreh::simt::Registry& r = moreh::simt::Streams();
    std::lock_guard<std::mutex> lock(r.mu);
    const auto it = r.streams.find(handle);
    if (it == r.streams.end()) return RecordError(cudaErrorInvalidResourceHandle);
    s = std::move(it->second);
    r.streams.erase(it);
    r.draining.push_back(s);
  }
  std::lock_guard<std::mutex> lock(s->mu);
  s->destroyed = true;
  s->changed.notify_all();
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags) {
  auto* h = new moreh::simt::EventHandle{std::make_shared<moreh::simt::EventState>()};
  h->state->flags = flags;
  *e = reinterpret_cast<cudaEvent_t>(h);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
// A record still queued keeps what it needs.
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete moreh::simt::Handle(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (e == nullptr) return RecordError(cudaErrorInvalidResourceHandle);
  std::shared_ptr<moreh::simt::EventState> state = moreh::simt::Handle(e)->state;
  uint64_t n = 0;
  {
    std::lock_guard<std::mutex> lock(moreh::simt::g_event_mu);
    n = ++state->recorded;
  }
  moreh::simt::Enqueue(s, [state, n] {
    std::lock_guard<std::mutex> lock(moreh::simt::g_event_mu);
    state->seconds = moreh::simt::Now();
    state->reached = std::max(state->reached, n);
    moreh::simt::g_event_reached.notify_all();
  });
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  if (e == nullptr) return RecordError(cudaErrorInvalidResourceHandle);
  const moreh::simt::EventState& state = *moreh::simt::Handle(e)->state;
  std::lock_guard<std::mutex> lock(moreh::simt::g_event_mu);
  return state.reached >= state.recorded ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (e == nullptr) return RecordError(cudaErrorInvalidResourceHandle);
  const moreh::simt::EventState& state = *moreh::simt::Handle(e)->state;
  moreh::simt::HostWait("cudaEventSynchronize");
  {
    std::unique_lock<std::mutex> lock(moreh::simt::g_event_mu);
    const uint64_t n = state.recorded;
    moreh::simt::g_event_reached.wait(lock, [&] { return state.reached >= n; });
  }
  moreh::simt::ThrowAsyncError();
  return cudaSuccess;
}
// The stream's later work waits until the event's latest record (queued before this call) is
// reached; an event never recorded is no wait, as in CUDA.
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  if (e == nullptr) return RecordError(cudaErrorInvalidResourceHandle);
  std::shared_ptr<moreh::simt::EventState> state = moreh::simt::Handle(e)->state;
  uint64_t n = 0;
  {
    std::lock_guard<std::mutex> lock(moreh::simt::g_event_mu);
    n = state->recorded;
  }
  if (n == 0) return cudaSuccess;
  moreh::simt::Enqueue(s, [state, n] {
    std::unique_lock<std::mutex> lock(moreh::simt::g_event_mu);
    moreh::simt::g_event_reached.wait(lock, [&] { return state->reached >= n; });
  });
  return cudaSuccess;
}
// The host time between the two records' runs (every operation between them ran inside them).
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop) {
  if (start == nullptr || stop == nullptr || ms == nullptr) {
    return RecordError(cudaErrorInvalidValue);
  }
  const moreh::simt::EventState& a = *moreh::simt::Handle(start)->state;
  const moreh::simt::EventState& b = *moreh::simt::Handle(stop)->state;
  std::lock_guard<std::mutex> lock(moreh::simt::g_event_mu);
  if ((a.flags | b.flags) & cudaEventDisableTiming) {
    return RecordError(cudaErrorInvalidResourceHandle);
  }
  if (a.recorded == 0 || b.recorded == 0) return RecordError(cudaErrorInvalidResourceHandle);
  if (a.reached < a.recorded || b.reached < b.recorded) return RecordError(cudaErrorNotReady);
  *ms = static_cast<float>((b.seconds - a.seconds) * 1e3);
  return cudaSuccess;
}

}  // extern "C"
