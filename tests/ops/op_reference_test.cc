// Every op's forward against a float64 reference written here, naively, from the definition
// (never from the kernels' code). Fresh random inputs per run; the seed is printed on failure.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "runtime/lazy.h"
#include "tests/test_util.h"

namespace moreh {
namespace {

using runtime::Tensor;
using testing::MaxRelError;
using testing::RandomInts;
using testing::RandomTensor;
using D = std::vector<double>;

std::vector<Tensor> RunOp(OpKind op, const std::vector<Tensor>& ins, const Attrs& attrs = {}) {
  std::vector<moreh::Tensor> t;
  for (const Tensor& x : ins) t.push_back(moreh::Tensor::FromData(x));
  std::vector<moreh::Tensor> out = lazy::Record(op, t, attrs);
  std::vector<Tensor> r;
  for (auto& o : out) r.push_back(o.data());
  return r;
}

D Dbl(const Tensor& t) {
  const std::vector<float> f = t.ToFloats();
  return D(f.begin(), f.end());
}

constexpr double kTol = 1e-5;

class OpReference : public ::testing::Test {
 protected:
  std::mt19937_64 rng{testing::TestSeed()};
  Tensor R(const Shape& s, float scale = 1.0f) { return RandomTensor(s, rng, scale); }
  void TearDown() override {
    if (HasFailure()) std::cerr << "MOREH_TEST_SEED=" << testing::TestSeed() << "\n";
  }
};

TEST_F(OpReference, MatMulAllLayouts) {
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      for (int batched = 0; batched < 2; ++batched) {
        const int64_t B = 3, M = 5, N = 7, K = 9;
        const Shape as = ta ? Shape{B, K, M} : Shape{B, M, K};
        const Shape bs2 = tb ? Shape{N, K} : Shape{K, N};
        Shape bs = bs2;
        if (batched) bs.insert(bs.begin(), B);
        if (ta && !batched) continue;  // rejected combination, tested elsewhere
        const Tensor a = R(as), b = R(bs);
        const D av = Dbl(a), bv = Dbl(b);
        D ref(B * M * N, 0.0);
        for (int64_t z = 0; z < B; ++z)
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              double acc = 0;
              for (int64_t k = 0; k < K; ++k) {
                const double x = ta ? av[z * K * M + k * M + i] : av[z * M * K + i * K + k];
                const int64_t bo = batched ? z * K * N : 0;
                const double y = tb ? bv[bo + j * K + k] : bv[bo + k * N + j];
                acc += x * y;
              }
              ref[(z * M + i) * N + j] = acc;
            }
        const Tensor c =
            RunOp(OpKind::kMatMul, {a, b}, {{"trans_a", int64_t{ta}}, {"trans_b", int64_t{tb}}})[0];
        EXPECT_EQ(c.shape(), Shape({B, M, N}));
        EXPECT_LE(MaxRelError(c.ToFloats(), ref), kTol) << ta << tb << batched;
      }
    }
  }
}

TEST_F(OpReference, EmbeddingAndItsBackward) {
  const Tensor w = R({11, 6}), ids = RandomInts({3, 4}, rng, 11);
  const D wv = Dbl(w);
  const auto iv = ids.ToInts();
  D ref;
  for (int64_t id : iv)
    for (int c = 0; c < 6; ++c) ref.push_back(wv[id * 6 + c]);
  EXPECT_EQ(MaxRelError(RunOp(OpKind::kEmbedding, {w, ids})[0].ToFloats(), ref), 0.0);
  const Tensor dy = R({3, 4, 6});
  const D dv = Dbl(dy);
  D dref(11 * 6, 0.0);
  for (size_t i = 0; i < iv.size(); ++i)
    for (int c = 0; c < 6; ++c) dref[iv[i] * 6 + c] += dv[i * 6 + c];
  const Tensor dw =
      RunOp(OpKind::kEmbeddingBackward, {dy, ids}, {{"num_embeddings", int64_t{11}}})[0];
  EXPECT_LE(MaxRelError(dw.ToFloats(), dref), kTol);
}

