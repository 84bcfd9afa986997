// LlamaConfig <-> Hugging Face config.json.
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/core/field_reader.h"
#include "runtime/models/llama.h"

namespace moreh::models {
namespace {
using json = nlohmann::json;

Status Bad(const std::string& source, const std::string& what) {
  return Status::InvalidArgument(source + ": " + what);
}
}  // namespace

DType LlamaConfig::checkpoint_dtype() const {
  if (torch_dtype == "bfloat16") return DType::kBF16;
  if (torch_dtype == "float16") return DType::kF16;
  return DType::kF32;
}

StatusOr<LlamaConfig> LlamaConfig::FromJson(std::string_view text, const std::string& source) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(source, "not valid JSON");
  if (!j.is_object()) return Bad(source, "not a JSON object");
  // Every field is type- and range-checked; null stands for "unset" only where Hugging Face
  // writes it so (the special token ids, rope_scaling).
  FieldReader f(j, source);
  constexpr int64_t kMaxWidth = int64_t{1} << 20, kMaxTokens = int64_t{1} << 24;
  LlamaConfig c;
  c.model_type = f.OptStr("model_type", "llama", 64);
  const std::string& family = c.model_type;
  if (f.ok() && family != "llama" && family != "mistral" && family != "qwen2" &&
      family != "qwen3" && family != "gemma2") {
    f.FailField("model_type", "'" + family +
                                  "' is not supported (llama, mistral, qwen2, qwen3 or gemma2; see "
                                  "docs/models.md)");
  }
  const bool gemma = family == "gemma2";
  if (gemma) {
    // Gemma2MLP reads hidden_activation (hidden_act is not read; real files carry both).
    const std::string act = f.OptStr("hidden_activation", "gelu_pytorch_tanh", 64);
    if (f.ok() && act != "gelu_pytorch_tanh") {
      f.FailField("hidden_activation", "'" + act + "' is not supported (only 'gelu_pytorch_tanh')");
    }
    c.mlp_activation = "gelu_tanh";
    c.norm_weight_offset = 1;
    c.sandwich_norms = c.scale_embeddings = true;
    c.tie_word_embeddings = true;  // Gemma2Config's default
  } else {
    const std::string act = f.OptStr("hidden_act", "silu", 64);
    if (f.ok() && act != "silu")
      f.FailField("hidden_act", "'" + act + "' is not supported (only 'silu')");
  }
  // A field transformers' class for this family does not read would be silently ignored there:
  // set to anything but its neutral value, it is refused rather than honoured differently.
  auto not_read = [&](const char* key, const std::string& why) {
    if (f.ok() && f.Has(key) && !f.IsNull(key) && f.OptBool(key, false)) {
      f.FailField(key, "is not part of " + family + " in transformers (" + why + ")");
    }
  };
  if (family == "llama" || family == "qwen3" || gemma) {
    c.attention_bias = f.OptBool("attention_bias", false);
  }
  if (family == "llama") c.mlp_bias = f.OptBool("mlp_bias", false);
  if (family != "llama") not_read("mlp_bias", "its MLP has no biases");
  if (family == "mistral") not_read("attention_bias", "its projections have no biases");
  if (family == "qwen2") {
    not_read("attention_bias", "q, k and v always have biases and o never");
    c.qkv_bias = true;
  }
  c.qk_norm = family == "qwen3";
  if (family == "qwen2" || family == "qwen3") {
    // transformers' eager attention and its flash-attention path disagree on which layers
    // use_sliding_window windows, and no released Qwen2/2.5/3 model turns it on.
    not_read("use_sliding_window", "use_sliding_window is not supported");
  }
  c.vocab_size = f.Int("vocab_size", 1, kMaxTokens);
  c.hidden_size = f.Int("hidden_size", 1, kMaxWidth);
  c.intermediate_size = f.Int("intermediate_size", 1, kMaxWidth);
  c.num_hidden_layers = f.Int("num_hidden_layers", 0, 4096);
  c.num_attention_heads = f.Int("num_attention_heads", 1, 65536);
  c.num_key_value_heads =
      f.OptInt("num_key_value_heads", c.num_attention_heads, 1, c.num_attention_heads);
  c.rms_norm_eps = f.OptNum("rms_norm_eps", c.rms_norm_eps, 1e-30, 1.0);
  c.rope_theta = f.OptNum("rope_theta", c.rope_theta, 1e-6, 1e12);
  if (f.Has("head_dim") && !f.IsNull("head_dim")) {
    c.explicit_head_dim = f.Int("head_dim", 2, 512);
  } else if (family == "qwen3") {
    c.explicit_head_dim = 128;  // Qwen3Config's default
  } else if (gemma) {
    c.explicit_head_dim = 256;  // Gemma2Config's default
  }
  if (f.ok() && family == "qwen2" && c.explicit_head_dim != 0 &&
      c.explicit_head_dim * c.num_attention_heads != c.hidden_size) {
    f.FailField("head_dim", "Qwen2's head_dim is always hidden_size / num_attention_heads");
  }
  if (family == "mistral" || gemma) {
    // MistralConfig's and Gemma2Config's default window is 4096; null turns it off (Mistral 7B
    // v0.2 and later).
    c.sliding_window =
        f.IsNull("sliding_window") ? 0 : f.OptInt("sliding_window", 4096, 1, kMaxTokens);
    if (f.ok() && f.Has("rope_scaling") && !f.IsNull("rope_scaling")) {
      f.FailField("rope_scaling", "transformers' " + c.architecture() +
                                      " has no rope scaling (it would be ignored)");
    }
  }
  if (gemma) {
    // Gemma2Config's defaults; null turns a soft-capping off.
    c.query_pre_attn_scalar = f.OptNum("query_pre_attn_scalar", 224, 1e-6, 1e9);
    c.attn_logit_softcapping =
        f.IsNull("attn_logit_softcapping") ? 0 : f.OptNum("attn_logit_softcapping", 50, 1e-6, 1e9);
    c.final_logit_softcapping = f.IsNull("final_logit_softcapping")
                                    ? 0
                                    : f.OptNum("final_logit_softcapping", 30, 1e-6, 1e9);
    if (f.ok() && c.hidden_size % c.num_attention_heads != 0) {
      f.FailField("hidden_size",
                  "must be a multiple of num_attention_heads (Gemma2Attention requires it)");
    }
  }
  // The rotary scaling: rope_scaling {rope_type | type, factor, ...}, or transformers 5's
  // rope_parameters {rope_type, rope_theta, factor, ...}.
  auto read_rope = [&](FieldReader& r, const std::string& key) {
    LlamaConfig::RopeScaling& rs = c.rope_scaling;
    rs.type = r.Has("rope_type") ? r.Str("rope_type", 64) : r.OptStr("type", "default", 64);
    if (!f.ok() || rs.type == "default") return;
    if (rs.type != "linear" && rs.type != "llama3") {
      f.Fail(key + " type '" + rs.type +
             "' is not supported (default, linear or llama3; dynamic, yarn and longrope are not)");
      return;
    }
    rs.factor = r.Num("factor", 1e-6, 1e6);
    if (rs.type == "llama3") {
      rs.low_freq_factor = r.Num("low_freq_factor", 1e-6, 1e6);
      rs.high_freq_factor = r.Num("high_freq_factor", 1e-6, 1e6);
      rs.original_max_position_embeddings =
          r.Int("original_max_position_embeddings", 1, kMaxTokens);
      if (f.ok() && !(rs.high_freq_factor > rs.low_freq_factor)) {
        f.Fail(key + ": high_freq_factor must be above low_freq_factor");
      }
    }
  };
  if (f.Has("rope_scaling") && !f.IsNull("rope_scaling")) {
    FieldReader rs = f.Sub("rope_scaling");
    read_rope(rs, "rope_scaling");
  }
  if (f.Has("rope_parameters") && !f.IsNull("rope_parameters")) {
    FieldReader rp = f.Sub("rope_parameters");
    read_rope(rp, "rope_parameters");
    c.rope_theta = rp.OptNum("rope_theta", c.rope_theta, 1e-6, 1e12);
  }
  if (f.Has("partial_rotary_factor") && f.OptNum("partial_rotary_factor", 1, 0, 1) != 1) {
    f.Fail("partial_rotary_factor other than 1 is not supported");
  }
  c.tie_word_embeddings = f.OptBool("tie_word_embeddings", c.tie_word_embeddings);
  c.initializer_range =
      static_cast<float>(f.OptNum("initializer_range", c.initializer_range, 0, 100));
  c.max_position_embeddings =
      f.OptInt("max_position_embeddings", c.max_position_embeddings, 1, kMaxTokens);
  auto token_id = [&](const char* key, int64_t fallback) {
    return f.IsNull(key) ? fallback : f.OptInt(key, fallback, -1, c.vocab_size - 1);
  };
  c.bos_token_id = token_id("bos_token_id", c.bos_token_id);
  if (f.Has("eos_token_id") && !f.IsNull("eos_token_id") && j["eos_token_id"].is_array()) {
    // Llama 3.1+: several end-of-sequence tokens.
    const json& list = f.Array("eos_token_id", 64);
    for (size_t i = 0; i < list.size() && f.ok(); ++i) {
      if (!list[i].is_number_integer() || list[i].get<int64_t>() < 0 ||
          list[i].get<int64_t>() >= c.vocab_size) {
        f.FailField("eos_token_id", fmt::format("[{}] is not a token id of the vocabulary", i));
      } else {
        c.eos_token_ids.push_back(list[i].get<int64_t>());
      }
    }
    if (f.ok() && c.eos_token_ids.empty()) f.FailField("eos_token_id", "is an empty list");
    if (f.ok()) c.eos_token_id = c.eos_token_ids.front();
  } else {
    c.eos_token_id = token_id("eos_token_id", c.eos_token_id);
  }
  c.pad_token_id = token_id("pad_token_id", c.pad_token_id);
  // transformers 5's name for the dtype is "dtype".
  c.torch_dtype =
      f.Has("torch_dtype") ? f.Str("torch_dtype", 64) : f.OptStr("dtype", c.torch_dtype, 64);
  if (f.ok() && c.torch_dtype != "float32" && c.torch_dtype != "bfloat16" &&
      c.torch_dtype != "float16") {
    f.Fail("torch_dtype '" + c.torch_dtype + "' is not float32, bfloat16 or float16");
  }
  if (!f.ok()) return f.status();
  Status v = c.Validate();
  if (!v.ok()) return Bad(source, v.message());
  // A model that could never be allocated is a mistake in the file, not a lack of memory.
  const double params = static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size) *
                            (c.tie_word_embeddings ? 1 : 2) +
                        static_cast<double>(c.num_hidden_layers) *
                            (4.0 * static_cast<double>(c.hidden_size) * c.hidden_size +
                             3.0 * static_cast<double>(c.hidden_size) * c.intermediate_size);
  if (params > 1e13) {
    return Bad(source, fmt::format("the sizes describe {:.3g} parameters (more than 10 trillion): "
                                   "check hidden_size, intermediate_size, num_hidden_layers and "
                                   "vocab_size",
                                   params));
  }
  return c;
}

