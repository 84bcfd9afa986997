#include "tests/models/llama_test_util.h"

#include "ops/op.h"
#include "runtime/autograd.h"

namespace moreh::testing {

models::LlamaConfig TinyLlamaConfig() {
  models::LlamaConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  return c;
}

Graph RecordTinyLlamaStep() {
  // Build the graph directly with the builder so the test does not depend on the lazy recorder.
  Graph g;
  ops::GraphBuilder b(&g);
  const int ids = g.AddInput({DType::kI64, {2, 8}}, "input_ids");
  const int emb = g.AddInput({DType::kF32, {64, 32}}, "model.embed_tokens.weight");
  const int norm = g.AddInput({DType::kF32, {32}}, "model.norm.weight");
  int x = b.Emit1(OpKind::kEmbedding, {emb, ids});
  for (int l = 0; l < 3; ++l) {
    const int w = g.AddInput({DType::kF32, {32, 32}});
    int h = b.Emit1(OpKind::kRmsNorm, {x, norm}, {{"eps", 1e-6}});
    h = b.Emit1(OpKind::kMatMul, {h, w}, {{"trans_b", int64_t{1}}});
    x = b.Emit1(OpKind::kAdd, {x, h});
  }
  const int logits = b.Emit1(OpKind::kMatMul, {x, emb}, {{"trans_b", int64_t{1}}});
  const auto ce = b.Emit(OpKind::kCrossEntropy, {logits, ids},
                         {{"ignore_index", int64_t{-100}}, {"shift", int64_t{1}}});
  const int seed = b.Emit1(OpKind::kFill, {},
                           {{"shape", Shape{}}, {"dtype", std::string("f32")}, {"value", 1.0}});
  std::vector<int> wrt;
  for (int v : g.inputs()) {
    if (IsFloating(g.info(v).dtype)) wrt.push_back(v);
  }
  for (int gv : runtime::BuildBackward(&g, ce[0], seed, wrt)) g.MarkOutput(gv);
  g.MarkOutput(ce[0]);
  return g;
}

}  // namespace moreh::testing
