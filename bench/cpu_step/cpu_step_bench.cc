// One training step (forward + backward + AdamW) of a Llama-shaped stack on the CPU device.
// Prints one JSON line with tokens/s, the step time, the runtime allocator's peak bytes and the
// process's peak resident-memory growth; with --profile, the per-op time table first.
// bench/run cpu_step runs it beside bench/cpu_step/torch_step.py (the PyTorch peer).
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "runtime/core/allocator.h"
#include "runtime/core/parallel.h"
#include "runtime/lazy.h"
#include "runtime/models/llama.h"
#include "runtime/optim.h"

namespace {
int64_t CurrentRssBytes() {
  std::ifstream f("/proc/self/statm");
  int64_t pages = 0, rss = 0;
  f >> pages >> rss;
  return rss * 4096;
}
int64_t PeakRssBytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Llama training-step benchmark on the CPU device"};
  int64_t hidden = 256, layers = 4, heads = 8, ffn = 688, vocab = 4096, seq = 256, batch = 8;
  int steps = 5, warmup = 1, threads = 0;
  bool profile = false;
  app.add_option("--hidden", hidden);
  app.add_option("--layers", layers);
  app.add_option("--heads", heads);
  app.add_option("--ffn", ffn);
  app.add_option("--vocab", vocab);
  app.add_option("--seq", seq);
  app.add_option("--batch", batch);
  app.add_option("--steps", steps)->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup)->check(CLI::NonNegativeNumber);
  app.add_option("--threads", threads, "0 = all cores");
  app.add_flag("--profile", profile, "print the per-op time table");
  CLI11_PARSE(app, argc, argv);
  moreh::SetNumThreads(threads);

  const int64_t rss0 = CurrentRssBytes();
  moreh::runtime::Allocator* cpu = moreh::runtime::CpuAllocator();
  cpu->ResetPeak();
  moreh::models::LlamaConfig c;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = ffn;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = heads;
  moreh::models::LlamaForCausalLM model(c, /*seed=*/0);
  moreh::optim::AdamW opt(model.Parameters(), moreh::optim::AdamWOptions{.lr = 1e-4});
  std::vector<int64_t> ids(batch * seq);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 2654435761u) % vocab);
  const moreh::Tensor input = moreh::Tensor::FromVector(ids, {batch, seq});
  const moreh::Tensor mask =
      moreh::Tensor::FromVector(std::vector<int64_t>(ids.size(), 1), {batch, seq});

  auto step = [&] {
    moreh::models::LlamaOutput out = model(input, mask, input);
    out.loss.backward();
    opt.step();
    opt.zero_grad();
    return out.loss.item();
  };
  float loss = 0;
  for (int i = 0; i < warmup; ++i) loss = step();
  moreh::lazy::ThreadExecutor().set_profiling(profile);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) loss = step();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (profile) {
    double total = 0;
    for (const auto& p : moreh::lazy::ThreadExecutor().Profile()) total += p.seconds;
    std::fprintf(stderr, "%-24s %8s %10s %7s %10s\n", "op", "calls", "ms/step", "share", "GFLOP/s");
    for (const auto& p : moreh::lazy::ThreadExecutor().Profile()) {
      std::fprintf(stderr, "%-24s %8lld %10.2f %6.1f%% %10.1f\n", p.op.c_str(),
                   static_cast<long long>(p.calls / steps), 1e3 * p.seconds / steps,
                   100 * p.seconds / total, p.seconds > 0 ? p.flops / p.seconds / 1e9 : 0.0);
    }
    std::fprintf(stderr, "executor total %.1f ms/step, wall %.1f ms/step\n", 1e3 * total / steps,
                 1e3 * secs / steps);
  }
  const double tokens_per_s = static_cast<double>(batch * seq * steps) / secs;
  std::printf(
      "{\"impl\": \"moreh\", \"tokens_per_s\": %.1f, \"step_ms\": %.2f, \"loss\": %.5f, "
      "\"params\": %lld, \"allocator_peak_bytes\": %lld, \"peak_rss_growth_bytes\": %lld, "
      "\"threads\": %d}\n",
      tokens_per_s, 1e3 * secs / steps, loss, static_cast<long long>(c.NumParameters()),
      static_cast<long long>(cpu->peak_bytes()), static_cast<long long>(PeakRssBytes() - rss0),
      moreh::NumThreads());
  return 0;
}
