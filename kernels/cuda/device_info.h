// CUDA device discovery. Thread-safe. Returns 0 where no driver or no GPU is present.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moreh::kernels::cuda {
int DeviceCount();
// Makes GPU i the calling thread's current device; throws moreh::Error when that fails.
void SetDevice(int i);
// Total memory and name of device `i` (0 / "" when it cannot be read).
int64_t DeviceMemoryBytes(int i);
std::string DeviceName(int i);

// What a worker reports about a GPU at start-up: a bf16 GEMM (cuBLASLt, 4096^3, f32 accumulation,
// the best of 5 after a warm-up, on non-zero data) and a device-to-device copy of 512 MiB (bytes
// read + written per second, the best of 5). Takes about a second; throws moreh::Error on a CUDA
// failure.
struct GpuProfile {
  double gemm_flops_bf16 = 0;
  double memory_bandwidth = 0;
};
GpuProfile MeasureGpu(int device);

// Events on the calling thread's compute stream (the legacy default stream) for timing the work
// queued between two marks (profiling). Events are created as needed and reused after Clear; they
// belong to the device current at the first Mark, and marking from another device is an error.
// Not thread-safe; throws moreh::Error on a CUDA failure.
class StreamMarks {
 public:
  StreamMarks() = default;
  ~StreamMarks();
  StreamMarks(const StreamMarks&) = delete;
  StreamMarks& operator=(const StreamMarks&) = delete;
  // Records a mark behind everything queued so far; returns its index.
  int Mark();
  // Seconds of GPU time between marks `from` and `to` (waits until the GPU reaches `to`).
  double Seconds(int from, int to) const;
  void Clear() { used_ = 0; }

 private:
  std::vector<void*> events_;  // cudaEvent_t, of device_
  int used_ = 0;
  int device_ = -1;
};
}  // namespace moreh::kernels::cuda
