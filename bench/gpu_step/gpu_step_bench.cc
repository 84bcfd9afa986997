// One training step of a Llama on one GPU through the runtime, as a worker daemon runs it: the
// whole model as one pipeline stage in parallel::StageRunner on cuda:0 (bf16 compute weights,
// activations and gradients, f32 loss; gradients widened into the f32 accumulator; AdamW on the
// f32 master weights; the bf16 copy refreshed). Random weights and tokens (never zeros). Prints
// JSON: median step time over --steps timed steps after 2 warm-ups, tokens/s, MFU against the
// GPU's dense bf16 peak (6 N + 12 L H Q T FLOPs per token), and the device's peak memory.
//   gpu_step_bench [--layers 22 --hidden 2048 --intermediate 5632 --heads 32 --kv-heads 4
//                   --vocab 32000 --seq 2048 --batch 4 --steps 8 --dtype bf16 --peak-tflops P]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_allocator.h"
#include "kernels/cuda/device_info.h"
#include "runtime/device.h"
#include "runtime/parallel/stage_graph.h"
#include "runtime/parallel/stage_runner.h"
#include "runtime/planner/planner.h"

using moreh::DType;
using moreh::runtime::Tensor;
namespace gpu = moreh::kernels::cuda;

#ifdef MOREH_CUDA_SIMT
namespace moreh::simt {
uint64_t HostWaits();  // tests/cuda/simt/simt.h: the emulated device counts the host's waits
}
#endif

