// Text generation from a causal LM with a KV cache: greedy decoding (transformers' generate with
// do_sample=False, token for token) and sampling (temperature, top-p, a seed).
//
// The model definition (llama_def.h) emits each forward through a KvCacheEmitter: its rotary
// embeddings start at the cache's length, and each attention first writes the new keys and
// values into the layer's cache ([1, max_length, kv_heads, head_dim] in the compute dtype, on
// the model's device) and then attends over the cache's rows so far (a sliding window: its last
// `window` rows). The prompt runs once (prefill); every new token then costs one forward of
// one position. In process, on the device the model computes on (runtime/device.h). One prompt
// at a time. Not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/core/tensor.h"
#include "runtime/models/llama.h"

namespace moreh::models {

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  double temperature = 0;  // 0: greedy; else sample from softmax(logits / temperature)
  double top_p = 1.0;      // sampling: from the smallest set of tokens holding this probability
  uint64_t seed = 0;
  // Stop after any of these (moreh-run generate passes the config's eos ids; empty: never).
  std::vector<int64_t> stop_ids;
};

class Generator {
 public:
  // The model must be in process (not on worker daemons).
  explicit Generator(const LlamaForCausalLM& model);
  // The prompt's ids followed by the new ones (at most max_new_tokens; ends at a stop id, which
  // is included). `on_token` (optional) sees each new id as it is chosen.
  std::vector<int64_t> Generate(const std::vector<int64_t>& prompt, const GenerationOptions& o,
                                const std::function<void(int64_t)>& on_token = {});

 private:
  // Runs positions [cache length, + ids.size()) and returns the last position's logits (f32).
  std::vector<float> Forward(const std::vector<int64_t>& ids);
  const LlamaForCausalLM& model_;
  DType dtype_;
  std::vector<std::pair<std::string, Tensor>> weights_;  // in the compute dtype
  std::vector<runtime::Tensor> k_cache_, v_cache_;       // per layer
  int64_t length_ = 0;                                   // positions in the cache
};

}  // namespace moreh::models
