// safetensors and Hugging Face checkpoint directories: round trips, atomic replacement, and every
// kind of bad file giving an error that names the file and the problem.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/io/hf_checkpoint.h"
#include "runtime/io/safetensors.h"
#include "runtime/models/llama.h"
#include "tests/models/llama_test_util.h"
#include "tests/test_util.h"

namespace moreh::io {
namespace {
namespace fs = std::filesystem;
using runtime::Tensor;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("moreh_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

// Writes a raw safetensors file: 8-byte length, header text, `data_bytes` bytes of data.
void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes,
              uint64_t claimed_len = 0) {
  std::ofstream f(path, std::ios::binary);
  const uint64_t n = claimed_len ? claimed_len : header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f << header << std::string(data_bytes, '\0');
}

std::string OpenError(const std::string& path) {
  auto r = SafetensorsFile::Open(path);
  EXPECT_FALSE(r.ok()) << path;
  return r.ok() ? "" : r.status().message();
}

TEST(Safetensors, RoundTripKeepsDTypesShapesAndValues) {
  TempDir dir;
  std::mt19937_64 rng(moreh::testing::TestSeed());
  const Tensor a = moreh::testing::RandomTensor({3, 5}, rng);
  const Tensor b = moreh::testing::RandomTensor({7}, rng).To(DType::kBF16);
  const Tensor c = Tensor::FromVector<int64_t>({1, -2, 3}, {3});
  const Tensor t = moreh::testing::RandomTensor({4, 2}, rng).Transpose(0, 1);  // strided
  ASSERT_TRUE(WriteSafetensors(dir / "x.safetensors", {{"a", a}, {"b", b}, {"c", c}, {"t", t}},
                               {{"format", "pt"}})
                  .ok());
  auto f = SafetensorsFile::Open(dir / "x.safetensors");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->entries().size(), 4u);
  EXPECT_EQ(f->Read("a").value().ToFloats(), a.ToFloats());
  const Tensor rb = f->Read("b").value();
  EXPECT_EQ(rb.dtype(), DType::kBF16);
  EXPECT_EQ(rb.ToFloats(), b.ToFloats());
  EXPECT_EQ(f->Read("c").value().ToInts(), c.ToInts());
  EXPECT_EQ(f->Read("t").value().ToFloats(), t.ToFloats());
  EXPECT_EQ(f->Read("t").value().shape(), Shape({2, 4}));
  EXPECT_FALSE(f->Read("zzz").ok());
}

TEST(Safetensors, BadHeadersAreRejectedWithTheReason) {
  TempDir dir;
  const std::string p = dir / "bad.safetensors";
  struct Case {
    std::string header;
    size_t data;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"not json", 0, "not valid JSON"},
      {"[1, 2]", 0, "not a JSON object"},
      {R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}})", 8, "out of range"},
      {R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 4, "needs 8"},
      {R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "v": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
       8, "overlaps"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8,
       "belong to no tensor"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 8, "trailing bytes"},
      {R"({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}})", 8, "unsupported dtype"},
      {R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4, "non-negative"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8, "out of range"},
      {R"({"w": {"dtype": "F32", "shape": [1]}})", 4, "data_offsets"},
      {R"({"__metadata__": {"format": 3}})", 0, "not a string"},
  };
  for (const Case& c : cases) {
    WriteRaw(p, c.header, c.data);
    const std::string m = OpenError(p);
    EXPECT_NE(m.find(c.expect), std::string::npos) << c.header << " -> " << m;
    EXPECT_NE(m.find(p), std::string::npos) << "error must name the file: " << m;
  }
  WriteRaw(p, "{}", 0, /*claimed_len=*/uint64_t{1} << 40);
  EXPECT_NE(OpenError(p).find("exceeds"), std::string::npos);
  WriteRaw(p, "{}", 0, /*claimed_len=*/4096);
  EXPECT_NE(OpenError(p).find("past the end"), std::string::npos);
  std::ofstream(p) << "abc";
  EXPECT_NE(OpenError(p).find("too short"), std::string::npos);
  EXPECT_EQ(SafetensorsFile::Open(dir / "missing.safetensors").status().code(),
            StatusCode::kNotFound);
}

