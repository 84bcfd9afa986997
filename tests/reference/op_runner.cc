// Runs one case for tests/reference/check_against_torch.py and writes the results as .npy files.
//
//   moreh_op_runner op DIR     DIR/graph.json (a moreh graph), DIR/in<i>.npy for each graph input
//                              (converted to the input's dtype), optional DIR/dout.npy (gradient of
//                              graph output 0). Writes DIR/out<k>.npy and DIR/grad<i>.npy for every
//                              float input that output 0 depends on.
//   moreh_op_runner train DIR  DIR/request.json {"model": dir with config.json and tokenizer.model,
//                              "dataset": JSONL, "examples": B, "block_size": T, "steps": S,
//                              "lr": x, "seed": n}. Initialises the model from the seed, saves it
//                              as a checkpoint in DIR/ckpt (with tokenizer.model), tokenizes the
//                              first B summarization prompts (DIR/input_ids.npy), and trains S
//                              AdamW steps on that batch: DIR/losses.npy (loss before each update)
//                              and DIR/grad_<name>.npy (the first step's gradients).
//   moreh_op_runner load DIR OUT  from_pretrained(DIR); writes OUT/<name>.npy for every parameter.
//   moreh_op_runner save DIR CONFIG_DIR SEED [loop]  save_pretrained a model initialised from SEED
//                              with CONFIG_DIR's config into DIR, in 1 MB shards; with "loop",
//                              again and again until killed (for the atomic-save test).
//   moreh_op_runner block DIR  DIR/config.json (a Llama config), DIR/x.npy [B,T,C], optional
//                              DIR/mask.npy [B,T], DIR/<hf name>.npy for the 9 weights of
//                              model.layers.0, DIR/dout.npy. Runs LlamaDecoderLayer forward and
//                              backward; writes DIR/out.npy, DIR/grad_x.npy, DIR/grad_<name>.npy.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/autograd.h"
#include "runtime/data/dataset.h"
#include "runtime/executor.h"
#include "runtime/models/llama.h"
#include "runtime/models/llama_def.h"
#include "runtime/optim.h"
#include "runtime/tensor.h"
#include "tests/reference/npy.h"