TEST_F(OpReference, ElementwiseWithBroadcast) {
  const Tensor a = R({4, 3, 5}), b = R({3, 5}), c = R({4, 3, 5});
  const D av = Dbl(a), bv = Dbl(b), cv = Dbl(c);
  D add, mul, mulfull, sc;
  for (size_t i = 0; i < av.size(); ++i) {
    add.push_back(av[i] + bv[i % bv.size()]);
    mul.push_back(av[i] * bv[i % bv.size()]);
    mulfull.push_back(av[i] * cv[i]);
    sc.push_back(av[i] * -0.3);
  }
  EXPECT_LE(MaxRelError(RunOp(OpKind::kAdd, {a, b})[0].ToFloats(), add), kTol);
  EXPECT_LE(MaxRelError(RunOp(OpKind::kMul, {a, b})[0].ToFloats(), mul), kTol);
  EXPECT_LE(MaxRelError(RunOp(OpKind::kMul, {a, c})[0].ToFloats(), mulfull), kTol);
  EXPECT_LE(MaxRelError(RunOp(OpKind::kScale, {a}, {{"scale", -0.3}})[0].ToFloats(), sc), kTol);
}

TEST_F(OpReference, RmsNorm) {
  const int64_t N = 7, C = 33;
  const Tensor x = R({N, C}, 3.0f), w = R({C});
  const D xv = Dbl(x), wv = Dbl(w);
  D ref;
  for (int64_t i = 0; i < N; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < C; ++j) ss += xv[i * C + j] * xv[i * C + j];
    const double r = 1.0 / std::sqrt(ss / C + 1e-6);
    for (int64_t j = 0; j < C; ++j) ref.push_back(xv[i * C + j] * r * wv[j]);
  }
  EXPECT_LE(MaxRelError(RunOp(OpKind::kRmsNorm, {x, w}, {{"eps", 1e-6}})[0].ToFloats(), ref), kTol);
}

TEST_F(OpReference, RotaryHuggingFaceConvention) {
  const int64_t B = 2, T = 9, H = 3, Dh = 16;
  const double theta = 10000.0;
  const Tensor x = R({B, T, H, Dh});
  const D xv = Dbl(x);
  D ref(xv.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Dh; ++i) {
          const int64_t k = i % (Dh / 2);
          // transformers computes inv_freq and the angle in f32
          const float inv =
              1.0f / std::pow(static_cast<float>(theta), static_cast<float>(2 * k) / Dh);
          const double ang = static_cast<double>(static_cast<float>(t + 2) * inv);
          const int64_t base = ((b * T + t) * H + h) * Dh;
          const double rot = i < Dh / 2 ? -xv[base + i + Dh / 2] : xv[base + i - Dh / 2];
          ref[base + i] = xv[base + i] * std::cos(ang) + rot * std::sin(ang);
        }
  const Tensor y =
      RunOp(OpKind::kRotary, {x}, {{"theta", theta}, {"position_offset", int64_t{2}}})[0];
  EXPECT_LE(MaxRelError(y.ToFloats(), ref), kTol);
}

TEST_F(OpReference, AttentionCausalGroupedPadded) {
  const int64_t B = 2, T = 70, H = 4, Hkv = 2, Dh = 8;  // T spans two key tiles
  const Tensor q = R({B, T, H, Dh}), k = R({B, T, Hkv, Dh}), v = R({B, T, Hkv, Dh});
  std::vector<int64_t> m(B * T, 1);
  for (int p = 0; p < 9; ++p) m[T + T - 1 - p] = 0;
  const Tensor mask = Tensor::FromVector(m, {B, T});
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  const D qv = Dbl(q), kv = Dbl(k), vv = Dbl(v);
  D out(B * T * H * Dh), lse(B * H * T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> s;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j <= i; ++j) {
          if (!m[b * T + j]) continue;
          double acc = 0;
          for (int64_t d = 0; d < Dh; ++d)
            acc += qv[((b * T + i) * H + h) * Dh + d] * kv[((b * T + j) * Hkv + h / 2) * Dh + d];
          s.push_back(acc * scale);
          keys.push_back(j);
        }
        double mx = -1e300, sum = 0;
        for (double x : s) mx = std::max(mx, x);
        for (double x : s) sum += std::exp(x - mx);
        lse[(b * H + h) * T + i] = mx + std::log(sum);
        for (int64_t d = 0; d < Dh; ++d) {
          double acc = 0;
          for (size_t n = 0; n < s.size(); ++n)
            acc += std::exp(s[n] - mx) / sum * vv[((b * T + keys[n]) * Hkv + h / 2) * Dh + d];
          out[((b * T + i) * H + h) * Dh + d] = acc;
        }
      }
  const auto r =
      RunOp(OpKind::kAttention, {q, k, v, mask}, {{"causal", int64_t{1}}, {"scale", scale}});
  EXPECT_LE(MaxRelError(r[0].ToFloats(), out), kTol);
  EXPECT_LE(MaxRelError(r[1].ToFloats(), lse), kTol);
}

