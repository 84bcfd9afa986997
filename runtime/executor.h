// Executor: runs a graph on a device: the CPU, or a GPU when its allocator's memory is a GPU's
// (kernels/cuda/device_allocator.h; CUDA builds). Graph inputs held in the other kind of memory are
// copied to the executor's device at their first use.
//
// Compile() derives, once per graph structure, what execution needs: each value's last use, and
// which in-place outputs may take over their input's buffer. Run() feeds the graph inputs, runs the
// nodes in order (each kernel parallel over all cores), frees every intermediate right after its
// last use, and returns the graph outputs. Peak device bytes are read from the allocator
// (Allocator::peak_bytes). An Executor is not thread-safe; a CompiledGraph is immutable and may be
// shared.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ops/op.h"
#include "runtime/core/graph.h"
#include "runtime/core/tensor.h"

namespace moreh::kernels::cuda {
class StreamMarks;
}

namespace moreh::runtime {

struct CompiledGraph {
  Graph graph;
  uint64_t hash = 0;
  std::vector<int> last_use;    // per value: index of the last node reading it (-1 if none)
  std::vector<char> is_output;  // per value
};

// Validates the graph (structure, and every node's inferred outputs against the recorded ones).
std::shared_ptr<const CompiledGraph> Compile(Graph graph);

struct OpProfile {
  std::string op;
  int64_t calls = 0;
  double seconds = 0;
  double flops = 0;
};

class Executor {
 public:
  explicit Executor(Allocator* alloc = nullptr);
  Executor(const Executor&) = delete;  // its profiling state (GPU events) is its own
  Executor& operator=(const Executor&) = delete;
  Allocator* allocator() const { return alloc_; }  // the device it runs on

  // `inputs` are moved in so that buffers nobody else holds can be donated to in-place outputs.
  // Throws moreh::Error (a bad input, a failing kernel) or OutOfMemoryError; on a throw every
  // intermediate is released.
  std::vector<Tensor> Run(const CompiledGraph& cg, std::vector<Tensor> inputs) {
    return Run(cg, &inputs);
  }
  // As above, taking the inputs from *inputs. On success *inputs is left empty; on a throw, every
  // input the run had not yet consumed (freed after its last use, or donated) is handed back in
  // its slot, so a caller can restore state that the failed graph would have replaced.
  std::vector<Tensor> Run(const CompiledGraph& cg, std::vector<Tensor>* inputs);
  // As above; `sink(k, t)` is offered graph output k as soon as it is final (computed, and read by
  // no later node). Returning true consumes it: the executor frees it at once and returns an
  // undefined tensor in its place. (The pipeline runner adds each weight gradient into its
  // accumulator this way, so a backward never holds all of them at once.)
  using OutputSink = std::function<bool(int output_index, const Tensor& value)>;
  std::vector<Tensor> Run(const CompiledGraph& cg, std::vector<Tensor> inputs,
                          const OutputSink& sink);

  void set_profiling(bool on) { profiling_ = on; }
  // Per op kind, accumulated over every Run since the last ResetProfile (when profiling is on).
  // Seconds are wall time on the CPU; on a GPU, the GPU's time for each node's queued work
  // (events around it on the compute stream, read here: this waits for the GPU). On a GPU every
  // node's events are kept until Profile or ResetProfile: profile a few steps, not a whole run.
  std::vector<OpProfile> Profile();
  void ResetProfile();

 private:
  std::vector<Tensor> RunNodes(const CompiledGraph& cg, std::vector<Tensor>& slots,
                               const OutputSink* sink = nullptr);

  Allocator* alloc_;
  ops::Backend backend_;  // CUDA when alloc_'s memory is a GPU's
  bool profiling_ = false;
  std::vector<OpProfile> profile_;
  // Profiling on a GPU: each node's span between two stream marks, timed when Profile() reads it.
  struct Span {
    int op, from, to;
  };
  std::vector<Span> spans_;
  std::shared_ptr<kernels::cuda::StreamMarks> marks_;
};

}  // namespace moreh::runtime
