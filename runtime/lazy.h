// The lazy runtime behind moreh::Tensor: one recorder per thread holding the pending graph, the
// concrete tensors bound to its inputs, the tensors waiting for its outputs, the compiled-graph
// cache, and the executor. Internal to libmoreh; users go through moreh::Tensor and functional.h.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/core/graph.h"
#include "runtime/core/tensor.h"
#include "runtime/executor.h"
#include "runtime/tensor.h"

namespace moreh {

struct TensorImpl {
  ValueInfo info;
  runtime::Tensor data;  // defined once computed
  uint64_t epoch = 0;    // graph epoch while pending
  int value = -1;        // value id in that graph while pending
  bool requires_grad = false;
  bool leaf = true;
  std::shared_ptr<TensorImpl> grad;
  std::string name;
  // A loss whose backward already ran elsewhere (the distributed runtime): backward() is a no-op.
  bool backward_done = false;
};

namespace lazy {

// Records `op` on the inputs; returns one new tensor per output. Errors name the op and shapes.
std::vector<Tensor> Record(OpKind op, const std::vector<Tensor>& inputs, Attrs attrs = {});
inline Tensor Record1(OpKind op, const std::vector<Tensor>& inputs, Attrs attrs = {}) {
  return Record(op, inputs, std::move(attrs)).at(0);
}
// Makes `target` (an existing tensor, e.g. a parameter) the pending result `value_of` (a tensor
// just recorded): the in-place update of an optimizer step.
void Assign(const Tensor& target, const Tensor& value_of);

runtime::Executor& ThreadExecutor();

// Loss scaling for f16 programs (set by the optimizer that owns the scaler; 1 = none): backward()
// of a scalar seeds `scale` instead of 1, so every gradient comes out multiplied by it.
void SetLossScale(double scale);
// The scale of the gradients accumulated since the last call (1: unscaled); resets it to 1.
double TakeGradientScale();
// The same without resetting it.
double GradientScale();

}  // namespace lazy
}  // namespace moreh
