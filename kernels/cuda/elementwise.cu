// Elementwise kernels: Add, Mul (with a suffix-broadcast second operand), Scale, and Cast. Grid-
// stride loops; each element read once and written once, computed in f32.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;

struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MulOp {
  __device__ float operator()(float a, float b) const { return a * b; }
};

template <typename T, typename Op>
__global__ void BinaryKernel(T* out, const T* a, const T* b, int64_t n, int64_t nb, Op op) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    const int64_t j = nb == n ? i : i % nb;
    out[i] = FromF32<T>(op(ToF32(a[i]), ToF32(b[j])));
  }
}

template <typename T>
__global__ void ScaleKernel(T* out, const T* x, float s, int64_t n) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) out[i] = FromF32<T>(ToF32(x[i]) * s);
}

template <typename TO, typename TI>
__global__ void CastKernel(TO* out, const TI* in, int64_t n) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) out[i] = FromF32<TO>(ToF32(in[i]));
}

template <typename TO, typename TI>
__global__ void IntCastKernel(TO* out, const TI* in, int64_t n) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) out[i] = static_cast<TO>(in[i]);
}

template <typename Op>
void Binary(const char* name, void* out, const void* a, const void* b, int64_t n, int64_t nb,
            DType dtype, cudaStream_t stream) {
  MOREH_CHECK(n >= 0 && nb > 0 && n % nb == 0, "cuda::{}: {} elements do not repeat {}", name, n,
              nb);
  if (n == 0) return;
  DispatchFloat(dtype, name, [&](auto tag) {
    using T = decltype(tag);
    BinaryKernel<T, Op><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), n, nb, Op{});
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace

void Add(void* out, const void* a, const void* b, int64_t n, int64_t nb, DType dtype,
         cudaStream_t stream) {
  Binary<AddOp>("Add", out, a, b, n, nb, dtype, stream);
}

void Mul(void* out, const void* a, const void* b, int64_t n, int64_t nb, DType dtype,
         cudaStream_t stream) {
  Binary<MulOp>("Mul", out, a, b, n, nb, dtype, stream);
}

void Scale(void* out, const void* x, float s, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  DispatchFloat(dtype, "Scale", [&](auto tag) {
    using T = decltype(tag);
    ScaleKernel<T><<<GridFor(n, kThreads), kThreads, 0, stream>>>(static_cast<T*>(out),
                                                                  static_cast<const T*>(x), s, n);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

void Cast(void* out, DType out_type, const void* in, DType in_type, int64_t n,
          cudaStream_t stream) {
  if (n <= 0) return;
  if (IsFloating(out_type) && IsFloating(in_type)) {
    DispatchFloat(out_type, "Cast", [&](auto out_tag) {
      using TO = decltype(out_tag);
      DispatchFloat(in_type, "Cast", [&](auto in_tag) {
        using TI = decltype(in_tag);
        CastKernel<TO, TI><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
            static_cast<TO*>(out), static_cast<const TI*>(in), n);
      });
    });
  } else if (out_type == DType::kI64 && in_type == DType::kI32) {
    IntCastKernel<int64_t, int32_t><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
        static_cast<int64_t*>(out), static_cast<const int32_t*>(in), n);
  } else if (out_type == DType::kI32 && in_type == DType::kI64) {
    IntCastKernel<int32_t, int64_t><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
        static_cast<int32_t*>(out), static_cast<const int64_t*>(in), n);
  } else if (out_type == in_type) {
    MOREH_CUDA_CHECK(cudaMemcpyAsync(out, in, static_cast<size_t>(n * DTypeSize(in_type)),
                                     cudaMemcpyDeviceToDevice, stream));
    return;
  } else {
    throw Error(fmt::format("cuda::Cast: {} to {} is not supported", DTypeName(in_type),
                            DTypeName(out_type)));
  }
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace moreh::kernels::cuda
