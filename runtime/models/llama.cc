#include "runtime/models/llama.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <set>

#include "runtime/device.h"
#include "runtime/functional.h"
#include "runtime/init.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/lazy.h"
#include "runtime/option.h"
#include "runtime/parallel/session.h"

namespace moreh::models {

namespace F = moreh::functional;

Status LlamaConfig::Validate() const {
  auto bad = [](std::string m) { return Status::InvalidArgument("LlamaConfig: " + m); };
  if (vocab_size <= 0 || hidden_size <= 0 || intermediate_size <= 0 || num_hidden_layers < 0 ||
      num_attention_heads <= 0 || num_key_value_heads <= 0) {
    return bad("sizes must be positive");
  }
  if (hidden_size % num_attention_heads != 0) {
    return bad(fmt::format("hidden_size {} is not a multiple of num_attention_heads {}",
                           hidden_size, num_attention_heads));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return bad(fmt::format("num_attention_heads {} is not a multiple of num_key_value_heads {}",
                           num_attention_heads, num_key_value_heads));
  }
  if (head_dim() % 2 != 0) return bad("head_dim must be even for rotary embedding");
  if (rms_norm_eps <= 0 || rope_theta <= 0) return bad("rms_norm_eps and rope_theta must be > 0");
  return Status::Ok();
}

int64_t LlamaConfig::NumParameters() const {
  const int64_t kv = num_key_value_heads * head_dim();
  const int64_t layer = 2 * hidden_size + 2 * hidden_size * hidden_size + 2 * hidden_size * kv +
                        3 * hidden_size * intermediate_size;
  return vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + hidden_size +
         num_hidden_layers * layer;
}

namespace {
// A parameter leaf: initialised from (seed, name), or left uninitialised for a checkpoint load.
Tensor Param(const Shape& shape, uint64_t seed, const std::string& name, float std, bool init) {
  return Tensor::FromData(init ? runtime::NormalTensor(shape, seed, name, std)
                               : runtime::Tensor::Empty(shape, DType::kF32),
                          true, name);
}
Tensor Ones(int64_t n, const std::string& name) {
  return Tensor::FromData(runtime::Tensor::Full({n}, DType::kF32, 1.0), true, name);
}
}  // namespace

LlamaDecoderLayer::LlamaDecoderLayer(const LlamaConfig& c, int index, uint64_t seed, bool init)
    : config_(c), prefix_("model.layers." + std::to_string(index) + ".") {
  const int64_t C = c.hidden_size, kv = c.num_key_value_heads * c.head_dim();
  const float s = c.initializer_range;
  auto Param = [&](const Shape& shape, uint64_t sd, const std::string& name, float std) {
    return models::Param(shape, sd, name, std, init);
  };
  input_layernorm_ = Ones(C, prefix_ + "input_layernorm.weight");
  q_proj_ = Param({C, C}, seed, prefix_ + "self_attn.q_proj.weight", s);
  k_proj_ = Param({kv, C}, seed, prefix_ + "self_attn.k_proj.weight", s);
  v_proj_ = Param({kv, C}, seed, prefix_ + "self_attn.v_proj.weight", s);
  o_proj_ = Param({C, C}, seed, prefix_ + "self_attn.o_proj.weight", s);
  post_attention_layernorm_ = Ones(C, prefix_ + "post_attention_layernorm.weight");
  gate_proj_ = Param({c.intermediate_size, C}, seed, prefix_ + "mlp.gate_proj.weight", s);
  up_proj_ = Param({c.intermediate_size, C}, seed, prefix_ + "mlp.up_proj.weight", s);
  down_proj_ = Param({C, c.intermediate_size}, seed, prefix_ + "mlp.down_proj.weight", s);
}

namespace {
// A weight as a computation in `dtype` reads it: itself, or its cast (whose gradient is the f32
// gradient of the master weight).
Tensor In(const Tensor& w, DType dtype) { return w.dtype() == dtype ? w : F::cast(w, dtype); }
}  // namespace

Tensor LlamaDecoderLayer::Forward(const Tensor& x, const Tensor& attention_mask) const {
  const LlamaConfig& c = config_;
  const int64_t B = x.size(0), T = x.size(1), D = c.head_dim();
  const DType dt = x.dtype();
  Tensor h = F::rms_norm(x, In(input_layernorm_, dt), c.rms_norm_eps);
  Tensor q = F::reshape(F::linear(h, In(q_proj_, dt)), {B, T, c.num_attention_heads, D});
  Tensor k = F::reshape(F::linear(h, In(k_proj_, dt)), {B, T, c.num_key_value_heads, D});
  Tensor v = F::reshape(F::linear(h, In(v_proj_, dt)), {B, T, c.num_key_value_heads, D});
  q = F::rotary(q, c.rope_theta);
  k = F::rotary(k, c.rope_theta);
  Tensor a = F::reshape(F::attention(q, k, v, attention_mask, true), {B, T, c.hidden_size});
  Tensor x1 = x + F::linear(a, In(o_proj_, dt));
  h = F::rms_norm(x1, In(post_attention_layernorm_, dt), c.rms_norm_eps);
  Tensor m = F::swiglu(F::linear(h, In(gate_proj_, dt)), F::linear(h, In(up_proj_, dt)));
  return x1 + F::linear(m, In(down_proj_, dt));
}

std::vector<std::pair<std::string, Tensor>> LlamaDecoderLayer::NamedParameters() const {
  return {{input_layernorm_.name(), input_layernorm_},
          {q_proj_.name(), q_proj_},
          {k_proj_.name(), k_proj_},
          {v_proj_.name(), v_proj_},
          {o_proj_.name(), o_proj_},
          {post_attention_layernorm_.name(), post_attention_layernorm_},
          {gate_proj_.name(), gate_proj_},
          {up_proj_.name(), up_proj_},
          {down_proj_.name(), down_proj_}};
}

LlamaForCausalLM::LlamaForCausalLM(LlamaConfig config, uint64_t seed)
    : LlamaForCausalLM(std::move(config), seed, /*initialize=*/true) {}

LlamaForCausalLM::LlamaForCausalLM(LlamaConfig config, uint64_t seed, bool init)
    : config_(std::move(config)) {
  config_.Validate().ThrowIfError();
  const float s = config_.initializer_range;
  embed_tokens_ =
      Param({config_.vocab_size, config_.hidden_size}, seed, "model.embed_tokens.weight", s, init);
  layers_.reserve(config_.num_hidden_layers);
  for (int i = 0; i < config_.num_hidden_layers; ++i) layers_.emplace_back(config_, i, seed, init);
  norm_ = Ones(config_.hidden_size, "model.norm.weight");
  if (!config_.tie_word_embeddings) {
    lm_head_ = Param({config_.vocab_size, config_.hidden_size}, seed, "lm_head.weight", s, init);
  }
}

LlamaForCausalLM::LlamaForCausalLM(LlamaConfig config, RemoteTag) : config_(std::move(config)) {}

LlamaForCausalLM LlamaForCausalLM::from_pretrained(const std::string& dir, uint64_t seed) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  LlamaConfig config = LlamaConfig::FromFile(config_path).value();
  if (parallel::DistributedRequested()) {
    // The weights stay where they are: each worker reads its own stage's tensors.
    config.Validate().ThrowIfError();
    const Status weights = io::CheckpointReader::Open(dir).status();
    if (weights.code() == StatusCode::kNotFound) {
      spdlog::info("{}: no weights; the workers initialise {} parameters from seed {}", dir,
                   config.NumParameters(), seed);
    } else {
      weights.ThrowIfError();
    }
    LlamaForCausalLM model(config, RemoteTag{});
    model.session_ = parallel::Session::Open(
        {.model_dir = dir,
         .seed = seed,
         .advanced_parallelization = option::advanced_parallelization_enabled()},
        config);
    model.session_handle_ = parallel::MakeSessionHandle(model.session_);
    return model;
  }
  auto reader = io::CheckpointReader::Open(dir);
  if (reader.status().code() == StatusCode::kNotFound) {
    spdlog::info("{}: no weights; initialising {} parameters from seed {}", dir,
                 config.NumParameters(), seed);
    return LlamaForCausalLM(config, seed);
  }
  reader.status().ThrowIfError();
  LlamaForCausalLM model(config, 0, /*initialize=*/false);
  std::set<std::string> used;
  for (auto& [name, param] : model.NamedParameters()) {
    const io::SafetensorsFile* file = nullptr;
    const io::SafetensorsEntry* e = reader->Find(name, &file);
    MOREH_CHECK(e != nullptr, "{}: missing tensor '{}'", dir, name);
    MOREH_CHECK(e->shape == param.shape(),
                "{}: tensor '{}' has shape {} but config.json implies {}", file->path(), name,
                ShapeToString(e->shape), ShapeToString(param.shape()));
    MOREH_CHECK(IsFloating(e->dtype), "{}: tensor '{}' has integer dtype {}", file->path(), name,
                DTypeName(e->dtype));
    runtime::Tensor t = file->Read(name).value();
    param.assign_data(t.To(DType::kF32));
    used.insert(name);
  }
  for (const std::string& name : reader->Names()) {
    if (!used.count(name))
      spdlog::warn("{}: ignoring tensor '{}' the model does not use", dir, name);
  }
  return model;
}