namespace {
using moreh::testing::ReadNpy;
using moreh::testing::WriteNpy;
namespace fs = std::filesystem;

std::string ReadFile(const fs::path& p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error("cannot open " + p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int RunOp(const fs::path& dir) {
  moreh::Graph g = moreh::Graph::FromJson(ReadFile(dir / "graph.json")).value();
  std::vector<moreh::runtime::Tensor> inputs;
  for (size_t i = 0; i < g.inputs().size(); ++i) {
    const moreh::ValueInfo& info = g.info(g.inputs()[i]);
    inputs.push_back(ReadNpy((dir / ("in" + std::to_string(i) + ".npy")).string()).To(info.dtype));
  }
  const int num_fwd_outputs = static_cast<int>(g.outputs().size());
  std::vector<int> grad_inputs, grad_values;
  if (fs::exists(dir / "dout.npy")) {
    const moreh::ValueInfo out_info = g.info(g.outputs()[0]);
    const int seed = g.AddInput(out_info, "dout");
    inputs.push_back(ReadNpy((dir / "dout.npy").string()).To(out_info.dtype));
    std::vector<int> wrt;
    for (size_t i = 0; i + 1 < g.inputs().size(); ++i) {
      if (moreh::IsFloating(g.info(g.inputs()[i]).dtype)) wrt.push_back(g.inputs()[i]);
    }
    const std::vector<int> grads = moreh::runtime::BuildBackward(&g, g.outputs()[0], seed, wrt);
    for (size_t k = 0; k < wrt.size(); ++k) {
      if (grads[k] < 0) continue;
      grad_inputs.push_back(static_cast<int>(
          std::find(g.inputs().begin(), g.inputs().end(), wrt[k]) - g.inputs().begin()));
      grad_values.push_back(grads[k]);
      g.MarkOutput(grads[k]);
    }
  }
  auto cg = moreh::runtime::Compile(std::move(g));
  moreh::runtime::Executor ex;
  std::vector<moreh::runtime::Tensor> outs = ex.Run(*cg, std::move(inputs));
  for (int k = 0; k < num_fwd_outputs; ++k) {
    WriteNpy((dir / ("out" + std::to_string(k) + ".npy")).string(), outs[k]);
  }
  for (size_t k = 0; k < grad_inputs.size(); ++k) {
    WriteNpy((dir / ("grad" + std::to_string(grad_inputs[k]) + ".npy")).string(),
             outs[num_fwd_outputs + k]);
  }
  return 0;
}

int RunTrain(const fs::path& dir) {
  const nlohmann::json j = nlohmann::json::parse(ReadFile(dir / "request.json"));
  const std::string model_dir = j.at("model");
  auto tok = moreh::data::Tokenizer::Load(model_dir).value();
  tok.set_pad_id(0);
  auto model = moreh::models::LlamaForCausalLM::from_pretrained(model_dir, j.at("seed"));
  fs::create_directories(dir / "ckpt");
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"}) {
    if (fs::exists(fs::path(model_dir) / f)) {
      fs::copy_file(fs::path(model_dir) / f, dir / "ckpt" / f,
                    fs::copy_options::overwrite_existing);
    }
  }
  model.save_pretrained((dir / "ckpt").string());
  auto records = moreh::data::ReadJsonl(j.at("dataset"), {"article", "highlights"}).value();
  records.resize(j.at("examples").get<size_t>());
  const auto ds = moreh::data::TokenizeRecords(records, tok, j.at("block_size"),
                                               [](const moreh::data::Record& r) {
                                                 return moreh::data::SummarizationPrompt(r);
                                               })
                      .value();
  moreh::data::DataLoader loader(&ds, static_cast<int64_t>(records.size()), false, 0);
  const moreh::Tensor ids = loader.Batch(0);
  WriteNpy((dir / "input_ids.npy").string(), ids.data());
  moreh::optim::AdamW opt(model.Parameters(), j.at("lr").get<double>());
  std::vector<float> losses;
  const int steps = j.at("steps");
  for (int s = 0; s < steps; ++s) {
    auto out = model(ids, moreh::data::CreateMask(ids, 0), moreh::data::MaskPads(ids, 0));
    out.loss.backward();
    if (s == 0) {
      moreh::Sync();
      for (auto& [name, p] : model.NamedParameters()) {
        WriteNpy((dir / ("grad_" + name + ".npy")).string(), p.grad().data());
      }
    }
    opt.step();
    model.ZeroGrad();
    losses.push_back(out.loss.item());
  }
  WriteNpy((dir / "losses.npy").string(),
           moreh::runtime::Tensor::FromVector(losses, {static_cast<int64_t>(losses.size())}));
  return 0;
}

int RunLoad(const fs::path& dir, const fs::path& out) {
  const auto model = moreh::models::LlamaForCausalLM::from_pretrained(dir.string());
  fs::create_directories(out);
  for (const auto& [name, p] : model.NamedParameters()) {
    WriteNpy((out / (name + ".npy")).string(), p.data());
  }
  return 0;
}

int RunSave(const fs::path& dir, const fs::path& config_dir, uint64_t seed, bool loop) {
  auto config = moreh::models::LlamaConfig::FromFile((config_dir / "config.json").string()).value();
  const moreh::models::LlamaForCausalLM model(config, seed);
  do {
    model.save_pretrained(dir.string(), 1'000'000);
  } while (loop);
  return 0;
}

int RunBlock(const fs::path& dir) {
  const nlohmann::json j = nlohmann::json::parse(ReadFile(dir / "config.json"));
  moreh::models::LlamaConfig c;
  c.vocab_size = 16;
  c.hidden_size = j.at("hidden_size");
  c.intermediate_size = j.at("intermediate_size");
  c.num_hidden_layers = 1;
  c.num_attention_heads = j.at("num_attention_heads");
  c.num_key_value_heads = j.at("num_key_value_heads");
  c.rms_norm_eps = j.at("rms_norm_eps");
  c.rope_theta = j.at("rope_theta");
  c.Validate().ThrowIfError();
  // The decoder layer as the model definition emits it (runtime/models/llama_def.h).
  std::vector<std::pair<std::string, moreh::Tensor>> params;
  for (const auto& spec : moreh::models::LayerParams(c, 0)) {
    params.emplace_back(
        spec.name,
        moreh::Tensor::FromData(ReadNpy((dir / (spec.name + ".npy")).string()), true, spec.name));
  }
  moreh::models::LazyEmitter e([&](const std::string& name) {
    for (const auto& [n, t] : params) {
      if (n == name) return t;
    }
    throw moreh::Error("no weight " + name);
  });
  moreh::Tensor x = moreh::Tensor::FromData(ReadNpy((dir / "x.npy").string()), true, "x");
  moreh::models::Val mask = moreh::models::kNoVal;
  if (fs::exists(dir / "mask.npy")) {
    mask = e.Hold(
        moreh::Tensor::FromData(ReadNpy((dir / "mask.npy").string()).To(moreh::DType::kI64)));
  }
  moreh::Tensor out = e.tensor(moreh::models::EmitDecoderLayer(e, c, 0, e.Hold(x), mask));
  moreh::Tensor dout = moreh::Tensor::FromData(ReadNpy((dir / "dout.npy").string()));
  out.backward(dout);
  moreh::Sync();
  WriteNpy((dir / "out.npy").string(), out.data());
  WriteNpy((dir / "grad_x.npy").string(), x.grad().data());
  for (auto& [name, p] : params) {
    WriteNpy((dir / ("grad_" + name + ".npy")).string(), p.grad().data());
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && std::string(argv[1]) != "op" && std::string(argv[1]) != "block" &&
      std::string(argv[1]) != "train") {
    try {
      const std::string mode = argv[1];
      if (mode == "load" && argc == 4) return RunLoad(argv[2], argv[3]);
      if (mode == "save" && (argc == 5 || argc == 6)) {
        return RunSave(argv[2], argv[3], std::stoull(argv[4]), argc == 6);
      }
      std::cerr << "moreh_op_runner: bad arguments for '" << mode << "'\n";
      return 2;
    } catch (const std::exception& e) {
      std::cerr << "moreh_op_runner: " << e.what() << "\n";
      return 1;
    }
  }
  if (argc != 3) {
    std::cerr << "usage: moreh_op_runner op|block|train DIR | load DIR OUT\n";
    return 2;
  }
  try {
    const std::string mode = argv[1];
    if (mode == "op") return RunOp(argv[2]);
    if (mode == "block") return RunBlock(argv[2]);
    if (mode == "train") return RunTrain(argv[2]);
    std::cerr << "moreh_op_runner: unknown mode '" << mode << "'\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "moreh_op_runner: " << e.what() << "\n";
    return 1;
  }
}
