#include "runtime/lazy.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <unordered_map>
#include <utility>

#include "ops/op.h"
#include "runtime/autograd.h"
#include "runtime/device.h"

namespace moreh {
namespace {

class Recorder {
 public:
  // The device comes from MOREH_DEVICE (runtime/device.h), read when the thread first records.
  Recorder() : executor_(runtime::DefaultDevice()) {}

  // Value id of `impl` in the pending graph, binding it as an input when it is computed data.
  int ValueOf(const std::shared_ptr<TensorImpl>& impl) {
    MOREH_CHECK(impl != nullptr, "use of an undefined tensor");
    // Computed by a run that kept the graph (a read before backward): still its value here.
    if (impl->data.defined() && impl->epoch == epoch_ && impl->value >= 0) return impl->value;
    if (!impl->data.defined()) {
      MOREH_CHECK(impl->epoch == epoch_ && impl->value >= 0,
                  "tensor {} belongs to a graph that failed or was discarded; recompute it",
                  impl->name.empty() ? impl->info.ToString() : impl->name);
      return impl->value;
    }
    auto it = input_of_.find(impl.get());
    if (it != input_of_.end() && !it->second.owner.expired() && it->second.owner.lock() == impl) {
      return it->second.value;
    }
    const int v = graph_.AddInput(impl->info, impl->name);
    bindings_.push_back(impl->data);
    input_owner_.push_back(impl);
    input_of_[impl.get()] = {impl, v};
    requires_grad_.resize(graph_.values().size(), 0);
    requires_grad_[v] = impl->requires_grad;
    return v;
  }

  std::shared_ptr<TensorImpl> NewPending(int value) {
    auto impl = std::make_shared<TensorImpl>();
    impl->info = graph_.info(value);
    impl->epoch = epoch_;
    impl->value = value;
    impl->leaf = false;
    requires_grad_.resize(graph_.values().size(), 0);
    impl->requires_grad = requires_grad_[value] != 0;
    pending_.push_back(impl);
    return impl;
  }

  std::vector<Tensor> Record(OpKind op, const std::vector<Tensor>& inputs, Attrs attrs) {
    std::vector<int> ids;
    bool rg = false;
    for (const Tensor& t : inputs) {
      ids.push_back(ValueOf(t.impl_ptr()));
      rg |= t.requires_grad();
    }
    ops::GraphBuilder b(&graph_);
    const std::vector<int> outs = b.Emit(op, ids, std::move(attrs));
    requires_grad_.resize(graph_.values().size(), 0);
    std::vector<Tensor> result;
    for (int v : outs) {
      requires_grad_[v] = rg && !no_grad_ && IsFloating(graph_.info(v).dtype);
      result.emplace_back(NewPending(v));
    }
    return result;
  }

  void Assign(const Tensor& target, const Tensor& value_of) {
    TensorImpl* t = target.impl();
    MOREH_CHECK(t->info == value_of.impl()->info, "assign: {} into {}",
                value_of.impl()->info.ToString(), t->info.ToString());
    const int v = ValueOf(value_of.impl_ptr());
    // The old value stays restorable until the graph has run: see Sync().
    auto bound = input_of_.find(t);
    if (t->data.defined() && bound != input_of_.end()) {
      const int input_index = static_cast<int>(
          std::find(graph_.inputs().begin(), graph_.inputs().end(), bound->second.value) -
          graph_.inputs().begin());
      assigned_.push_back({target.impl_ptr(), input_index});
    }
    t->data = runtime::Tensor();
    t->epoch = epoch_;
    t->value = v;
    pending_.push_back(target.impl_ptr());
  }

