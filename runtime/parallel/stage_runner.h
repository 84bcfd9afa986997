// StageRunner: one device's part of a pipeline-parallel, data-parallel training step.
//
// It holds the stage's parameters in one flat f32 buffer (each parameter a view of it), the
// gradients in another, and the AdamW moments (whole, or only this replica's shard with
// distribute_param), all from the device's allocator, so its capacity and peak are the device's.
// RunMicroBatches plays the stage's row of the 1F1B table: a forward receives its input (token ids,
// or the previous stage's activation through PipeLinks), runs the stage's forward program and keeps
// the values the backward needs per micro-batch; a backward receives the next stage's gradient,
// runs the backward program (recomputing what the plan said to recompute), sends the gradient on
// and adds the parameter gradients into the flat buffer. Update() reduces the gradients over the
// data-parallel group (all-reduce; or reduce-scatter, AdamW on the shard, all-gather with
// distribute_param) and applies AdamW exactly as torch.optim.AdamW. Not thread-safe.
//
// Mixed precision (spec.compute_dtype bf16 or f16): the flat f32 buffer holds the master weights
// (with distribute_param only this replica's shard of them, as Megatron-LM's distributed
// optimizer: the update rounds its shard into the compute copy and all-gathers that) and a second
// flat buffer their rounded copy in the compute dtype, which is what the programs read;
// activations, activation gradients and weight gradients are computed in the compute dtype, and
// each weight gradient is added into the f32 gradient buffer (accumulation over micro-batches, the
// data-parallel reduction, AdamW and its moments stay f32, as Megatron-LM's main_grad). The copy is
// refreshed after each update and before the first step after a parameter was written.
//
// Data-parallel gradient reduction overlaps the backward (as PyTorch DDP's buckets): the flat
// gradient buffer is cut into buckets of consecutive parameters (MOREH_GRAD_BUCKET_MB, 25 by
// default; 0 turns the overlap off), and during the step's last backward each bucket's sum
// all-reduce starts as soon as its last gradient has been added (Collectives::StartAllReduce:
// NCCL runs it on its own stream while the backward computes). Over the ring, which would run it
// at once on this thread, only when MOREH_GRAD_BUCKET_MB asks for it.
// Update waits for them. Not with sharded optimizer states or parameters (their reduce-scatters
// run in Update and in the programs).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/comm/collectives.h"
#include "runtime/core/error.h"
#include "runtime/core/tensor.h"
#include "runtime/executor.h"
#include "runtime/optim.h"
#include "runtime/parallel/stage_graph.h"
#include "runtime/planner/schedule.h"

namespace moreh::parallel {

// One micro-batch's data as the stage needs it (undefined where the stage does not read it).
struct MicroBatch {
  runtime::Tensor ids;          // i64 [b, T], first stage
  runtime::Tensor mask;         // i64 [b, T], every stage
  runtime::Tensor labels;       // i64 [b, T], last stage
  runtime::Tensor loss_weight;  // f32 [], last stage
};

// How a stage exchanges activations and gradients with its neighbours. Sends may complete later
// (the tensor is kept alive until Flush); receives block. Errors throw moreh::Error naming the
// peer.
class PipeLinks {
 public:
  virtual ~PipeLinks() = default;
  virtual void set_step(int64_t /*step*/) {}  // links that tag their messages with it
  virtual void SendForward(int micro_batch, const runtime::Tensor& activation) = 0;
  virtual void RecvForward(int micro_batch, runtime::Tensor* activation) = 0;
  virtual void SendBackward(int micro_batch, const runtime::Tensor& grad) = 0;
  virtual void RecvBackward(int micro_batch, runtime::Tensor* grad) = 0;
  virtual void Flush() = 0;
};

// The links of a pipeline of one stage: a send or receive is a schedule error.
class NoPipeLinks : public PipeLinks {
 public:
  void SendForward(int, const runtime::Tensor&) override { throw Error("no next stage"); }
  void RecvForward(int, runtime::Tensor*) override { throw Error("no previous stage"); }
  void SendBackward(int, const runtime::Tensor&) override { throw Error("no previous stage"); }
  void RecvBackward(int, runtime::Tensor*) override { throw Error("no next stage"); }
  void Flush() override {}
};

// PipeLinks over UCX to the previous and next stage's ranks (-1: none). Tags carry the step, so a
// message can never be taken for another step's.
class UcxPipeLinks : public PipeLinks {
 public:
  UcxPipeLinks(comm::UcxTransport* t, int prev_rank, int next_rank,
               std::chrono::milliseconds timeout);
  void set_step(int64_t step) override { step_ = step; }
  void SendForward(int mb, const runtime::Tensor& a) override { Send(next_, 1, mb, a); }
  void RecvForward(int mb, runtime::Tensor* a) override { Recv(prev_, 1, mb, a); }
  void SendBackward(int mb, const runtime::Tensor& g) override { Send(prev_, 2, mb, g); }
  void RecvBackward(int mb, runtime::Tensor* g) override { Recv(next_, 2, mb, g); }
  void Flush() override;

