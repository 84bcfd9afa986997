// A Llama-family causal language model built from the runtime's ops, with Hugging Face parameter
// names and semantics (LlamaForCausalLM): RMSNorm, rotary embedding (rotate_half; Llama 3's and
// linear frequency scaling), grouped-query causal attention with a key padding mask and an
// explicit head_dim, optional q/k/v/o and MLP biases, SwiGLU MLP, optional tied embeddings,
// shifted cross-entropy with ignore_index -100. The model itself is defined in llama_def.h.
//
// Parameters are f32 leaves initialised deterministically from (seed, name). Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/tensor.h"

namespace moreh::parallel {
class Session;
}

namespace moreh::models {

// The decoder-only families that share Llama's skeleton, each as transformers 4.46 (Qwen3: 4.51)
// defines it: "llama" (Llama 2 / 3.x), "mistral" (a sliding window on every layer), "qwen2"
// (q, k, v biases), "qwen3" (per-head RMSNorm on q and k), "gemma2" (GeGLU, (1 + w) norms around
// attention and MLP, scaled embeddings, soft-capping, sliding windows on even layers).
// docs/models.md lists what each honours.
struct LlamaConfig {
  std::string model_type = "llama";
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  float initializer_range = 0.02f;
  int64_t max_position_embeddings = 2048;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  std::vector<int64_t> eos_token_ids;   // when config.json lists several (Llama 3.1+)
  int64_t pad_token_id = -1;            // -1: none in config.json
  std::string torch_dtype = "float32";  // the dtype checkpoints are saved in
  int64_t explicit_head_dim = 0;        // config.json's head_dim (0: hidden_size / heads)
  bool attention_bias = false;          // biases on q, k, v and o
  bool qkv_bias = false;                // biases on q, k and v only (Qwen2's, always)
  bool mlp_bias = false;                // biases on gate, up and down
  bool qk_norm = false;                 // RMSNorm over head_dim on q and k, before rotary (Qwen3)
  int64_t sliding_window = 0;           // every layer's attention window (Mistral); 0: none
  // Gemma 2: the MLP's gate activation ("silu" or "gelu_tanh"); norms scaling by (1 + w) (offset
  // 1; their weights start at 0); norms after attention and after the MLP too ("sandwich"); the
  // embedding scaled by sqrt(hidden_size); the attention scale query_pre_attn_scalar^-1/2 (0:
  // head_dim's); tanh soft-capping of attention scores and of the final logits (0: none).
  std::string mlp_activation = "silu";
  double norm_weight_offset = 0;
  bool sandwich_norms = false;
  bool scale_embeddings = false;
  double query_pre_attn_scalar = 0;
  double attn_logit_softcapping = 0;
  double final_logit_softcapping = 0;
  // rope_scaling: "default" (none), "linear" (factor) or "llama3" (factor, low_freq_factor,
  // high_freq_factor, original_max_position_embeddings).
  struct RopeScaling {
    std::string type = "default";
    double factor = 1, low_freq_factor = 1, high_freq_factor = 4;
    int64_t original_max_position_embeddings = 8192;
  } rope_scaling;

  int64_t head_dim() const {
    return explicit_head_dim > 0 ? explicit_head_dim : hidden_size / num_attention_heads;
  }
  // The attention window of `layer` (0: none): Gemma 2's even layers are local, its odd global.
  int64_t LayerWindow(int layer) const {
    return model_type == "gemma2" && layer % 2 != 0 ? 0 : sliding_window;
  }
  bool has_qkv_bias() const { return attention_bias || qkv_bias; }
  // transformers' class for this family ("MistralForCausalLM").
  std::string architecture() const;
  Status Validate() const;
  int64_t NumParameters() const;
  DType checkpoint_dtype() const;

  // Hugging Face config.json. Errors name `source` and the offending field.
  static StatusOr<LlamaConfig> FromJson(std::string_view text, const std::string& source);
  static StatusOr<LlamaConfig> FromFile(const std::string& path);
  std::string ToJson() const;
};

struct LlamaOutput {
  Tensor loss;    // defined when labels were given
  Tensor logits;  // [B, T, V]
};

class LlamaForCausalLM {
 public:
  // Parameters initialised from (seed, name): normal(0, initializer_range), norms 1.
  explicit LlamaForCausalLM(LlamaConfig config, uint64_t seed = 0);

  // config.json plus model.safetensors or a sharded checkpoint. Parameters are held in f32 (master
  // weights) whatever the stored dtype; save_pretrained writes config.torch_dtype back. Throws
  // moreh::Error naming the file and the problem (missing tensor, shape or dtype that disagrees
  // with the config, corrupt file). Tensors the model does not use are ignored with a warning.
  // A directory with config.json but no weights gives a model initialised from `seed`.
  static LlamaForCausalLM from_pretrained(const std::string& dir, uint64_t seed = 0);
  // The same, always in this process (on runtime::DefaultDevice), whatever cluster is configured:
  // what generation (generate.h) runs on.
  static LlamaForCausalLM from_pretrained_in_process(const std::string& dir, uint64_t seed = 0);
  // Atomic: a kill during the save leaves the previous checkpoint intact.
  void save_pretrained(const std::string& dir, int64_t max_shard_bytes = 5'000'000'000) const;

  // input_ids, labels [B, T] (i64 or i32); attention_mask [B, T] or undefined.
  // On the cluster (parallel/session.h) the forward and backward run on the workers when the model
  // is called: the loss comes back computed; logits are not returned. In process it computes in
  // runtime::ComputeDType (bf16 on a GPU: each weight cast from its f32 master for the step, bf16
  // activations and logits, the loss in f32; gradients reach the master weights in f32).
  // num_items_in_batch > 0 (transformers' argument, for gradient accumulation): the token losses
  // are summed and divided by it rather than by this batch's own count, so the losses of the
  // accumulated batches add up to the mean over all of them. Under NoGradGuard the forward alone
  // runs (evaluation; on the cluster a forward-only job step).
  LlamaOutput operator()(const Tensor& input_ids, const Tensor& attention_mask = Tensor(),
                         const Tensor& labels = Tensor(), double num_items_in_batch = 0) const;
  std::vector<std::pair<std::string, Tensor>> NamedParameters() const;
  std::vector<Tensor> Parameters() const;
  std::vector<Tensor> parameters() const { return Parameters(); }  // PyTorch's name
  void ZeroGrad();
  void zero_grad() { ZeroGrad(); }  // PyTorch's name, set_to_none semantics
  const LlamaConfig& config() const { return config_; }
  // The most memory each device held during the last step and update (bytes; one device in
  // process: the whole run's peak so far).
  std::vector<int64_t> peak_memory_bytes() const;
  // The distributed job when the parameters live on worker daemons (from_pretrained with advanced
  // parallelization or a cluster configured), else null.
  const std::shared_ptr<parallel::Session>& session() const { return session_; }

 private:
  LlamaForCausalLM(LlamaConfig config, uint64_t seed, bool initialize);
  struct RemoteTag {};
  LlamaForCausalLM(LlamaConfig config, RemoteTag);  // no local parameters
  LlamaConfig config_;
  // Every parameter in llama_def.h's order (AllParams), by name.
  std::vector<std::pair<std::string, Tensor>> params_;
  std::shared_ptr<parallel::Session> session_;
  Tensor session_handle_;
};

}  // namespace moreh::models
