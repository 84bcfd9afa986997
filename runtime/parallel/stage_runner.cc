#include "runtime/parallel/stage_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"
#include "runtime/core/error.h"
#include "runtime/device.h"

namespace moreh::parallel {
namespace {
using clk = std::chrono::steady_clock;
double Since(clk::time_point t) { return std::chrono::duration<double>(clk::now() - t).count(); }
// The gradient bucket size; *forced: set by MOREH_GRAD_BUCKET_MB rather than the default.
int64_t BucketElements(bool* forced) {
  const char* env = std::getenv("MOREH_GRAD_BUCKET_MB");
  double mb = 25;  // PyTorch DDP's default
  *forced = env != nullptr && *env != '\0';
  if (*forced) {
    char* end = nullptr;
    mb = std::strtod(env, &end);
    MOREH_CHECK(end != env && *end == '\0' && mb >= 0 && mb < 1e6,
                "MOREH_GRAD_BUCKET_MB='{}': expected a size in MiB (0 turns the overlap off)", env);
  }
  return static_cast<int64_t>(mb * 1024 * 1024 / 4);
}
}  // namespace

UcxPipeLinks::UcxPipeLinks(comm::UcxTransport* t, int prev_rank, int next_rank,
                           std::chrono::milliseconds timeout)
    : t_(t), prev_(prev_rank), next_(next_rank), timeout_(timeout) {}

void UcxPipeLinks::Send(int peer, uint32_t kind, int mb, const runtime::Tensor& t) {
  MOREH_CHECK(peer >= 0, "pipeline: no {} stage to send to", kind == 1 ? "next" : "previous");
  // Completed sends release their tensors now rather than at the end of the step (errors surface
  // in Flush).
  for (size_t i = 0; i < pending_.size();) {
    if (t_->Completed(pending_[i])) {
      pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
      in_flight_.erase(in_flight_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  // A tensor in GPU memory travels from a host copy (UCX here has no CUDA transports).
  const runtime::Tensor h = t.HostContiguous();
  auto r = t_->Send(peer, h.raw_data(), static_cast<size_t>(h.nbytes()), kind, Seq(mb));
  if (!r.ok()) throw Error("pipeline send: " + r.status().message());
  pending_.push_back(*r);
  in_flight_.push_back(h);
}

void UcxPipeLinks::Recv(int peer, uint32_t kind, int mb, runtime::Tensor* t) {
  MOREH_CHECK(peer >= 0, "pipeline: no {} stage to receive from", kind == 1 ? "previous" : "next");
  runtime::Tensor h = t->on_host() ? *t : runtime::Tensor::Empty(t->shape(), t->dtype());
  auto r = t_->Recv(peer, h.raw_data(), static_cast<size_t>(h.nbytes()), kind, Seq(mb));
  if (!r.ok()) throw Error("pipeline receive: " + r.status().message());
  Status s = t_->Wait(*r, timeout_);
  if (!s.ok()) {
    throw Error(fmt::format("pipeline: waiting for the {} of micro-batch {} from rank {}: {}",
                            kind == 1 ? "activation" : "gradient", mb, peer, s.message()));
  }
  if (h.buffer() != t->buffer()) t->CopyFrom(h);
}

void UcxPipeLinks::Flush() {
  Status s = t_->WaitAll(pending_, timeout_);
  pending_.clear();
  in_flight_.clear();
  if (!s.ok()) throw Error("pipeline: completing sends: " + s.message());
}

StageRunner::StageRunner(StageProgram program, runtime::Allocator* alloc, optim::AdamWOptions adamw,
                         int dp_size, int dp_rank, bool distribute)
    : program_(std::move(program)),
      alloc_(alloc ? alloc : runtime::CpuAllocator()),
      adamw_(adamw),
      dp_size_(dp_size),
      dp_rank_(dp_rank),
      distribute_(distribute && dp_size > 1 && program_.spec.param_shards == 1),
      exec_(alloc_) {
  MOREH_CHECK(dp_size >= 1 && dp_rank >= 0 && dp_rank < dp_size, "data-parallel rank {} of {}",
              dp_rank, dp_size);
  fwd_ = runtime::Compile(program_.forward.graph);
  bwd_ = runtime::Compile(program_.backward.graph);
  // Parameter shapes as the forward program declares them (every parameter is one of its inputs).
  std::vector<Shape> shapes;
  for (size_t i = 0; i < program_.param_values.size(); ++i) {
    const auto& in = program_.forward.inputs;
    const auto it = std::find(in.begin(), in.end(), program_.param_values[i]);
    MOREH_CHECK(it != in.end(), "stage program: parameter '{}' is not a forward input",
                program_.params.at(i));
    const Graph& fg = program_.forward.graph;
    const ValueInfo& info = fg.info(fg.inputs()[it - in.begin()]);
    MOREH_CHECK(info.dtype == program_.spec.compute_dtype,
                "stage program: parameter '{}' is {} but the compute dtype is {}",
                program_.params.at(i), DTypeName(info.dtype),
                DTypeName(program_.spec.compute_dtype));
    shapes.push_back(info.shape);
    offsets_.push_back(num_params_);
    num_params_ += Numel(shapes.back());
    param_index_[program_.param_values[i]] = static_cast<int>(i);
  }
  offsets_.push_back(num_params_);
  for (size_t i = 0; i < program_.param_grads.size(); ++i) {
    if (program_.param_grads[i] >= 0) grad_param_.push_back(static_cast<int>(i));
  }
  // Padded to a multiple of the group (and of 16 floats) so every shard has the same length.
  const int64_t unit = 16 * dp_size_;
  padded_ = (num_params_ + unit - 1) / unit * unit;
  shard_ = distribute_ ? padded_ / dp_size_ : padded_;
  sharded_master_ = mixed() && distribute_;
  shapes_ = shapes;
  flat_params_ = runtime::Tensor::Zeros({sharded_master_ ? shard_ : padded_}, DType::kF32, alloc_);
  flat_grads_ = runtime::Tensor::Zeros({padded_}, DType::kF32, alloc_);
  m_ = runtime::Tensor::Zeros({shard_}, DType::kF32, alloc_);
  v_ = runtime::Tensor::Zeros({shard_}, DType::kF32, alloc_);
  if (mixed())
    flat_compute_ = runtime::Tensor::Zeros({padded_}, program_.spec.compute_dtype, alloc_);
  for (size_t i = 0; i < program_.param_values.size(); ++i) {
    const Shape& shape = shapes[i];
    if (!sharded_master_) {
      params_.push_back(flat_params_.Slice(0, offsets_[i], offsets_[i + 1]).View(shape));
    }
    grads_.push_back(flat_grads_.Slice(0, offsets_[i], offsets_[i + 1]).View(shape));
    compute_params_.push_back(
        mixed() ? flat_compute_.Slice(0, offsets_[i], offsets_[i + 1]).View(shape) : params_[i]);
  }
  for (const std::string& name : program_.params) {
    decay_off_.push_back(adamw_.exclude_bias_and_norm && optim::ExcludedFromWeightDecay(name));
  }
  // Buckets from the last parameter back (the backward finishes the last layers' gradients
  // first), each ending at a parameter boundary once it holds at least the bucket size.
  const int64_t bucket = BucketElements(&buckets_forced_);
  bucket_of_.assign(program_.params.size(), -1);
  if (bucket > 0) {
    for (int i = static_cast<int>(program_.params.size()) - 1; i >= 0; --i) {
      if (buckets_.empty() || buckets_.back().end - buckets_.back().begin >= bucket) {
        buckets_.push_back({offsets_[i], offsets_[i + 1], 0, 0});
      }
      buckets_.back().begin = offsets_[i];
      bucket_of_[i] = static_cast<int>(buckets_.size()) - 1;
    }
    for (int param : grad_param_) ++buckets_[bucket_of_[param]].grads;
  }
}

bool StageRunner::OverlapsReduction() const {
  // By default only where the reduction really runs alongside the backward (NCCL): the ring over
  // UCX would reduce the same bytes in more, smaller pieces on the computing thread (measured
  // 2.5 % slower on dp_vs_ddp); MOREH_GRAD_BUCKET_MB forces it there too.
  return !buckets_.empty() && dp_ != nullptr && dp_->size() > 1 && !distribute_ &&
         program_.spec.param_shards == 1 && (buckets_forced_ || dp_->overlaps_compute());
}

void StageRunner::GradientAdded(int param) {
  Bucket& b = buckets_[bucket_of_[param]];
  if (--b.waiting > 0) return;
  reduced_ = true;  // from now on the buffer may be written by the group: wait before touching it
  Status s = dp_->StartAllReduce(flat_grads_.data<float>() + b.begin, b.end - b.begin, DType::kF32);
  if (!s.ok()) throw Error("data-parallel gradient all-reduce: " + s.message());
}

void StageRunner::WaitForReduction() {
  Status s = dp_->WaitStarted();
  if (!s.ok()) throw Error("data-parallel gradient all-reduce: " + s.message());
}

runtime::Tensor StageRunner::parameter(size_t i) const {
  compute_stale_ = true;
  if (!sharded_master_) return params_.at(i);
  MOREH_CHECK(i < shapes_.size(), "parameter {} of {}", i, shapes_.size());
  if (!host_master_.defined()) {
    MOREH_CHECK(!masters_applied_,
                "parameter '{}': the master weights are sharded over the data-parallel group; "
                "GatherMasters() (on every replica) first",
                program_.params[i]);
    host_master_ = runtime::Tensor::Zeros({padded_}, DType::kF32);  // loading
  }
  return host_master_.Slice(0, offsets_[i], offsets_[i + 1]).View(shapes_[i]);
}

void StageRunner::GatherMasters() {
  if (!sharded_master_) return;
  MOREH_CHECK(dp_ != nullptr && dp_->size() == dp_size_,
              "gathering the master weights: no data-parallel group of {}", dp_size_);
  MOREH_CHECK(!grads_dirty_, "gathering the master weights between a step and its update");
  if (host_master_.defined()) ApplyHostMasters();  // written since: those are the masters
  // Through the gradient buffer (all zeros between an update and the next step, and as large).
  Status s =
      dp_->AllGather(flat_params_.data<float>(), flat_grads_.data<float>(), shard_, DType::kF32);
  if (!s.ok()) throw Error("gathering the master weights: " + s.message());
  host_master_ = flat_grads_.CopyTo(nullptr);
  flat_grads_.Fill(0.0);
}

void StageRunner::ApplyHostMasters() {
  const int64_t at = dp_rank_ * shard_;
  flat_params_.CopyFrom(host_master_.Slice(0, at, at + shard_));
  flat_compute_.CopyFrom(host_master_.To(program_.spec.compute_dtype));
  host_master_ = runtime::Tensor();
  masters_applied_ = true;
}

runtime::Tensor StageRunner::compute_parameter(size_t i) const { return compute_params_.at(i); }

void StageRunner::RefreshComputeWeights() {
  if (sharded_master_) {
    if (host_master_.defined()) ApplyHostMasters();  // else the update made the copy
  } else if (mixed()) {
    flat_compute_.CopyFrom(flat_params_);  // rounds to the nearest, as torch's .to()
  }
  compute_stale_ = false;
}

std::vector<runtime::Tensor> StageRunner::Inputs(
    const SubProgram& prog, const std::unordered_map<int, runtime::Tensor>& stash) const {
  std::vector<runtime::Tensor> in;
  for (int v : prog.inputs) {
    auto it = param_index_.find(v);
    in.push_back(it != param_index_.end() ? compute_params_[it->second] : stash.at(v));
  }
  return in;
}

double StageRunner::RunMicroBatches(const std::vector<planner::ScheduleStep>& steps,
                                    const std::vector<MicroBatch>& mbs, PipeLinks* links) {
  MOREH_CHECK(!grads_reduced_,
              "the gradients were reduced for the optimizer step (clipping's norm): the update "
              "comes before more gradients");
  return Play(steps, mbs, links, /*train=*/true);
}

double StageRunner::Evaluate(const std::vector<MicroBatch>& mbs, PipeLinks* links) {
  std::vector<planner::ScheduleStep> forwards;
  for (int m = 0; m < static_cast<int>(mbs.size()); ++m) {
    forwards.push_back({m, planner::Phase::kForward});
  }
  return Play(forwards, mbs, links, /*train=*/false);
}

double StageRunner::Play(const std::vector<planner::ScheduleStep>& steps,
                         const std::vector<MicroBatch>& mbs, PipeLinks* links, bool train) {
  const StageProgram& p = program_;
  const int64_t B = p.spec.micro_batch, T = p.spec.seq_len, C = p.spec.model.hidden_size;
  MOREH_CHECK(p.spec.tp == 1 || (tp_ != nullptr && tp_->size() == p.spec.tp),
              "stage with tensor parallelism {} has no group of that size", p.spec.tp);
  // tp_reduce's all-reduce for this thread, for the duration of the step.
  struct HookScope {
    explicit HookScope(comm::Collectives* tp) {
      if (tp == nullptr) return;
      ops::SetTensorParallelAllReduce([tp](void* d, int64_t n, DType dt) {
        Status s = tp->AllReduce(d, d, n, dt, comm::ReduceOp::kSum);
        if (!s.ok()) throw Error("tensor-parallel all-reduce: " + s.message());
      });
    }
    ~HookScope() { ops::SetTensorParallelAllReduce(nullptr); }
  } hook(p.spec.tp > 1 ? tp_ : nullptr);
  struct ShardScope {  // dp_gather / dp_reduce_scatter for this thread
    explicit ShardScope(comm::Collectives* dp) {
      if (dp == nullptr) return;
      auto check = [](Status s, const char* what) {
        if (!s.ok()) throw Error(fmt::format("parameter {}: {}", what, s.message()));
      };
      ops::SetDataParallelHooks({[dp, check](const void* shard, void* out, int64_t n, DType dt) {
                                   check(dp->AllGather(shard, out, n, dt), "all-gather");
                                 },
                                 [dp, check](const void* in, void* out, int64_t n, DType dt) {
                                   check(dp->ReduceScatter(in, out, n, dt, comm::ReduceOp::kSum),
                                         "reduce-scatter");
                                 }});
    }
    ~ShardScope() { ops::SetDataParallelHooks({}); }
  } shards(p.spec.param_shards > 1 ? dp_ : nullptr);
  MOREH_CHECK(p.spec.param_shards == 1 || (dp_ != nullptr && dp_->size() == p.spec.param_shards),
              "stage with parameters sharded {} ways has no data-parallel group of that size",
              p.spec.param_shards);
  if (compute_stale_) RefreshComputeWeights();
  const bool overlap = train && OverlapsReduction();
  if (reduced_ && train) {
    // More gradients before the update: the group's sums so far stay on one replica only, so
    // the next reduction adds them once.
    WaitForReduction();
    reduced_ = false;
    if (dp_->rank() != 0) ZeroGrad();
  }
  // The step's last backward starts the buckets' reductions.
  int last_backward = -1;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].phase == planner::Phase::kBackward) last_backward = static_cast<int>(i);
  }
  // An activation or gradient [B, T, C] from a neighbour; the wait counts as idle time.
  auto receive = [&](void (PipeLinks::*recv)(int, runtime::Tensor*), int micro_batch) {
    runtime::Tensor t = runtime::Tensor::Empty({B, T, C}, p.spec.compute_dtype, alloc_);
    const auto t0 = clk::now();
    (links->*recv)(micro_batch, &t);
    stats_.wait_s += Since(t0);
    return t;
  };
  double loss = 0;
  for (size_t step_index = 0; step_index < steps.size(); ++step_index) {
    const planner::ScheduleStep& st = steps[step_index];
    if (st.phase == planner::Phase::kRecompute) continue;  // inside the backward program
    MOREH_CHECK(st.micro_batch >= 0 && st.micro_batch < static_cast<int>(mbs.size()),
                "schedule names micro-batch {} of {}", st.micro_batch, mbs.size());
    const MicroBatch& mb = mbs[st.micro_batch];
    if (st.phase == planner::Phase::kForward) {
      auto& stash = stash_[st.micro_batch];
      if (p.activation >= 0) stash[p.activation] = receive(&PipeLinks::RecvForward, st.micro_batch);
      if (p.ids >= 0) stash[p.ids] = mb.ids;
      stash[p.mask] = mb.mask;
      if (p.labels >= 0) {
        stash[p.labels] = mb.labels;
        stash[p.loss_weight] = mb.loss_weight;
      }
      const auto t0 = clk::now();
      std::vector<runtime::Tensor> out = exec_.Run(*fwd_, Inputs(p.forward, stash));
      stats_.forward_s += Since(t0);
      if (p.spec.last) {
        loss += out[0].ToFloats()[0];
      } else {
        links->SendForward(st.micro_batch, out[0]);
      }
      if (!train) {  // evaluation: nothing waits for a backward
        stash_.erase(st.micro_batch);
        stats_.peak_bytes = std::max(stats_.peak_bytes, alloc_->peak_bytes());
        continue;
      }
      // Keep only what the backward reads.
      std::unordered_map<int, runtime::Tensor> keep;
      for (size_t k = 1; k < out.size(); ++k) keep[p.forward.outputs[k]] = std::move(out[k]);
      for (int v : p.backward.inputs) {
        if (!param_index_.count(v) && v != p.grad_in && !keep.count(v)) keep[v] = stash.at(v);
      }
      stash = std::move(keep);
    } else {
      auto it_stash = stash_.find(st.micro_batch);
      MOREH_CHECK(it_stash != stash_.end(),
                  "schedule: backward of micro-batch {} before its forward", st.micro_batch);
      auto& stash = it_stash->second;
      if (p.grad_in >= 0) stash[p.grad_in] = receive(&PipeLinks::RecvBackward, st.micro_batch);
      std::vector<runtime::Tensor> in = Inputs(p.backward, stash);
      stash_.erase(it_stash);  // the executor frees each saved value after its last use
      const auto t0 = clk::now();
      // Each weight gradient is added into its accumulator as soon as it is final; in the last
      // backward, a bucket whose gradients are all in starts its reduction.
      const int first_grad = p.grad_out >= 0 ? 1 : 0;
      const bool reduce = overlap && static_cast<int>(step_index) == last_backward;
      if (reduce) {
        for (Bucket& b : buckets_) b.waiting = b.grads;
      }
      std::vector<runtime::Tensor> out =
          exec_.Run(*bwd_, std::move(in), [&](int k, const runtime::Tensor& t) {
            if (k < first_grad) return false;
            const int param = grad_param_[k - first_grad];
            runtime::AddInto(grads_[param], t);
            grads_dirty_ = true;
            if (reduce) GradientAdded(param);
            return true;
          });
      stats_.backward_s += Since(t0);
      if (p.grad_out >= 0) links->SendBackward(st.micro_batch, out[0]);
    }
    stats_.peak_bytes = std::max(stats_.peak_bytes, alloc_->peak_bytes());
  }
  const auto t0 = clk::now();
  links->Flush();
  stats_.wait_s += Since(t0);
  MOREH_CHECK(stash_.empty(), "schedule: {} micro-batch(es) ran forward without backward",
              stash_.size());
  if (overflow_check_ && train) {
    if (reduced_)
      WaitForReduction();  // the buffer is being summed in place; the update waits anyway
    stats_.found_overflow = !runtime::AllFinite(flat_grads_);
  }
  return loss;
}

void StageRunner::set_tied_embeddings(comm::Collectives* pair) {
  const auto& names = program_.params;
  const auto it = std::find(names.begin(), names.end(), "model.embed_tokens.weight");
  MOREH_CHECK(it != names.end(), "tied embeddings: this stage holds no embedding");
  tied_ = pair;
  tied_param_ = static_cast<int>(it - names.begin());
}

void StageRunner::ReduceGradients(comm::Collectives* dp) {
  MOREH_CHECK(!reduced_ || dp == dp_,
              "update: the gradients were reduced over the stage's data-parallel group during the "
              "backward; the update must use that group");
  MOREH_CHECK(!sharded_master_ || (dp != nullptr && dp->size() == dp_size_),
              "update: the master weights are sharded over a data-parallel group of {}; the update "
              "needs that group",
              dp_size_);
  if (grads_reduced_) return;
  const auto t0 = clk::now();
  bool summed = false;  // the overlapped reduction's sums are in the buffer
  if (reduced_) {
    const auto w0 = clk::now();
    WaitForReduction();  // started during the backward
    reduced_ = false;
    summed = true;
    stats_.wait_s += Since(w0);
  }
  if (tied_ != nullptr) {
    // Tied embeddings: the first stage's gradient (the lookup) plus the last stage's (the head).
    // Sums commute, so before the data-parallel reduction or after its overlapped part alike.
    runtime::Tensor g = grads_.at(static_cast<size_t>(tied_param_));
    Status s =
        tied_->AllReduce(g.raw_data(), g.raw_data(), g.numel(), DType::kF32, comm::ReduceOp::kSum);
    if (!s.ok()) throw Error("tied embeddings: summing the copies' gradients: " + s.message());
  }
  auto check = [](Status s, const char* what) {
    if (!s.ok()) throw Error(fmt::format("data-parallel {}: {}", what, s.message()));
  };
  float* G = flat_grads_.data<float>();
  if (ShardsOptimizer(dp)) {
    // ZeRO: each replica takes the sum of its shard (and updates only that).
    g_shard_ = runtime::Tensor::Empty({shard_}, DType::kF32, alloc_);
    check(dp->ReduceScatter(G, g_shard_.data<float>(), shard_, DType::kF32, comm::ReduceOp::kSum),
          "reduce-scatter");
  } else if (!summed && dp != nullptr && dp->size() > 1 && program_.spec.param_shards == 1) {
    check(dp->AllReduce(G, G, padded_, DType::kF32, comm::ReduceOp::kSum), "all-reduce");
  }
  grads_reduced_ = true;
  stats_.update_s += Since(t0);
  stats_.peak_bytes = std::max(stats_.peak_bytes, alloc_->peak_bytes());
}

double StageRunner::GradSquares() const {
  MOREH_CHECK(grads_reduced_, "gradient norm: the gradients are not reduced yet");
  // The block of the flat layout this rank counts, and the buffer holding it from `base` on.
  int64_t begin = 0, end = padded_, base = 0;
  const runtime::Tensor* g = &flat_grads_;
  if (g_shard_.defined()) {  // sharded optimizer states: this replica's summed block
    begin = base = dp_rank_ * shard_;
    end = begin + shard_;
    g = &g_shard_;
  } else if (program_.spec.param_shards == 1 && dp_size_ > 1) {  // every replica holds the sum
    const int64_t part = padded_ / dp_size_;
    begin = dp_rank_ * part;
    end = begin + part;
  }
  const bool tp_copy = tp_ != nullptr && tp_->size() > 1 && tp_->rank() != 0;
  double squares = 0.0;
  for (size_t i = 0; i < program_.params.size(); ++i) {
    if (tp_copy && TpShardDim(program_.spec.model, program_.params[i]) < 0) continue;
    if (tied_ != nullptr && !program_.spec.first && static_cast<int>(i) == tied_param_) continue;
    const int64_t lo = std::max(begin, offsets_[i]), hi = std::min(end, offsets_[i + 1]);
    if (lo < hi) squares += runtime::SumOfSquares(*g, lo - base, hi - base);
  }
  return squares;
}

bool StageRunner::ShardsOptimizer(const comm::Collectives* dp) const {
  return dp != nullptr && dp->size() > 1 && distribute_ && program_.spec.param_shards == 1;
}

void StageRunner::AdamWRange(float* P, float* M, float* V, const float* G, int64_t begin,
                             int64_t end, const kernels::cpu::AdamWParams& hp) {
  // Runs of consecutive parameters with the same decay; the padding past the last decays (zeros).
  int64_t at = begin;
  while (at < end) {
    const size_t i = static_cast<size_t>(std::upper_bound(offsets_.begin(), offsets_.end(), at) -
                                         offsets_.begin() - 1);
    const bool off = i < decay_off_.size() && decay_off_[i];
    size_t j = i;
    while (j < decay_off_.size() && decay_off_[j] == off) ++j;
    const int64_t stop = std::min(end, j < decay_off_.size() ? offsets_[j] : padded_);
    kernels::cpu::AdamWParams run = hp;
    if (off) run.weight_decay = 0.0f;
    const int64_t k = at - begin;
    runtime::AdamWStepOn(flat_params_, P + k, M + k, V + k, G + k, stop - at, run);
    at = stop;
  }
}

void StageRunner::Update(comm::Collectives* dp, double lr, double grad_scale, bool skip) {
  MOREH_CHECK(grad_scale > 0 && std::isfinite(grad_scale), "update: gradient scale {} must be > 0",
              grad_scale);
  if (host_master_.defined()) ApplyHostMasters();  // written since the last step
  if (skip) {  // an overflow somewhere: these gradients are dropped, nothing else changes
    const auto t0 = clk::now();
    ZeroGrad();
    stats_.update_s += Since(t0);
    return;
  }
  ReduceGradients(dp);
  const auto t0 = clk::now();
  const bool sharded = ShardsOptimizer(dp);
  if (grad_scale != 1.0) {
    runtime::ScaleInPlace(sharded ? g_shard_ : flat_grads_, static_cast<float>(grad_scale));
  }
  ++step_;
  const kernels::cpu::AdamWParams hp{static_cast<float>(lr),
                                     static_cast<float>(adamw_.beta1),
                                     static_cast<float>(adamw_.beta2),
                                     static_cast<float>(adamw_.eps),
                                     static_cast<float>(adamw_.weight_decay),
                                     step_};
  float* P = flat_params_.data<float>();
  auto check = [](Status s, const char* what) {
    if (!s.ok()) throw Error(fmt::format("data-parallel {}: {}", what, s.message()));
  };
  if (sharded) {
    // ZeRO: each replica updates its shard of the master weights, then all share the result.
    float* p_shard = sharded_master_ ? P : P + dp_rank_ * shard_;
    AdamWRange(p_shard, m_.data<float>(), v_.data<float>(), g_shard_.data<float>(),
               dp_rank_ * shard_, (dp_rank_ + 1) * shard_, hp);
    g_shard_ = runtime::Tensor();
    if (sharded_master_) {
      // The updated shard, rounded, into its block of the compute copy; then every block to
      // every replica (half the bytes of gathering f32 masters).
      runtime::Tensor mine = flat_compute_.Slice(0, dp_rank_ * shard_, (dp_rank_ + 1) * shard_);
      mine.CopyFrom(flat_params_);
      check(dp->AllGather(mine.raw_data(), flat_compute_.raw_data(), shard_,
                          program_.spec.compute_dtype),
            "all-gather");
    } else {
      // In place: this replica's block of P is already where the gather puts it.
      check(dp->AllGather(p_shard, P, shard_, DType::kF32), "all-gather");
    }
  } else {
    AdamWRange(P, m_.data<float>(), v_.data<float>(), flat_grads_.data<float>(), 0, padded_, hp);
  }
  RefreshComputeWeights();
  ZeroGrad();
  stats_.update_s += Since(t0);
  stats_.peak_bytes = std::max(stats_.peak_bytes, alloc_->peak_bytes());
}

void StageRunner::ZeroGrad() {
  if (reduced_) {  // reductions may still be writing the buffer
    WaitForReduction();
    reduced_ = false;
  }
  flat_grads_.Fill(0.0);
  g_shard_ = runtime::Tensor();
  grads_reduced_ = false;
  grads_dirty_ = false;
}

}  // namespace moreh::parallel
