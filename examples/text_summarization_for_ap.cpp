// The reference platform's text-summarization fine-tuning script (Llama, summarization prompts),
// rewritten line for line against the moreh C++ API. Turning parallelism on is one line:
//   moreh::option::enable_advanced_parallelization();
// `moreh-run train ...` runs this same trainer (cli/moreh_run.cc links this file).
#include "examples/text_summarization_for_ap.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/core/labels.h"
#include "runtime/data/dataset.h"
#include "runtime/data/progress.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/run_log.h"
#include "runtime/log.h"
#include "runtime/lr_schedule.h"
#include "runtime/models/llama.h"
#include "runtime/models/llama_def.h"
#include "runtime/optim.h"
#include "runtime/option.h"
#include "runtime/parallel/session.h"

namespace moreh::examples {

// Compose pad token mask / mask pad tokens / the formatted prompt: runtime/data/dataset.h
// (CreateMask, MaskPads, SummarizationPrompt) implement the reference's helpers.

struct Args {
  std::string model_name_or_path;
  std::string dataset = "examples/data/man_summaries.jsonl";
  int num_train_epochs = 1;
  int batch_size = 8;
  int block_size = 1024;
  double lr = 0.00001;
  int log_interval = 10;
  std::string save_model_dir = "./outputs";
  int64_t max_steps = -1;
  uint64_t seed = 0;
  bool no_shuffle = false;
  std::string lr_scheduler_type = "constant";
  int64_t warmup_steps = 0;
  double warmup_ratio = 0;
  std::string logging_dir;     // empty: SAVE_MODEL_DIR/runs/<start time>
  double max_grad_norm = 1.0;  // transformers' default; 0: no clipping
  int gradient_accumulation_steps = 1;
  double weight_decay = 0.01;  // torch.optim.AdamW's default, as the reference script runs it
  bool exclude_bias_and_norm = false;
  std::string eval_dataset;
  double validation_split = 0;
  int64_t eval_steps = 0;  // 0: at the end only
};

static void AddFlags(CLI::App& app, Args& a) {
  app.add_option("--model-name-or-path", a.model_name_or_path,
                 "model directory (config.json, weights, tokenizer.model)")
      ->required();
  app.add_option("--dataset", a.dataset, "JSONL with 'article' and 'highlights', or a .txt file");
  app.add_option("--num-train-epochs", a.num_train_epochs, "num training epochs")
      ->check(CLI::PositiveNumber);
  app.add_option("--batch-size", a.batch_size, "train batch size")->check(CLI::PositiveNumber);
  app.add_option("--block-size", a.block_size, "max input token length")
      ->check(CLI::PositiveNumber);
  app.add_option("--lr", a.lr, "learning rate")->check(CLI::NonNegativeNumber);
  app.add_option("--log-interval", a.log_interval, "log interval")->check(CLI::PositiveNumber);
  app.add_option("--save-model-dir", a.save_model_dir, "path to save model");
  app.add_option("--max-steps", a.max_steps, "stop after this many steps (-1: all)");
  app.add_option("--seed", a.seed, "shuffle seed, and init seed for a model without weights");
  app.add_flag("--no-shuffle", a.no_shuffle, "keep the dataset order");
  app.add_option("--lr-scheduler-type", a.lr_scheduler_type,
                 "constant, constant_with_warmup, linear or cosine (transformers' schedules)");
  app.add_option("--warmup-steps", a.warmup_steps, "steps of linear warmup from 0")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--warmup-ratio", a.warmup_ratio,
                 "warmup as a fraction of the training steps (when --warmup-steps is 0)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--logging-dir", a.logging_dir,
                 "the run's metrics.jsonl, TensorBoard events and loss_curve.svg (default: "
                 "SAVE_MODEL_DIR/runs/<start time>)");
  app.add_option("--max-grad-norm", a.max_grad_norm,
                 "clip the gradients' global norm to this (transformers' default 1.0; 0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--gradient-accumulation-steps", a.gradient_accumulation_steps,
                 "batches per optimizer step (the loss and update of one larger batch)")
      ->check(CLI::PositiveNumber);
  app.add_option("--weight-decay", a.weight_decay, "AdamW's decoupled weight decay")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--exclude-bias-and-norm-from-decay", a.exclude_bias_and_norm,
               "no weight decay on biases and norm weights (transformers' Trainer)");
  app.add_option("--eval-dataset", a.eval_dataset,
                 "evaluate on this file (same format as --dataset)");
  app.add_option("--validation-split", a.validation_split,
                 "evaluate on this fraction of the dataset's examples (its last ones), kept out "
                 "of training")
      ->check(CLI::Range(0.0, 0.5));
  app.add_option("--eval-steps", a.eval_steps,
                 "evaluate every N optimizer steps (0: at the end only)")
      ->check(CLI::NonNegativeNumber);
  app.add_option_function<std::string>(
      "--max-line-bytes",
      [](const std::string& v) { setenv("MOREH_MAX_LINE_BYTES", v.c_str(), 1); },
      "longest dataset line accepted, e.g. 64M (default 16M; also MOREH_MAX_LINE_BYTES)");
}

