// One training step of a Llama on one GPU through the runtime: the stage program of the whole model
// (forward + backward, bf16 compute weights and activations, f32 loss) run by the executor on
// cuda:0, then the fused multi-tensor AdamW on f32 master weights, which also writes the next
// step's bf16 weights. Random weights and tokens (never zeros). Prints JSON: median step time over
// --steps timed steps after 2 warm-ups, tokens/s, MFU against the GPU's dense bf16 peak
// (6 N + 12 L H Q T FLOPs per token), and the device's peak memory.
//   gpu_step_bench [--layers 22 --hidden 2048 --intermediate 5632 --heads 32 --kv-heads 4
//                   --vocab 32000 --seq 2048 --batch 4 --steps 8 --dtype bf16 --peak-tflops P]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_allocator.h"
#include "kernels/cuda/device_info.h"
#include "runtime/executor.h"
#include "runtime/parallel/stage_graph.h"

using moreh::DType;
using moreh::runtime::Tensor;
namespace gpu = moreh::kernels::cuda;

int main(int argc, char** argv) {
  std::map<std::string, std::string> args{
      {"layers", "22"},  {"hidden", "2048"}, {"intermediate", "5632"}, {"heads", "32"},
      {"kv-heads", "4"}, {"vocab", "32000"}, {"seq", "2048"},          {"batch", "4"},
      {"steps", "8"},    {"dtype", "bf16"},  {"peak-tflops", "0"}};
  for (int i = 1; i < argc; i += 2) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc || !args.count(k.substr(2))) {
      std::fprintf(stderr, "gpu_step_bench: bad argument '%s'\n", argv[i]);
      return 2;
    }
    args[k.substr(2)] = argv[i + 1];
  }
  if (gpu::DeviceCount() == 0) {
    std::printf("SKIP: no CUDA device on this machine\n");
    return 77;
  }
  try {
    moreh::models::LlamaConfig c;
    c.num_hidden_layers = std::stoll(args["layers"]);
    c.hidden_size = std::stoll(args["hidden"]);
    c.intermediate_size = std::stoll(args["intermediate"]);
    c.num_attention_heads = std::stoll(args["heads"]);
    c.num_key_value_heads = std::stoll(args["kv-heads"]);
    c.vocab_size = std::stoll(args["vocab"]);
    moreh::parallel::StageSpec spec;
    spec.model = c;
    spec.num_layers = static_cast<int>(c.num_hidden_layers);
    spec.micro_batch = std::stoll(args["batch"]);
    spec.seq_len = std::stoll(args["seq"]);
    MOREH_CHECK(moreh::ParseDType(args["dtype"], &spec.compute_dtype), "bad --dtype {}",
                args["dtype"]);
    const int steps = std::stoi(args["steps"]);
    const auto prog = moreh::parallel::BuildStageProgram(spec);
    const auto cg = moreh::runtime::Compile(prog.full);
    const moreh::Graph& g = cg->graph;
    moreh::runtime::Allocator* dev = gpu::CudaAllocator(0);

    // Inputs on the device; per parameter an f32 master, its AdamW states and the compute copy.
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_int_distribution<int64_t> token(0, c.vocab_size - 1);
    std::vector<Tensor> inputs;
    struct Param {
      int input;  // index in inputs
      Tensor master, m, v;
    };
    std::vector<Param> params;
    int64_t num_params = 0;
    for (size_t i = 0; i < g.inputs().size(); ++i) {
      const int v = g.inputs()[i];
      const moreh::ValueInfo& info = g.info(v);
      const int64_t n = moreh::Numel(info.shape);
      if (v == prog.ids || v == prog.labels) {
        std::vector<int64_t> ids(n);
        for (auto& id : ids) id = token(rng);
        inputs.push_back(Tensor::FromVector(ids, info.shape).CopyTo(dev));
      } else if (v == prog.mask) {
        inputs.push_back(Tensor::Full(info.shape, DType::kI64, 1.0, dev));
      } else if (v == prog.loss_weight) {  // the mean over the batch's counted labels
        const double counted = static_cast<double>(spec.micro_batch * (spec.seq_len - 1));
        inputs.push_back(Tensor::Full(info.shape, DType::kF32, 1.0 / counted, dev));
      } else {
        const bool norm = g.value(v).name.find("norm") != std::string::npos;
        std::vector<float> w(n);
        for (float& x : w) x = norm ? 1.0f : 0.02f * normal(rng);
        Param p{static_cast<int>(i), Tensor::FromVector(w, info.shape).CopyTo(dev),
                Tensor::Zeros(info.shape, DType::kF32, dev),
                Tensor::Zeros(info.shape, DType::kF32, dev)};
        inputs.push_back(p.master.To(info.dtype));
        params.push_back(std::move(p));
        num_params += n;
      }
    }
    // Graph outputs: the parameters' gradients in param_grads order, and the loss.
    std::vector<int> grad_output(params.size(), -1);
    int loss_output = -1;
    for (size_t k = 0; k < g.outputs().size(); ++k) {
      const int v = g.outputs()[k];
      if (v == prog.out) loss_output = static_cast<int>(k);
      for (size_t j = 0; j < prog.param_grads.size(); ++j) {
        if (prog.param_grads[j] == v) grad_output[j] = static_cast<int>(k);
      }
    }
    MOREH_CHECK(loss_output >= 0, "the stage program does not output its loss");

    moreh::runtime::Executor exec(dev);
    std::vector<double> times;
    float first_loss = 0, last_loss = 0;
    for (int step = 0; step < steps + 2; ++step) {
      MOREH_CUDA_CHECK(cudaDeviceSynchronize());
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<Tensor> outs = exec.Run(*cg, inputs);
      std::vector<gpu::AdamWTensor> list;
      for (size_t j = 0; j < params.size(); ++j) {
        if (grad_output[j] < 0) continue;
        Param& p = params[j];
        const Tensor& grad = outs[grad_output[j]];
        Tensor& copy = inputs[p.input];
        list.push_back({p.master.data<float>(), p.m.data<float>(), p.v.data<float>(),
                        grad.raw_data(), grad.dtype(), copy.raw_data(), copy.dtype(),
                        p.master.numel()});
      }
      const gpu::AdamWParams hp{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, step + 1};
      gpu::AdamWStep(list.data(), static_cast<int>(list.size()), hp, nullptr);
      MOREH_CUDA_CHECK(cudaDeviceSynchronize());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const float loss = outs[loss_output].ToFloats()[0];
      if (step == 0) first_loss = loss;
      last_loss = loss;
      if (step >= 2) times.push_back(s);
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    const double tokens = static_cast<double>(spec.micro_batch * spec.seq_len);
    const double flops_per_token =
        6.0 * static_cast<double>(num_params) +
        12.0 * c.num_hidden_layers * c.hidden_size * static_cast<double>(spec.seq_len);
    double peak = std::stod(args["peak-tflops"]) * 1e12;
    const std::string name = gpu::DeviceName(0);
    if (peak <= 0) {  // dense bf16 of the SXM parts this project targets
      peak = (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos)
                 ? 989e12
                 : 0;
    }
    const double tps = tokens / median;
    std::printf(
        "{\"device\": \"%s\", \"params\": %lld, \"tokens_per_step\": %.0f, \"step_ms\": %.1f, "
        "\"tokens_per_s\": %.0f, \"mfu\": %.4f, \"peak_mem_gib\": %.2f, \"loss_first\": %.4f, "
        "\"loss_last\": %.4f}\n",
        name.c_str(), static_cast<long long>(num_params), tokens, median * 1e3, tps,
        peak > 0 ? tps * flops_per_token / peak : 0.0, dev->peak_bytes() / 1073741824.0, first_loss,
        last_loss);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_step_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