TEST(Checkpoint, SaveLoadRoundTripSingleAndSharded) {
  TempDir dir;
  const models::LlamaForCausalLM model(moreh::testing::TinyLlamaConfig(), 5);
  for (int64_t shard : {int64_t{5'000'000'000}, int64_t{20'000}}) {
    model.save_pretrained(dir / "ckpt", shard);
    const bool sharded = fs::exists(dir.path() / "ckpt" / "model.safetensors.index.json");
    EXPECT_EQ(sharded, shard < 1'000'000);
    EXPECT_EQ(fs::exists(dir.path() / "ckpt" / "model.safetensors"), !sharded);
    const models::LlamaForCausalLM back = models::LlamaForCausalLM::from_pretrained(dir / "ckpt");
    const auto a = model.NamedParameters(), b = back.NamedParameters();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first);
      EXPECT_EQ(a[i].second.to_floats(), b[i].second.to_floats()) << a[i].first;
    }
    EXPECT_EQ(back.config().ToJson(), model.config().ToJson());
  }
  // No stale shards or temporary directories are left behind.
  int shards = 0;
  for (const auto& e : fs::directory_iterator(dir.path() / "ckpt")) {
    shards += e.path().extension() == ".safetensors";
  }
  EXPECT_GT(shards, 1);
  for (const auto& e : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename(), "ckpt") << "left behind: " << e.path();
  }
}

TEST(Checkpoint, Bf16DTypeIsPreservedAndOtherFilesKept) {
  TempDir dir;
  models::LlamaConfig c = moreh::testing::TinyLlamaConfig();
  c.torch_dtype = "bfloat16";
  const models::LlamaForCausalLM model(c, 5);
  fs::create_directories(dir.path() / "ckpt");
  std::ofstream(dir / "ckpt/tokenizer.model") << "keep me";
  model.save_pretrained(dir / "ckpt");
  auto f = SafetensorsFile::Open(dir / "ckpt/model.safetensors");
  ASSERT_TRUE(f.ok());
  ASSERT_EQ(f->entries().size(), model.NamedParameters().size());  // else the loops check nothing
  for (const auto& e : f->entries()) EXPECT_EQ(e.dtype, DType::kBF16) << e.name;
  std::ifstream keep(dir / "ckpt/tokenizer.model");
  std::string s;
  keep >> s;
  EXPECT_EQ(s, "keep");
  const auto back = models::LlamaForCausalLM::from_pretrained(dir / "ckpt");
  const auto a = model.NamedParameters(), b = back.NamedParameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {  // values rounded to bf16 once
    const auto x = a[i].second.to_floats(), y = b[i].second.to_floats();
    ASSERT_EQ(y.size(), x.size()) << a[i].first;
    for (size_t k = 0; k < x.size(); ++k) ASSERT_EQ(y[k], BF16ToF32(F32ToBF16(x[k])));
  }
}

