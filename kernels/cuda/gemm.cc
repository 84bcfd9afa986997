// GEMM through cuBLASLt. Row-major C = op(A) op(B) is computed as the column-major product
// C^T = op(B)^T op(A)^T, so the operands swap and no data moves. A plan (descriptors and the
// heuristic's algorithm) is made once per shape, dtypes and pointer alignment, per thread and
// device; a training step's GEMMs repeat every step, so from the second step on a GEMM is one
// cublasLtMatmul call.
#include <cublasLt.h>

#include <cstdlib>
#include <cstring>
#include <tuple>
#include <unordered_map>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "runtime/core/error.h"

#define MOREH_CUBLAS_CHECK(expr)                                                            \
  do {                                                                                      \
    const cublasStatus_t moreh_cublas_st_ = (expr);                                         \
    if (moreh_cublas_st_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                             \
      throw ::moreh::Error(::fmt::format(                                                   \
          "cuBLASLt error {} ({}) in {} at {}:{}", cublasLtGetStatusName(moreh_cublas_st_), \
          cublasLtGetStatusString(moreh_cublas_st_), #expr, __FILE__, __LINE__));           \
  } while (0)

namespace moreh::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      throw Error(fmt::format("cuda::Gemm: dtype {} is not a floating type", DTypeName(t)));
  }
}

struct Key {
  int64_t m, n, k, lda, ldb, ldc;
  bool ta, tb, beta_zero;
  DType ab, c;
  int align;  // the smallest alignment (16, 8, 4 or 2 bytes) of the three pointers
  bool operator==(const Key& o) const {
    return std::tie(m, n, k, lda, ldb, ldc, ta, tb, beta_zero, ab, c, align) ==
           std::tie(o.m, o.n, o.k, o.lda, o.ldb, o.ldc, o.ta, o.tb, o.beta_zero, o.ab, o.c,
                    o.align);
  }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t v :
         {k.m, k.n, k.k, k.lda, k.ldb, k.ldc, int64_t{k.ta}, int64_t{k.tb}, int64_t{k.beta_zero},
          static_cast<int64_t>(k.ab), static_cast<int64_t>(k.c), int64_t{k.align}}) {
      h = (h ^ static_cast<size_t>(v)) * 1099511628211ull;
    }
    return h;
  }
};

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

// One per thread and device. Plans and the workspace live as long as the thread.
struct Context {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::unordered_map<Key, Plan, KeyHash> plans;
  ~Context() {
    for (auto& [key, p] : plans) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.op);
    }
    if (workspace) cudaFree(workspace);  // may fail at process exit; nothing to do then
    if (handle) cublasLtDestroy(handle);
  }
};

Context& ThisThreadContext() {
  thread_local std::unordered_map<int, Context> contexts;
  int device = 0;
  MOREH_CUDA_CHECK(cudaGetDevice(&device));
  Context& ctx = contexts[device];
  if (ctx.workspace == nullptr) MOREH_CUDA_CHECK(cudaMalloc(&ctx.workspace, kWorkspaceBytes));
  if (ctx.handle == nullptr) MOREH_CUBLAS_CHECK(cublasLtCreate(&ctx.handle));
  return ctx;
}

bool AllowTf32() {
  static const bool allow = [] {
    const char* e = std::getenv("MOREH_CUDA_ALLOW_TF32");
    return e != nullptr && std::strcmp(e, "1") == 0;
  }();
  return allow;
}

int Alignment(const void* a, const void* b, const void* c) {
  const auto bits = reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) |
                    reinterpret_cast<uintptr_t>(c);
  for (int al : {16, 8, 4}) {
    if (bits % al == 0) return al;
  }
  return 2;
}

Plan MakePlan(Context& ctx, const Key& key) {
  Plan p;
  const cublasComputeType_t compute =
      key.ab == DType::kF32 && AllowTf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  MOREH_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, compute, CUDA_R_32F));
  // A' = B's memory, B' = A's memory (see the file comment).
  const cublasOperation_t op_a = key.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = key.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  MOREH_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  MOREH_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  const cudaDataType_t ab = CudaType(key.ab), c = CudaType(key.c);
  // Column-major stored shapes (before the op): B row-major [K,N] is N x K column-major, etc.
  MOREH_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, ab, key.tb ? key.k : key.n,
                                                key.tb ? key.n : key.k, key.ldb));
  MOREH_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, ab, key.ta ? key.m : key.k,
                                                key.ta ? key.k : key.m, key.lda));
  MOREH_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, c, key.n, key.m, key.ldc));
  cublasLtMatmulPreference_t pref = nullptr;
  MOREH_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  MOREH_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const uint32_t align = static_cast<uint32_t>(key.align);
  for (auto attr :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    MOREH_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.handle, p.op, p.a, p.b, p.c, p.c,
                                                           pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  MOREH_CUBLAS_CHECK(st);
  MOREH_CHECK(found > 0,
              "cuda::Gemm: cuBLASLt has no algorithm for m={} n={} k={} ({} x {} -> {}, lda={} "
              "ldb={} ldc={})",
              key.m, key.n, key.k, DTypeName(key.ab), DTypeName(key.ab), DTypeName(key.c), key.lda,
              key.ldb, key.ldc);
  p.algo = result.algo;
  return p;
}

}  // namespace

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
          int64_t lda, const void* b, int64_t ldb, float beta, void* c, int64_t ldc, DType ab,
          DType c_type, cudaStream_t stream) {
  MOREH_CHECK(m >= 0 && n >= 0 && k >= 0, "cuda::Gemm: negative size m={} n={} k={}", m, n, k);
  MOREH_CHECK(c_type == DType::kF32 || c_type == ab,
              "cuda::Gemm: output {} for {} inputs (f32 or the inputs' dtype)", DTypeName(c_type),
              DTypeName(ab));
  if (m == 0 || n == 0) return;
  MOREH_CHECK(ldc >= n && lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n),
              "cuda::Gemm: leading dimensions lda={} ldb={} ldc={} too small for m={} n={} k={}",
              lda, ldb, ldc, m, n, k);
  if (k == 0) {  // C = beta C
    const int64_t es = DTypeSize(c_type);
    if (beta == 0.0f) {  // C may hold NaN, and 0 * NaN is NaN
      MOREH_CUDA_CHECK(cudaMemset2DAsync(c, static_cast<size_t>(ldc * es), 0,
                                         static_cast<size_t>(n * es), static_cast<size_t>(m),
                                         stream));
    } else {
      for (int64_t i = 0; i < (ldc == n ? 1 : m); ++i) {
        void* row = static_cast<char*>(c) + i * ldc * es;
        Scale(row, row, beta, ldc == n ? m * n : n, c_type, stream);
      }
    }
    return;
  }
  Context& ctx = ThisThreadContext();
  const Key key{
      m, n, k, lda, ldb, ldc, trans_a, trans_b, beta == 0.0f, ab, c_type, Alignment(a, b, c)};
  auto it = ctx.plans.find(key);
  if (it == ctx.plans.end()) it = ctx.plans.emplace(key, MakePlan(ctx, key)).first;
  const Plan& p = it->second;
  MOREH_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, p.op, &alpha, b, p.a, a, p.b, &beta, c, p.c, c, p.c,
                                    &p.algo, ctx.workspace, kWorkspaceBytes, stream));
}

}  // namespace moreh::kernels::cuda
