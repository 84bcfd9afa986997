#include "runtime/executor.h"

#include <algorithm>
#include <chrono>

#include "ops/op.h"

#ifdef MOREH_WITH_CUDA
#include "kernels/cuda/device_info.h"
#include "ops/cuda/cuda_ops.h"
#endif

namespace moreh::runtime {

std::shared_ptr<const CompiledGraph> Compile(Graph graph) {
  graph.Validate().ThrowIfError();
  for (size_t i = 0; i < graph.nodes().size(); ++i) {
    const Node& n = graph.nodes()[i];
    ops::InfoList in;
    for (int v : n.inputs) in.push_back(&graph.info(v));
    const std::vector<ValueInfo> out = ops::InferOutputs(n.op, in, n.attrs);
    MOREH_CHECK(out.size() == n.outputs.size(),
                "graph node {} ({}): {} outputs recorded, op has {}", i, OpName(n.op),
                n.outputs.size(), out.size());
    for (size_t o = 0; o < out.size(); ++o) {
      MOREH_CHECK(out[o] == graph.info(n.outputs[o]),
                  "graph node {} ({}): output {} recorded as {} but the op infers {}", i,
                  OpName(n.op), o, graph.info(n.outputs[o]).ToString(), out[o].ToString());
    }
  }
  auto cg = std::make_shared<CompiledGraph>();
  const size_t nv = graph.values().size();
  cg->last_use.assign(nv, -1);
  cg->is_output.assign(nv, 0);
  for (size_t i = 0; i < graph.nodes().size(); ++i) {
    for (int v : graph.nodes()[i].inputs) cg->last_use[v] = static_cast<int>(i);
  }
  for (int v : graph.outputs()) cg->is_output[v] = 1;
  cg->hash = graph.StructuralHash();
  cg->graph = std::move(graph);
  return cg;
}

Executor::Executor(Allocator* alloc)
    : alloc_(alloc ? alloc : CpuAllocator()),
      backend_(alloc_->host_accessible() ? ops::Backend::kCpu : ops::Backend::kCuda) {
  if (backend_ == ops::Backend::kCuda) {
#ifdef MOREH_WITH_CUDA
    ops::RegisterCudaKernels();
#else
    throw Error(fmt::format("Executor: {} is not host memory and this build has no CUDA backend",
                            alloc_->device_name()));
#endif
  }
}

std::vector<Tensor> Executor::Run(const CompiledGraph& cg, std::vector<Tensor>* inputs_ptr) {
  std::vector<Tensor>& inputs = *inputs_ptr;
  const Graph& g = cg.graph;
  MOREH_CHECK(inputs.size() == g.inputs().size(), "Executor: graph takes {} inputs, got {}",
              g.inputs().size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const int v = g.inputs()[i];
    const ValueInfo& want = g.info(v);
    MOREH_CHECK(inputs[i].defined(), "Executor: input {} ('{}') is undefined", i, g.value(v).name);
    MOREH_CHECK(inputs[i].dtype() == want.dtype && inputs[i].shape() == want.shape,
                "Executor: input {} ('{}') is {} but the graph expects {}", i, g.value(v).name,
                inputs[i].ToString(), want.ToString());
  }
  std::vector<Tensor> slots(g.values().size());
  for (size_t i = 0; i < inputs.size(); ++i) slots[g.inputs()[i]] = std::move(inputs[i]);
  try {
    std::vector<Tensor> outs = RunNodes(cg, slots);
    inputs.clear();
    return outs;
  } catch (...) {
    for (size_t i = 0; i < inputs.size(); ++i) inputs[i] = std::move(slots[g.inputs()[i]]);
    throw;
  }
}

std::vector<Tensor> Executor::Run(const CompiledGraph& cg, std::vector<Tensor> inputs,
                                  const OutputSink& sink) {
  const Graph& g = cg.graph;
  MOREH_CHECK(inputs.size() == g.inputs().size(), "Executor: graph takes {} inputs, got {}",
              g.inputs().size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ValueInfo& want = g.info(g.inputs()[i]);
    MOREH_CHECK(
        inputs[i].defined() && inputs[i].dtype() == want.dtype && inputs[i].shape() == want.shape,
        "Executor: input {} ('{}') is {} but the graph expects {}", i, g.value(g.inputs()[i]).name,
        inputs[i].defined() ? inputs[i].ToString() : "undefined", want.ToString());
  }
  std::vector<Tensor> slots(g.values().size());
  for (size_t i = 0; i < inputs.size(); ++i) slots[g.inputs()[i]] = std::move(inputs[i]);
  return RunNodes(cg, slots, &sink);
}

std::vector<Tensor> Executor::RunNodes(const CompiledGraph& cg, std::vector<Tensor>& slots,
                                       const OutputSink* sink) {
  const Graph& g = cg.graph;
  std::vector<char> sunk;
  if (sink) sunk.assign(g.outputs().size(), 0);
  // Offers every output that `v` is, once v is final; frees v when all of them were consumed.
  auto offer = [&](int v) {
    bool all = true, any = false;
    for (size_t k = 0; k < g.outputs().size(); ++k) {
      if (g.outputs()[k] != v || sunk[k]) continue;
      any = true;
      sunk[k] = (*sink)(static_cast<int>(k), slots[v]);
      all = all && sunk[k];
    }
    if (any && all) slots[v] = Tensor();
  };

  if (profiling_ && profile_.empty()) {
    profile_.resize(kNumOps);
    for (int k = 0; k < kNumOps; ++k) profile_[k].op = std::string(OpName(static_cast<OpKind>(k)));
  }
#ifdef MOREH_WITH_CUDA
  if (profiling_ && backend_ == ops::Backend::kCuda && !marks_) {
    marks_ = std::make_shared<kernels::cuda::StreamMarks>();
  }
#endif
  const bool gpu_timing = profiling_ && marks_ != nullptr;
  std::vector<Tensor> in_tensors;
  std::vector<Tensor> out_tensors;
  for (size_t ni = 0; ni < g.nodes().size(); ++ni) {
    const Node& n = g.nodes()[ni];
    const ops::OpDef& def = ops::GetOpDef(n.op);
    const auto t0 = std::chrono::steady_clock::now();
#ifdef MOREH_WITH_CUDA
    const int mark_from = gpu_timing ? marks_->Mark() : -1;
#endif
    in_tensors.clear();
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const int v = n.inputs[k];
      MOREH_CHECK(slots[v].defined(), "{} (node {}): input value {} was freed or never computed",
                  OpName(n.op), ni, v);
      // A graph input held in the other kind of memory moves once, to this executor's device
      // (not one the kernel reads on the host anyway).
      const bool host_read =
          std::count(def.host_inputs.begin(), def.host_inputs.end(), static_cast<int>(k)) > 0;
      if (slots[v].on_host() != (backend_ == ops::Backend::kCpu) &&
          !(host_read && slots[v].on_host())) {
        slots[v] = slots[v].CopyTo(alloc_);
      }
      in_tensors.push_back(slots[v]);
    }
    out_tensors.assign(n.outputs.size(), Tensor());
    if (def.view) {
      out_tensors[0] = def.view(in_tensors[0], n.attrs, g.info(n.outputs[0]));
    } else {
      for (const auto& [o, i] : def.inplace) {
        const int v = n.inputs[i];
        Tensor& src = slots[v];
        // Donate the input's buffer when nobody can observe it afterwards.
        const bool donate = cg.last_use[v] == static_cast<int>(ni) && !cg.is_output[v] &&
                            src.is_contiguous() && src.buffer().use_count() == 2 &&
                            std::count(n.inputs.begin(), n.inputs.end(), v) == 1;
        if (donate) {
          in_tensors[i] = Tensor();
          out_tensors[o] = std::move(src);
        } else {
          out_tensors[o] = in_tensors[i].Clone();
        }
      }
      for (size_t o = 0; o < n.outputs.size(); ++o) {
        if (!out_tensors[o].defined()) {
          const ValueInfo& info = g.info(n.outputs[o]);
          out_tensors[o] = Tensor::Empty(info.shape, info.dtype, alloc_);
        }
      }
      for (Tensor& t : in_tensors) {
        if (t.defined() && !t.is_contiguous()) t = t.Contiguous();
      }
      const auto& kernel = ops::KernelFor(n.op, backend_);
      MOREH_CHECK(kernel != nullptr, "{}: no {} kernel", OpName(n.op),
                  backend_ == ops::Backend::kCpu ? "CPU" : "CUDA");
      kernel(in_tensors, out_tensors, n.attrs);
    }
#ifdef MOREH_WITH_CUDA
    if (gpu_timing) spans_.push_back({static_cast<int>(n.op), mark_from, marks_->Mark()});
#endif
    in_tensors.clear();
    for (size_t o = 0; o < n.outputs.size(); ++o) slots[n.outputs[o]] = std::move(out_tensors[o]);
    for (int v : n.inputs) {
      if (cg.last_use[v] == static_cast<int>(ni) && !cg.is_output[v]) slots[v] = Tensor();
    }
    for (int v : n.outputs) {  // outputs nobody reads
      if (cg.last_use[v] < 0 && !cg.is_output[v]) slots[v] = Tensor();
    }
    if (sink) {
      for (int v : n.outputs) {
        if (cg.is_output[v] && cg.last_use[v] <= static_cast<int>(ni)) offer(v);
      }
      for (int v : n.inputs) {
        if (cg.is_output[v] && cg.last_use[v] == static_cast<int>(ni) && slots[v].defined()) {
          offer(v);
        }
      }
    }
    if (profiling_) {
      OpProfile& p = profile_[static_cast<int>(n.op)];
      p.calls += 1;
      if (!gpu_timing) {
        p.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      p.flops += ops::OpCost(g, n).flops;
    }
  }
  std::vector<Tensor> outs;
  outs.reserve(g.outputs().size());
  for (size_t k = 0; k < g.outputs().size(); ++k) {
    const int v = g.outputs()[k];
    if (sink && sunk[k]) {
      outs.emplace_back();
      continue;
    }
    MOREH_CHECK(slots[v].defined(), "Executor: output value {} was not computed", v);
    outs.push_back(slots[v]);
  }
  return outs;
}

void Executor::ResetProfile() {
  profile_.clear();
  spans_.clear();
#ifdef MOREH_WITH_CUDA
  if (marks_) marks_->Clear();
#endif
}

std::vector<OpProfile> Executor::Profile() {
  std::vector<Span> spans;
  spans.swap(spans_);  // read once, whatever happens below
#ifdef MOREH_WITH_CUDA
  if (marks_) {
    std::vector<double> seconds(profile_.size(), 0.0);
    try {
      for (const Span& s : spans) seconds[s.op] += marks_->Seconds(s.from, s.to);
    } catch (...) {
      marks_->Clear();
      throw;
    }
    marks_->Clear();
    for (size_t k = 0; k < seconds.size(); ++k) profile_[k].seconds += seconds[k];
  }
#endif
  std::vector<OpProfile> p;
  for (const OpProfile& e : profile_) {
    if (e.calls) p.push_back(e);
  }
  std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
  return p;
}

}  // namespace moreh::runtime