void LlamaForCausalLM::save_pretrained(const std::string& dir, int64_t max_shard_bytes) const {
  if (session_) return session_->Save(dir);
  const DType dt = config_.checkpoint_dtype();
  std::vector<std::pair<std::string, runtime::Tensor>> tensors;
  for (const auto& [name, p] : NamedParameters()) tensors.emplace_back(name, p.data().To(dt));
  io::SaveCheckpoint(dir, tensors, config_.ToJson(), max_shard_bytes).ThrowIfError();
}

LlamaOutput LlamaForCausalLM::operator()(const Tensor& input_ids, const Tensor& attention_mask,
                                         const Tensor& labels) const {
  MOREH_CHECK(input_ids.dim() == 2, "LlamaForCausalLM: input_ids must be [B, T], got {}",
              input_ids.ToString());
  if (session_) {
    const float loss = static_cast<float>(session_->ForwardBackward(
        input_ids.data(), attention_mask.defined() ? attention_mask.data() : runtime::Tensor(),
        labels.defined() ? labels.data() : runtime::Tensor()));
    LlamaOutput out;
    // Computed already (forward and backward ran on the workers); backward() on it is a no-op.
    out.loss = Tensor::FromData(runtime::Tensor::FromData(&loss, {}, DType::kF32), false, "loss");
    out.loss.impl()->backward_done = true;
    return out;
  }
  const DType dt = runtime::ComputeDType(lazy::ThreadExecutor().allocator());
  const Tensor embed = In(embed_tokens_, dt);  // cast once when the head shares it
  Tensor x = F::embedding(input_ids, embed);
  for (const auto& layer : layers_) x = layer.Forward(x, attention_mask);
  x = F::rms_norm(x, In(norm_, dt), config_.rms_norm_eps);
  LlamaOutput out;
  out.logits = F::linear(x, config_.tie_word_embeddings ? embed : In(lm_head_, dt));
  if (labels.defined()) out.loss = F::cross_entropy(out.logits, labels, -100, /*shift=*/true);
  return out;
}

std::vector<std::pair<std::string, Tensor>> LlamaForCausalLM::NamedParameters() const {
  std::vector<std::pair<std::string, Tensor>> p{{embed_tokens_.name(), embed_tokens_}};
  for (const auto& l : layers_) {
    for (auto& e : l.NamedParameters()) p.push_back(std::move(e));
  }
  p.emplace_back(norm_.name(), norm_);
  if (lm_head_.defined()) p.emplace_back(lm_head_.name(), lm_head_);
  return p;
}

std::vector<Tensor> LlamaForCausalLM::Parameters() const {
  if (session_) return {session_handle_};
  std::vector<Tensor> p;
  for (auto& [n, t] : NamedParameters()) p.push_back(t);
  return p;
}

void LlamaForCausalLM::ZeroGrad() {
  for (Tensor& t : Parameters()) t.set_grad(Tensor());
}

}  // namespace moreh::models