 private:
  void Send(int peer, uint32_t kind, int mb, const runtime::Tensor& t);
  void Recv(int peer, uint32_t kind, int mb, runtime::Tensor* t);
  uint32_t Seq(int mb) const { return static_cast<uint32_t>(step_ * 4096 + mb); }
  comm::UcxTransport* t_;
  int prev_, next_;
  std::chrono::milliseconds timeout_;
  int64_t step_ = 0;
  std::vector<comm::Request> pending_;
  std::vector<runtime::Tensor> in_flight_;
};

struct StageStats {
  double forward_s = 0, backward_s = 0, wait_s = 0, update_s = 0;
  int64_t peak_bytes = 0;
  bool found_overflow = false;  // with set_overflow_check: inf or NaN in the gradients
};

class StageRunner {
 public:
  // dp_size / dp_rank: this replica's place in its data-parallel group (for the optimizer shard).
  StageRunner(StageProgram program, runtime::Allocator* alloc, optim::AdamWOptions adamw,
              int dp_size = 1, int dp_rank = 0, bool distribute_param = false);

  const StageProgram& program() const { return program_; }
  // The executor of the stage's programs (set_profiling / Profile: where a step's time goes).
  runtime::Executor& executor() { return exec_; }
  const std::vector<std::string>& param_names() const { return program_.params; }
  int64_t num_params() const { return num_params_; }
  // The i-th parameter (a view of the flat f32 buffer: the master weights). Write into it to load
  // weights. With the master weights sharded (mixed precision with distribute_param) it is a view
  // of a full host copy: writable before the first step (loading), and readable after
  // GatherMasters; the next step or update takes what was written and drops the copy.
  runtime::Tensor parameter(size_t i) const;
  // Sharded master weights: all-gathers them over the data-parallel group (every replica calls it,
  // between an update and the next step) into the host copy parameter() reads. Else nothing.
  void GatherMasters();
  // What the programs read for it: parameter(i) itself in f32, else its copy in the compute dtype
  // (current from the next RunMicroBatches on).
  runtime::Tensor compute_parameter(size_t i) const;
  DType compute_dtype() const { return program_.spec.compute_dtype; }

  // The tensor-parallel group whose all-reduce tp_reduce runs (nullptr: tp = 1).
  void set_tensor_parallel(comm::Collectives* tp) { tp_ = tp; }
  // The data-parallel group that gathers sharded parameters (spec.param_shards > 1).
  void set_data_parallel(comm::Collectives* dp) { dp_ = dp; }
  // Tied embeddings over several stages: the pair (first and last stage) whose copies of the
  // embedding's gradient Update sums before anything else uses them.
  void set_tied_embeddings(comm::Collectives* pair);
  // Plays `steps` (this stage's row of the table; recompute entries are part of the backward) and
  // returns the sum of the weighted losses on the last stage (0 elsewhere). Gradients accumulate.
  double RunMicroBatches(const std::vector<planner::ScheduleStep>& steps,
                         const std::vector<MicroBatch>& micro_batches, PipeLinks* links);
  // Loss scaling (f16): after each RunMicroBatches, stats().found_overflow says whether this
  // rank's accumulated gradients hold an inf or NaN (after the step's own data-parallel reduction
  // where it overlaps the backward; an overflow survives any sum, so one rank's local check is
  // the group's). The caller ORs it over every rank of the job.
  void set_overflow_check(bool on) { overflow_check_ = on; }
  // Evaluation: plays the forwards of every micro-batch in order (no backward, nothing kept for
  // one, gradients and optimizer state untouched) and returns the sum of the weighted losses on
  // the last stage (0 elsewhere).
  double Evaluate(const std::vector<MicroBatch>& micro_batches, PipeLinks* links);
  // Sums the gradients over `dp` (nullptr: one replica; sharded parameters arrive summed; with
  // sharded optimizer states, into this replica's shard) and the tied embeddings' copies. Update
  // does it when it was not done; between the two no more gradients may be added.
  void ReduceGradients(comm::Collectives* dp);
  // After ReduceGradients: this rank's share of the squared L2 norm of the job's gradients. Each
  // element of the job's gradient counts on one rank only (replicas count their data-parallel
  // block, tensor-parallel ranks other than the first skip the parameters they replicate, the
  // last stage skips its copy of tied embeddings), so the shares sum to the one-device value.
  double GradSquares() const;
  // Reduces (unless ReduceGradients did), applies AdamW, zeroes the gradients. grad_scale
  // multiplies the gradients first (1 / the loss scale, times the clipping factor); skip (an
  // overflow somewhere in the job) zeroes them and leaves weights, optimizer states and the step
  // count as they were. Weight decay leaves out biases and norms with adamw.exclude_bias_and_norm.
  void Update(comm::Collectives* dp, double lr, double grad_scale = 1.0, bool skip = false);
  void ZeroGrad();
  int64_t optimizer_steps() const { return step_; }
  const StageStats& stats() const { return stats_; }
  void ResetStats() { stats_ = StageStats(); }

