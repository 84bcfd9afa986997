#include "kernels/cuda/device_allocator.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "runtime/core/error.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int64_t kContextReserve = 256ll << 20;
constexpr int64_t kNcclReserve = 2ll << 30;

// Stream-ordered on the compute (legacy default) stream: cudaFree would wait for the whole device,
// NCCL's kernels included, and a host stuck in it while a queued send waits for a peer that is
// itself stuck the same way is a deadlock no deadline can see. cudaFreeAsync returns at once and
// frees after the compute stream's earlier work (memory NCCL still reads is held by its owner).
// Where the driver has no memory pools (cudaDevAttrMemoryPoolsSupported = 0), plain cudaMalloc.
class DeviceMemory final : public runtime::MemorySource {
 public:
  explicit DeviceMemory(int device) : device_(device) {
    int pools = 0;
    stream_ordered_ =
        cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device) == cudaSuccess &&
        pools != 0;
    cudaGetLastError();
  }
  void* Allocate(int64_t bytes) override {
    DeviceScope scope(device_);
    void* p = nullptr;
    const cudaError_t e = stream_ordered_
                              ? cudaMallocAsync(&p, static_cast<size_t>(bytes), cudaStreamLegacy)
                              : cudaMalloc(&p, static_cast<size_t>(bytes));
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it, so that a later launch check does not report it
      return nullptr;
    }
    return p;
  }
  void Free(void* p) override {
    DeviceScope scope(device_);
    // Errors here (a lost device) cannot be reported usefully.
    if (stream_ordered_) {
      cudaFreeAsync(p, cudaStreamLegacy);
    } else {
      cudaFree(p);
    }
  }
  int64_t MinCachedBytes() const override { return 0; }
  bool host_accessible() const override { return false; }
  void CopyBytes(void* dst, const void* src, int64_t bytes) override {
    DeviceScope scope(device_);
    // Unified addressing tells the direction; to the host this returns once the bytes are there.
    MOREH_CUDA_CHECK(cudaMemcpy(dst, src, static_cast<size_t>(bytes), cudaMemcpyDefault));
  }
  void CopyStrided(void* dst, DType dst_type, const void* src_base, DType src_type,
                   const Shape& shape, const Shape& strides, int64_t offset) override {
    DeviceScope scope(device_);
    StridedCopy(dst, dst_type, src_base, src_type, static_cast<int>(shape.size()), shape.data(),
                strides.data(), offset, nullptr);
  }
  void Fill(void* dst, DType dtype, int64_t n, double value) override {
    DeviceScope scope(device_);
    cuda::Fill(dst, dtype, n, value, nullptr);
  }

 private:
  // Makes `device` current for the calling thread and restores the previous one.
  struct DeviceScope {
    explicit DeviceScope(int device) {
      cudaGetDevice(&previous);
      changed = previous != device;
      if (changed) cudaSetDevice(device);
    }
    ~DeviceScope() {
      if (changed) cudaSetDevice(previous);
    }
    int previous = 0;
    bool changed = false;
  };
  const int device_;
  bool stream_ordered_ = false;
};

}  // namespace

runtime::Allocator* CudaAllocator(int device) {
  static std::mutex mu;
  static std::unordered_map<int, runtime::Allocator*> allocators;
  std::lock_guard<std::mutex> lock(mu);
  auto it = allocators.find(device);
  if (it != allocators.end()) return it->second;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    count = 0;
  }
  MOREH_CHECK(device >= 0 && device < count, "cuda:{} does not exist ({} CUDA devices here)",
              device, count);
  int64_t capacity = 0;
  if (const char* env = std::getenv("MOREH_CUDA_DEVICE_MEMORY")) {
    capacity = runtime::ParseMemoryBytes(env);
    MOREH_CHECK(capacity > 0, "MOREH_CUDA_DEVICE_MEMORY='{}' is not a size (e.g. 40G)", env);
  } else {
    int previous = 0;
    MOREH_CUDA_CHECK(cudaGetDevice(&previous));
    MOREH_CUDA_CHECK(cudaSetDevice(device));
    size_t free_bytes = 0, total = 0;
    const cudaError_t e = cudaMemGetInfo(&free_bytes, &total);
    cudaSetDevice(previous);
    MOREH_CUDA_CHECK(e);
    const int64_t free = static_cast<int64_t>(free_bytes);
    const int64_t reserve = std::min(kContextReserve + kNcclReserve, free / 4);
    capacity = std::max<int64_t>(free - reserve, 1);
  }
  auto* a = new runtime::Allocator("cuda:" + std::to_string(device), capacity,
                                   std::make_unique<DeviceMemory>(device));
  allocators.emplace(device, a);
  return a;
}

}  // namespace moreh::kernels::cuda
