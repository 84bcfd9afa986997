// The emulated device's entry points that are not kernels of kernels/cuda: its name and memory,
// GPU-time marks and the GEMM.
//
// The GEMM is the CPU kernel on the device buffers (converted to f32 and back): the emulator checks
// what surrounds cuBLASLt (the op glue, device tensors, the executor, mixed precision), not
// cuBLASLt, which only a GPU checks (the kernel check lists its cases as not simulated).
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_info.h"
#include "runtime/core/dtype.h"
#include "runtime/core/error.h"

namespace moreh::kernels::cuda {
namespace {

// rows x cols of a row-major matrix with row stride ld, as packed f32.
std::vector<float> Unpack(const void* p, DType dtype, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  const char* base = static_cast<const char*>(p);
  for (int64_t r = 0; r < rows; ++r) {
    ConvertElements(base + r * ld * DTypeSize(dtype), dtype, out.data() + r * cols, DType::kF32,
                    cols);
  }
  return out;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int DeviceCount() { return simt::EmulatedDevices(); }
void SetDevice(int i) {
  MOREH_CHECK(cudaSetDevice(i) == cudaSuccess, "simt: device {} of {}", i, DeviceCount());
}
int64_t DeviceMemoryBytes(int) {
  size_t free_bytes = 0, total = 0;
  cudaMemGetInfo(&free_bytes, &total);
  return static_cast<int64_t>(total);
}
std::string DeviceName(int) { return "SIMT emulator on the CPU (not a GPU)"; }

// Marks are the host times at which the legacy stream reached them.
StreamMarks::~StreamMarks() {
  cudaStreamSynchronize(cudaStreamLegacy);  // no queued mark writes a freed time
  for (void* e : events_) delete static_cast<double*>(e);
}
int StreamMarks::Mark() {
  if (used_ == static_cast<int>(events_.size())) events_.push_back(new double(0));
  auto* t = static_cast<double*>(events_[used_]);
  simt::Enqueue(cudaStreamLegacy, [t] { *t = Now(); });
  return used_++;
}
double StreamMarks::Seconds(int from, int to) const {
  MOREH_CHECK(from >= 0 && to < used_ && from <= to, "StreamMarks: marks {}..{} of {}", from, to,
              used_);
  cudaStreamSynchronize(cudaStreamLegacy);
  return *static_cast<double*>(events_[to]) - *static_cast<double*>(events_[from]);
}

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
          int64_t lda, const void* b, int64_t ldb, float beta, void* c, int64_t ldc, DType ab,
          DType c_type, cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  // Queued on the stream, as cuBLASLt's kernels are: it reads what the work before it wrote.
  simt::Enqueue(stream, [=] {
    const std::vector<float> fa = Unpack(a, ab, trans_a ? k : m, trans_a ? m : k, lda);
    const std::vector<float> fb = Unpack(b, ab, trans_b ? n : k, trans_b ? k : n, ldb);
    // beta = 0 ignores C (it may hold NaN), as cuBLASLt does.
    std::vector<float> fc = beta == 0.0f ? std::vector<float>(static_cast<size_t>(m * n), 0.0f)
                                         : Unpack(c, c_type, m, n, ldc);
    cpu::Gemm(trans_a, trans_b, m, n, k, alpha, fa.data(), trans_a ? m : k, fb.data(),
              trans_b ? k : n, beta, fc.data(), n);
    char* out = static_cast<char*>(c);
    for (int64_t r = 0; r < m; ++r) {
      ConvertElements(fc.data() + r * n, DType::kF32, out + r * ldc * DTypeSize(c_type), c_type, n);
    }
  });
}

}  // namespace moreh::kernels::cuda
