// A device's memory: an allocator with a capacity that tracks live and peak bytes.
//
// Every tensor's storage (a Buffer) comes from an Allocator and returns to it when the last
// reference goes. An allocation that would take live bytes past the capacity throws
// moreh::OutOfMemoryError (naming the device, the bytes requested and the bytes available, with the
// remedies) and allocates nothing.
//
// Caching: freed blocks of at least MemorySource::MinCachedBytes() are kept by exact size and
// handed out again (a training step allocates the same sizes every step, and fresh memory from the
// OS costs a page fault per 4 KiB). Cached blocks are not live; live + cached never exceeds the
// capacity (the cache is released first). All methods are thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/core/shape.h"

namespace moreh::runtime {

class Allocator;

// One allocation. Owned through std::shared_ptr; views of a tensor share it.
class Buffer {
 public:
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  Allocator* allocator() const { return allocator_; }

 private:
  friend class Allocator;
  Buffer(void* data, int64_t bytes, Allocator* a) : data_(data), bytes_(bytes), allocator_(a) {}
  void* data_;
  int64_t bytes_;
  Allocator* allocator_;
};

// Where an allocator's bytes come from: host memory by default; the CUDA backend supplies device
// memory (kernels/cuda/device_allocator.h). Implementations are thread-safe.
class MemorySource {
 public:
  virtual ~MemorySource() = default;
  virtual void* Allocate(int64_t bytes) = 0;  // null when the memory cannot be had
  virtual void Free(void* p) = 0;
  // Freed blocks at least this large are cached for reuse. Device memory caches every size:
  // cudaFree waits for the whole device.
  virtual int64_t MinCachedBytes() const { return 256 * 1024; }

  // Memory the host cannot read (a GPU's) answers false and implements the three operations
  // below, which Tensor uses to move, convert and fill such memory. They are ordered after the
  // device's earlier work and before its later work; a copy to the host is complete on return.
  virtual bool host_accessible() const { return true; }
  // Copies bytes between this device's memory and the host's, or within this device.
  virtual void CopyBytes(void* dst, const void* src, int64_t bytes);
  // dst[numel(shape)] (contiguous, dst_type) = the strided view (shape, strides and offset in
  // elements) of src_base (src_type), both on this device, converted element by element.
  virtual void CopyStrided(void* dst, DType dst_type, const void* src_base, DType src_type,
                           const Shape& shape, const Shape& strides, int64_t offset);
  // dst[n] (dtype) = value.
  virtual void Fill(void* dst, DType dtype, int64_t n, double value);
};

class Allocator {
 public:
  // capacity_bytes <= 0 means the machine's physical memory. `source` null: host memory.
  Allocator(std::string device_name, int64_t capacity_bytes,
            std::unique_ptr<MemorySource> source = nullptr);
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Throws OutOfMemoryError when live + bytes > capacity, or when the source has no memory left
  // even after the cache is released. Memory is 64-byte aligned, uninitialised.
  std::shared_ptr<Buffer> Allocate(int64_t bytes);

  const std::string& device_name() const { return device_name_; }
  // Where the memory lives and how to move it (see MemorySource).
  MemorySource& memory() const { return *source_; }
  bool host_accessible() const { return source_->host_accessible(); }
  int64_t capacity() const { return capacity_.load(); }
  void set_capacity(int64_t bytes);  // <= 0: the machine's memory
  int64_t live_bytes() const { return live_.load(); }
  int64_t cached_bytes() const;
  void ReleaseCache();
  ~Allocator();
  int64_t peak_bytes() const { return peak_.load(); }
  void ResetPeak() { peak_.store(live_.load()); }

 private:
  friend class Buffer;
  void Free(void* p, int64_t bytes);

  const std::string device_name_;
  const std::unique_ptr<MemorySource> source_;
  std::atomic<int64_t> capacity_;
  std::atomic<int64_t> live_{0};
  std::atomic<int64_t> peak_{0};
  mutable std::mutex mu_;  // serialises the capacity check, the live counter and the cache
  std::unordered_map<int64_t, std::vector<void*>> cache_;  // guarded by mu_
  int64_t cached_ = 0;                                     // guarded by mu_
  void ReleaseCacheLocked();
};

int64_t PhysicalMemoryBytes();
// "512M", "2G", "1.5T", "1048576": bytes (K/M/G/T are powers of 1024); 0 when unreadable.
int64_t ParseMemoryBytes(const char* s);

// The process's CPU device ("cpu:0"). Capacity from MOREH_CPU_DEVICE_MEMORY (bytes, or with a
// K/M/G/T suffix) or the machine's memory.
Allocator* CpuAllocator();

}  // namespace moreh::runtime