namespace {
#ifdef MOREH_CUDA_SIMT
constexpr bool kCountsHostWaits = true;
uint64_t HostWaits() { return moreh::simt::HostWaits(); }
#else
constexpr bool kCountsHostWaits = false;
uint64_t HostWaits() { return 0; }
#endif

class NoLinks : public moreh::parallel::PipeLinks {  // one stage: no neighbours
 public:
  void SendForward(int, const Tensor&) override {}
  void RecvForward(int, Tensor*) override {}
  void SendBackward(int, const Tensor&) override {}
  void RecvBackward(int, Tensor*) override {}
  void Flush() override {}
};
}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args{
      {"layers", "22"},  {"hidden", "2048"}, {"intermediate", "5632"}, {"heads", "32"},
      {"kv-heads", "4"}, {"vocab", "32000"}, {"seq", "2048"},          {"batch", "4"},
      {"steps", "8"},    {"dtype", "bf16"},  {"peak-tflops", "0"},     {"device", "cuda:0"}};
  for (int i = 1; i < argc; i += 2) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc || !args.count(k.substr(2))) {
      std::fprintf(stderr, "gpu_step_bench: bad argument '%s'\n", argv[i]);
      return 2;
    }
    args[k.substr(2)] = argv[i + 1];
  }
  // --device cpu runs the same step on the CPU (small shapes: a check of this program).
  const bool on_gpu = args["device"] != "cpu";
  if (on_gpu && gpu::DeviceCount() == 0) {
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
    moreh::runtime::Allocator* dev = moreh::runtime::DeviceAllocator(args["device"]);
    const int gpu_index = on_gpu ? std::stoi(args["device"].substr(5)) : -1;
    if (on_gpu) gpu::SetDevice(gpu_index);  // the kernels run on the calling thread's device
    moreh::parallel::StageRunner runner(moreh::parallel::BuildStageProgram(spec), dev,
                                        {.lr = 1e-4, .beta2 = 0.95, .weight_decay = 0.1});
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    // Weights ~ N(0, 0.02) read cyclically from a pool at a random start: drawing 1.1e9 normals
    // one by one would take half a minute of the GPU machine's time.
    std::vector<float> pool(1 << 20);
    for (float& x : pool) x = 0.02f * normal(rng);
    for (size_t i = 0; i < runner.param_names().size(); ++i) {
      Tensor p = runner.parameter(i);
      const bool norm = runner.param_names()[i].find("norm") != std::string::npos;
      std::vector<float> w(p.numel());
      size_t at = rng() % pool.size();
      for (float& x : w) {
        x = norm ? 1.0f : pool[at];
        at = at + 1 == pool.size() ? 0 : at + 1;
      }
      p.CopyFrom(Tensor::FromVector(w, p.shape()));
    }
    const int64_t num_params = runner.num_params();
    // One micro-batch of random tokens, every label counted (the loss is their mean).
    std::uniform_int_distribution<int64_t> token(0, c.vocab_size - 1);
    const moreh::Shape bt{spec.micro_batch, spec.seq_len};
    std::vector<int64_t> ids(spec.micro_batch * spec.seq_len);
    for (auto& id : ids) id = token(rng);
    const double counted = static_cast<double>(spec.micro_batch * (spec.seq_len - 1));
    const std::vector<moreh::parallel::MicroBatch> mbs{
        {Tensor::FromVector(ids, bt), Tensor::Full(bt, DType::kI64, 1.0),
         Tensor::FromVector(ids, bt), Tensor::Full({}, DType::kF32, 1.0 / counted)}};
    const auto table = moreh::planner::OneFOneB(1, 1, false);
    NoLinks links;
    std::vector<double> times;
    double first_loss = 0, last_loss = 0;
    uint64_t host_waits = 0;  // the steps' own (emulated device only: MOREH_CUDA_SIMT)
    for (int step = 0; step < steps + 2; ++step) {
      if (on_gpu) MOREH_CUDA_CHECK(cudaDeviceSynchronize());
      const auto t0 = std::chrono::steady_clock::now();
      const uint64_t waits0 = HostWaits();
      const double loss = runner.RunMicroBatches(table[0], mbs, &links);
      runner.Update(nullptr, 1e-4);
      if (step >= 2) host_waits += HostWaits() - waits0;
      if (on_gpu) MOREH_CUDA_CHECK(cudaDeviceSynchronize());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (step == 0) first_loss = loss;
      last_loss = loss;
      if (step >= 2) times.push_back(s);
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    // One more step with every graph node timed (on a GPU by events on the stream around each
    // node's work): where the time goes, per op kind, to stderr. The rest of the step is the
    // runner's own work outside the graphs (gradients into the f32 accumulator, AdamW, zeroing).
    {
      auto& exec = runner.executor();
      exec.set_profiling(true);
      runner.RunMicroBatches(table[0], mbs, &links);  // a profiled warm-up makes the events
      runner.Update(nullptr, 1e-4);
      exec.ResetProfile();
      if (on_gpu) MOREH_CUDA_CHECK(cudaDeviceSynchronize());
      const auto t0 = std::chrono::steady_clock::now();
      runner.RunMicroBatches(table[0], mbs, &links);
      runner.Update(nullptr, 1e-4);
      if (on_gpu) MOREH_CUDA_CHECK(cudaDeviceSynchronize());
      const double total =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      exec.set_profiling(false);
      const auto prof = exec.Profile();  // the slowest op kind first
      double in_graphs = 0;
      std::fprintf(stderr, "profiled step: %.1f ms (the timed median %.1f ms)\n", total * 1e3,
                   median * 1e3);
      std::fprintf(stderr, "%-22s %6s %10s %7s %10s\n", "op", "calls", "ms", "share", "TFLOP/s");
      for (const auto& p : prof) {
        in_graphs += p.seconds;
        std::fprintf(stderr, "%-22s %6lld %10.3f %6.1f%% %10.3g\n", p.op.c_str(),
                     static_cast<long long>(p.calls), p.seconds * 1e3, 100 * p.seconds / total,
                     p.seconds > 0 ? p.flops / p.seconds / 1e12 : 0.0);
      }
      std::fprintf(stderr, "%-22s %6s %10.3f %6.1f%%\n", "(outside the graphs)", "",
                   (total - in_graphs) * 1e3, 100 * (total - in_graphs) / total);
      exec.ResetProfile();
    }
    const double tokens = static_cast<double>(spec.micro_batch * spec.seq_len);
    const double flops_per_token =
        6.0 * static_cast<double>(num_params) +
        12.0 * c.num_hidden_layers * c.hidden_size * static_cast<double>(spec.seq_len);
    double peak = std::stod(args["peak-tflops"]) * 1e12;
    const std::string name = on_gpu ? gpu::DeviceName(gpu_index) : std::string("cpu");
    if (peak <= 0) {  // dense bf16 of the SXM parts this project targets
      peak = (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos)
                 ? 989e12
                 : 0;
    }
    const double tps = tokens / median;
    // The planner's memory model for the same one-device configuration on this device.
    moreh::planner::TrainJob job;
    job.model = c;
    job.global_batch = spec.micro_batch;
    job.seq_len = spec.seq_len;
    job.compute_dtype = spec.compute_dtype;
    job.vocab_parallel = false;
    moreh::planner::ClusterSpec cl;
    cl.name = "this device";
    cl.device.name = name;
    cl.device.memory_bytes = int64_t{1} << 50;
    cl.device.peak_flops = peak > 0 ? peak : 1e12;
    cl.device.memory_bandwidth = 1e12;
    cl.device.widens_16bit = !on_gpu;
    moreh::planner::PlannerOptions po;
    po.log = false;
    moreh::planner::Candidate one;
    one.batch_per_device = static_cast<int>(spec.micro_batch);
    const auto judged = moreh::planner::EvaluateCandidate(job, cl, po, one);
    const double predicted = judged.stage_peak_bytes.empty() ? 0 : judged.stage_peak_bytes[0];
    std::printf(
        "{\"device\": \"%s\", \"params\": %lld, \"tokens_per_step\": %.0f, \"step_ms\": %.1f, "
        "\"tokens_per_s\": %.0f, \"mfu\": %.4f, \"peak_bytes\": %lld, "
        "\"predicted_peak_bytes\": %.0f, \"loss_first\": %.4f, \"loss_last\": %.4f, "
        "\"host_waits_per_step\": %.2f}\n",
        name.c_str(), static_cast<long long>(num_params), tokens, median * 1e3, tps,
        peak > 0 ? tps * flops_per_token / peak : 0.0, static_cast<long long>(dev->peak_bytes()),
        predicted, first_loss, last_loss,
        kCountsHostWaits ? static_cast<double>(host_waits) / steps : -1.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_step_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
