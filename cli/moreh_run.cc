// moreh-run: the launcher. `moreh-run train <flags>` runs the built-in trainer, the same code as
// examples/text_summarization_for_ap.cpp (run `moreh-run train --help` for its flags).
#include <cstdio>
#include <cstring>

#include "cli/moreh_plan.h"
#include "examples/text_summarization_for_ap.h"

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fprintf(argc < 2 ? stderr : stdout,
                 "usage: moreh-run train [--model-name-or-path DIR] [--dataset FILE] ...\n"
                 "  train   fine-tune a Llama model (see moreh-run train --help)\n"
                 "  plan    choose a parallel configuration, dry run (moreh-run plan --help)\n"
                 "  connect request the virtual device, connect to its workers, release (check)\n");
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "plan") == 0) return moreh::cli::PlanMain(argc - 1, argv + 1);
  if (std::strcmp(argv[1], "connect") == 0) return moreh::cli::ConnectMain(argc - 1, argv + 1);
  if (std::strcmp(argv[1], "train") == 0) {
    return moreh::examples::TextSummarizationMain(argc - 1, argv + 1, "moreh-run train");
  }
  std::fprintf(stderr, "moreh-run: unknown command '%s' (try moreh-run --help)\n", argv[1]);
  return 2;
}