TEST(Checkpoint, BadDirectoriesNameTheFileAndProblem) {
  TempDir dir;
  const models::LlamaForCausalLM model(moreh::testing::TinyLlamaConfig(), 5);
  model.save_pretrained(dir / "ok");
  EXPECT_ERROR_MENTIONS(models::LlamaForCausalLM::from_pretrained(dir / "nothing"), "config.json",
                        "cannot open");
  // Corrupt config.json
  fs::copy(dir.path() / "ok", dir.path() / "c1", fs::copy_options::recursive);
  std::ofstream(dir / "c1/config.json") << "{ not json";
  EXPECT_ERROR_MENTIONS(models::LlamaForCausalLM::from_pretrained(dir / "c1"), "c1/config.json",
                        "not valid JSON");
  std::ofstream(dir / "c1/config.json") << R"({"vocab_size": 64, "hidden_size": "big"})";
  EXPECT_ERROR_MENTIONS(models::LlamaForCausalLM::from_pretrained(dir / "c1"), "'hidden_size'",
                        "integer");
  // Every field type- and range-checked, the file named (the probe: rms_norm_eps null was taken,
  // an intermediate_size of 1e12 became an out-of-memory error that did not name config.json).
  {
    const auto base = nlohmann::json::parse(moreh::testing::TinyLlamaConfig().ToJson());
    struct Case {
      const char* field;
      nlohmann::json value;
      const char* expect;
    };
    const std::vector<Case> cases = {
        {"rms_norm_eps", nullptr, "'rms_norm_eps' must be a number, not null"},
        {"rms_norm_eps", -1e-5, "'rms_norm_eps' is -1e-05"},
        {"intermediate_size", 1e12, "'intermediate_size' must be an integer, not a fractional"},
        {"intermediate_size", int64_t{1000000000000}, "'intermediate_size' is 1000000000000"},
        {"hidden_size", nullptr, "'hidden_size' must be an integer, not null"},
        {"num_hidden_layers", -2, "'num_hidden_layers' is -2"},
        {"vocab_size", "32000", "'vocab_size' must be an integer, not a string"},
        {"tie_word_embeddings", 1, "'tie_word_embeddings' must be true or false"},
        {"rope_theta", 0, "'rope_theta' is 0"},
        {"max_position_embeddings", int64_t{1} << 40, "'max_position_embeddings' is"},
        {"eos_token_id", 100000, "'eos_token_id' is 100000"},
        {"torch_dtype", "float64", "torch_dtype 'float64' is not"},
    };
    for (const Case& c : cases) {
      auto j = base;
      j[c.field] = c.value;
      auto r = models::LlamaConfig::FromJson(j.dump(), "m/config.json");
      ASSERT_FALSE(r.ok()) << c.field << " = " << c.value.dump();
      EXPECT_NE(r.status().message().find("m/config.json: "), std::string::npos)
          << r.status().message();
      EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().message();
    }
    // Hugging Face writes null for unset token ids and rope_scaling: taken as unset.
    auto j = base;
    j["pad_token_id"] = nullptr;
    j["bos_token_id"] = nullptr;
    j["rope_scaling"] = nullptr;
    auto ok = models::LlamaConfig::FromJson(j.dump(), "m/config.json");
    ASSERT_TRUE(ok.ok()) << ok.status().message();
    EXPECT_EQ(ok->pad_token_id, -1);
    // Sizes each in range whose product no machine could hold: named as such, not out of memory.
    j["hidden_size"] = 65536;
    j["num_attention_heads"] = 64;
    j["num_key_value_heads"] = 64;
    j["intermediate_size"] = 1 << 20;
    j["num_hidden_layers"] = 4096;
    auto huge = models::LlamaConfig::FromJson(j.dump(), "m/config.json");
    ASSERT_FALSE(huge.ok());
    EXPECT_NE(huge.status().message().find("more than 10 trillion"), std::string::npos)
        << huge.status().message();
  }
  // transformers 5's config.json: rotary settings in rope_parameters, the dtype as "dtype".
  {
    auto j = nlohmann::json::parse(moreh::testing::TinyLlamaConfig().ToJson());
    j.erase("rope_theta");
    j.erase("rope_scaling");
    j.erase("torch_dtype");
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};
    j["dtype"] = "bfloat16";
    auto c = models::LlamaConfig::FromJson(j.dump(), "v5/config.json");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ(c->rope_theta, 500000.0);
    EXPECT_EQ(c->checkpoint_dtype(), DType::kBF16);
    j["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0}};
    auto scaled = models::LlamaConfig::FromJson(j.dump(), "v5/config.json");
    ASSERT_FALSE(scaled.ok());  // llama3 needs its other parameters
    EXPECT_NE(scaled.status().message().find("'rope_parameters.low_freq_factor' is missing"),
              std::string::npos)
        << scaled.status().message();
    j["rope_parameters"]["low_freq_factor"] = 1.0;
    j["rope_parameters"]["high_freq_factor"] = 4.0;
    j["rope_parameters"]["original_max_position_embeddings"] = 8192;
    auto llama3 = models::LlamaConfig::FromJson(j.dump(), "v5/config.json");
    ASSERT_TRUE(llama3.ok()) << llama3.status().message();
    EXPECT_EQ(llama3->rope_scaling.type, "llama3");
    EXPECT_EQ(llama3->rope_scaling.factor, 8.0);
    j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
    auto yarn = models::LlamaConfig::FromJson(j.dump(), "v5/config.json");
    ASSERT_FALSE(yarn.ok());
    EXPECT_NE(yarn.status().message().find("rope_parameters type 'yarn' is not supported"),
              std::string::npos)
        << yarn.status().message();
    j["rope_parameters"] = 3;
    EXPECT_FALSE(models::LlamaConfig::FromJson(j.dump(), "v5/config.json").ok());
  }
  // A config that disagrees with the weights.
  models::LlamaConfig other = moreh::testing::TinyLlamaConfig();
  other.hidden_size = 64;
  std::ofstream(dir / "c1/config.json") << other.ToJson();
  EXPECT_ERROR_MENTIONS(models::LlamaForCausalLM::from_pretrained(dir / "c1"), "model.safetensors",
                        "model.embed_tokens.weight", "shape [64, 32]", "[64, 64]");
  // A missing tensor.
  models::LlamaConfig more = moreh::testing::TinyLlamaConfig();
  more.num_hidden_layers = 3;
  std::ofstream(dir / "c1/config.json") << more.ToJson();
  EXPECT_ERROR_MENTIONS(models::LlamaForCausalLM::from_pretrained(dir / "c1"),
                        "missing tensor 'model.layers.2");
  // A shard named by the index is missing.
  model.save_pretrained(dir / "sharded", 20'000);
  std::string shard;
  for (const auto& e : fs::directory_iterator(dir.path() / "sharded")) {
    if (e.path().filename().string().rfind("model-00001-of-", 0) == 0) shard = e.path().filename();
  }
  ASSERT_FALSE(shard.empty());
  fs::remove(dir.path() / "sharded" / shard);
  EXPECT_ERROR_MENTIONS(models::LlamaForCausalLM::from_pretrained(dir / "sharded"), shard,
                        "model.safetensors.index.json");
  // No weights at all: initialised from the seed, deterministically.
  fs::remove(dir.path() / "c1" / "model.safetensors");
  const auto a = models::LlamaForCausalLM::from_pretrained(dir / "c1", 9);
  const models::LlamaForCausalLM b(more, 9);
  EXPECT_EQ(a.Parameters()[2].to_floats(), b.Parameters()[2].to_floats());
  // A tensor stored with an integer dtype.
  {
    std::vector<std::pair<std::string, Tensor>> ts;
    for (const auto& [name, p] : model.NamedParameters()) {
      ts.emplace_back(name, name == "model.norm.weight" ? p.data().To(DType::kI32) : p.data());
    }
    ASSERT_TRUE(SaveCheckpoint(dir / "c3", ts, model.config().ToJson()).ok());
    EXPECT_ERROR_MENTIONS(models::LlamaForCausalLM::from_pretrained(dir / "c3"),
                          "model.norm.weight", "integer dtype i32");
  }
  // A truncated weights file.
  fs::copy(dir.path() / "ok", dir.path() / "c2", fs::copy_options::recursive);
  fs::resize_file(dir.path() / "c2" / "model.safetensors", 1000);
  EXPECT_ERROR_MENTIONS(models::LlamaForCausalLM::from_pretrained(dir / "c2"), "model.safetensors");
}

}  // namespace
}  // namespace moreh::io