TEST_F(OpReference, AttentionRowWithNoVisibleKeyIsZero) {
  const Tensor q = R({1, 3, 1, 4}), k = R({1, 3, 1, 4}), v = R({1, 3, 1, 4});
  const Tensor mask = Tensor::FromVector<int64_t>({0, 1, 1}, {1, 3});  // left padding
  const auto r =
      RunOp(OpKind::kAttention, {q, k, v, mask}, {{"causal", int64_t{1}}, {"scale", 0.5}});
  const auto o = r[0].ToFloats();
  for (int d = 0; d < 4; ++d) EXPECT_EQ(o[d], 0.0f);  // query 0 sees only the padded key 0
  EXPECT_TRUE(std::isinf(r[1].ToFloats()[0]));
  EXPECT_TRUE(std::isfinite(r[1].ToFloats()[1]));
}

TEST_F(OpReference, SwiGlu) {
  const Tensor g = R({5, 9}, 3.0f), u = R({5, 9});
  const D gv = Dbl(g), uv = Dbl(u);
  D ref;
  for (size_t i = 0; i < gv.size(); ++i) ref.push_back(gv[i] / (1 + std::exp(-gv[i])) * uv[i]);
  EXPECT_LE(MaxRelError(RunOp(OpKind::kSwiGlu, {g, u})[0].ToFloats(), ref), kTol);
}

TEST_F(OpReference, CrossEntropyShiftedWithIgnoredLabels) {
  const int64_t B = 3, T = 6, V = 300;
  const Tensor logits = R({B, T, V}, 4.0f);
  std::vector<int64_t> lab = RandomInts({B, T}, rng, V).ToInts();
  lab[2] = lab[7] = -100;
  const Tensor labels = Tensor::FromVector(lab, {B, T});
  const D lv = Dbl(logits);
  double total = 0;
  int count = 0;
  D lse(B * T);
  for (int64_t r = 0; r < B * T; ++r) {
    double mx = -1e300, sum = 0;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, lv[r * V + j]);
    for (int64_t j = 0; j < V; ++j) sum += std::exp(lv[r * V + j] - mx);
    lse[r] = mx + std::log(sum);
    const int64_t t = r % T;
    if (t == T - 1) continue;
    const int64_t y = lab[r + 1];
    if (y == -100) continue;
    total += lse[r] - lv[r * V + y];
    ++count;
  }
  const auto out = RunOp(OpKind::kCrossEntropy, {logits, labels},
                         {{"ignore_index", int64_t{-100}}, {"shift", int64_t{1}}});
  EXPECT_LE(MaxRelError(out[0].ToFloats(), {total / count}), kTol);
  EXPECT_LE(MaxRelError(out[1].ToFloats(), lse), kTol);
  // All labels ignored: NaN, as PyTorch's mean reduction gives.
  const Tensor none = Tensor::FromVector(std::vector<int64_t>(B * T, -100), {B, T});
  EXPECT_TRUE(std::isnan(RunOp(OpKind::kCrossEntropy, {logits, none}, {})[0].ToFloats()[0]));
  // A label outside [0, V) is an error naming the op.
  lab[0] = V;
  EXPECT_ERROR_MENTIONS(RunOp(OpKind::kCrossEntropy, {logits, Tensor::FromVector(lab, {B, T})}, {}),
                        "cross_entropy", "outside [0, 300)");
}

