// The reference platform's text-summarization fine-tuning script (Llama, summarization prompts),
// rewritten line for line against the moreh C++ API. Turning parallelism on is one line:
//   moreh::option::enable_advanced_parallelization();
// `moreh-run train ...` runs this same trainer (cli/moreh_run.cc links this file).
#include "examples/text_summarization_for_ap.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <optional>

#include "runtime/data/dataset.h"
#include "runtime/data/progress.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/run_log.h"
#include "runtime/log.h"
#include "runtime/lr_schedule.h"
#include "runtime/models/llama.h"
#include "runtime/optim.h"
#include "runtime/option.h"

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
  std::string logging_dir;  // empty: SAVE_MODEL_DIR/runs/<start time>
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
  app.add_option_function<std::string>(
      "--max-line-bytes",
      [](const std::string& v) { setenv("MOREH_MAX_LINE_BYTES", v.c_str(), 1); },
      "longest dataset line accepted, e.g. 64M (default 16M; also MOREH_MAX_LINE_BYTES)");
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
  const bool text =
      args.dataset.size() > 4 && args.dataset.compare(args.dataset.size() - 4, 4, ".txt") == 0;
  moreh::data::TokenizedDataset dataset =
      text ? moreh::data::TokenizeTextFile(args.dataset, tokenizer, args.block_size).value()
           : moreh::data::TokenizeRecords(
                 moreh::data::ReadJsonl(args.dataset, {"article", "highlights"}).value(), tokenizer,
                 args.block_size,
                 [](const moreh::data::Record& r) { return moreh::data::SummarizationPrompt(r); })
                 .value();

  // Create a DataLoader for the training set
  moreh::data::DataLoader train_dataloader(&dataset, args.batch_size, !args.no_shuffle, args.seed);

  // Define AdamW optimizer
  moreh::optim::AdamW optim(model.parameters(), args.lr);

  // Calculate total training steps
  int64_t total_step = train_dataloader.size() * args.num_train_epochs;
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
    for (int64_t step = 1; step <= train_dataloader.size() && global_step < total_step; ++step) {
      const moreh::Tensor input_ids = train_dataloader.Batch(step - 1);
      const moreh::Tensor labels = moreh::data::MaskPads(input_ids, tokenizer.pad_id());
      const moreh::Tensor attn_mask = moreh::data::CreateMask(input_ids, tokenizer.pad_id());
      auto outputs = model(input_ids, attn_mask, labels);
      moreh::Tensor loss = outputs.loss;
      loss.backward();

      const double lr = schedule.At(global_step);
      optim.set_lr(lr);
      optim.step();
      model.zero_grad();
      ++global_step;
      const auto now = clock::now();
      const double step_s = std::chrono::duration<double>(now - step_start).count();
      step_start = now;
      const float loss_value = loss.item();
      const double tokens_per_s = static_cast<double>(input_ids.numel()) / step_s;
      run_log.Log(global_step,
                  {{"loss", loss_value},
                   {"learning_rate", lr},
                   {"epoch", epoch + static_cast<double>(step) / train_dataloader.size()},
                   {"step_time_s", step_s},
                   {"tokens_per_s", tokens_per_s}},
                  model.peak_memory_bytes());
      if (bar) {
        bar->set_postfix(fmt::format("loss={:.4f}, {:.0f} tokens/s", loss_value, tokens_per_s));
        if (global_step % args.log_interval == 0) bar->Clear();
      }
      if (global_step % args.log_interval == 0) {
        spdlog::info("[Step {}/{}] Loss: {}", global_step, total_step, loss_value);
      }
      if (bar) bar->Update(global_step);
    }
  }
  if (bar) bar->Finish();
  std::printf("Training Done\n");
  std::printf("Saving Model...\n");
  std::fflush(stdout);

  // Save trained model
  run_log.Finish();
  model.save_pretrained(args.save_model_dir);
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