namespace moreh {
namespace {
// Each family's config.json as transformers' config class reads it: its defaults, the fields it
// would silently ignore refused by name, and a round trip through ToJson (what the checkpoint and
// the stage programs carry).
TEST(ModelConfig, FamiliesReadAsTransformersReadsThem) {
  auto base = nlohmann::json::parse(moreh::testing::TinyLlamaConfig().ToJson());
  for (const char* k : {"attention_bias", "mlp_bias", "head_dim", "rope_scaling"}) base.erase(k);
  auto read = [&](nlohmann::json changes) {
    auto j = base;
    j.update(changes);
    return models::LlamaConfig::FromJson(j.dump(), "m/config.json");
  };
  auto refused = [&](nlohmann::json changes, const std::string& expect) {
    auto r = read(changes);
    ASSERT_FALSE(r.ok()) << changes.dump();
    EXPECT_NE(r.status().message().find(expect), std::string::npos)
        << changes.dump() << ": " << r.status().message();
  };
  refused({{"model_type", "gemma3"}}, "'model_type' 'gemma3' is not supported (llama, mistral");
  // Gemma 2: GeGLU, (1 + w) norms, scaled embeddings, its defaults (tied, head_dim 256, window
  // 4096 on even layers, soft-cappings 50 and 30, query_pre_attn_scalar 224); null turns off.
  auto gemma_json = base;  // no tie_word_embeddings: Gemma2Config's default (true)
  gemma_json.erase("tie_word_embeddings");
  gemma_json.update({{"model_type", "gemma2"}, {"hidden_size", 512}, {"num_attention_heads", 2}});
  auto gemma = models::LlamaConfig::FromJson(gemma_json.dump(), "m/config.json");
  ASSERT_TRUE(gemma.ok()) << gemma.status().message();
  EXPECT_TRUE(gemma->tie_word_embeddings && gemma->sandwich_norms && gemma->scale_embeddings);
  EXPECT_EQ(gemma->mlp_activation, "gelu_tanh");
  EXPECT_EQ(gemma->norm_weight_offset, 1);
  EXPECT_EQ(gemma->head_dim(), 256);
  EXPECT_EQ(gemma->LayerWindow(0), 4096);
  EXPECT_EQ(gemma->LayerWindow(1), 0);
  EXPECT_EQ(gemma->attn_logit_softcapping, 50);
  EXPECT_EQ(gemma->final_logit_softcapping, 30);
  EXPECT_EQ(gemma->query_pre_attn_scalar, 224);
  auto uncapped = read({{"model_type", "gemma2"},
                        {"attn_logit_softcapping", nullptr},
                        {"final_logit_softcapping", nullptr},
                        {"sliding_window", nullptr}});
  ASSERT_TRUE(uncapped.ok()) << uncapped.status().message();
  EXPECT_EQ(uncapped->attn_logit_softcapping + uncapped->final_logit_softcapping, 0);
  EXPECT_EQ(uncapped->LayerWindow(0), 0);
  refused({{"model_type", "gemma2"}, {"hidden_activation", "gelu"}},
          "'hidden_activation' 'gelu' is not supported");
  refused({{"model_type", "gemma2"}, {"rope_scaling", {{"rope_type", "linear"}, {"factor", 2}}}},
          "Gemma2ForCausalLM has no rope scaling");
  // Mistral: a 4096-token window unless the file says null (v0.2 and later); no rope scaling, no
  // biases in transformers' class.
  auto mistral = read({{"model_type", "mistral"}});
  ASSERT_TRUE(mistral.ok()) << mistral.status().message();
  EXPECT_EQ(mistral->sliding_window, 4096);
  EXPECT_EQ(mistral->architecture(), "MistralForCausalLM");
  EXPECT_EQ(read({{"model_type", "mistral"}, {"sliding_window", nullptr}})->sliding_window, 0);
  refused({{"model_type", "mistral"}, {"sliding_window", 0}}, "'sliding_window' is 0");
  refused({{"model_type", "mistral"}, {"rope_scaling", {{"rope_type", "linear"}, {"factor", 2}}}},
          "MistralForCausalLM has no rope scaling");
  refused({{"model_type", "mistral"}, {"attention_bias", true}},
          "'attention_bias' is not part of mistral");
  // Qwen2: q/k/v biases always; head_dim always hidden / heads; no sliding window.
  auto qwen2 = read({{"model_type", "qwen2"}});
  ASSERT_TRUE(qwen2.ok()) << qwen2.status().message();
  EXPECT_TRUE(qwen2->qkv_bias && !qwen2->attention_bias && !qwen2->qk_norm);
  refused({{"model_type", "qwen2"}, {"use_sliding_window", true}}, "use_sliding_window");
  refused({{"model_type", "qwen2"}, {"head_dim", 2}}, "Qwen2's head_dim is always");
  refused({{"model_type", "qwen2"}, {"mlp_bias", true}}, "'mlp_bias' is not part of qwen2");
  // Qwen3: q/k norms; head_dim 128 unless given; attention_bias honoured (q, k, v and o).
  auto qwen3 = read({{"model_type", "qwen3"}, {"hidden_size", 256}, {"num_attention_heads", 2}});
  ASSERT_TRUE(qwen3.ok()) << qwen3.status().message();
  EXPECT_TRUE(qwen3->qk_norm && !qwen3->qkv_bias);
  EXPECT_EQ(qwen3->head_dim(), 128);
  EXPECT_TRUE(
      read({{"model_type", "qwen3"}, {"head_dim", 16}, {"attention_bias", true}})->attention_bias);
  // The round trip keeps every family's features.
  for (const auto& c : {*mistral, *qwen2, *qwen3, *gemma, *uncapped}) {
    auto back = models::LlamaConfig::FromJson(c.ToJson(), "round trip");
    ASSERT_TRUE(back.ok()) << c.model_type << ": " << back.status().message();
    EXPECT_EQ(back->model_type, c.model_type);
    EXPECT_EQ(back->sliding_window, c.sliding_window);
    EXPECT_EQ(back->qkv_bias, c.qkv_bias);
    EXPECT_EQ(back->qk_norm, c.qk_norm);
    EXPECT_EQ(back->attention_bias, c.attention_bias);
    EXPECT_EQ(back->head_dim(), c.head_dim());
    EXPECT_EQ(back->final_logit_softcapping, c.final_logit_softcapping);
    EXPECT_EQ(back->LayerWindow(0), c.LayerWindow(0));
    EXPECT_EQ(nlohmann::json::parse(back->ToJson()), nlohmann::json::parse(c.ToJson()));
  }
}
}  // namespace
}  // namespace moreh
