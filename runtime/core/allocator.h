// A device's memory: an allocator with a capacity that tracks live and peak bytes.
//
// Every tensor's storage (a Buffer) comes from an Allocator and returns to it when the last
// reference goes. An allocation that would take live bytes past the capacity throws
// moreh::OutOfMemoryError (naming the device, the bytes requested and the bytes available, with the
// remedies) and allocates nothing. All methods are thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

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

class Allocator {
 public:
  // capacity_bytes <= 0 means the machine's physical memory.
  Allocator(std::string device_name, int64_t capacity_bytes);
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Throws OutOfMemoryError when live + bytes > capacity. Memory is 64-byte aligned, uninitialised.
  std::shared_ptr<Buffer> Allocate(int64_t bytes);

  const std::string& device_name() const { return device_name_; }
  int64_t capacity() const { return capacity_.load(); }
  void set_capacity(int64_t bytes);  // <= 0: the machine's memory
  int64_t live_bytes() const { return live_.load(); }
  int64_t peak_bytes() const { return peak_.load(); }
  void ResetPeak() { peak_.store(live_.load()); }

 private:
  friend class Buffer;
  void Free(void* p, int64_t bytes);

  const std::string device_name_;
  std::atomic<int64_t> capacity_;
  std::atomic<int64_t> live_{0};
  std::atomic<int64_t> peak_{0};
  std::mutex mu_;  // serialises the capacity check with the live counter
};

int64_t PhysicalMemoryBytes();

// The process's CPU device ("cpu:0"). Capacity from MOREH_CPU_DEVICE_MEMORY (bytes, or with a
// K/M/G/T suffix) or the machine's memory.
Allocator* CpuAllocator();

}  // namespace moreh::runtime