StatusOr<LlamaConfig> LlamaConfig::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return FromJson(ss.str(), path);
}

std::string LlamaConfig::architecture() const {
  if (model_type == "mistral") return "MistralForCausalLM";
  if (model_type == "qwen2") return "Qwen2ForCausalLM";
  if (model_type == "qwen3") return "Qwen3ForCausalLM";
  if (model_type == "gemma2") return "Gemma2ForCausalLM";
  return "LlamaForCausalLM";
}

std::string LlamaConfig::ToJson() const {
  json rope = nullptr;
  if (rope_scaling.type != "default") {
    rope = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      rope["low_freq_factor"] = rope_scaling.low_freq_factor;
      rope["high_freq_factor"] = rope_scaling.high_freq_factor;
      rope["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
  }
  json j = {{"architectures", {architecture()}},
            {"model_type", model_type},
            {"hidden_act", "silu"},
            {"vocab_size", vocab_size},
            {"hidden_size", hidden_size},
            {"intermediate_size", intermediate_size},
            {"num_hidden_layers", num_hidden_layers},
            {"num_attention_heads", num_attention_heads},
            {"num_key_value_heads", num_key_value_heads},
            {"head_dim", head_dim()},
            {"rms_norm_eps", rms_norm_eps},
            {"rope_theta", rope_theta},
            {"rope_scaling", rope},
            {"tie_word_embeddings", tie_word_embeddings},
            {"initializer_range", initializer_range},
            {"max_position_embeddings", max_position_embeddings},
            {"bos_token_id", bos_token_id},
            {"eos_token_id", eos_token_id},
            {"torch_dtype", torch_dtype},
            {"use_cache", true}};
  // Each family's own fields, as its transformers config class names them.
  if (model_type == "llama") {
    j["attention_bias"] = attention_bias;
    j["mlp_bias"] = mlp_bias;
  } else if (model_type == "mistral") {
    j.erase("rope_scaling");
    j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
  } else if (model_type == "gemma2") {
    j.erase("rope_scaling");
    j["hidden_act"] = j["hidden_activation"] = "gelu_pytorch_tanh";
    j["attention_bias"] = attention_bias;
    j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
    j["query_pre_attn_scalar"] = query_pre_attn_scalar;
    auto cap = [](double v) { return v > 0 ? json(v) : json(nullptr); };
    j["attn_logit_softcapping"] = cap(attn_logit_softcapping);
    j["final_logit_softcapping"] = cap(final_logit_softcapping);
  } else {  // qwen2, qwen3
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = num_hidden_layers;
    if (model_type == "qwen2") j.erase("head_dim");
    if (model_type == "qwen3") j["attention_bias"] = attention_bias;
  }
  if (!eos_token_ids.empty()) j["eos_token_id"] = eos_token_ids;
  if (pad_token_id >= 0) j["pad_token_id"] = pad_token_id;
  return j.dump(2);
}

}  // namespace moreh::models
