// Elementwise kernels: Add, Mul (with a suffix-broadcast second operand), Scale, Cast, the f32
// gradient accumulation and Fill, vectorised (16 bytes per access, vectorized.cuh) where the
// pointers allow; the strided copy and the integer casts as plain grid-stride loops. Each element
// is read once and written once, computed in f32.
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/vectorized.cuh"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;

struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MulOp {
  __device__ float operator()(float a, float b) const { return a * b; }
};

// out = op(a, b[i % nb]); vectors stay whole in b when nb is a multiple of their width.
template <typename T, typename Op>
struct BinaryF {
  T* out;
  const T* a;
  const T* b;
  int64_t nb;
  bool broadcast;
  template <int N>
  __device__ void Apply(int64_t i) const {
    const Vec<T, N> x = LoadVec<N>(a + i), y = LoadVec<N>(b + (broadcast ? i % nb : i));
    Vec<T, N> r;
#pragma unroll
    for (int k = 0; k < N; ++k) r.v[k] = FromF32<T>(Op{}(ToF32(x.v[k]), ToF32(y.v[k])));
    StoreVec<N>(out + i, r);
  }
};

template <typename T>
struct ScaleF {
  T* out;
  const T* x;
  float s;
  template <int N>
  __device__ void Apply(int64_t i) const {
    const Vec<T, N> in = LoadVec<N>(x + i);
    Vec<T, N> r;
#pragma unroll
    for (int k = 0; k < N; ++k) r.v[k] = FromF32<T>(ToF32(in.v[k]) * s);
    StoreVec<N>(out + i, r);
  }
};

template <typename T>
struct SoftcapF {
  T* out;
  const T* x;
  float cap;
  template <int N>
  __device__ void Apply(int64_t i) const {
    const Vec<T, N> in = LoadVec<N>(x + i);
    Vec<T, N> r;
#pragma unroll
    for (int k = 0; k < N; ++k) r.v[k] = FromF32<T>(cap * tanhf(ToF32(in.v[k]) / cap));
    StoreVec<N>(out + i, r);
  }
};

template <typename T>
struct SoftcapBackwardF {
  T* dx;
  const T* dy;
  const T* y;
  float cap;
  template <int N>
  __device__ void Apply(int64_t i) const {
    const Vec<T, N> d = LoadVec<N>(dy + i), yv = LoadVec<N>(y + i);
    Vec<T, N> r;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float t = ToF32(yv.v[k]) / cap;
      r.v[k] = FromF32<T>(ToF32(d.v[k]) * (1.0f - t * t));
    }
    StoreVec<N>(dx + i, r);
  }
};

// acc (f32) += x (any float type): a gradient of the compute dtype into its f32 accumulator.
template <typename T>
struct AccumulateF {
  float* acc;
  const T* x;
  template <int N>
  __device__ void Apply(int64_t i) const {
    Vec<float, N> a = LoadVec<N>(acc + i);
    const Vec<T, N> in = LoadVec<N>(x + i);
#pragma unroll
    for (int k = 0; k < N; ++k) a.v[k] += ToF32(in.v[k]);
    StoreVec<N>(acc + i, a);
  }
};

template <typename TO, typename TI>
struct CastF {
  TO* out;
  const TI* in;
  template <int N>
  __device__ void Apply(int64_t i) const {
    const Vec<TI, N> x = LoadVec<N>(in + i);
    Vec<TO, N> r;
#pragma unroll
    for (int k = 0; k < N; ++k) r.v[k] = FromF32<TO>(ToF32(x.v[k]));
    StoreVec<N>(out + i, r);
  }
};

template <typename T>
struct FillF {
  T* dst;
  T value;
  template <int N>
  __device__ void Apply(int64_t i) const {
    Vec<T, N> r;
#pragma unroll
    for (int k = 0; k < N; ++k) r.v[k] = value;
    StoreVec<N>(dst + i, r);
  }
};

template <typename TO, typename TI>
__global__ void IntCastKernel(TO* out, const TI* in, int64_t n) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) out[i] = static_cast<TO>(in[i]);
}

