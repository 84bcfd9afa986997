// Every CUDA kernel against its CPU twin (kernels/cpu, the oracle), over a list of shapes, in f32
// and bf16. For each case: fresh random inputs (bf16 cases round them first, so both sides see the
// same values), outputs poisoned with NaN before the run (an element the kernel forgot stays NaN
// and fails), the CPU kernel run in f32 on the same values, and an element-wise check
// |gpu - cpu| <= tol * (|cpu| + rms(cpu)) with tol per dtype and kernel. One line per case, a
// summary last. Exit status: 0 all passed, 1 a case failed, 77 no CUDA device (a skip, not a pass).
//
// Built a second time against the SIMT emulator (tests/cuda/simt; moreh_cuda_kernel_check_simt,
// run by CI): the same cases on the CPU, except those of cuBLASLt (and a few too large to emulate
// in CI's time), which are listed as not simulated (neither passed nor failed). Both tensor-core
// attentions run there: the emulator has mma.sync, ldmatrix, cp.async and WMMA.
//
//   moreh_cuda_kernel_check [--filter SUBSTRING] [--exclude SUBSTRING] [--seed N]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_allocator.h"
#include "kernels/cuda/device_info.h"
#include "runtime/core/dtype.h"
#include "runtime/core/error.h"

namespace {

using moreh::DType;
namespace cpu = moreh::kernels::cpu;
namespace gpu = moreh::kernels::cuda;

std::mt19937_64 g_rng(20261128);
std::string g_filter, g_exclude;  // cases whose name contains g_filter and not g_exclude
int g_passed = 0, g_failed = 0, g_not_simulated = 0;
#ifdef MOREH_CUDA_SIMT
constexpr bool kSimulated = true;
#else
constexpr bool kSimulated = false;
#endif

std::vector<float> Random(int64_t n, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(g_rng);
  return v;
}

// Rounds values to what `dtype` can hold (identity for f32).
std::vector<float> Round(std::vector<float> v, DType dtype) {
  for (float& x : v) {
    if (dtype == DType::kBF16) x = moreh::BF16ToF32(moreh::F32ToBF16(x));
    if (dtype == DType::kF16) x = moreh::F16ToF32(moreh::F32ToF16(x));
  }
  return v;
}

// A device buffer, freed at scope exit. `shift` bytes past the allocation's start (which is
// 256-byte aligned): a shift of one element makes the buffer a view no vector access may use, so
// the vectorised kernels' fallback runs.
class Dev {
 public:
  explicit Dev(int64_t bytes, int64_t shift = 0)
      : bytes_(std::max<int64_t>(bytes, 1)), shift_(shift) {
    MOREH_CUDA_CHECK(cudaMalloc(&base_, static_cast<size_t>(bytes_ + shift_)));
    p_ = static_cast<char*>(base_) + shift_;
    Poison();
  }
  // Uploads `v` converted to `dtype`.
  Dev(const std::vector<float>& v, DType dtype, int64_t shift = 0)
      : Dev(static_cast<int64_t>(v.size()) * moreh::DTypeSize(dtype), shift) {
    std::vector<char> host(bytes_);
    moreh::ConvertElements(v.data(), DType::kF32, host.data(), dtype,
                           static_cast<int64_t>(v.size()));
    MOREH_CUDA_CHECK(cudaMemcpy(p_, host.data(), host.size(), cudaMemcpyHostToDevice));
  }
  explicit Dev(const std::vector<int64_t>& v) : Dev(static_cast<int64_t>(v.size()) * 8) {
    MOREH_CUDA_CHECK(cudaMemcpy(p_, v.data(), v.size() * 8, cudaMemcpyHostToDevice));
  }
  ~Dev() { cudaFree(base_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void Poison() { MOREH_CUDA_CHECK(cudaMemset(base_, 0xff, static_cast<size_t>(bytes_ + shift_))); }
  std::vector<float> Get(int64_t n, DType dtype) const {
    MOREH_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<char> host(static_cast<size_t>(n * moreh::DTypeSize(dtype)));
    MOREH_CUDA_CHECK(cudaMemcpy(host.data(), p_, host.size(), cudaMemcpyDeviceToHost));
    std::vector<float> out(n);
    moreh::ConvertElements(host.data(), dtype, out.data(), DType::kF32, n);
    return out;
  }
  template <typename T = void>
  T* p() const {
    return static_cast<T*>(p_);
  }
  float* f() const { return static_cast<float*>(p_); }

 private:
  void* base_ = nullptr;
  void* p_ = nullptr;
  int64_t bytes_, shift_;
};

double Rms(const std::vector<float>& v) {
  double s = 0;
  int64_t n = 0;
  for (float x : v) {
    if (std::isfinite(x)) {
      s += static_cast<double>(x) * x;
      ++n;
    }
  }
  return n ? std::sqrt(s / n) : 0.0;
}

// Compares one output; returns true when it passes. Infinities must match exactly; NaN only where
// the reference has NaN.
// With max_rel_l2 > 0 the relative L2 error over the finite elements must also stay below it.
// `scale`: the size of the terms an output is a difference of, where that is more than the
// output's own rms (cancellation leaves an error relative to the terms, not to the result).
bool Close(const std::vector<float>& got, const std::vector<float>& want, double tol,
           std::string* detail, double max_rel_l2 = 0, double scale = 0) {
  const double rms = std::max(Rms(want), scale);
  double worst = 0, l2_diff = 0, l2_ref = 0;
  int64_t bad = 0, first_bad = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = got[i], w = want[i];
    bool ok;
    double ratio = 0;
    if (std::isnan(w) || std::isnan(g)) {
      ok = std::isnan(w) && std::isnan(g);
    } else if (std::isinf(w) || std::isinf(g)) {
      ok = g == w;
    } else {
      const double err = std::fabs(g - w);
      ratio = err / (tol * (std::fabs(w) + rms) + 1e-30);
      ok = ratio <= 1.0;
      l2_diff += err * err;
      l2_ref += w * w;
    }
    // The ratio itself for numbers; infinity for a NaN or infinity where none belongs.
    worst = std::max(worst, ok || ratio > 0 ? ratio : std::numeric_limits<double>::infinity());
    if (!ok) {
      ++bad;
      if (first_bad < 0) first_bad = static_cast<int64_t>(i);
    }
  }
  char buf[256];
  const double rel_l2 = l2_ref > 0 ? std::sqrt(l2_diff / l2_ref) : std::sqrt(l2_diff);
  std::snprintf(buf, sizeof buf, "err/tol %.3g rel_l2 %.2e", worst, rel_l2);
  *detail = buf;
  if (max_rel_l2 > 0 && rel_l2 > max_rel_l2) {
    std::snprintf(buf, sizeof buf, "; rel_l2 above %.1e", max_rel_l2);
    *detail += buf;
    return false;
  }
  if (bad) {
    std::snprintf(buf, sizeof buf, "; %lld bad, first [%lld] gpu %.6g cpu %.6g",
                  static_cast<long long>(bad), static_cast<long long>(first_bad), got[first_bad],
                  want[first_bad]);
    *detail += buf;
  }
  return bad == 0;
}

// One case: any number of named outputs, each compared.
struct Case {
  Case(std::string n, double t, double l2 = 0) : name(std::move(n)), tol(t), max_rel_l2(l2) {}
  Case(const Case&) = delete;
  Case& operator=(const Case&) = delete;
  std::string name;
  double tol;
  double max_rel_l2;  // > 0: also a bound on each output's relative L2 error
  std::vector<std::string> details;
  bool ok = true;
  void Check(const char* what, const std::vector<float>& got, const std::vector<float>& want,
             double tol_here = -1, double scale = 0) {
    std::string d;
    const bool pass = Close(got, want, tol_here >= 0 ? tol_here : tol, &d, max_rel_l2, scale);
    ok = ok && pass;
    details.push_back(std::string(what) + ": " + d);
  }
  ~Case() {
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", name.c_str());
    for (const auto& d : details) std::printf("       %s\n", d.c_str());
    (ok ? g_passed : g_failed)++;
  }
};

bool Selected(const std::string& name) {
  return (g_filter.empty() || name.find(g_filter) != std::string::npos) &&
         (g_exclude.empty() || name.find(g_exclude) == std::string::npos);
}

const char* Name(DType t) { return moreh::DTypeName(t).data(); }

// Under the emulator: a case that needs a GPU's tensor cores or cuBLASLt, or that is too large to
// emulate in CI's time (the emulator pays per thread per barrier; smaller cases of the same kernel
// cover its paths), named and counted apart.
constexpr const char* kNeedsGpu = "needs a GPU";
const char* TooLarge(bool large) { return large ? "too large for the emulator" : nullptr; }
bool NotSimulated(const std::string& name, const char* why) {
  if (!kSimulated || why == nullptr || !Selected(name)) return false;
  std::printf("NOT SIMULATED %s (%s)\n", name.c_str(), why);
  ++g_not_simulated;
  return true;
}

// Tolerance: f32 kernels differ from the CPU by rounding order only; bf16 outputs by one rounding
// of the output (2^-9 relative) on top.
double Tol(DType t, double f32_tol = 2e-5) {
  return t == DType::kF32 ? f32_tol : t == DType::kF16 ? 2e-3 : 1e-2;
}

const DType kDTypes[] = {DType::kF32, DType::kBF16};
const DType kAllFloat[] = {DType::kF32, DType::kBF16, DType::kF16};

// --- the checks, one per kernel family ----------------------------------------------------------

void CheckGemm() {
  struct S {
    int64_t m, n, k;
    bool ta, tb;
    int64_t pad;  // extra leading-dimension elements (strided operands)
    float alpha, beta;
  };
  const S shapes[] = {
      {1, 1, 1, false, false, 0, 1, 0},          {7, 13, 5, false, false, 0, 1, 0},
      {7, 13, 5, true, false, 0, 1, 0},          {7, 13, 5, false, true, 0, 1, 0},
      {7, 13, 5, true, true, 0, 1, 0},           {129, 67, 257, false, true, 3, 1, 0},
      {64, 96, 128, true, false, 0, 0.5f, 1.0f}, {512, 1024, 768, false, false, 0, 1, 0},
      {1000, 512, 2048, false, true, 8, 1, 0}};
  for (const S& s : shapes) {
    for (DType ab : {DType::kF32, DType::kBF16, DType::kF16}) {
      std::vector<DType> outs{DType::kF32};
      if (ab != DType::kF32) outs.push_back(ab);
      for (DType ct : outs) {
        char name[160];
        std::snprintf(name, sizeof name,
                      "gemm %s->%s m=%lld n=%lld k=%lld ta=%d tb=%d pad=%lld a=%g b=%g", Name(ab),
                      Name(ct), (long long)s.m, (long long)s.n, (long long)s.k, s.ta, s.tb,
                      (long long)s.pad, s.alpha, s.beta);
        if (NotSimulated(name, kNeedsGpu) || !Selected(name)) continue;
        const int64_t lda = (s.ta ? s.m : s.k) + s.pad, ldb = (s.tb ? s.k : s.n) + s.pad,
                      ldc = s.n + s.pad;
        const int64_t a_rows = s.ta ? s.k : s.m, b_rows = s.tb ? s.n : s.k;
        const auto a = Round(Random(a_rows * lda), ab), b = Round(Random(b_rows * ldb), ab);
        auto c = Round(Random(s.m * ldc), ct);
        Dev da(a, ab), db(b, ab), dc(c, ct);
        if (s.beta == 0) dc.Poison();
        gpu::Gemm(s.ta, s.tb, s.m, s.n, s.k, s.alpha, da.p(), lda, db.p(), ldb, s.beta, dc.p(), ldc,
                  ab, ct, nullptr);
        cpu::Gemm(s.ta, s.tb, s.m, s.n, s.k, s.alpha, a.data(), lda, b.data(), ldb, s.beta,
                  c.data(), ldc);
        auto got = dc.Get(s.m * ldc, ct);
        // Padding columns are not the kernel's: compare only the m x n block.
        std::vector<float> g, w;
        for (int64_t i = 0; i < s.m; ++i) {
          for (int64_t j = 0; j < s.n; ++j) {
            g.push_back(got[i * ldc + j]);
            w.push_back(c[i * ldc + j]);
          }
        }
        Case cs{name, ct == DType::kF32 ? 1e-4 : 1e-2};
        cs.Check("c", g, w);
      }
    }
  }
}

void CheckEmbedding() {
  struct S {
    int64_t n, c, v;
  };
  for (const S& s : {S{1, 1, 1}, S{37, 65, 11}, S{512, 768, 1000}, S{70000, 4, 50}}) {
    for (DType dt : kAllFloat) {
      char name[128];
      std::snprintf(name, sizeof name, "embedding %s n=%lld c=%lld v=%lld", Name(dt),
                    (long long)s.n, (long long)s.c, (long long)s.v);
      if (NotSimulated(name, TooLarge(s.n > 10'000)) || !Selected(name)) continue;
      std::vector<int64_t> ids(s.n);
      std::uniform_int_distribution<int64_t> pick(0, s.v - 1);
      for (auto& id : ids) id = pick(g_rng);
      const auto w = Round(Random(s.v * s.c), dt), dout = Round(Random(s.n * s.c), dt);
      Dev dw(w, dt), dids(ids), dout_d(dout, dt), out(s.n * s.c * 4), dweight(s.v * s.c * 4);
      gpu::EmbeddingForward(out.p(), dw.p(), dids.p<int64_t>(), s.n, s.c, s.v, dt, nullptr);
      gpu::EmbeddingBackward(dweight.f(), dout_d.p(), dids.p<int64_t>(), s.n, s.c, s.v, dt,
                             nullptr);
      std::vector<float> want_out(s.n * s.c), want_dw(s.v * s.c);
      cpu::EmbeddingForward(want_out.data(), w.data(), ids.data(), s.n, s.c);
      cpu::EmbeddingBackward(want_dw.data(), dout.data(), ids.data(), s.n, s.c, s.v);
      Case cs{name, Tol(dt)};
      cs.Check("out", out.Get(s.n * s.c, dt), want_out);
      cs.Check("dweight", dweight.Get(s.v * s.c, DType::kF32), want_dw);
    }
  }
}

void CheckElementwise() {
  struct S {
    int64_t n, nb;
  };
  // Broadcasts with nb a multiple of the vector width and not; shift 1: every operand one element
  // off its vector alignment (the scalar fallback).
  for (const S& s :
       {S{1, 1}, S{1000, 1000}, S{7 * 333, 7}, S{16 * 1001, 16}, S{(1 << 20) + 3, (1 << 20) + 3}}) {
    for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (int shift : {0, 1}) {
        char name[128];
        std::snprintf(name, sizeof name, "elementwise %s n=%lld nb=%lld shift=%d", Name(dt),
                      (long long)s.n, (long long)s.nb, shift);
        if (!Selected(name)) continue;
        const int64_t sh = shift * moreh::DTypeSize(dt), sh32 = shift * 4;
        const auto a = Round(Random(s.n), dt), b = Round(Random(s.nb), dt);
        Dev da(a, dt, sh), db(b, dt, sh), sum(s.n * 4, sh), prod(s.n * 4, sh), scaled(s.n * 4, sh);
        gpu::Add(sum.p(), da.p(), db.p(), s.n, s.nb, dt, nullptr);
        gpu::Mul(prod.p(), da.p(), db.p(), s.n, s.nb, dt, nullptr);
        gpu::Scale(scaled.p(), da.p(), -0.375f, s.n, dt, nullptr);
        std::vector<float> ws(s.n), wp(s.n), wsc(s.n);
        cpu::Add(ws.data(), a.data(), b.data(), s.n, s.nb);
        cpu::Mul(wp.data(), a.data(), b.data(), s.n, s.nb);
        cpu::Scale(wsc.data(), a.data(), -0.375f, s.n);
        // Mixed precision's gradient accumulation: f32 += widened x, exact up to one f32 rounding.
        const auto acc0 = Random(s.n);
        Dev acc(acc0, DType::kF32, sh32);
        gpu::AccumulateF32(acc.f(), da.p(), dt, s.n, nullptr);
        std::vector<float> wacc(s.n);
        for (int64_t i = 0; i < s.n; ++i) wacc[i] = acc0[i] + a[i];
        Case cs{name, dt == DType::kF32 ? 1e-6 : 1e-2};
        cs.Check("add", sum.Get(s.n, dt), ws);
        cs.Check("mul", prod.Get(s.n, dt), wp);
        cs.Check("scale", scaled.Get(s.n, dt), wsc);
        cs.Check("accumulate_f32", acc.Get(s.n, DType::kF32), wacc, 1e-7);
      }
    }
  }
  // Casts between the float types: the device must round exactly as the host (nearest even).
  for (DType from : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (DType to : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (int shift : {0, 1}) {
        char name[64];
        std::snprintf(name, sizeof name, "cast %s->%s n=100003 shift=%d", Name(from), Name(to),
                      shift);
        if (!Selected(name)) continue;
        const auto x = Round(Random(100003, 3.0f), from);
        Dev dx(x, from, shift * moreh::DTypeSize(from)),
            dy(100003 * 4, shift * moreh::DTypeSize(to));
        gpu::Cast(dy.p(), to, dx.p(), from, 100003, nullptr);
        Case cs{name, 1e-12};
        cs.Check("y", dy.Get(100003, to), Round(x, to));
      }
    }
  }
}

void CheckRmsNorm() {
  struct S {
    int64_t n, c;
    int shift = 0;  // elements off the vector alignment (the kernels' scalar version)
  };
  for (const S& s : {S{1, 1}, S{3, 17}, S{64, 768}, S{8, 4096}, S{3, 16384}, S{2048, 768},
                     S{5, 768, 1}, S{3, 16384, 1}}) {
    for (DType dt : kAllFloat) {
      for (float offset : {0.0f, 1.0f}) {  // 1: Gemma's (1 + w)
        if (offset != 0 && s.c != 768) continue;
        char name[128];
        std::snprintf(name, sizeof name, "rmsnorm %s n=%lld c=%lld shift=%d offset=%g", Name(dt),
                      (long long)s.n, (long long)s.c, s.shift, offset);
        if (!Selected(name)) continue;
        const int64_t sh = s.shift * moreh::DTypeSize(dt);
        const float eps = 1e-5f;
        const auto x = Round(Random(s.n * s.c, 2.0f), dt), w = Round(Random(s.c), dt),
                   dy = Round(Random(s.n * s.c), dt);
        Dev dx_in(x, dt, sh), dw_in(w, dt, sh), ddy(dy, dt, sh), y(s.n * s.c * 4, sh),
            dx(s.n * s.c * 4, sh), dw(s.c * 4);
        gpu::RmsNormForward(y.p(), dx_in.p(), dw_in.p(), s.n, s.c, eps, dt, nullptr, offset);
        gpu::RmsNormBackward(dx.p(), dw.f(), ddy.p(), dx_in.p(), dw_in.p(), s.n, s.c, eps, dt,
                             nullptr, offset);
        std::vector<float> wy(s.n * s.c), wdx(s.n * s.c), wdw(s.c);
        cpu::RmsNormForward(wy.data(), x.data(), w.data(), s.n, s.c, eps, offset);
        cpu::RmsNormBackward(wdx.data(), wdw.data(), dy.data(), x.data(), w.data(), s.n, s.c, eps,
                             offset);
        // dx_j is r w_j dy_j less a term of about the same size: with few columns (c = 1: exactly
        // r w dy (1 - x^2 r^2), ~1e-7 of each term) the result is all cancellation, and its error
        // is relative to the terms.
        double terms = 0;
        for (int64_t i = 0; i < s.n; ++i) {
          double ss = 0;
          for (int64_t j = 0; j < s.c; ++j) ss += double(x[i * s.c + j]) * x[i * s.c + j];
          const double r = 1.0 / std::sqrt(ss / s.c + eps);
          for (int64_t j = 0; j < s.c; ++j) {
            terms += std::pow(r * (offset + w[j]) * dy[i * s.c + j], 2);
          }
        }
        terms = std::sqrt(terms / (s.n * s.c));
        Case cs{name, Tol(dt, 1e-4)};
        cs.Check("y", y.Get(s.n * s.c, dt), wy);
        cs.Check("dx", dx.Get(s.n * s.c, dt), wdx, -1, terms);
        cs.Check("dw", dw.Get(s.c, DType::kF32), wdw);
      }
    }
  }
}

void CheckRotary() {
  struct S {
    int64_t b, t, h, d, offset;
    bool inverse;
  };
  for (const S& s : {S{1, 1, 1, 2, 0, false}, S{2, 5, 3, 8, 0, false}, S{1, 128, 4, 64, 7, false},
                     S{2, 33, 2, 128, 4000, true}}) {
    for (DType dt : kAllFloat) {
      char name[128];
      std::snprintf(name, sizeof name, "rotary %s b=%lld t=%lld h=%lld d=%lld offset=%lld inv=%d",
                    Name(dt), (long long)s.b, (long long)s.t, (long long)s.h, (long long)s.d,
                    (long long)s.offset, s.inverse);
      if (!Selected(name)) continue;
      const int64_t n = s.b * s.t * s.h * s.d;
      const auto x = Round(Random(n), dt);
      Dev dx(x, dt), dy(n * 4);
      // Llama 3's scaled frequencies on the larger shapes (the kernels take any table).
      cpu::RopeParams rope;
      if (s.d >= 64) {
        rope.theta = 500000;
        rope.type = cpu::RopeParams::kLlama3;
        rope.factor = 8;
        rope.original_max_position = 64;
      }
      const std::vector<float> inv = cpu::RopeInvFreq(s.d, rope);
      gpu::RotaryForward(dy.p(), dx.p(), s.b, s.t, s.h, s.d, inv.data(), s.offset, s.inverse, dt,
                         nullptr);
      std::vector<float> want(n);
      cpu::RotaryForward(want.data(), x.data(), s.b, s.t, s.h, s.d, inv.data(), s.offset,
                         s.inverse);
      Case cs{name, Tol(dt, 1e-4)};
      cs.Check("y", dy.Get(n, dt), want);
      // In place (y == x), as the runtime may run it.
      gpu::RotaryForward(dx.p(), dx.p(), s.b, s.t, s.h, s.d, inv.data(), s.offset, s.inverse, dt,
                         nullptr);
      cs.Check("y_in_place", dx.Get(n, dt), want);
    }
  }
}

void CheckAttention() {
  struct S {
    int64_t b, t, s, h, hkv, d;
    bool causal, mask;
    float q_scale = 1.0f;  // larger queries: sharper softmax, more online rescaling
    int64_t window = 0;    // sliding window (Mistral, Gemma 2)
    float softcap = 0.0f;  // Gemma 2's score soft-capping (the CUDA-core kernels only)
  };
  // Causal needs S == T; the non-causal cases include S != T (cross-attention shapes).
  const S shapes[] = {{1, 1, 1, 1, 1, 16, true, false},
                      {2, 37, 37, 4, 2, 64, true, true},
                      {1, 129, 129, 2, 1, 128, true, false},
                      {2, 65, 65, 4, 4, 80, false, true},
                      {1, 33, 33, 2, 2, 256, true, true},
                      {1, 300, 300, 8, 2, 64, true, false},
                      {1, 70, 70, 2, 1, 32, false, false},
                      {1, 37, 70, 4, 2, 64, false, true},
                      {2, 45, 19, 2, 1, 128, false, false},
                      {2, 257, 257, 4, 2, 128, true, true},
                      {1, 1024, 1024, 8, 2, 64, true, false},
                      {2, 150, 200, 4, 2, 128, false, true},
                      {1, 100, 130, 6, 3, 64, false, false},
                      {1, 5, 0, 2, 1, 64, false, false},
                      {1, 200, 200, 4, 4, 64, true, true, 4.0f},
                      // Sliding windows narrower than a tile and wider, with padding (rows past the
                      // window's first tiles see no key there).
                      {2, 150, 150, 4, 2, 64, true, true, 1.0f, 70},
                      {1, 129, 129, 2, 1, 128, true, false, 1.0f, 17},
                      // Gemma 2: soft-capped scores on a local (windowed) and a global layer.
                      {2, 75, 75, 4, 2, 64, true, true, 3.0f, 33, 5.0f},
                      {1, 70, 70, 2, 1, 128, true, false, 3.0f, 0, 5.0f}};
  // Each case on CUDA cores, and bf16 with head dim 64 or 128 also on both tensor-core versions.
  struct Run {
    DType dt;
    gpu::AttentionImpl impl;
  };
  for (const S& s : shapes) {
    std::vector<Run> runs{{DType::kF32, gpu::AttentionImpl::kSimple},
                          {DType::kBF16, gpu::AttentionImpl::kSimple}};
    if ((s.d == 64 || s.d == 128) && s.softcap == 0) {
      runs.push_back({DType::kBF16, gpu::AttentionImpl::kWmma});
      runs.push_back({DType::kBF16, gpu::AttentionImpl::kMma});
    }
    for (const Run& run : runs) {
      const DType dt = run.dt;
      const char* impl = run.impl == gpu::AttentionImpl::kMma    ? "mma"
                         : run.impl == gpu::AttentionImpl::kWmma ? "wmma"
                                                                 : "cuda_cores";
      char name[192];
      std::snprintf(name, sizeof name,
                    "attention %s %s b=%lld t=%lld s=%lld h=%lld hkv=%lld d=%lld causal=%d mask=%d "
                    "q_scale=%g window=%lld softcap=%g",
                    Name(dt), impl, (long long)s.b, (long long)s.t, (long long)s.s, (long long)s.h,
                    (long long)s.hkv, (long long)s.d, s.causal, s.mask, s.q_scale,
                    (long long)s.window, s.softcap);
      if (NotSimulated(name, TooLarge(s.b * s.t * s.s * s.h > 6e5)) || !Selected(name)) continue;
      const cpu::AttentionShape sh{
          s.b,      s.t,      s.s,      s.h,
          s.hkv,    s.d,      s.causal, 1.0f / std::sqrt(static_cast<float>(s.d)),
          s.window, s.softcap};
      const int64_t nq = s.b * s.t * s.h * s.d, nk = s.b * s.s * s.hkv * s.d, nl = s.b * s.h * s.t;
      const auto q = Round(Random(nq, s.q_scale), dt), k = Round(Random(nk), dt),
                 v = Round(Random(nk), dt), dout = Round(Random(nq), dt);
      // Padding: the first key of batch row 0 and the last keys of the last row masked, so some
      // query rows (row 0 of batch 0, causal) see no key at all.
      std::vector<int64_t> mask(s.b * s.s, 1);
      if (s.mask) {
        mask[0] = 0;
        for (int64_t j = s.s * 2 / 3; j < s.s; ++j) mask[(s.b - 1) * s.s + j] = 0;
      }
      Dev dq_in(q, dt), dk_in(k, dt), dv_in(v, dt), ddout(dout, dt), dmask(mask), out(nq * 4),
          lse(nl * 4), dq(nq * 4), dk(nk * 4), dv(nk * 4);
      const int64_t* mask_p = s.mask ? dmask.p<int64_t>() : nullptr;
      gpu::AttentionForward(out.p(), lse.f(), dq_in.p(), dk_in.p(), dv_in.p(), mask_p, sh, dt,
                            nullptr, run.impl);
      std::vector<float> wout(nq), wlse(nl), wdq(nq), wdk(nk), wdv(nk);
      cpu::AttentionForward(wout.data(), wlse.data(), q.data(), k.data(), v.data(),
                            s.mask ? mask.data() : nullptr, sh);
      // The tensor-core kernels round P (and dS) to bf16 before their products, as
      // FlashAttention-2 does: elementwise errors up to 2.7x the bf16 tolerance on these shapes
      // (a model of that rounding, 2026-11-28; 0.35x without it) but relative L2 errors of
      // 2.0e-3 to 2.4e-3. So for them: 4x the tolerance per element, and 6e-3 relative L2 on
      // every output.
      const bool tensor_cores = run.impl != gpu::AttentionImpl::kSimple;
      Case cs{name, tensor_cores ? 4 * Tol(dt, 1e-4) : Tol(dt, 1e-4), tensor_cores ? 6e-3 : 0};
      const auto got_out = out.Get(nq, dt);
      cs.Check("out", got_out, wout);
      cs.Check("lse", lse.Get(nl, DType::kF32), wlse);
      // The backward from the same saved values on both sides: the CPU reads the device's out
      // (rounded as the runtime would hold it) and the CPU's lse, the device its own lse.
      gpu::AttentionBackward(dq.p(), dk.p(), dv.p(), ddout.p(), dq_in.p(), dk_in.p(), dv_in.p(),
                             out.p(), lse.f(), mask_p, sh, dt, nullptr, run.impl);
      cpu::AttentionBackward(wdq.data(), wdk.data(), wdv.data(), dout.data(), q.data(), k.data(),
                             v.data(), got_out.data(), wlse.data(), s.mask ? mask.data() : nullptr,
                             sh);
      // dq and dk are sums of dS = P (dP - D), a difference that can cancel entirely (one key per
      // row: dS = 0 exactly, and the two sides' roundings of dP and D differ): their error is
      // relative to the products before the subtraction, which are of dv's size.
      const double ds_terms = Rms(wdv);
      const auto got_dq = dq.Get(nq, dt);
      cs.Check("dq", got_dq, wdq, -1, ds_terms);
      // No atomics: the same inputs give the same bits.
      dq.Poison();
      gpu::AttentionBackward(dq.p(), dk.p(), dv.p(), ddout.p(), dq_in.p(), dk_in.p(), dv_in.p(),
                             out.p(), lse.f(), mask_p, sh, dt, nullptr, run.impl);
      cs.Check("dq_repeat", dq.Get(nq, dt), got_dq, 0.0);
      cs.Check("dk", dk.Get(nk, dt), wdk, -1, ds_terms);
      cs.Check("dv", dv.Get(nk, dt), wdv);
    }
  }
}

// The mma kernels skip the mask arithmetic on interior tiles (every row of the block exists and
// sees every key of the tile); that path must give the masked path's bits. The same rows at T = 128
// (every tile interior) and T = 127 (the last query tile, and in the dk/dv pass the last query
// tile, not interior), S = 128, not causal; dout's row 127 is zero, so at T = 128 that row adds
// exact zeros to dk and dv.
void CheckAttentionInteriorBits() {
  for (int64_t d : {int64_t{64}, int64_t{128}}) {
    char name[128];
    std::snprintf(name, sizeof name, "attention bf16 mma interior tiles = masked path bits d=%lld",
                  (long long)d);
    if (!Selected(name)) continue;
    const int64_t s = 128, h = 2, hkv = 1, row = h * d;  // batch 1; row: one query row's elements
    const DType dt = DType::kBF16;
    const auto q = Round(Random(128 * row), dt), k = Round(Random(s * hkv * d), dt),
               v = Round(Random(s * hkv * d), dt);
    auto dout = Round(Random(128 * row), dt);
    std::fill(dout.begin() + 127 * row, dout.end(), 0.0f);
    Dev dk_in(k, dt), dv_in(v, dt);
    std::vector<float> got[2][5];  // per T: out, lse (rows 0..126 of each head), dq, dk, dv
    for (int run = 0; run < 2; ++run) {
      const int64_t t = 128 - run;
      const cpu::AttentionShape sh{1, t, s, h, hkv, d, false, 1.0f / std::sqrt(float(d))};
      Dev dq_in(std::vector<float>(q.begin(), q.begin() + t * row), dt),
          ddout(std::vector<float>(dout.begin(), dout.begin() + t * row), dt), out(t * row * 2),
          lse(h * t * 4), dq(t * row * 2), dk(s * hkv * d * 2), dv(s * hkv * d * 2);
      gpu::AttentionForward(out.p(), lse.f(), dq_in.p(), dk_in.p(), dv_in.p(), nullptr, sh, dt,
                            nullptr, gpu::AttentionImpl::kMma);
      gpu::AttentionBackward(dq.p(), dk.p(), dv.p(), ddout.p(), dq_in.p(), dk_in.p(), dv_in.p(),
                             out.p(), lse.f(), nullptr, sh, dt, nullptr, gpu::AttentionImpl::kMma);
      const auto all_lse = lse.Get(h * t, DType::kF32);
      for (int64_t head = 0; head < h; ++head) {  // lse is [B, H, T]
        got[run][1].insert(got[run][1].end(), all_lse.begin() + head * t,
                           all_lse.begin() + head * t + 127);
      }
      got[run][0] = out.Get(127 * row, dt);
      got[run][2] = dq.Get(127 * row, dt);
      got[run][3] = dk.Get(s * hkv * d, dt);
      got[run][4] = dv.Get(s * hkv * d, dt);
    }
    Case cs{name, 0};
    const char* what[5] = {"out", "lse", "dq", "dk", "dv"};
    for (int o = 0; o < 5; ++o) cs.Check(what[o], got[1][o], got[0][o]);
  }
}

void CheckSwiGlu() {
  struct S {
    int64_t n;
    int shift;  // elements off the vector alignment
  };
  for (const S& s : {S{1, 0}, S{1000, 0}, S{(1 << 20) + 5, 0}, S{1003, 1}}) {
    for (DType dt : kAllFloat) {
      for (bool gelu : {false, true}) {  // true: Gemma's GeGLU
        const int64_t n = s.n, sh = s.shift * moreh::DTypeSize(dt);
        char name[64];
        std::snprintf(name, sizeof name, "%s %s n=%lld shift=%d", gelu ? "geglu" : "swiglu",
                      Name(dt), (long long)n, s.shift);
        if (!Selected(name)) continue;
        const auto g = Round(Random(n, 3.0f), dt), u = Round(Random(n), dt),
                   dy = Round(Random(n), dt);
        Dev dg_in(g, dt, sh), du_in(u, dt, sh), ddy(dy, dt, sh), y(n * 4, sh), dg(n * 4, sh),
            du(n * 4, sh);
        gpu::SwiGluForward(y.p(), dg_in.p(), du_in.p(), n, dt, nullptr, gelu);
        gpu::SwiGluBackward(dg.p(), du.p(), ddy.p(), dg_in.p(), du_in.p(), n, dt, nullptr, gelu);
        std::vector<float> wy(n), wdg(n), wdu(n);
        (gelu ? cpu::GeGluForward : cpu::SwiGluForward)(wy.data(), g.data(), u.data(), n);
        (gelu ? cpu::GeGluBackward : cpu::SwiGluBackward)(wdg.data(), wdu.data(), dy.data(),
                                                          g.data(), u.data(), n);
        Case cs{name, Tol(dt)};
        cs.Check("y", y.Get(n, dt), wy);
        cs.Check("dgate", dg.Get(n, dt), wdg);
        cs.Check("dup", du.Get(n, dt), wdu);
      }
    }
  }
  // Gemma 2's logit soft-capping, forward and backward (from the output).
  for (DType dt : kAllFloat) {
    const int64_t n = 100003;
    char name[64];
    std::snprintf(name, sizeof name, "softcap %s n=%lld", Name(dt), (long long)n);
    if (!Selected(name)) continue;
    const auto x = Round(Random(n, 40.0f), dt), dy = Round(Random(n), dt);
    Dev dx_in(x, dt), ddy(dy, dt), y(n * 4), dx(n * 4);
    gpu::Softcap(y.p(), dx_in.p(), 30.0f, n, dt, nullptr);
    std::vector<float> wy(n), wdx(n);
    cpu::Softcap(wy.data(), x.data(), 30.0f, n);
    const auto y_dev = y.Get(n, dt);
    Dev dy_dev(Round(wy, dt), dt);
    gpu::SoftcapBackward(dx.p(), ddy.p(), dy_dev.p(), 30.0f, n, dt, nullptr);
    cpu::SoftcapBackward(wdx.data(), dy.data(), Round(wy, dt).data(), 30.0f, n);
    Case cs{name, Tol(dt)};
    cs.Check("y", y_dev, wy);
    cs.Check("dx", dx.Get(n, dt), wdx);
  }
}

void CheckCrossEntropy() {
  struct S {
    int64_t n, v;
  };
  for (const S& s : {S{1, 1}, S{7, 33}, S{64, 32000}, S{300, 1000}, S{70000, 5}}) {
    for (DType dt : kDTypes) {
      char name[96];
      std::snprintf(name, sizeof name, "cross_entropy %s n=%lld v=%lld", Name(dt), (long long)s.n,
                    (long long)s.v);
      if (NotSimulated(name, TooLarge(s.n > 10'000)) || !Selected(name)) continue;
      const int64_t ignore = -100;
      const auto x = Round(Random(s.n * s.v, 4.0f), dt);
      std::vector<int64_t> labels(s.n);
      std::uniform_int_distribution<int64_t> pick(0, s.v - 1);
      for (int64_t i = 0; i < s.n; ++i) labels[i] = (i % 5 == 3) ? ignore : pick(g_rng);
      Dev dx(x, dt), dlabels(labels), lse(s.n * 4), rows(s.n * 4), sum(16), loss(4), scratch(4),
          grad(s.n * s.v * 4), grad_mean(s.n * s.v * 4);
      const std::vector<float> dloss_v{0.75f};
      Dev dloss(dloss_v, DType::kF32);
      gpu::CrossEntropyForward(loss.f(), lse.f(), rows.f(), sum.p<double>(), dx.p(),
                               dlabels.p<int64_t>(), s.n, s.v, ignore, true, dt, nullptr);
      std::vector<float> wlse(s.n), wgrad(s.n * s.v);
      int64_t count = 0;
      const double wsum =
          cpu::CrossEntropyForward(wlse.data(), x.data(), labels.data(), s.n, s.v, ignore, &count);
      const float scale = count ? 1.0f / static_cast<float>(count) : 0.0f;
      // The scale given (1 / count) and the scale the device finds (mean): the same gradient.
      gpu::CrossEntropyBackward(grad.p(), dx.p(), dlabels.p<int64_t>(), lse.f(), s.n, s.v, ignore,
                                scale, dloss.f(), false, scratch.f(), dt, nullptr);
      gpu::CrossEntropyBackward(grad_mean.p(), dx.p(), dlabels.p<int64_t>(), lse.f(), s.n, s.v,
                                ignore, 1.0f, dloss.f(), true, scratch.f(), dt, nullptr);
      cpu::CrossEntropyBackward(wgrad.data(), x.data(), labels.data(), wlse.data(), s.n, s.v,
                                ignore, scale * 0.75f);
      double got_sum[2];
      MOREH_CUDA_CHECK(cudaDeviceSynchronize());
      MOREH_CUDA_CHECK(cudaMemcpy(got_sum, sum.p(), 16, cudaMemcpyDeviceToHost));
      Case cs{name, Tol(dt, 1e-5)};
      cs.Check("lse", lse.Get(s.n, DType::kF32), wlse);
      cs.Check("loss_sum", {static_cast<float>(got_sum[0])}, {static_cast<float>(wsum)});
      cs.Check("count", {static_cast<float>(got_sum[1])}, {static_cast<float>(count)});
      cs.Check("loss_mean", loss.Get(1, DType::kF32),
               {count ? static_cast<float>(wsum / static_cast<double>(count)) : std::nanf("")});
      // The gradient is exp(x - lse) from each side's own lse: an lse of ~17 (v = 32000 logits of
      // scale 4) is known to a few ulp (~2e-6 absolute), which is that much relative error in
      // every probability, on top of exp's own (found at 1.13x a 1e-5 tolerance by the emulator).
      const double grad_tol = Tol(dt, 4e-5);
      cs.Check("dlogits", grad.Get(s.n * s.v, dt), wgrad, grad_tol);
      cs.Check("dlogits_mean", grad_mean.Get(s.n * s.v, dt), wgrad, grad_tol);
    }
  }
}

void CheckSumMiddle() {
  struct S {
    int64_t outer, r, inner;
  };
  for (const S& s : {S{1, 1, 1}, S{3, 100, 1}, S{2, 1000, 1}, S{4, 17, 96}, S{1, 4096, 768}}) {
    for (DType dt : kAllFloat) {
      char name[96];
      std::snprintf(name, sizeof name, "sum_middle %s outer=%lld r=%lld inner=%lld", Name(dt),
                    (long long)s.outer, (long long)s.r, (long long)s.inner);
      if (!Selected(name)) continue;
      const auto x = Round(Random(s.outer * s.r * s.inner), dt);
      Dev dx(x, dt), out(s.outer * s.inner * 4);
      gpu::SumMiddle(out.p(), dx.p(), s.outer, s.r, s.inner, dt, nullptr);
      std::vector<float> want(s.outer * s.inner);
      cpu::SumMiddle(want.data(), x.data(), s.outer, s.r, s.inner);
      Case cs{name, Tol(dt, 1e-5)};
      cs.Check("out", out.Get(s.outer * s.inner, dt), want);
    }
  }
}

// The loss scaler's overflow scan: clean buffers leave the flag at 0; one inf or NaN anywhere
// (first, middle, last element; past 65,536 blocks' worth) sets it.
void CheckNonFinite() {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  struct S {
    int64_t n, at;
    float bad;
  };
  for (const S& s : {S{1, -1, 0}, S{1, 0, inf}, S{1000, 999, -inf}, S{1000, 500, nan},
                     S{70000001, -1, 0}, S{70000001, 70000000, nan}, S{70000001, 0, inf}}) {
    char name[96];
    std::snprintf(name, sizeof name, "non_finite n=%lld at=%lld value=%g", (long long)s.n,
                  (long long)s.at, s.bad);
    if (NotSimulated(name, TooLarge(s.n > 10'000'000)) || !Selected(name)) continue;
    std::vector<float> x = Random(s.n);
    if (s.at >= 0) x[s.at] = s.bad;
    Dev dx(x, DType::kF32), flag(std::vector<int64_t>{0});
    gpu::FlagNonFinite(static_cast<int*>(flag.p()), dx.f(), s.n, nullptr);
    const auto got = flag.Get(1, DType::kI64);
    Case cs{name, 0};
    cs.Check("flag", got, {s.at >= 0 ? 1.0f : 0.0f});
  }
}

void CheckSumOfSquares() {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{70001}, int64_t{70000001}}) {
    const std::string name = "sum_of_squares n=" + std::to_string(n);
    if (NotSimulated(name, TooLarge(n > 10'000'000)) || !Selected(name)) continue;
    const std::vector<float> x = Random(n);
    double want = 0.0;
    for (float v : x) want += static_cast<double>(v) * v;
    Dev dx(x, DType::kF32), out(std::vector<int64_t>{0});  // 8 zero bytes: f64 0.0
    gpu::SumOfSquares(out.p<double>(), dx.f(), n, nullptr);
    MOREH_CUDA_CHECK(cudaDeviceSynchronize());
    double got = 0.0;
    MOREH_CUDA_CHECK(cudaMemcpy(&got, out.p(), sizeof got, cudaMemcpyDeviceToHost));
    Case cs{name, 1e-6};
    // f64 sums in another order: equal to rounding.
    cs.Check("sum / CPU sum", {static_cast<float>(got / want)}, {1.0f});
  }
}

void CheckAdamW() {
  // Three tensors with a bf16 copy, and 30 without (more than one launch's worth of tensors).
  // Misaligned: every other tensor's arrays one element off the vector alignment (the kernel's
  // scalar version, in the same call as the vectorised one).
  struct Variant {
    DType grad_type;
    bool copy;
    std::vector<int64_t> sizes;
    bool misaligned = false;
  };
  const Variant variants[] = {{DType::kF32, true, {1, 100000, 70001}},
                              {DType::kBF16, true, {1, 100000, 70001}},
                              {DType::kF32, false, std::vector<int64_t>(30, 1000)},
                              {DType::kBF16, true, {70001, 1003, 5, 100000}, true}};
  for (const Variant& var : variants) {
    const DType grad_type = var.grad_type;
    char name[96];
    std::snprintf(name, sizeof name, "adamw grad=%s copy=%s tensors=%zu%s steps=1..3",
                  Name(grad_type), var.copy ? "bf16" : "none", var.sizes.size(),
                  var.misaligned ? " misaligned" : "");
    if (!Selected(name)) continue;
    const std::vector<int64_t>& sizes = var.sizes;
    std::vector<std::vector<float>> p, m, v;
    std::vector<std::unique_ptr<Dev>> dev;  // param, m, v, grad, copy per tensor
    std::vector<gpu::AdamWTensor> list;
    for (int64_t n : sizes) {
      const int64_t off = var.misaligned && p.size() % 2 == 0;  // elements
      p.push_back(Random(n));
      m.push_back(std::vector<float>(n, 0.0f));
      v.push_back(std::vector<float>(n, 0.0f));
      dev.push_back(std::make_unique<Dev>(p.back(), DType::kF32, off * 4));
      dev.push_back(std::make_unique<Dev>(m.back(), DType::kF32, off * 4));
      dev.push_back(std::make_unique<Dev>(v.back(), DType::kF32, off * 4));
      dev.push_back(std::make_unique<Dev>(n * 4, off * moreh::DTypeSize(grad_type)));
      dev.push_back(std::make_unique<Dev>(n * 2, off * 2));
      const size_t b = dev.size() - 5;
      list.push_back({dev[b]->f(), dev[b + 1]->f(), dev[b + 2]->f(), dev[b + 3]->p(), grad_type,
                      var.copy ? dev[b + 4]->p() : nullptr, DType::kBF16, n});
    }
    Case cs{name, 1e-5};
    for (int64_t step = 1; step <= 3; ++step) {
      const cpu::AdamWParams hp{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step};
      for (size_t t = 0; t < list.size(); ++t) {
        const auto g = Round(Random(sizes[t]), grad_type);
        Dev tmp(g, grad_type);
        MOREH_CUDA_CHECK(cudaMemcpy(dev[5 * t + 3]->p(), tmp.p(),
                                    sizes[t] * moreh::DTypeSize(grad_type),
                                    cudaMemcpyDeviceToDevice));
        cpu::AdamWStep(p[t].data(), m[t].data(), v[t].data(), g.data(), sizes[t], hp);
      }
      gpu::AdamWStep(list.data(), static_cast<int>(list.size()), hp, nullptr);
    }
    for (size_t t = 0; t < list.size(); ++t) {
      cs.Check("param", dev[5 * t]->Get(sizes[t], DType::kF32), p[t]);
      cs.Check("m", dev[5 * t + 1]->Get(sizes[t], DType::kF32), m[t]);
      cs.Check("v", dev[5 * t + 2]->Get(sizes[t], DType::kF32), v[t]);
      if (var.copy)
        cs.Check("bf16 copy", dev[5 * t + 4]->Get(sizes[t], DType::kBF16),
                 Round(p[t], DType::kBF16), 1e-2);
    }
  }
}

// The caching device allocator: capacity, peak and the out-of-memory error as on the CPU.
void CheckAllocator() {
  const char* name = "device_allocator capacity/peak/oom/reuse";
  if (!Selected(name)) return;
  Case cs{name, 0};
  moreh::runtime::Allocator* a = gpu::CudaAllocator(0);
  const int64_t cap = a->capacity();
  auto b1 = a->Allocate(1 << 20);
  void* first = b1->data();
  const int64_t peak = a->peak_bytes();
  b1.reset();
  auto b2 = a->Allocate(1 << 20);  // the same size again: the cached block
  const bool reused = b2->data() == first;
  bool oom = false;
  try {
    a->Allocate(cap + 1);
  } catch (const moreh::OutOfMemoryError& e) {
    oom = e.device() == "cuda:0" && e.requested() >= cap + 1;
  }
  cs.Check("reused", {reused ? 1.0f : 0.0f}, {1.0f});
  cs.Check("peak>=1MiB", {peak >= (1 << 20) ? 1.0f : 0.0f}, {1.0f});
  cs.Check("oom", {oom ? 1.0f : 0.0f}, {1.0f});
}

// The checker's own rules, on the host (no GPU needed; CI runs this): what passes and what fails.
int SelfTest() {
  int failures = 0;
  auto expect = [&](bool want, const std::vector<float>& got, const std::vector<float>& ref,
                    double tol, const char* what, double max_rel_l2 = 0) {
    std::string detail;
    const bool ok = Close(got, ref, tol, &detail, max_rel_l2);
    std::printf("%s %s: %s (%s)\n", ok == want ? "ok  " : "FAIL", what, ok ? "passes" : "fails",
                detail.c_str());
    failures += ok != want;
  };
  const float nan = std::nanf(""), inf = std::numeric_limits<float>::infinity();
  expect(true, {1.0f, 2.0f, 3.0f}, {1.0f, 2.0f, 3.0f}, 0.0, "equal values at tolerance 0");
  expect(true, {1.001f, 2.0f}, {1.0f, 2.0f}, 1e-3, "an error inside tol * (|ref| + rms)");
  expect(false, {1.01f, 2.0f}, {1.0f, 2.0f}, 1e-3, "an error outside it");
  expect(false, {nan, 2.0f}, {1.0f, 2.0f}, 1e-2, "NaN where the reference has a number (poison)");
  expect(true, {nan, 2.0f}, {nan, 2.0f}, 1e-2, "NaN where the reference has NaN");
  expect(false, {1.0f, 2.0f}, {nan, 2.0f}, 1e-2, "a number where the reference has NaN");
  expect(true, {-inf, 0.5f}, {-inf, 0.5f}, 1e-6, "matching infinities (rows that see no key)");
  expect(false, {-1e30f, 0.5f}, {-inf, 0.5f}, 1e-2, "a finite value for an infinity");
  expect(true, {1e-7f, 100.0f}, {0.0f, 100.0f}, 1e-6, "a tiny error beside a large rms");
  expect(true, {1.01f, 2.0f}, {1.0f, 2.0f}, 1e-2, "inside both bounds", 1e-2);
  expect(false, {1.01f, 2.02f}, {1.0f, 2.0f}, 1e-2, "each element inside, the L2 error not", 5e-3);
  // A poisoned device buffer reads back as NaN in every dtype the checks use.
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<unsigned char> bytes(DTypeSize(dt), 0xff);
    float v = 0;
    moreh::ConvertElements(bytes.data(), dt, &v, DType::kF32, 1);
    std::printf("%s poison of %s reads as NaN\n", std::isnan(v) ? "ok  " : "FAIL", Name(dt));
    failures += !std::isnan(v);
  }
  std::printf("self-test: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--self-test") return SelfTest();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--filter" && i + 1 < argc) {
      g_filter = argv[++i];
    } else if (a == "--exclude" && i + 1 < argc) {
      g_exclude = argv[++i];
    } else if (a == "--seed" && i + 1 < argc) {
      g_rng.seed(std::stoull(argv[++i]));
    } else {
      std::fprintf(
          stderr, "usage: %s [--filter SUBSTRING] [--exclude SUBSTRING] [--seed N] | --self-test\n",
          argv[0]);
      return 2;
    }
  }
  if (gpu::DeviceCount() == 0) {
    std::printf(
        "SKIP: no CUDA device on this machine; the kernels are built, not run "
        "(scripts/gpu-check runs them on a GPU machine)\n");
    return 77;
  }
  std::printf("device 0: %s, %.1f GiB\n", gpu::DeviceName(0).c_str(),
              gpu::DeviceMemoryBytes(0) / 1073741824.0);
  // One family's exception (a failed launch, say) is reported and the others still run.
  const std::pair<const char*, void (*)()> families[] = {{"gemm", CheckGemm},
                                                         {"embedding", CheckEmbedding},
                                                         {"elementwise", CheckElementwise},
                                                         {"rmsnorm", CheckRmsNorm},
                                                         {"rotary", CheckRotary},
                                                         {"attention", CheckAttention},
                                                         {"attention", CheckAttentionInteriorBits},
                                                         {"swiglu", CheckSwiGlu},
                                                         {"cross_entropy", CheckCrossEntropy},
                                                         {"sum_middle", CheckSumMiddle},
                                                         {"non_finite", CheckNonFinite},
                                                         {"sum_of_squares", CheckSumOfSquares},
                                                         {"adamw", CheckAdamW},
                                                         {"device_allocator", CheckAllocator}};
  for (const auto& [family, check] : families) {
    try {
      check();
    } catch (const std::exception& e) {
      std::printf("FAIL %s: exception, the family's remaining cases did not run: %s\n", family,
                  e.what());
      cudaGetLastError();  // clear a non-sticky error so that the next family can run
      ++g_failed;
    }
  }
  std::printf("kernel_check: %d passed, %d failed", g_passed, g_failed);
  if (kSimulated) std::printf(", %d not simulated", g_not_simulated);
  std::printf("\n");
  if (g_passed + g_failed == 0) {  // a filter that matches nothing checks nothing: not a pass
    std::printf("kernel_check: no case matches --filter '%s' --exclude '%s'\n", g_filter.c_str(),
                g_exclude.c_str());
    return 1;
  }
  return g_failed ? 1 : 0;
}