  void Backward(const Tensor& out, const Tensor& gradient) {
    MOREH_CHECK(out.requires_grad(),
                "backward: tensor {} does not require grad (no parameter with requires_grad "
                "reaches it)",
                out.ToString());
    const int ov = ValueOf(out.impl_ptr());
    int seed;
    if (gradient.defined()) {
      seed = ValueOf(gradient.impl_ptr());
    } else {
      MOREH_CHECK(out.numel() == 1, "backward: {} is not a scalar; pass a gradient",
                  out.ToString());
      // Loss scaling (f16): the loss's gradient is the scale, not 1, and every gradient with it.
      MOREH_CHECK(grads_scale_ == 1.0 || grads_scale_ == loss_scale_,
                  "backward: gradients scaled by {} are waiting for the optimizer; the scale is "
                  "now {}",
                  grads_scale_, loss_scale_);
      grads_scale_ = loss_scale_;
      ops::GraphBuilder b(&graph_);
      seed = b.Emit1(OpKind::kFill, {},
                     {{"shape", out.shape()},
                      {"dtype", std::string(DTypeName(out.dtype()))},
                      {"value", loss_scale_}});
    }
    std::vector<int> wrt;
    std::vector<std::shared_ptr<TensorImpl>> leaves;
    for (size_t i = 0; i < input_owner_.size(); ++i) {
      auto impl = input_owner_[i].lock();
      if (impl && impl->requires_grad && impl->leaf) {
        wrt.push_back(graph_.inputs()[i]);
        leaves.push_back(impl);
      }
    }
    backward_recorded_ = true;
    if (kept_after_run_ && !warned_rerun_) {
      warned_rerun_ = true;
      spdlog::warn(
          "a value was read before backward(): the forward runs again with the backward (read "
          "the loss after optimizer.step() to run it once; evaluate under NoGradGuard / "
          "moreh.no_grad())");
    }
    const std::vector<int> grads = runtime::BuildBackward(&graph_, ov, seed, wrt);
    ops::GraphBuilder b(&graph_);
    for (size_t i = 0; i < leaves.size(); ++i) {
      if (grads[i] < 0) continue;
      int g = grads[i];
      if (leaves[i]->grad) {
        g = b.Add(ValueOf(leaves[i]->grad), g);
        if (leaves[i]->grad->data.defined())
          replaced_grads_.push_back({leaves[i], leaves[i]->grad});
      }
      requires_grad_.resize(graph_.values().size(), 0);
      leaves[i]->grad = NewPending(g);
      leaves[i]->grad->requires_grad = false;
    }
  }

  // Runs the pending graph if `impl` is waiting for it. A value that a backward may still need
  // (it requires grad and no backward was recorded: `print(loss.item()); loss.backward()`) keeps
  // the graph, as PyTorch keeps its autograd graph: the backward is appended to it and the next
  // run computes the forward again with it.
  void EnsureComputed(const std::shared_ptr<TensorImpl>& impl) {
    if (impl->data.defined()) return;
    MOREH_CHECK(impl->epoch == epoch_ && impl->value >= 0,
                "tensor {} belongs to a graph that failed or was discarded; recompute it",
                impl->name.empty() ? impl->info.ToString() : impl->name);
    const bool keep = impl->requires_grad && !backward_recorded_;
    Sync(keep);
    kept_after_run_ = kept_after_run_ || keep;
  }

