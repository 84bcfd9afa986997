#include "runtime/core/graph.h"

#include <gtest/gtest.h>

#include "ops/op.h"
#include "tests/models/llama_test_util.h"
#include "tests/test_util.h"

namespace moreh {
namespace {

// x[4,8] -> linear(w[16,8]) -> rms_norm -> scale
Graph SmallGraph(double scale = 0.1) {
  Graph g;
  ops::GraphBuilder b(&g);
  const int x = g.AddInput({DType::kF32, {4, 8}}, "x");
  const int w = g.AddInput({DType::kF32, {16, 8}}, "w");
  const int n = g.AddInput({DType::kF32, {16}}, "norm");
  int y = b.Emit1(OpKind::kMatMul, {x, w}, {{"trans_a", int64_t{0}}, {"trans_b", int64_t{1}}});
  y = b.Emit1(OpKind::kRmsNorm, {y, n}, {{"eps", 1e-6}});
  y = b.Emit1(OpKind::kScale, {y}, {{"scale", scale}});
  g.MarkOutput(y);
  return g;
}

TEST(Graph, JsonRoundTripIsExact) {
  const Graph g = SmallGraph(0.1);
  const std::string j = g.ToJson();
  const Graph back = Graph::FromJson(j).value();
  EXPECT_EQ(back.ToJson(), j);
  EXPECT_EQ(back.StructuralHash(), g.StructuralHash());
  EXPECT_EQ(back.nodes()[2].attrs.GetFloat("scale"), 0.1);  // bit-exact double
  EXPECT_EQ(back.value(0).name, "x");
  EXPECT_EQ(back.info(back.outputs()[0]).shape, Shape({4, 16}));
}

TEST(Graph, LlamaStepGraphRoundTrips) {
  const Graph g = testing::RecordTinyLlamaStep();
  ASSERT_GT(g.nodes().size(), 30u);
  const Graph back = Graph::FromJson(g.ToJson(2)).value();
  EXPECT_EQ(back.ToJson(), g.ToJson());
  EXPECT_EQ(back.StructuralHash(), g.StructuralHash());
}

TEST(Graph, HashIsStructural) {
  EXPECT_EQ(SmallGraph().StructuralHash(), SmallGraph().StructuralHash());
  EXPECT_NE(SmallGraph(0.1).StructuralHash(), SmallGraph(0.2).StructuralHash());
  Graph renamed = SmallGraph();
  renamed.set_name(0, "other");  // names are not structure
  EXPECT_EQ(renamed.StructuralHash(), SmallGraph().StructuralHash());
  // Stable across processes and builds: a change here changes every cached graph's identity.
  EXPECT_EQ(SmallGraph().StructuralHash(), 0xc4a10045bf1e686full)
      << std::hex << SmallGraph().StructuralHash();
}

TEST(Graph, BadJsonIsRejectedWithAReason) {
  EXPECT_FALSE(Graph::FromJson("{").ok());
  EXPECT_FALSE(Graph::FromJson("[]").ok());
  std::string j = SmallGraph().ToJson();
  std::string bad_op = j;
  bad_op.replace(bad_op.find("\"rms_norm\""), 10, "\"no_such\"");
  auto r = Graph::FromJson(bad_op);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unknown op 'no_such'"), std::string::npos);
  // A node reading a value defined later.
  const std::string later = R"({"format": "moreh-graph", "version": 1,
    "values": [{"dtype": "f32", "shape": [2]}, {"dtype": "f32", "shape": [2]},
               {"dtype": "f32", "shape": [2]}],
    "inputs": [0], "outputs": [2],
    "nodes": [{"op": "scale", "inputs": [2], "outputs": [1], "attrs": {"scale": {"float": 2}}},
              {"op": "scale", "inputs": [0], "outputs": [2], "attrs": {"scale": {"float": 2}}}]})";
  auto r2 = Graph::FromJson(later);
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.status().message().find("before it is defined"), std::string::npos)
      << r2.status().message();
  // Wrong attribute type, negative dimension, out-of-range id.
  std::string neg = later;
  neg.replace(neg.find("[2]"), 3, "[-2]");
  EXPECT_FALSE(Graph::FromJson(neg).ok());
  std::string oob = later;
  oob.replace(oob.find("\"outputs\": [2]"), 14, "\"outputs\": [9]");
  auto r3 = Graph::FromJson(oob);
  ASSERT_FALSE(r3.ok());
  EXPECT_NE(r3.status().message().find("out of range"), std::string::npos) << r3.status().message();
}

TEST(Graph, OpErrorsNameTheOpAndShapes) {
  Graph g;
  ops::GraphBuilder b(&g);
  const int x = g.AddInput({DType::kF32, {4, 8}});
  const int w = g.AddInput({DType::kF32, {16, 9}});
  EXPECT_ERROR_MENTIONS(b.Emit(OpKind::kMatMul, {x, w}, {{"trans_b", int64_t{1}}}), "matmul",
                        "f32[4, 8]", "f32[16, 9]", "inner dimensions");
  EXPECT_ERROR_MENTIONS(
      b.Emit(OpKind::kTranspose, {x}, {{"dim0", int64_t{0}}, {"dim1", int64_t{5}}}), "transpose",
      "out of range");
  EXPECT_ERROR_MENTIONS(b.Emit(OpKind::kAdd, {x}), "add", "inputs");
  const int ids = g.AddInput({DType::kF32, {4}});
  EXPECT_ERROR_MENTIONS(b.Emit(OpKind::kEmbedding, {w, ids}), "embedding", "ids must be");
}

}  // namespace
}  // namespace moreh