// The dataset file as the trainer reads it: JSONL records made into summarization prompts, or a
// .txt file cut into blocks.
static moreh::data::TokenizedDataset Tokenize(const std::string& path,
                                              const moreh::data::Tokenizer& tokenizer,
                                              int64_t block_size) {
  const bool text = path.size() > 4 && path.compare(path.size() - 4, 4, ".txt") == 0;
  return text
             ? moreh::data::TokenizeTextFile(path, tokenizer, block_size).value()
             : moreh::data::TokenizeRecords(
                   moreh::data::ReadJsonl(path, {"article", "highlights"}).value(), tokenizer,
                   block_size,
                   [](const moreh::data::Record& r) { return moreh::data::SummarizationPrompt(r); })
                   .value();
}

static int Main(const Args& args) {
  // Apply Advanced Parallelization
  moreh::option::enable_advanced_parallelization();

  // Load base model and tokenizer
  auto tokenizer = moreh::data::Tokenizer::Load(args.model_name_or_path).value();
  auto model = moreh::models::LlamaForCausalLM::from_pretrained(args.model_name_or_path, args.seed);

  // Set pad token
  tokenizer.set_pad_id(0);

  // Load the dataset and tokenize the prompts
  moreh::data::TokenizedDataset dataset = Tokenize(args.dataset, tokenizer, args.block_size);

  // The evaluation set: a file of its own, or the dataset's last examples kept out of training
  std::optional<moreh::data::TokenizedDataset> eval_set;
  if (!args.eval_dataset.empty()) {
    MOREH_CHECK(args.validation_split == 0, "--eval-dataset and --validation-split: choose one");
    eval_set = Tokenize(args.eval_dataset, tokenizer, args.block_size);
  } else if (args.validation_split > 0) {
    const auto n = static_cast<int64_t>(dataset.examples.size());
    const auto held = static_cast<int64_t>(std::ceil(args.validation_split * n));
    MOREH_CHECK(held < n, "--validation-split {} leaves no example of {} to train on",
                args.validation_split, n);
    eval_set = moreh::data::TokenizedDataset{dataset.block_size, {}};
    eval_set->examples.assign(dataset.examples.end() - held, dataset.examples.end());
    dataset.examples.resize(static_cast<size_t>(n - held));
    spdlog::info("Validation split: {} of {} examples held out for evaluation", held, n);
  }

  // Create a DataLoader for the training set
  moreh::data::DataLoader train_dataloader(&dataset, args.batch_size, !args.no_shuffle, args.seed);

  // Define AdamW optimizer
  moreh::optim::AdamW optim(
      model.parameters(),
      moreh::optim::AdamWOptions{.lr = args.lr,
                                 .weight_decay = args.weight_decay,
                                 .exclude_bias_and_norm = args.exclude_bias_and_norm});

  // Calculate total training steps: one optimizer step per gradient_accumulation_steps batches
  // (an epoch's last step takes what is left, as transformers' Trainer does)
  const int64_t accumulation = args.gradient_accumulation_steps;
  const int64_t steps_per_epoch = (train_dataloader.size() + accumulation - 1) / accumulation;
  int64_t total_step = steps_per_epoch * args.num_train_epochs;
  if (args.max_steps >= 0 && args.max_steps < total_step) total_step = args.max_steps;

  // The learning-rate schedule (transformers' get_scheduler)
  if (args.lr_scheduler_type == "constant" && (args.warmup_steps > 0 || args.warmup_ratio > 0)) {
    spdlog::warn(
        "the constant schedule takes no warmup (use --lr-scheduler-type "
        "constant_with_warmup): --warmup-steps / --warmup-ratio ignored");
  }
  const auto schedule =
      moreh::optim::LrSchedule::Make(
          args.lr_scheduler_type, args.lr,
          moreh::optim::WarmupSteps(args.warmup_steps, args.warmup_ratio, total_step), total_step)
          .value();

  // The run's record: metrics.jsonl, TensorBoard events, the loss curve
  moreh::io::RunLog run_log(args.logging_dir.empty()
                                ? args.save_model_dir + "/runs/" + moreh::io::RunStamp()
                                : args.logging_dir);

  // Evaluation: the token-weighted mean loss over the evaluation set, forwards only
  auto evaluate = [&](int64_t step) {
    if (!eval_set) return;
    moreh::NoGradGuard no_grad;
    moreh::data::DataLoader loader(&*eval_set, args.batch_size, /*shuffle=*/false, 0);
    double loss_sum = 0, tokens = 0;
    for (int64_t i = 0; i < loader.size(); ++i) {
      const moreh::Tensor input_ids = loader.Batch(i);
      const moreh::Tensor labels = moreh::data::MaskPads(input_ids, tokenizer.pad_id());
      const moreh::Tensor attn_mask = moreh::data::CreateMask(input_ids, tokenizer.pad_id());
      const auto n = static_cast<double>(moreh::runtime::CountLossTokens(labels.data()));
      if (n == 0) continue;
      loss_sum += model(input_ids, attn_mask, labels).loss.item() * n;
      tokens += n;
    }
    const double loss = tokens > 0 ? loss_sum / tokens : std::nan("");
    // On a cluster, the devices' peaks during the (forward-only) evaluation
    const std::vector<int64_t> peaks =
        model.session() ? model.session()->last_eval_peak_bytes() : std::vector<int64_t>{};
    run_log.Log(step, {{"loss", loss}, {"perplexity", std::exp(loss)}}, peaks, "eval");
    spdlog::info("[Eval at step {}] Loss: {:.6f}, perplexity: {:.4f}", step, loss, std::exp(loss));
  };

  // Model FLOPs utilisation: against the granted devices' measured GEMM speed
  const double flops_per_token =
      moreh::models::TrainingFlopsPerToken(model.config(), args.block_size);
  double device_flops = 0;
  if (const auto& session = model.session()) {
    const auto cluster = session->cluster();
    double active = cluster.num_devices;  // CPU devices on one host share its cores
    if (cluster.node_concurrency > 0) {
      active = std::min(active,
                        cluster.node_concurrency * cluster.num_devices / cluster.devices_per_node);
    }
    device_flops = cluster.device.peak_flops * active;
  }

  // A progress bar for the steps when a person watches (stderr is a terminal); log lines only
  // otherwise.
  std::optional<moreh::data::ProgressBar> bar;
  if (isatty(STDERR_FILENO)) bar.emplace("Train", total_step, "steps");

  // Start training
  using clock = std::chrono::steady_clock;
  auto step_start = clock::now();
  int64_t global_step = 0;
  for (int epoch = 0; epoch < args.num_train_epochs && global_step < total_step; ++epoch) {
    train_dataloader.set_epoch(epoch);
    for (int64_t first = 0; first < train_dataloader.size() && global_step < total_step;
         first += accumulation) {
      // The batches of this optimizer step, and the labels they count together
      const int64_t last = std::min(train_dataloader.size(), first + accumulation);
      std::vector<moreh::Tensor> ids_of;
      double num_items = 0;
      for (int64_t b = first; b < last; ++b) {
        ids_of.push_back(train_dataloader.Batch(b));
        num_items += static_cast<double>(moreh::runtime::CountLossTokens(
            moreh::data::MaskPads(ids_of.back(), tokenizer.pad_id()).data()));
      }
      std::vector<moreh::Tensor> losses;
      int64_t tokens = 0;
      for (const moreh::Tensor& input_ids : ids_of) {
        const moreh::Tensor labels = moreh::data::MaskPads(input_ids, tokenizer.pad_id());
        const moreh::Tensor attn_mask = moreh::data::CreateMask(input_ids, tokenizer.pad_id());
        // One batch: its summed token losses / the step's count (transformers' num_items_in_batch)
        auto outputs = model(input_ids, attn_mask, labels, accumulation > 1 ? num_items : 0);
        moreh::Tensor loss = outputs.loss;
        loss.backward();
        losses.push_back(loss);
        tokens += input_ids.numel();
      }
      std::map<std::string, double> metrics;
      if (args.max_grad_norm > 0) {
        metrics["grad_norm"] = moreh::optim::ClipGradNorm(model.parameters(), args.max_grad_norm);
      }

      const double lr = schedule.At(global_step);
      optim.set_lr(lr);
      optim.step();
      model.zero_grad();
      ++global_step;
      const auto now = clock::now();
      const double step_s = std::chrono::duration<double>(now - step_start).count();
      step_start = now;
      const double tokens_per_s = static_cast<double>(tokens) / step_s;
      double loss_value = 0;  // the step's mean token loss: the batches' parts add up to it
      for (const moreh::Tensor& loss : losses) loss_value += loss.item();
      metrics["loss"] = loss_value;
      metrics["learning_rate"] = lr;
      metrics["epoch"] = epoch + static_cast<double>(last) / train_dataloader.size();
      metrics["step_time_s"] = step_s;
      metrics["tokens_per_s"] = tokens_per_s;
      if (device_flops > 0) metrics["mfu"] = tokens_per_s * flops_per_token / device_flops;
      run_log.Log(global_step, metrics, model.peak_memory_bytes());
      if (bar) {
        bar->set_postfix(fmt::format("loss={:.4f}, {:.0f} tokens/s", loss_value, tokens_per_s));
        if (global_step % args.log_interval == 0) bar->Clear();
      }
      if (global_step % args.log_interval == 0) {
        spdlog::info("[Step {}/{}] Loss: {}", global_step, total_step, loss_value);
      }
      if (args.eval_steps > 0 && global_step % args.eval_steps == 0 && global_step < total_step) {
        if (bar) bar->Clear();
        evaluate(global_step);
      }
      if (bar) bar->Update(global_step);
    }
  }
  if (bar) bar->Finish();
  evaluate(global_step);
  std::printf("Training Done\n");
  std::printf("Saving Model...\n");
  std::fflush(stdout);

  // Save trained model
  run_log.Finish();
  model.save_pretrained(args.save_model_dir);
  // With the tokenizer beside it, the directory is a model `moreh-run generate` and transformers
  // load as they are
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "generation_config.json"}) {
    const std::filesystem::path from = std::filesystem::path(args.model_name_or_path) / name;
    const std::filesystem::path to = std::filesystem::path(args.save_model_dir) / name;
    if (std::filesystem::exists(from) &&
        !std::filesystem::equivalent(from.parent_path(), to.parent_path())) {
      std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
    }
  }
  std::printf("Model saved in '%s'\n", args.save_model_dir.c_str());
  return 0;
}

int TextSummarizationMain(int argc, char** argv, const char* program) {
  moreh::InitLogging();
  CLI::App app{"LLaMA2 FineTuning", program};
  Args args;
  AddFlags(app, args);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return Main(args);
  } catch (const moreh::OutOfMemoryError& e) {
    std::fprintf(stderr, "RuntimeError: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}

}  // namespace moreh::examples

#ifndef MOREH_TRAINER_NO_MAIN
int main(int argc, char** argv) {
  return moreh::examples::TextSummarizationMain(argc, argv, "text_summarization_for_ap");
}
#endif
