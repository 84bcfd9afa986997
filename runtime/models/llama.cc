#include "runtime/models/llama.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "runtime/core/labels.h"
#include "runtime/device.h"
#include "runtime/functional.h"
#include "runtime/init.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/lazy.h"
#include "runtime/models/llama_def.h"
#include "runtime/option.h"
#include "runtime/parallel/session.h"

namespace moreh::models {

namespace F = moreh::functional;

Status LlamaConfig::Validate() const {
  auto bad = [](std::string m) { return Status::InvalidArgument("LlamaConfig: " + m); };
  if (vocab_size <= 0 || hidden_size <= 0 || intermediate_size <= 0 || num_hidden_layers < 0 ||
      num_attention_heads <= 0 || num_key_value_heads <= 0 || explicit_head_dim < 0) {
    return bad("sizes must be positive");
  }
  if (explicit_head_dim == 0 && hidden_size % num_attention_heads != 0) {
    return bad(fmt::format("hidden_size {} is not a multiple of num_attention_heads {}",
                           hidden_size, num_attention_heads));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return bad(fmt::format("num_attention_heads {} is not a multiple of num_key_value_heads {}",
                           num_attention_heads, num_key_value_heads));
  }
  if (model_type != "llama" && model_type != "mistral" && model_type != "qwen2" &&
      model_type != "qwen3" && model_type != "gemma2") {
    return bad("model_type '" + model_type + "' (llama, mistral, qwen2, qwen3 or gemma2)");
  }
  if (mlp_activation != "silu" && mlp_activation != "gelu_tanh") {
    return bad("mlp_activation '" + mlp_activation + "' (silu or gelu_tanh)");
  }
  if (query_pre_attn_scalar < 0 || attn_logit_softcapping < 0 || final_logit_softcapping < 0) {
    return bad("query_pre_attn_scalar and the soft-cappings must be >= 0");
  }
  if (sliding_window < 0) return bad("sliding_window must be >= 0");
  if (head_dim() % 2 != 0) return bad("head_dim must be even for rotary embedding");
  if (head_dim() > 512) return bad(fmt::format("head_dim {} is above 512", head_dim()));
  if (rms_norm_eps <= 0 || rope_theta <= 0) return bad("rms_norm_eps and rope_theta must be > 0");
  const RopeScaling& r = rope_scaling;
  if (r.type != "default" && r.type != "linear" && r.type != "llama3") {
    return bad("rope_scaling type '" + r.type + "' (default, linear or llama3)");
  }
  if (r.type != "default" && !(r.factor > 0)) return bad("rope_scaling factor must be > 0");
  if (r.type == "llama3" && !(r.low_freq_factor > 0 && r.high_freq_factor > r.low_freq_factor &&
                              r.original_max_position_embeddings > 0)) {
    return bad(
        "rope_scaling llama3 needs 0 < low_freq_factor < high_freq_factor and "
        "original_max_position_embeddings > 0");
  }
  return Status::Ok();
}

int64_t LlamaConfig::NumParameters() const {
  int64_t n = 0;
  for (const ParamSpec& p : EmbeddingParams(*this)) n += Numel(p.shape);
  for (const ParamSpec& p : HeadParams(*this)) n += Numel(p.shape);
  int64_t layer = 0;
  for (const ParamSpec& p : LayerParams(*this, 0)) layer += Numel(p.shape);
  return n + num_hidden_layers * layer;
}

namespace {
// A weight as a computation in `dtype` reads it: itself, or its cast (whose gradient is the f32
// gradient of the master weight).
Tensor In(const Tensor& w, DType dtype) { return w.dtype() == dtype ? w : F::cast(w, dtype); }
}  // namespace

LlamaForCausalLM::LlamaForCausalLM(LlamaConfig config, uint64_t seed)
    : LlamaForCausalLM(std::move(config), seed, /*initialize=*/true) {}

LlamaForCausalLM::LlamaForCausalLM(LlamaConfig config, uint64_t seed, bool init)
    : config_(std::move(config)) {
  config_.Validate().ThrowIfError();
  // Initial values depend only on (seed, name) (runtime/init.h), as on the workers.
  for (const ParamSpec& p : AllParams(config_)) {
    runtime::Tensor t =
        p.init == ParamInit::kOnes    ? runtime::Tensor::Full(p.shape, DType::kF32, 1.0)
        : p.init == ParamInit::kZeros ? runtime::Tensor::Full(p.shape, DType::kF32, 0.0)
        : init ? runtime::NormalTensor(p.shape, seed, p.name, config_.initializer_range)
               : runtime::Tensor::Empty(p.shape, DType::kF32);
    params_.emplace_back(p.name, Tensor::FromData(std::move(t), true, p.name));
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
  return from_pretrained_in_process(dir, seed);
}

LlamaForCausalLM LlamaForCausalLM::from_pretrained_in_process(const std::string& dir,
                                                              uint64_t seed) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  LlamaConfig config = LlamaConfig::FromFile(config_path).value();
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

std::vector<int64_t> LlamaForCausalLM::peak_memory_bytes() const {
  if (!session_) return {lazy::ThreadExecutor().allocator()->peak_bytes()};
  return session_->last_peak_bytes();
}

LlamaOutput LlamaForCausalLM::operator()(const Tensor& input_ids, const Tensor& attention_mask,
                                         const Tensor& labels, double num_items_in_batch) const {
  MOREH_CHECK(input_ids.dim() == 2, "LlamaForCausalLM: input_ids must be [B, T], got {}",
              input_ids.ToString());
  MOREH_CHECK(num_items_in_batch >= 0 && std::isfinite(num_items_in_batch),
              "LlamaForCausalLM: num_items_in_batch {} must be a token count (0: this batch's)",
              num_items_in_batch);
  if (session_) {
    // The workers run forward and backward together (evaluation: the forwards alone).
    const runtime::Tensor mask =
        attention_mask.defined() ? attention_mask.data() : runtime::Tensor();
    const runtime::Tensor lab = labels.defined() ? labels.data() : runtime::Tensor();
    const float loss = static_cast<float>(
        GradEnabled()
            ? session_->ForwardBackward(input_ids.data(), mask, lab, num_items_in_batch)
            : session_->Evaluate(input_ids.data(), mask, lab) *
                  (num_items_in_batch > 0
                       ? static_cast<double>(runtime::CountLossTokens(lab)) / num_items_in_batch
                       : 1.0));
    LlamaOutput out;
    // Computed already (forward and backward ran on the workers); backward() on it is a no-op.
    out.loss = Tensor::FromData(runtime::Tensor::FromData(&loss, {}, DType::kF32), false, "loss");
    out.loss.impl()->backward_done = true;
    return out;
  }
  const DType dt = runtime::ComputeDType(lazy::ThreadExecutor().allocator());
  // The definition (llama_def.h) emits into the lazy graph; each weight is cast once per step.
  LazyEmitter e([&](const std::string& name) {
    for (const auto& [n, t] : params_) {
      if (n == name) return In(t, dt);
    }
    throw Error("the model has no parameter '" + name + "'");
  });
  Val x = EmitEmbedding(e, config_, e.Hold(input_ids));
  const Val mask = attention_mask.defined() ? e.Hold(attention_mask) : kNoVal;
  for (int l = 0; l < config_.num_hidden_layers; ++l) x = EmitDecoderLayer(e, config_, l, x, mask);
  LlamaOutput out;
  out.logits = e.tensor(EmitHead(e, config_, x));
  if (labels.defined()) {
    out.loss = F::cross_entropy(out.logits, labels, -100, /*shift=*/true);
    if (num_items_in_batch > 0) {  // the sum over this batch's tokens / the accumulated count
      out.loss = out.loss * (static_cast<double>(runtime::CountLossTokens(labels.data())) /
                             num_items_in_batch);
    }
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> LlamaForCausalLM::NamedParameters() const {
  return params_;
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
