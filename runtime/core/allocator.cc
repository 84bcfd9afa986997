#include "runtime/core/allocator.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "runtime/core/error.h"

namespace moreh {

OutOfMemoryError::OutOfMemoryError(std::string device, int64_t requested, int64_t available,
                                   int64_t capacity)
    : Error(fmt::format(
          "Error Code 4: OUT_OF_MEMORY\n"
          "The application requires more memory than what is currently available on device {} "
          "(capacity {} bytes).\n"
          ">> Memory requested : {} bytes\n"
          ">> Memory available : {} bytes\n"
          "To address this issue, we recommend considering the following steps:\n"
          " 1. Increase Device Size: use a larger virtual device with the `moreh-switch-model` "
          "command, or turn on advanced parallelization "
          "(moreh::option::enable_advanced_parallelization(), or "
          "MOREH_ENABLE_ADVANCED_PARALLELIZATION=1) so the model is spread over more devices.\n"
          " 2. Decrease Batch Size: reduce the batch size (e.g. --batch-size) so that each step "
          "needs less memory.",
          device, capacity, requested, available)),
      device_(std::move(device)),
      requested_(requested),
      available_(available),
      capacity_(capacity) {}

namespace runtime {

int64_t PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  return static_cast<int64_t>(pages) * page;
}

Buffer::~Buffer() { allocator_->Free(data_, bytes_); }

namespace {
class HostMemory final : public MemorySource {
 public:
  void* Allocate(int64_t bytes) override {
    return std::aligned_alloc(64, static_cast<size_t>(bytes));
  }
  void Free(void* p) override { std::free(p); }
};
}  // namespace

void MemorySource::CopyBytes(void* dst, const void* src, int64_t bytes) {
  std::memcpy(dst, src, static_cast<size_t>(bytes));
}

void MemorySource::CopyStrided(void*, DType, const void*, DType, const Shape&, const Shape&,
                               int64_t) {
  throw Error("MemorySource::CopyStrided: host memory is copied by Tensor itself");
}

void MemorySource::Fill(void*, DType, int64_t, double) {
  throw Error("MemorySource::Fill: host memory is filled by Tensor itself");
}

Allocator::Allocator(std::string device_name, int64_t capacity_bytes,
                     std::unique_ptr<MemorySource> source)
    : device_name_(std::move(device_name)),
      source_(source ? std::move(source) : std::make_unique<HostMemory>()),
      capacity_(capacity_bytes > 0 ? capacity_bytes : PhysicalMemoryBytes()) {}

void Allocator::set_capacity(int64_t bytes) {
  capacity_.store(bytes > 0 ? bytes : PhysicalMemoryBytes());
}

std::shared_ptr<Buffer> Allocator::Allocate(int64_t bytes) {
  MOREH_CHECK(bytes >= 0, "Allocator({}): negative allocation of {} bytes", device_name_, bytes);
  const int64_t rounded = (bytes + 63) / 64 * 64;
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t live = live_.load();
    const int64_t cap = capacity_.load();
    if (live + rounded > cap) {
      throw OutOfMemoryError(device_name_, rounded, cap - live, cap);
    }
    auto it = cache_.find(rounded);
    if (it != cache_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      cached_ -= rounded;
    } else if (live + cached_ + rounded > cap) {
      ReleaseCacheLocked();
    }
    live_.store(live + rounded);
    if (live + rounded > peak_.load()) peak_.store(live + rounded);
  }
  if (p == nullptr && rounded != 0) {
    p = source_->Allocate(rounded);
    if (p == nullptr) {  // the cache may hold what the source lacks (fragmentation, other users)
      ReleaseCache();
      p = source_->Allocate(rounded);
    }
    if (p == nullptr) {
      live_.fetch_sub(rounded);
      throw OutOfMemoryError(device_name_, rounded, 0, capacity_.load());
    }
  }
  return std::shared_ptr<Buffer>(new Buffer(p, rounded, this));
}

void Allocator::Free(void* p, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t live = live_.load() - bytes;
  live_.store(live);
  if (p != nullptr && bytes >= source_->MinCachedBytes() &&
      live + cached_ + bytes <= capacity_.load()) {
    cache_[bytes].push_back(p);
    cached_ += bytes;
  } else if (p != nullptr) {
    source_->Free(p);
  }
}

int64_t Allocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

void Allocator::ReleaseCache() {
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseCacheLocked();
}

void Allocator::ReleaseCacheLocked() {
  for (auto& [size, blocks] : cache_) {
    for (void* b : blocks) source_->Free(b);
  }
  cache_.clear();
  cached_ = 0;
}

Allocator::~Allocator() { ReleaseCache(); }

int64_t ParseMemoryBytes(const char* s) {
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  if (end == s || !(v > 0) || !std::isfinite(v)) return 0;
  double mul = 1;
  switch (*end) {
    case 'k':
    case 'K':
      mul = 1024.0;
      break;
    case 'm':
    case 'M':
      mul = 1024.0 * 1024;
      break;
    case 'g':
    case 'G':
      mul = 1024.0 * 1024 * 1024;
      break;
    case 't':
    case 'T':
      mul = 1024.0 * 1024 * 1024 * 1024;
      break;
    default:
      --end;  // no suffix
      break;
  }
  ++end;
  // An optional "B" or "iB" ("512MiB"); nothing else may follow.
  if (mul > 1 && end[0] == 'i' && end[1] == 'B') end += 2;
  if (end[0] == 'B') ++end;
  const double bytes = v * mul;
  if (*end != '\0' || bytes < 1 || bytes > 9.0e18) return 0;
  return static_cast<int64_t>(bytes);
}

Allocator* CpuAllocator() {
  static Allocator* a = [] {
    const char* env = std::getenv("MOREH_CPU_DEVICE_MEMORY");
    return new Allocator("cpu:0", env ? ParseMemoryBytes(env) : 0);
  }();
  return a;
}

}  // namespace runtime
}  // namespace moreh
