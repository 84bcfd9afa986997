// The fine-tuning trainer of examples/text_summarization_for_ap.cpp, callable from moreh-run.
#pragma once

namespace moreh::examples {
// Parses the reference script's flags from argv (argv[0] is skipped) and trains; returns the exit
// code (0 on success, 1 on an error, which is logged).
int TextSummarizationMain(int argc, char** argv, const char* program);
}  // namespace moreh::examples