// Conversions for StridedCopy, as the host's ConvertElements: floats through f32 (exact for every
// float type), floats to integers through int64 (truncating), integers to floats through f32.
template <typename TO, typename TI>
__device__ __forceinline__ TO Convert(TI x) {
  constexpr bool kFloatIn = !std::is_integral_v<TI>, kFloatOut = !std::is_integral_v<TO>;
  if constexpr (kFloatIn && kFloatOut) {
    return FromF32<TO>(ToF32(x));
  } else if constexpr (kFloatIn) {
    return static_cast<TO>(static_cast<int64_t>(ToF32(x)));
  } else if constexpr (kFloatOut) {
    return FromF32<TO>(static_cast<float>(x));
  } else {
    return static_cast<TO>(x);
  }
}

constexpr int kMaxRank = 8;
struct View {
  int rank;
  int64_t shape[kMaxRank], strides[kMaxRank], offset;
};

template <typename TO, typename TI>
__global__ void StridedCopyKernel(TO* dst, const TI* src, View v, int64_t n) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    int64_t rem = i, off = v.offset;
    for (int d = v.rank - 1; d >= 0; --d) {
      const int64_t idx = rem % v.shape[d];
      rem /= v.shape[d];
      off += idx * v.strides[d];
    }
    dst[i] = Convert<TO>(src[off]);
  }
}

template <typename T>
void LaunchFill(void* dst, T value, int64_t n, cudaStream_t stream) {
  T* d = static_cast<T*>(dst);
  constexpr int N = VecWidth(sizeof(T));
  LaunchVectorized<N>(FillF<T>{d, value}, n, VecAligned<N>(d), stream);
}

// Calls f(T{}) for any dtype (the floats and the integers).
template <typename F>
void DispatchAny(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kI32:
      f(int32_t{});
      return;
    case DType::kI64:
      f(int64_t{});
      return;
    default:
      DispatchFloat(dtype, "StridedCopy", f);
  }
}

template <typename Op>
void Binary(const char* name, void* out, const void* a, const void* b, int64_t n, int64_t nb,
            DType dtype, cudaStream_t stream) {
  MOREH_CHECK(n >= 0 && nb > 0 && n % nb == 0, "cuda::{}: {} elements do not repeat {}", name, n,
              nb);
  if (n == 0) return;
  DispatchFloat(dtype, name, [&](auto tag) {
    using T = decltype(tag);
    constexpr int N = VecWidth(sizeof(T));
    const BinaryF<T, Op> f{static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b),
                           nb, nb != n};
    LaunchVectorized<N>(f, n, VecAligned<N>(f.out, f.a, f.b) && (nb == n || nb % N == 0), stream);
  });
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

void AccumulateF32(float* acc, const void* x, DType x_type, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  DispatchFloat(x_type, "AccumulateF32", [&](auto tag) {
    using T = decltype(tag);
    constexpr int N = VecWidth(sizeof(float));
    const AccumulateF<T> f{acc, static_cast<const T*>(x)};
    LaunchVectorized<N>(f, n, VecAligned<N>(f.acc, f.x), stream);
  });
}

void Scale(void* out, const void* x, float s, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  DispatchFloat(dtype, "Scale", [&](auto tag) {
    using T = decltype(tag);
    constexpr int N = VecWidth(sizeof(T));
    const ScaleF<T> f{static_cast<T*>(out), static_cast<const T*>(x), s};
    LaunchVectorized<N>(f, n, VecAligned<N>(f.out, f.x), stream);
  });
}

void Softcap(void* out, const void* x, float cap, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  DispatchFloat(dtype, "Softcap", [&](auto tag) {
    using T = decltype(tag);
    constexpr int N = VecWidth(sizeof(T));
    const SoftcapF<T> f{static_cast<T*>(out), static_cast<const T*>(x), cap};
    LaunchVectorized<N>(f, n, VecAligned<N>(f.out, f.x), stream);
  });
}