  // keep_graph: run what is pending but keep recording into the same graph (see EnsureComputed).
  void Sync(bool keep_graph = false) {
    std::vector<std::shared_ptr<TensorImpl>> live;
    std::vector<char> marked(graph_.values().size(), 0);
    for (auto& w : pending_) {
      auto impl = w.lock();
      if (!impl || impl->data.defined() || impl->epoch != epoch_ || impl->value < 0) continue;
      if (std::find(live.begin(), live.end(), impl) != live.end()) continue;
      live.push_back(impl);
      if (!marked[impl->value]) {
        marked[impl->value] = 1;
        graph_.MarkOutput(impl->value);
      }
    }
    if (graph_.nodes().empty() && live.empty()) {
      Reset();
      return;
    }
    Graph graph = keep_graph ? graph_ : std::move(graph_);
    std::vector<runtime::Tensor> bindings = keep_graph ? bindings_ : std::move(bindings_);
    std::vector<Assigned> assigned;
    decltype(replaced_grads_) replaced_grads;
    if (!keep_graph) {
      assigned = std::move(assigned_);
      replaced_grads = std::move(replaced_grads_);
      Reset();  // the graph is gone whatever happens next: a failed step is not replayed
    }
    const uint64_t hash = graph.StructuralHash();
    std::shared_ptr<const runtime::CompiledGraph> cg;
    auto it = cache_.find(hash);
    if (it != cache_.end()) {
      cg = it->second;
      ++stats_.cache_hits;
    } else {
      if (const char* dir = std::getenv("MOREH_DUMP_GRAPHS")) {
        // Debugging aid: every newly compiled graph as JSON, named by its hash.
        std::ofstream(fmt::format("{}/graph_{:016x}.json", dir, hash)) << graph.ToJson(1);
      }
      cg = runtime::Compile(std::move(graph));
      if (cache_.size() > 64) cache_.clear();
      cache_[hash] = cg;
      ++stats_.compiles;
    }
    ++stats_.syncs;
    stats_.last_hash = hash;
    stats_.last_num_nodes = static_cast<int64_t>(cg->graph.nodes().size());
    std::vector<runtime::Tensor> outs;
    try {
      outs = executor_.Run(*cg, &bindings);
    } catch (...) {
      if (keep_graph) Reset();  // nothing was assigned yet (no backward, no update)
      // Tensors the failed graph was to update in place (parameters, optimizer state) get their
      // previous values back, so an error such as out-of-memory loses nothing.
      for (const Assigned& a : assigned) {
        if (a.input_index >= 0 && a.input_index < static_cast<int>(bindings.size()) &&
            bindings[a.input_index].defined()) {
          a.impl->data = std::move(bindings[a.input_index]);
          a.impl->value = -1;
        }
      }
      for (auto& [leaf, old_grad] : replaced_grads) leaf->grad = old_grad;
      throw;
    }
    // Output k belongs to the k-th distinct marked value, in marking order.
    std::unordered_map<int, size_t> index;
    for (size_t k = 0; k < cg->graph.outputs().size(); ++k) index[cg->graph.outputs()[k]] = k;
    for (auto& impl : live) {
      impl->data = outs[index.at(impl->value)];
      if (!keep_graph) impl->value = -1;
    }
  }

  runtime::Executor& executor() { return executor_; }
  LazyStats stats() const { return stats_; }

 private:
  struct Binding {
    std::weak_ptr<TensorImpl> owner;
    int value;
  };
  struct Assigned {  // a tensor rebound to a pending value while its old value is a graph input
    std::shared_ptr<TensorImpl> impl;
    int input_index;
  };
  void Reset() {
    graph_ = Graph();
    bindings_.clear();
    input_owner_.clear();
    input_of_.clear();
    requires_grad_.clear();
    pending_.clear();
    assigned_.clear();
    replaced_grads_.clear();
    backward_recorded_ = false;
    kept_after_run_ = false;
    ++epoch_;
  }

  Graph graph_;
  uint64_t epoch_ = 1;
  std::vector<runtime::Tensor> bindings_;
  std::vector<std::weak_ptr<TensorImpl>> input_owner_;
  std::unordered_map<TensorImpl*, Binding> input_of_;
  std::vector<char> requires_grad_;
  std::vector<std::weak_ptr<TensorImpl>> pending_;
  std::vector<Assigned> assigned_;
  // (leaf, its computed grad) for grads replaced by an accumulation in the pending graph.
  std::vector<std::pair<std::shared_ptr<TensorImpl>, std::shared_ptr<TensorImpl>>> replaced_grads_;
  std::unordered_map<uint64_t, std::shared_ptr<const runtime::CompiledGraph>> cache_;
  runtime::Executor executor_;
  LazyStats stats_;
  bool backward_recorded_ = false;  // a backward is in the pending graph
  bool kept_after_run_ = false;     // the pending graph ran once already (a read kept it)
  bool warned_rerun_ = false;

