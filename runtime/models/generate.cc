#include "runtime/models/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <utility>

#include "runtime/core/error.h"
#include "runtime/device.h"
#include "runtime/functional.h"
#include "runtime/lazy.h"
#include "runtime/models/emitter.h"
#include "runtime/models/llama_def.h"

namespace moreh::models {
namespace {

// The definition's forward over positions [start, start + T) with the layers' KV caches: rotary
// embeddings from `start`, and each attention over its layer's cache (written first).
class KvCacheEmitter : public LazyEmitter {
 public:
  KvCacheEmitter(std::function<Tensor(const std::string&)> weight, std::vector<runtime::Tensor>* k,
                 std::vector<runtime::Tensor>* v, int64_t start)
      : LazyEmitter(std::move(weight)), k_(k), v_(v), start_(start) {}

  std::vector<Val> Emit(OpKind op, const std::vector<Val>& in, Attrs attrs) override {
    if (op == OpKind::kRotary) attrs.Set("position_offset", start_);
    if (op != OpKind::kAttention) return LazyEmitter::Emit(op, in, std::move(attrs));
    MOREH_CHECK(in.size() == 3, "generation: attention with a padding mask (one prompt, no pads)");
    const size_t layer = layer_++;
    MOREH_CHECK(layer < k_->size(), "generation: more attention layers than caches");
    const Shape kshape = Info(in[1]).shape;  // [1, T, Hkv, D]
    const int64_t T = kshape[1], end = start_ + T;
    for (int kv = 0; kv < 2; ++kv) {
      const runtime::Tensor& cache = (kv == 0 ? *k_ : *v_)[layer];
      MOREH_CHECK(end <= cache.size(0), "generation: {} positions past the cache's {}", end,
                  cache.size(0));
      const runtime::Tensor now = tensor(in[1 + kv]).data().Contiguous();  // runs the graph so far
      cache.Slice(0, start_, end).CopyFrom(now.View({T, kshape[2], kshape[3]}));
    }
    int64_t first = 0;
    if (T == 1) {
      // One query at the newest position sees every cached key; a sliding window its last ones.
      const int64_t window = attrs.Has("window") ? attrs.GetInt("window") : 0;
      if (window > 0) first = std::max<int64_t>(0, end - window);
      attrs.Set("causal", int64_t{0});
      attrs.Set("window", int64_t{0});
    } else {
      MOREH_CHECK(start_ == 0, "generation: several new positions after the prompt");
    }
    std::vector<Val> qkv{in[0]};
    for (int kv = 0; kv < 2; ++kv) {
      const runtime::Tensor rows = (kv == 0 ? *k_ : *v_)[layer].Slice(0, first, end);
      qkv.push_back(
          Hold(Tensor::FromData(rows.View({1, end - first, kshape[2], kshape[3]}), false)));
    }
    return LazyEmitter::Emit(op, qkv, std::move(attrs));
  }

 private:
  std::vector<runtime::Tensor>*k_, *v_;
  int64_t start_;
  size_t layer_ = 0;
};

int64_t Argmax(const std::vector<float>& x) {  // the first of equal maxima, as torch.argmax
  return std::max_element(x.begin(), x.end()) - x.begin();
}

// transformers' sampling: logits / temperature, the top-p filter (the most likely tokens until
// their probability reaches top_p; at least one), then a draw.
int64_t Sample(const std::vector<float>& logits, const GenerationOptions& o, std::mt19937_64& rng) {
  const double top = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = std::exp((logits[i] - top) / o.temperature);
  std::vector<int64_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  double kept = 0;
  size_t n = 0;
  while (n < order.size() && (n == 0 || kept < o.top_p * total)) kept += p[order[n++]];
  double u = std::uniform_real_distribution<double>(0.0, kept)(rng);
  for (size_t i = 0; i < n; ++i) {
    u -= p[order[i]];
    if (u < 0) return order[i];
  }
  return order[n - 1];
}

}  // namespace

Generator::Generator(const LlamaForCausalLM& model)
    : model_(model), dtype_(runtime::ComputeDType(lazy::ThreadExecutor().allocator())) {
  MOREH_CHECK(!model.session(),
              "generation runs in process: load the model with advanced parallelization off");
  NoGradGuard no_grad;
  for (const auto& [name, w] : model.NamedParameters()) {  // cast once, not per token
    weights_.emplace_back(name, w.dtype() == dtype_
                                    ? w
                                    : Tensor::FromData(functional::cast(w, dtype_).data(), false));
  }
}

std::vector<float> Generator::Forward(const std::vector<int64_t>& ids) {
  const LlamaConfig& c = model_.config();
  NoGradGuard no_grad;
  const auto T = static_cast<int64_t>(ids.size());
  KvCacheEmitter e(
      [&](const std::string& name) {
        for (const auto& [n, t] : weights_) {
          if (n == name) return t;
        }
        throw Error("the model has no parameter '" + name + "'");
      },
      &k_cache_, &v_cache_, length_);
  Val x = EmitEmbedding(e, c, e.Hold(Tensor::FromVector<int64_t>(ids, {1, T})));
  for (int l = 0; l < c.num_hidden_layers; ++l) x = EmitDecoderLayer(e, c, l, x, kNoVal);
  const runtime::Tensor logits = e.tensor(EmitHead(e, c, x)).data();  // [1, T, V]
  length_ += T;
  return logits.Slice(1, T - 1, T).To(DType::kF32).ToFloats();
}

std::vector<int64_t> Generator::Generate(const std::vector<int64_t>& prompt,
                                         const GenerationOptions& o,
                                         const std::function<void(int64_t)>& on_token) {
  const LlamaConfig& c = model_.config();
  MOREH_CHECK(!prompt.empty(), "generate: the prompt has no tokens");
  MOREH_CHECK(o.max_new_tokens >= 0, "generate: max_new_tokens {} must be >= 0", o.max_new_tokens);
  MOREH_CHECK(o.temperature >= 0 && std::isfinite(o.temperature),
              "generate: temperature {} must be >= 0 (0: greedy)", o.temperature);
  MOREH_CHECK(o.top_p > 0 && o.top_p <= 1, "generate: top_p {} must be in (0, 1]", o.top_p);
  for (int64_t id : prompt) {
    MOREH_CHECK(id >= 0 && id < c.vocab_size,
                "generate: token id {} outside the vocabulary [0, {})", id, c.vocab_size);
  }
  const auto max_length = static_cast<int64_t>(prompt.size()) + o.max_new_tokens;
  k_cache_.clear();
  v_cache_.clear();
  runtime::Allocator* device = lazy::ThreadExecutor().allocator();
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (auto* cache : {&k_cache_, &v_cache_}) {
      cache->push_back(runtime::Tensor::Empty({max_length, c.num_key_value_heads, c.head_dim()},
                                              dtype_, device));
    }
  }
  length_ = 0;
  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> out = prompt;
  if (o.max_new_tokens == 0) return out;
  std::vector<float> logits = Forward(prompt);
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    const int64_t next = o.temperature > 0 ? Sample(logits, o, rng) : Argmax(logits);
    out.push_back(next);
    if (on_token) on_token(next);
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end()) break;
    if (i + 1 < o.max_new_tokens) logits = Forward({next});
  }
  return out;
}

}  // namespace moreh::models
