// A tiny Llama and one recorded training step, shared by graph, lazy and model tests.
#pragma once

#include "runtime/core/graph.h"
#include "runtime/models/llama.h"

namespace moreh::testing {

models::LlamaConfig TinyLlamaConfig();
// Records forward + backward of a tiny Llama into a fresh graph (without running it).
Graph RecordTinyLlamaStep();

}  // namespace moreh::testing
