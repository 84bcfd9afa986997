// moreh::Tensor: the user-facing tensor. Operations on it are recorded lazily into the thread's
// pending graph (runtime/lazy.h); nothing is computed until a value is needed (item(), data()) or
// the optimizer step ends the training step (Sync()). Then the whole step graph (forward, backward,
// optimizer update) is compiled once per structure, cached by its structural hash, and run; every
// later step with the same structure only feeds data.
//
// A Tensor is a shared handle (copies alias the same tensor, as in PyTorch). Leaves created from
// data may require gradients; backward() accumulates into their grad() as PyTorch does.
// Handles are not thread-safe; each thread records its own graph.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/core/graph.h"
#include "runtime/core/tensor.h"

namespace moreh {

struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // A leaf holding `data` (not copied; shares the buffer).
  static Tensor FromData(runtime::Tensor data, bool requires_grad = false, std::string name = "");
  template <typename T>
  static Tensor FromVector(const std::vector<T>& v, const Shape& shape,
                           bool requires_grad = false) {
    return FromData(runtime::Tensor::FromVector(v, shape), requires_grad);
  }

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  DType dtype() const;
  int dim() const { return static_cast<int>(shape().size()); }
  int64_t size(int axis) const;
  int64_t numel() const { return Numel(shape()); }
  const std::string& name() const;
  std::string ToString() const;

  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);  // leaves only
  bool is_leaf() const;
  // The accumulated gradient (undefined when none). Reading its values syncs.
  Tensor grad() const;
  void set_grad(Tensor g);  // set_grad(Tensor()) = zero_grad with set_to_none

  // Appends the backward of this tensor to the graph and accumulates into the leaves' grad().
  // A non-scalar tensor needs `gradient` of its shape.
  void backward(const Tensor& gradient = Tensor()) const;

  // Replaces a leaf's value (same dtype and shape), as `with torch.no_grad(): p.copy_(x)`.
  void assign_data(runtime::Tensor data);

  float item() const;            // a one-element tensor's value, as f32 (syncs)
  runtime::Tensor data() const;  // the computed value (syncs when pending)
  std::vector<float> to_floats() const { return data().ToFloats(); }

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, double s);

// Runs the pending graph now and materializes every live tensor recorded since the last sync.
void Sync();

// Statistics of this thread's lazy runtime (for tests and logs).
struct LazyStats {
  int64_t syncs = 0;     // graphs run
  int64_t compiles = 0;  // cache misses
  int64_t cache_hits = 0;
  int64_t last_num_nodes = 0;
  uint64_t last_hash = 0;
};
LazyStats GetLazyStats();

// While one lives, this thread records operations that need no gradient (torch.no_grad()):
// evaluation runs forward only, and reading its values never keeps a graph for a backward.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};
bool GradEnabled();

}  // namespace moreh