 public:
  bool no_grad_ = false;     // NoGradGuard: what is recorded needs no gradient
  double loss_scale_ = 1.0;  // what backward() of a scalar seeds (the optimizer's loss scaler)
  double grads_scale_ =
      1.0;  // the scale of the gradients accumulated since the optimizer took them
};

Recorder& R() {
  thread_local Recorder r;
  return r;
}

}  // namespace

namespace lazy {
std::vector<Tensor> Record(OpKind op, const std::vector<Tensor>& inputs, Attrs attrs) {
  return R().Record(op, inputs, std::move(attrs));
}
void Assign(const Tensor& target, const Tensor& value_of) { R().Assign(target, value_of); }
runtime::Executor& ThreadExecutor() { return R().executor(); }
void SetLossScale(double scale) {
  MOREH_CHECK(scale > 0 && std::isfinite(scale), "loss scale {} must be > 0", scale);
  R().loss_scale_ = scale;
}
double TakeGradientScale() { return std::exchange(R().grads_scale_, 1.0); }
double GradientScale() { return R().grads_scale_; }
}  // namespace lazy

// --- Tensor --------------------------------------------------------------------------------------
Tensor Tensor::FromData(runtime::Tensor data, bool requires_grad, std::string name) {
  MOREH_CHECK(data.defined(), "Tensor::FromData: undefined data");
  MOREH_CHECK(!requires_grad || IsFloating(data.dtype()),
              "Tensor::FromData: only float tensors can require grad ({})", data.ToString());
  auto impl = std::make_shared<TensorImpl>();
  impl->info = {data.dtype(), data.shape()};
  impl->data = std::move(data);
  impl->requires_grad = requires_grad;
  impl->name = std::move(name);
  return Tensor(std::move(impl));
}

namespace {
const TensorImpl& Checked(const std::shared_ptr<TensorImpl>& p) {
  MOREH_CHECK(p != nullptr, "use of an undefined tensor");
  return *p;
}
}  // namespace

const Shape& Tensor::shape() const { return Checked(impl_).info.shape; }
DType Tensor::dtype() const { return Checked(impl_).info.dtype; }
int64_t Tensor::size(int axis) const {
  const int a = NormalizeAxis(axis, dim());
  MOREH_CHECK(a >= 0, "Tensor::size: axis {} out of range for {}", axis, ToString());
  return shape()[a];
}
const std::string& Tensor::name() const { return Checked(impl_).name; }
std::string Tensor::ToString() const {
  return impl_ ? impl_->info.ToString() : std::string("undefined");
}
bool Tensor::requires_grad() const { return Checked(impl_).requires_grad; }
bool Tensor::is_leaf() const { return Checked(impl_).leaf; }
Tensor& Tensor::requires_grad_(bool on) {
  MOREH_CHECK(is_leaf(), "requires_grad_: only leaf tensors can change requires_grad");
  MOREH_CHECK(!on || IsFloating(dtype()), "requires_grad_: {} is not a float tensor", ToString());
  impl_->requires_grad = on;
  return *this;
}
Tensor Tensor::grad() const { return Tensor(Checked(impl_).grad); }
void Tensor::set_grad(Tensor g) {
  Checked(impl_);
  MOREH_CHECK(!g.defined() || g.impl()->info == impl_->info, "set_grad: {} for {}", g.ToString(),
              ToString());
  impl_->grad = g.impl_;
}
void Tensor::backward(const Tensor& gradient) const {
  if (Checked(impl_).backward_done) return;
  R().Backward(*this, gradient);
}

runtime::Tensor Tensor::data() const {
  Checked(impl_);
  R().EnsureComputed(impl_);
  return impl_->data;
}

void Tensor::assign_data(runtime::Tensor data) {
  Checked(impl_);
  MOREH_CHECK(impl_->leaf, "assign_data: {} is not a leaf", ToString());
  MOREH_CHECK(data.defined() && data.dtype() == dtype() && data.shape() == shape(),
              "assign_data: {} into {}", data.ToString(), ToString());
  impl_->data = std::move(data);
}

float Tensor::item() const {
  MOREH_CHECK(numel() == 1, "item(): {} has {} elements, not one", ToString(), numel());
  return data().ToFloats()[0];
}

Tensor operator+(const Tensor& a, const Tensor& b) { return lazy::Record1(OpKind::kAdd, {a, b}); }
Tensor operator*(const Tensor& a, const Tensor& b) { return lazy::Record1(OpKind::kMul, {a, b}); }
Tensor operator*(const Tensor& a, double s) {
  return lazy::Record1(OpKind::kScale, {a}, {{"scale", s}});
}

void Sync() { R().Sync(); }

NoGradGuard::NoGradGuard() : previous_(std::exchange(R().no_grad_, true)) {}
NoGradGuard::~NoGradGuard() { R().no_grad_ = previous_; }
bool GradEnabled() { return !R().no_grad_; }
LazyStats GetLazyStats() { return R().stats(); }

}  // namespace moreh