 private:
  // A program's inputs: parameters (views) or this micro-batch's stashed values.
  std::vector<runtime::Tensor> Inputs(const SubProgram& prog,
                                      const std::unordered_map<int, runtime::Tensor>& stash) const;
  bool mixed() const { return program_.spec.compute_dtype != DType::kF32; }
  // The forwards and backwards of `steps`, or (train false) the forwards alone keeping nothing.
  double Play(const std::vector<planner::ScheduleStep>& steps,
              const std::vector<MicroBatch>& micro_batches, PipeLinks* links, bool train);
  // AdamW on elements [begin, end) of the flat layout; param, m, v and grad point at `begin` of
  // their arrays. Weight decay per parameter (decay_off_).
  // Whether the update shards the optimizer states over `dp` (ZeRO-1/2).
  bool ShardsOptimizer(const comm::Collectives* dp) const;
  void AdamWRange(float* param, float* m, float* v, const float* grad, int64_t begin, int64_t end,
                  const kernels::cpu::AdamWParams& hp);
  // Takes the host copy of the master weights (loaded, or gathered) into the sharded master and
  // the compute copy, and drops it.
  void ApplyHostMasters();
  // Rounds the master weights into the compute-dtype copy (mixed precision).
  void RefreshComputeWeights();
  // Overlapped gradient reduction: whether it applies, and the bucket bookkeeping of one backward.
  bool OverlapsReduction() const;
  void GradientAdded(int param);
  void WaitForReduction();
  StageProgram program_;
  runtime::Allocator* alloc_;
  optim::AdamWOptions adamw_;
  int dp_size_, dp_rank_;
  bool distribute_;
  std::shared_ptr<const runtime::CompiledGraph> fwd_, bwd_;
  runtime::Executor exec_;
  comm::Collectives* tp_ = nullptr;
  comm::Collectives* dp_ = nullptr;
  comm::Collectives* tied_ = nullptr;
  int tied_param_ = -1;
  int64_t num_params_ = 0, padded_ = 0, shard_ = 0;
  std::vector<int64_t> offsets_;  // per parameter, in the flat buffers
  std::vector<int> grad_param_;   // backward output k (after grad_out) -> parameter index
  runtime::Tensor flat_params_, flat_grads_, m_, v_;
  runtime::Tensor flat_compute_;  // mixed precision: the master weights in the compute dtype
  std::vector<runtime::Tensor> params_, grads_, compute_params_;  // views
  mutable bool compute_stale_ = true;    // parameter() handed out a writable master view
  bool sharded_master_ = false;          // mixed precision with distribute_param
  mutable runtime::Tensor host_master_;  // sharded masters: the full f32 copy for load and save
  std::vector<Shape> shapes_;            // per parameter
  bool grads_dirty_ = false;             // gradients added since the last ZeroGrad
  bool masters_applied_ = false;  // the loaded masters are in the shard: reading needs a gather
  struct Bucket {
    int64_t begin = 0, end = 0;  // elements of the flat gradient buffer
    int grads = 0;               // parameters with a gradient in it
    int waiting = 0;             // of those, not yet added in this backward
  };
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;   // per parameter
  bool reduced_ = false;         // the gradient buffer holds group sums (reductions started)
  bool grads_reduced_ = false;   // ReduceGradients ran: the update comes next
  runtime::Tensor g_shard_;      // sharded optimizer states: this replica's summed gradient block
  std::vector<bool> decay_off_;  // per parameter: excluded from weight decay
  bool overflow_check_ = false;
  bool buckets_forced_ = false;  // MOREH_GRAD_BUCKET_MB set: overlap even where it cannot gain
  std::unordered_map<int, int> param_index_;  // value id in program_.full -> parameter
  std::unordered_map<int, std::unordered_map<int, runtime::Tensor>> stash_;  // per micro-batch
  int64_t step_ = 0;
  StageStats stats_;
};

}  // namespace moreh::parallel