void SoftcapBackward(void* dx, const void* dy, const void* y, float cap, int64_t n, DType dtype,
                     cudaStream_t stream) {
  if (n <= 0) return;
  DispatchFloat(dtype, "SoftcapBackward", [&](auto tag) {
    using T = decltype(tag);
    constexpr int N = VecWidth(sizeof(T));
    const SoftcapBackwardF<T> f{static_cast<T*>(dx), static_cast<const T*>(dy),
                                static_cast<const T*>(y), cap};
    LaunchVectorized<N>(f, n, VecAligned<N>(f.dx, f.dy, f.y), stream);
  });
}

void Cast(void* out, DType out_type, const void* in, DType in_type, int64_t n,
          cudaStream_t stream) {
  if (n <= 0) return;
  if (IsFloating(out_type) && IsFloating(in_type)) {
    DispatchFloat(out_type, "Cast", [&](auto out_tag) {
      using TO = decltype(out_tag);
      DispatchFloat(in_type, "Cast", [&](auto in_tag) {
        using TI = decltype(in_tag);
        constexpr int N = VecWidth(sizeof(TO) > sizeof(TI) ? sizeof(TO) : sizeof(TI));
        const CastF<TO, TI> f{static_cast<TO*>(out), static_cast<const TI*>(in)};
        LaunchVectorized<N>(f, n, VecAligned<N>(f.out, f.in), stream);
      });
    });
    return;
  } else if (out_type == DType::kI64 && in_type == DType::kI32) {
    MOREH_CUDA_LAUNCH(GridFor(n, kThreads), kThreads, 0, stream, IntCastKernel<int64_t, int32_t>)
    (static_cast<int64_t*>(out), static_cast<const int32_t*>(in), n);
  } else if (out_type == DType::kI32 && in_type == DType::kI64) {
    MOREH_CUDA_LAUNCH(GridFor(n, kThreads), kThreads, 0, stream, IntCastKernel<int32_t, int64_t>)
    (static_cast<int32_t*>(out), static_cast<const int64_t*>(in), n);
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

void StridedCopy(void* dst, DType dst_type, const void* src_base, DType src_type, int rank,
                 const int64_t* shape, const int64_t* strides, int64_t offset,
                 cudaStream_t stream) {
  MOREH_CHECK(rank >= 0 && rank <= kMaxRank, "cuda::StridedCopy: rank {} (at most {})", rank,
              kMaxRank);
  View v{rank, {}, {}, offset};
  int64_t n = 1;
  for (int d = 0; d < rank; ++d) {
    v.shape[d] = shape[d];
    v.strides[d] = strides[d];
    n *= shape[d];
  }
  if (n <= 0) return;
  DispatchAny(dst_type, [&](auto out_tag) {
    using TO = decltype(out_tag);
    DispatchAny(src_type, [&](auto in_tag) {
      using TI = decltype(in_tag);
      MOREH_CUDA_LAUNCH(GridFor(n, kThreads), kThreads, 0, stream, StridedCopyKernel<TO, TI>)
      (static_cast<TO*>(dst), static_cast<const TI*>(src_base), v, n);
    });
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

void Fill(void* dst, DType dtype, int64_t n, double value, cudaStream_t stream) {
  if (n <= 0) return;
  // The value's bit pattern, made on the host (the same rounding as the CPU's Fill).
  switch (DTypeSize(dtype)) {
    case 2: {
      const float f = static_cast<float>(value);
      uint16_t bits;
      ConvertElements(&f, DType::kF32, &bits, dtype, 1);
      LaunchFill<uint16_t>(dst, bits, n, stream);
      return;
    }
    case 4: {
      uint32_t bits;
      if (dtype == DType::kF32) {
        const float f = static_cast<float>(value);
        std::memcpy(&bits, &f, 4);
      } else {
        const int32_t i = static_cast<int32_t>(value);
        std::memcpy(&bits, &i, 4);
      }
      LaunchFill<uint32_t>(dst, bits, n, stream);
      return;
    }
    default: {
      const int64_t i = static_cast<int64_t>(value);
      LaunchFill<int64_t>(dst, i, n, stream);
      return;
    }
  }
}

}  // namespace moreh::kernels::cuda
