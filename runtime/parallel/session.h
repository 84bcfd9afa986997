// Session: the client side of a distributed training job, behind the user's unchanged program.
//
// With advanced parallelization on (or a cluster configured: MOREH_SCHEDULER, a recorded
// `moreh-run cluster up`, MOREH_DEVICE_SIZE), LlamaForCausalLM::from_pretrained opens a Session: it
// requests the virtual device (the reference's connection log lines). The first forward knows the
// batch and sequence, so it plans then (the reference's auto-config log lines; with AP off, plain
// data parallelism, and the out-of-memory error when a replica does not fit), compiles each stage's
// programs, ships them to the leased workers (job_setup), exchanges their UCX addresses
// (job_connect) and from then on only feeds data: each step sends every rank its micro-batches
// (ids to the first stage, labels and loss weights to the last), the workers play the 1F1B table,
// and the loss comes back. optimizer.step() reduces gradients and applies AdamW on the workers;
// save_pretrained has every stage write its shard and commits the checkpoint atomically.
// A worker that fails or dies makes the call throw moreh::Error naming it at once; the other
// workers drop the job. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/tensor.h"
#include "runtime/loss_scaler.h"
#include "runtime/models/llama.h"
#include "runtime/optim.h"
#include "runtime/planner/planner.h"
#include "runtime/tensor.h"

namespace moreh::client {
class Client;
class Channel;
}  // namespace moreh::client

namespace moreh::parallel {

struct SessionOptions {
  std::string model_dir;  // where workers read weights (config.json + safetensors), or init
  uint64_t seed = 0;      // initialisation seed when the directory has no weights
  bool advanced_parallelization = true;
  std::string device_size;  // empty: MOREH_DEVICE_SIZE, else the user's virtual device
  std::string scheduler;    // empty: MOREH_SCHEDULER / recorded cluster / embedded
  std::string
      local_memory;  // embedded cluster device memory; empty: MOREH_LOCAL_DEVICE_MEMORY or 1G
  int64_t timeout_ms = 120000;
  // A configuration to run instead of the planner's choice, as JSON {"num_stages", "tp",
  // "num_micro_batches", "recompute", "distribute_param", "distribute_low_prec_param"[, "dp"]};
  // empty:
  // MOREH_ADVANCED_PARALLELIZATION_CONFIG, else the planner chooses.
  std::string force_config;
};

// True when the user's program should run on the cluster (see above).
bool DistributedRequested();

class Session;
// The model's parameters as the user's program sees them when they live on the workers: one
// handle tensor, which the optimizer recognises (optim::AdamW binds to its session).
Tensor MakeSessionHandle(const std::shared_ptr<Session>& s);
std::shared_ptr<Session> SessionOfHandle(const Tensor& t);

class Session {
 public:
  // Connects (requests the devices). Throws moreh::Error when the cluster cannot be reached.
  static std::shared_ptr<Session> Open(const SessionOptions& options,
                                       const models::LlamaConfig& config);
  ~Session();  // ends the job on every worker and releases the lease

  const models::LlamaConfig& config() const { return config_; }
  void SetOptimizer(const optim::AdamWOptions& o) { adamw_ = o; }
  // Forward and backward of one batch over the pipeline; returns the mean loss. The first call
  // plans and sets the job up. ids/labels [B, T] (i32/i64), mask [B, T] or undefined.
  // num_items > 0 (gradient accumulation, transformers' num_items_in_batch): the token losses are
  // summed and divided by it instead of by this batch's count (the loss returned likewise).
  double ForwardBackward(const runtime::Tensor& ids, const runtime::Tensor& mask,
                         const runtime::Tensor& labels, double num_items = 0);
  // The mean loss of a batch, forwards only (evaluation): no gradient, optimizer state or loss
  // scale changes. A forward needs less memory than the step the plan was made for.
  double Evaluate(const runtime::Tensor& ids, const runtime::Tensor& mask,
                  const runtime::Tensor& labels);
  // Reduces the gradients of the coming update and returns their global L2 norm (the one-device
  // value); above max_norm (> 0, finite) that update scales them by max_norm / (norm + 1e-6).
  double ClipGradNorm(double max_norm);
  void Update(double lr);  // gradient reduction + AdamW on every rank
  void Save(const std::string& dir) const;

  bool ready() const { return !ranks_.empty(); }
  const planner::Plan& plan() const { return plan_; }
  planner::ClusterSpec cluster() const;
  // The job the planner is given for a batch of [B, T] computed in `compute` (f32; bf16 or f16:
  // mixed precision with f32 master weights), embedding and LM head replicated over tensor
  // parallelism.
  static planner::TrainJob PlanningJob(const models::LlamaConfig& config, int64_t B, int64_t T,
                                       DType compute = DType::kF32);
  // The dtype the stages compute in: MOREH_COMPUTE_DTYPE (f32, bf16, f16) when set, else bf16 when
  // every granted device is a GPU and f32 otherwise (the CPU backend computes in f32 fastest).
  DType ComputeDType() const;
  // Per rank, the last step's reply (loss, forward_s, backward_s, wait_s, peak_bytes).
  const std::vector<nlohmann::json>& last_step() const { return last_step_; }
  // Per rank, the last optimizer step's reply (update_s, peak_bytes).
  const std::vector<nlohmann::json>& last_update() const { return last_update_; }
  // Per rank, the most its device held during the last step and update (bytes).
  std::vector<int64_t> last_peak_bytes() const;
  // Per rank, the most its device held during the last evaluation step (bytes).
  std::vector<int64_t> last_eval_peak_bytes() const;
  int stage_of_rank(size_t r) const { return ranks_.at(r).stage; }
  int64_t steps() const { return step_; }

 private:
  Session() = default;
  void Setup(int64_t batch, int64_t seq_len);
  double RunStep(const runtime::Tensor& ids, const runtime::Tensor& mask,
                 const runtime::Tensor& labels, double num_items, bool eval);
  // Sends each rank its message and waits for all replies; on the first failure every other
  // connection is cut (so the workers drop the job) and moreh::Error names the failed worker.
  std::vector<nlohmann::json> CallAll(const std::vector<nlohmann::json>& messages) const;

  struct Rank {
    int device_index = 0;  // into client devices
    int stage = 0, dp_rank = 0, tp_rank = 0;
    std::unique_ptr<client::Channel> channel;
  };
  SessionOptions options_;
  models::LlamaConfig config_;
  optim::AdamWOptions adamw_;
  std::unique_ptr<client::Client> client_;
  planner::Plan plan_;
  int64_t batch_ = 0, seq_len_ = 0;
  mutable std::vector<Rank> ranks_;
  std::vector<nlohmann::json> last_step_, last_update_, last_eval_;
  // f16 compute: the loss scale sent with each step, and whether any rank's gradients overflowed
  // since the last update (that update is then skipped everywhere).
  std::optional<runtime::LossScaler> scaler_;
  bool overflow_ = false;
  // Set by ClipGradNorm until the update: the factor the gradients are multiplied by.
  std::optional<double> clip_;
  int64_t step_ = 0;
  uint64_t job_id_ = 0;
};

}  // namespace moreh::parallel
