// LlamaConfig <-> Hugging Face config.json.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/models/llama.h"

namespace moreh::models {
namespace {
using json = nlohmann::json;

Status Bad(const std::string& source, const std::string& what) {
  return Status::InvalidArgument(source + ": " + what);
}

// Reads an optional field of the right JSON type into *out.
template <typename T>
Status Field(const json& j, const char* key, T* out, const std::string& source, bool required) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    return required ? Bad(source, std::string("missing field '") + key + "'") : Status::Ok();
  }
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return Bad(source, std::string("'") + key + "' must be true or false");
  } else if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer())
      return Bad(source, std::string("'") + key + "' must be an integer");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) return Bad(source, std::string("'") + key + "' must be a number");
  } else {
    if (!it->is_string()) return Bad(source, std::string("'") + key + "' must be a string");
  }
  *out = it->get<T>();
  return Status::Ok();
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
  LlamaConfig c;
  std::string model_type = "llama", act = "silu";
  Status s = Field(j, "model_type", &model_type, source, false);
  if (s.ok() && model_type != "llama") {
    s = Bad(source, "model_type '" + model_type + "' is not supported (only 'llama')");
  }
  if (s.ok()) s = Field(j, "hidden_act", &act, source, false);
  if (s.ok() && act != "silu")
    s = Bad(source, "hidden_act '" + act + "' is not supported (only 'silu')");
  if (s.ok() && j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    s = Bad(source, "rope_scaling is not supported");
  }
  if (s.ok() && j.value("attention_bias", false))
    s = Bad(source, "attention_bias is not supported");
  if (s.ok()) s = Field(j, "vocab_size", &c.vocab_size, source, true);
  if (s.ok()) s = Field(j, "hidden_size", &c.hidden_size, source, true);
  if (s.ok()) s = Field(j, "intermediate_size", &c.intermediate_size, source, true);
  if (s.ok()) s = Field(j, "num_hidden_layers", &c.num_hidden_layers, source, true);
  if (s.ok()) s = Field(j, "num_attention_heads", &c.num_attention_heads, source, true);
  c.num_key_value_heads = c.num_attention_heads;
  if (s.ok()) s = Field(j, "num_key_value_heads", &c.num_key_value_heads, source, false);
  if (s.ok()) s = Field(j, "rms_norm_eps", &c.rms_norm_eps, source, false);
  if (s.ok()) s = Field(j, "rope_theta", &c.rope_theta, source, false);
  // transformers 5 writes the rotary settings as "rope_parameters": {"rope_type", "rope_theta"}.
  if (s.ok() && j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    const json& rp = j["rope_parameters"];
    std::string type = "default";
    if (!rp.is_object()) {
      s = Bad(source, "'rope_parameters' must be an object");
    } else {
      s = Field(rp, "rope_type", &type, source, false);
      if (s.ok() && type != "default") {
        s = Bad(source, "rope_parameters.rope_type '" + type +
                            "' is not supported (only 'default': rope scaling is not supported)");
      }
      if (s.ok()) s = Field(rp, "rope_theta", &c.rope_theta, source, false);
    }
  }
  if (s.ok()) s = Field(j, "tie_word_embeddings", &c.tie_word_embeddings, source, false);
  if (s.ok()) s = Field(j, "initializer_range", &c.initializer_range, source, false);
  if (s.ok()) s = Field(j, "max_position_embeddings", &c.max_position_embeddings, source, false);
  if (s.ok()) s = Field(j, "bos_token_id", &c.bos_token_id, source, false);
  if (s.ok()) s = Field(j, "eos_token_id", &c.eos_token_id, source, false);
  if (s.ok()) s = Field(j, "pad_token_id", &c.pad_token_id, source, false);
  if (s.ok()) s = Field(j, "torch_dtype", &c.torch_dtype, source, false);
  if (s.ok() && !j.contains("torch_dtype")) {  // transformers 5's name for it
    s = Field(j, "dtype", &c.torch_dtype, source, false);
  }
  if (s.ok() && c.torch_dtype != "float32" && c.torch_dtype != "bfloat16" &&
      c.torch_dtype != "float16") {
    s = Bad(source, "torch_dtype '" + c.torch_dtype + "' is not float32, bfloat16 or float16");
  }
  if (!s.ok()) return s;
  Status v = c.Validate();
  if (!v.ok()) return Bad(source, v.message());
  return c;
}

StatusOr<LlamaConfig> LlamaConfig::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return FromJson(ss.str(), path);
}

std::string LlamaConfig::ToJson() const {
  json j = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_act", "silu"},
            {"vocab_size", vocab_size},
            {"hidden_size", hidden_size},
            {"intermediate_size", intermediate_size},
            {"num_hidden_layers", num_hidden_layers},
            {"num_attention_heads", num_attention_heads},
            {"num_key_value_heads", num_key_value_heads},
            {"rms_norm_eps", rms_norm_eps},
            {"rope_theta", rope_theta},
            {"rope_scaling", nullptr},
            {"attention_bias", false},
            {"tie_word_embeddings", tie_word_embeddings},
            {"initializer_range", initializer_range},
            {"max_position_embeddings", max_position_embeddings},
            {"bos_token_id", bos_token_id},
            {"eos_token_id", eos_token_id},
            {"torch_dtype", torch_dtype},
            {"use_cache", true}};
  if (pad_token_id >= 0) j["pad_token_id"] = pad_token_id;
  return j.dump(2);
}

}  // namespace moreh::models
