// moreh-run plan: the planner as a dry run, with no workers. Prints every candidate (feasible or
// why not; predicted peak memory per device; step time; tokens/s; MFU) and the choice, or the
// whole plan as JSON.
#include "cli/moreh_plan.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/log.h"
#include "runtime/net/protocol.h"
#include "runtime/planner/plan_svg.h"
#include "runtime/planner/planner.h"

namespace moreh::cli {

int PlanMain(int argc, char** argv) {
  InitLogging();
  CLI::App app{"Plan the parallel configuration of a Llama training job (dry run)",
               "moreh-run plan"};
  std::string model_dir, model_config, device_size, cluster_file, dtype = "bf16";
  int64_t batch = 0, block = 0;
  bool as_json = false;
  std::string ap = "on";
  auto* src = app.add_option_group("model");
  src->add_option("--model-name-or-path", model_dir, "model directory (its config.json)");
  src->add_option("--model-config", model_config, "a config.json");
  src->require_option(1);
  app.add_option("--batch-size", batch, "global batch size")
      ->required()
      ->check(CLI::PositiveNumber);
  app.add_option("--block-size", block, "sequence length")->required()->check(CLI::PositiveNumber);
  app.add_option("--device-size", device_size, "virtual device size (Small ... 48xLarge)");
  app.add_option("--cluster", cluster_file, "cluster description (examples/clusters/*.json)");
  app.add_option("--dtype", dtype, "bf16 (mixed precision) or f32")
      ->check(CLI::IsMember({"bf16", "f32"}));
  app.add_option("--ap", ap, "advanced parallelization on, or off (plain data parallelism)")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_flag("--json", as_json, "print the plan as JSON");
  std::string svg;
  app.add_option("--svg", svg, "also write a picture of the chosen plan (SVG) to this file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    planner::TrainJob job;
    const std::string cfg = model_config.empty()
                                ? (std::filesystem::path(model_dir) / "config.json").string()
                                : model_config;
    job.model = models::LlamaConfig::FromFile(cfg).value();
    job.global_batch = batch;
    job.seq_len = block;
    job.compute_dtype = dtype == "f32" ? DType::kF32 : DType::kBF16;
    planner::ClusterSpec cluster;
    int devices = 0;
    if (!device_size.empty()) {
      devices = net::DeviceSizeCount(device_size);
      MOREH_CHECK(devices > 0,
                  "unknown device size '{}' (Small, Medium, Large, xLarge, 1.5xLarge, "
                  "2xLarge, 3xLarge, 4xLarge, 6xLarge, 8xLarge, 12xLarge, 24xLarge, 48xLarge)",
                  device_size);
    }
    if (!cluster_file.empty()) {
      cluster = planner::ClusterSpec::FromFile(cluster_file).value();
      if (devices > 0) {
        cluster.num_devices = devices;
        cluster.devices_per_node = std::min(cluster.devices_per_node, devices);
      }
      cluster.Validate().ThrowIfError();
    } else {
      MOREH_CHECK(devices > 0, "give --device-size or --cluster");
      cluster = planner::ReferenceCluster(devices);
    }
    planner::PlannerOptions opts = planner::PlannerOptions::FromEnvironment();
    opts.advanced_parallelization = ap == "on";
    opts.log = !as_json;
    const planner::Plan plan = planner::PlanTraining(job, cluster, opts);
    if (!svg.empty()) {
      std::ofstream out(svg);
      out << planner::PlanToSvg(plan, cluster);
      MOREH_CHECK(out.good(), "{}: cannot write the picture", svg);
    }
    // The model's size, as the reference's table starts: its parameters (the definition's list)
    // and the training state they need before any activation: f32, 16 bytes per parameter
    // (weights, gradients, AdamW m and v); mixed precision 18 (bf16 copy, f32 gradients, f32
    // master weights, m and v).
    const int64_t num_params = job.model.NumParameters();
    const int state_per_param = job.compute_dtype == DType::kF32 ? 16 : 18;
    const double state_bytes = static_cast<double>(num_params) * state_per_param;
    if (as_json) {
      nlohmann::json j = nlohmann::json::parse(plan.ToJson());
      j["model"] = {{"model_type", job.model.model_type},
                    {"architecture", job.model.architecture()},
                    {"num_params", num_params},
                    {"training_state_bytes", state_bytes},
                    {"training_state_bytes_per_param", state_per_param}};
      std::printf("%s\n", j.dump(2).c_str());
      return 0;
    }
    std::printf(
        "model : %s (%s), num params : %lld (%.2f B), training state : %.2f GiB (%d bytes "
        "per parameter: %s)\n",
        job.model.model_type.c_str(), job.model.architecture().c_str(),
        static_cast<long long>(num_params), static_cast<double>(num_params) / 1e9,
        state_bytes / (1 << 30), state_per_param,
        state_per_param == 16 ? "f32 weights, gradients, AdamW m and v"
                              : "bf16 weights, f32 gradients, f32 master weights, AdamW m and v");
    std::printf("%-4s %-110s %10s %9s %11s %6s\n", "", "candidate", "peak GiB", "step s",
                "tokens/s", "MFU");
    for (const auto& c : plan.candidates) {
      std::printf("%-4s %-110s %10.2f %9.3f %11.0f %5.1f%%%s\n", c.feasible ? "ok" : "--",
                  c.Describe().c_str(), static_cast<double>(c.peak_bytes) / (1 << 30), c.step_time,
                  c.tokens_per_s, 100 * c.mfu, c.feasible ? "" : ("  " + c.reason).c_str());
    }
    const auto& b = plan.chosen;
    std::printf("\nchosen: %s\n  stages (layers): ", b.Describe().c_str());
    for (size_t s = 0; s < b.stage_layers.size(); ++s) {
      std::printf("%s%d [%.2f GiB]", s ? ", " : "", b.stage_layers[s],
                  static_cast<double>(b.stage_peak_bytes[s]) / (1 << 30));
    }
    std::printf(
        "\n  step %.3f s (pipeline %.3f, bubble %.0f%%, data-parallel reduce %.3f, optimizer "
        "%.3f), %.0f tokens/s, MFU %.1f%%, budget %.2f GiB of %.2f GiB per device\n",
        b.step_time, b.pipeline_time, 100 * b.bubble_fraction, b.dp_time, b.optimizer_time,
        b.tokens_per_s, 100 * b.mfu, plan.budget_bytes / (1 << 30),
        static_cast<double>(plan.device_memory) / (1 << 30));
    return 0;
  } catch (const OutOfMemoryError& e) {
    std::fprintf(stderr, "RuntimeError: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}

}  // namespace moreh::cli