TEST_F(OpReference, ReductionsAndViews) {
  const Tensor x = R({3, 4, 5});
  const D xv = Dbl(x);
  D s02(4, 0.0), m1(15, 0.0);
  double all = 0;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 4; ++j)
      for (int64_t k = 0; k < 5; ++k) {
        const double v = xv[(i * 4 + j) * 5 + k];
        s02[j] += v;
        m1[i * 5 + k] += v / 4;
        all += v;
      }
  const Tensor s = RunOp(OpKind::kSum, {x}, {{"axes", Shape{0, 2}}, {"keepdim", int64_t{1}}})[0];
  EXPECT_EQ(s.shape(), Shape({1, 4, 1}));
  EXPECT_LE(MaxRelError(s.ToFloats(), s02), kTol);
  EXPECT_LE(MaxRelError(RunOp(OpKind::kMean, {x}, {{"axes", Shape{1}}})[0].ToFloats(), m1), kTol);
  // A full sum of random signs can cancel to near zero: measure its error against the size of the
  // terms it adds, not against the (possibly tiny) result.
  double abs_sum = 0;
  for (double v : xv) abs_sum += std::fabs(v);
  EXPECT_LE(std::fabs(RunOp(OpKind::kSum, {x})[0].ToFloats()[0] - all), kTol * abs_sum);
  const Tensor t = RunOp(OpKind::kTranspose, {x}, {{"dim0", int64_t{0}}, {"dim1", int64_t{2}}})[0];
  EXPECT_EQ(t.shape(), Shape({5, 4, 3}));
  EXPECT_EQ(t.ToFloats()[1], x.ToFloats()[20]);  // t[0][0][1] = x[1][0][0]
  const Tensor r = RunOp(OpKind::kReshape, {x}, {{"shape", Shape{-1, 10}}})[0];
  EXPECT_EQ(r.shape(), Shape({6, 10}));
  EXPECT_EQ(r.buffer(), x.buffer());  // a view, no copy
}

TEST_F(OpReference, CastRoundsToNearestEven) {
  const Tensor x = R({64}, 100.0f);
  const auto y = RunOp(OpKind::kCast, {x}, {{"dtype", std::string("bf16")}})[0];
  EXPECT_EQ(y.dtype(), DType::kBF16);
  const auto xv = x.ToFloats(), yv = y.ToFloats();
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_EQ(yv[i], BF16ToF32(F32ToBF16(xv[i])));
  const auto back = RunOp(OpKind::kCast, {y}, {{"dtype", std::string("f32")}})[0];
  EXPECT_EQ(back.ToFloats(), yv);
}

TEST_F(OpReference, BF16ComputeWithinBF16Tolerance) {
  const Tensor a = R({8, 16}).To(DType::kBF16), b = R({12, 16}).To(DType::kBF16);
  const D av = Dbl(a), bv = Dbl(b);
  D ref;
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 12; ++j) {
      double acc = 0;
      for (int k = 0; k < 16; ++k) acc += av[i * 16 + k] * bv[j * 16 + k];
      ref.push_back(acc);
    }
  const Tensor c = RunOp(OpKind::kMatMul, {a, b}, {{"trans_b", int64_t{1}}})[0];
  EXPECT_EQ(c.dtype(), DType::kBF16);
  EXPECT_LE(MaxRelError(c.ToFloats(), ref), 1e-2);
}

TEST_F(OpReference, AdamWMatchesTorchFormula) {
  const int64_t n = 100;
  const Tensor p = R({n}), g = R({n}), m = R({n}, 0.1f), v = R({n}, 0.1f);
  std::vector<float> vv = v.ToFloats();
  for (float& x : vv) x = std::fabs(x);
  const Tensor vpos = Tensor::FromVector(vv, {n});
  const double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  const int step = 4;
  const Tensor hp = Tensor::FromVector<float>({static_cast<float>(lr), step}, {2});
  const auto out = RunOp(OpKind::kAdamW, {p, g, m, vpos, hp},
                         {{"beta1", b1}, {"beta2", b2}, {"eps", eps}, {"weight_decay", wd}});
  const D pv = Dbl(p), gv = Dbl(g), mv = Dbl(m);
  D rp, rm, rv;
  for (int64_t i = 0; i < n; ++i) {
    const double mi = b1 * mv[i] + (1 - b1) * gv[i];
    const double vi = b2 * vv[i] + (1 - b2) * gv[i] * gv[i];
    const double denom = std::sqrt(vi) / std::sqrt(1 - std::pow(b2, step)) + eps;
    rp.push_back(pv[i] * (1 - lr * wd) - lr / (1 - std::pow(b1, step)) * mi / denom);
    rm.push_back(mi);
    rv.push_back(vi);
  }
  EXPECT_LE(MaxRelError(out[0].ToFloats(), rp), kTol);
  EXPECT_LE(MaxRelError(out[1].ToFloats(), rm), kTol);
  EXPECT_LE(MaxRelError(out[2].ToFloats(), rv), kTol);
}

}  // namespace
}  // namespace moreh
