// `moreh-run generate`: text from a checkpoint (a fine-tuned model's save directory, or any
// supported Hugging Face directory) with a KV cache, in this process on runtime::DefaultDevice
// (MOREH_DEVICE=cuda:N for a GPU). Greedy by default (transformers' generate with
// do_sample=False, token for token); --temperature > 0 samples (with --top-p and --seed).
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/moreh_plan.h"
#include "runtime/data/tokenizer.h"
#include "runtime/log.h"
#include "runtime/models/generate.h"
#include "runtime/models/llama.h"

namespace moreh::cli {

int GenerateMain(int argc, char** argv) {
  InitLogging();
  CLI::App app{"Generate text from a model checkpoint (KV cache; greedy or sampled)",
               "moreh-run generate"};
  std::string model_dir, prompt;
  models::GenerationOptions o;
  bool print_ids = false, ignore_eos = false;
  app.add_option("--model-name-or-path", model_dir,
                 "model directory (config.json, weights, tokenizer.model or tokenizer.json)")
      ->required();
  app.add_option("--prompt", prompt, "the text to continue")->required();
  app.add_option("--max-new-tokens", o.max_new_tokens, "tokens to generate at most")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", o.temperature, "0: greedy (the default); > 0: sample")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", o.top_p, "sample from the most likely tokens holding this probability")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", o.seed, "the sampling seed");
  app.add_flag("--ignore-eos", ignore_eos, "do not stop at the end-of-sequence token");
  app.add_flag("--print-token-ids", print_ids,
               "also print the prompt's and the new token ids as a JSON line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    MOREH_CHECK(o.top_p > 0, "--top-p must be > 0");
    auto tokenizer = data::Tokenizer::Load(model_dir).value();
    auto model = models::LlamaForCausalLM::from_pretrained_in_process(model_dir);
    const models::LlamaConfig& c = model.config();
    if (!ignore_eos) {
      o.stop_ids = c.eos_token_ids.empty() ? std::vector<int64_t>{c.eos_token_id} : c.eos_token_ids;
    }
    const std::vector<int64_t> ids = tokenizer.Encode(prompt);
    models::Generator gen(model);
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    auto first = t0;
    std::vector<int64_t> fresh;
    std::string shown;
    std::fputs(prompt.c_str(), stdout);
    const std::vector<int64_t> all = gen.Generate(ids, o, [&](int64_t id) {
      if (fresh.empty()) first = clock::now();
      fresh.push_back(id);
      const std::string text = tokenizer.Decode(fresh);  // decoded whole: spaces come out right
      if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) {
        std::fputs(text.c_str() + shown.size(), stdout);
        std::fflush(stdout);
      }
      shown = text;
    });
    const double total = std::chrono::duration<double>(clock::now() - t0).count();
    const double prefill = std::chrono::duration<double>(first - t0).count();
    std::fputs("\n", stdout);
    const auto made = static_cast<int64_t>(all.size() - ids.size());
    if (print_ids) {
      nlohmann::json j = {{"prompt_ids", ids},
                          {"new_ids", std::vector<int64_t>(all.begin() + ids.size(), all.end())}};
      std::printf("%s\n", j.dump().c_str());
    }
    spdlog::info("{} prompt tokens in {:.3f} s; {} new tokens, {:.1f} tokens/s after the first",
                 ids.size(), prefill, made, made > 1 ? (made - 1) / (total - prefill) : 0.0);
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}

}  // namespace moreh::cli
