// moreh-run: the launcher. `moreh-run train <flags>` runs the built-in trainer, the same code as
// examples/text_summarization_for_ap.cpp (run `moreh-run train --help` for its flags).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cli/moreh_plan.h"
#include "examples/text_summarization_for_ap.h"

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fprintf(
        argc < 2 ? stderr : stdout,
        "usage: moreh-run train [--model-name-or-path DIR] [--dataset FILE] ...\n"
        "  train   fine-tune a Llama model (see moreh-run train --help)\n"
        "  generate  text from a checkpoint, KV cache (moreh-run generate --help)\n"
        "  plan    choose a parallel configuration, dry run (moreh-run plan --help)\n"
        "  connect request the virtual device, connect to its workers, release (check)\n"
        "  cluster up|down|status   a local cluster in the background\n"
        "  [--scheduler HOST:PORT] [--device-size NAME] -- PROGRAM ARGS...   run a program\n"
        "  --wait-timeout SECONDS (any command): how long to wait for devices (default 600;\n"
        "          also MOREH_WAIT_TIMEOUT)\n");
    return argc < 2 ? 2 : 0;
  }
  // --wait-timeout S, anywhere before "--": for every command, through MOREH_WAIT_TIMEOUT.
  for (int k = 1; k < argc && std::strcmp(argv[k], "--") != 0; ++k) {
    if (std::strcmp(argv[k], "--wait-timeout") != 0) continue;
    char* end = nullptr;
    const double secs = k + 1 < argc ? std::strtod(argv[k + 1], &end) : 0;
    if (k + 1 >= argc || end == argv[k + 1] || *end != '\0' || !(secs > 0)) {
      std::fprintf(stderr, "moreh-run: --wait-timeout needs a number of seconds > 0, got '%s'\n",
                   k + 1 < argc ? argv[k + 1] : "");
      return 2;
    }
    setenv("MOREH_WAIT_TIMEOUT", argv[k + 1], 1);
    for (int j = k; j + 2 <= argc; ++j) argv[j] = argv[j + 2];  // argv[argc] is null
    argc -= 2;
    break;
  }
  if (std::strcmp(argv[1], "plan") == 0) return moreh::cli::PlanMain(argc - 1, argv + 1);
  if (std::strcmp(argv[1], "generate") == 0) return moreh::cli::GenerateMain(argc - 1, argv + 1);
  if (std::strcmp(argv[1], "connect") == 0) return moreh::cli::ConnectMain(argc - 1, argv + 1);
  if (std::strcmp(argv[1], "cluster") == 0) return moreh::cli::ClusterMain(argc - 1, argv + 1);
  // moreh-run [--scheduler HOST:PORT] [--device-size NAME] -- PROGRAM ARGS...
  std::string scheduler, size;
  int i = 1;
  for (; i < argc && std::strcmp(argv[i], "--") != 0; i += 2) {
    if (i + 1 >= argc) break;
    if (std::strcmp(argv[i], "--scheduler") == 0)
      scheduler = argv[i + 1];
    else if (std::strcmp(argv[i], "--device-size") == 0)
      size = argv[i + 1];
    else
      break;
  }
  if (i < argc && std::strcmp(argv[i], "--") == 0 && i + 1 < argc) {
    if (!size.empty()) setenv("MOREH_DEVICE_SIZE", size.c_str(), 1);
    return moreh::cli::RunProgramMain(scheduler, size, argv + i + 1);
  }
  if (std::strcmp(argv[1], "train") == 0) {
    return moreh::examples::TextSummarizationMain(argc - 1, argv + 1, "moreh-run train");
  }
  std::fprintf(stderr, "moreh-run: unknown command '%s' (try moreh-run --help)\n", argv[1]);
  return 2;
}
