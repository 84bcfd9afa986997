// A rank's part of a distributed training job, as the client ships it to a worker daemon, and the
// worker-side object that runs it.
//
// The client compiles each stage's programs (stage_graph.h) and sends a StageAssignment per rank
// (job_setup): the programs as graph JSON, the rank's place in the grid (previous and next stage,
// its data-parallel group), the optimizer settings and where the weights come from. The worker
// validates everything (a malformed assignment is an error reply, never a crash), builds the
// StageRunner on the device's allocator (an out-of-memory there is the reply), reads only its own
// parameters from the checkpoint's safetensors files (pread at each tensor's offset), opens a UCX
// endpoint and answers with its address. job_connect connects the peers; job_step, job_update and
// job_save run on the device's job thread; Abort() (any thread) makes a blocked step fail at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/comm/collectives.h"
#include "runtime/comm/ucx_transport.h"
#include "runtime/parallel/stage_runner.h"

namespace moreh::parallel {

struct StageAssignment {
  uint64_t job = 0;
  int rank = 0, world = 1;
  int stage = 0, num_stages = 1, num_micro_batches = 1;
  int dp_rank = 0;
  std::vector<int> dp_group;  // global ranks of this rank's data-parallel group, in ring order
  int tp_rank = 0;
  std::vector<int> tp_group;  // global ranks of this rank's tensor-parallel group ({rank}: none)
  int prev_rank = -1, next_rank = -1;
  // Tied embeddings over several stages: the rank holding the other copy (the last stage's rank
  // of this replica and TP rank on the first stage, and the reverse); -1 elsewhere.
  int tied_rank = -1;
  bool distribute_param = false;
  optim::AdamWOptions adamw;
  std::string checkpoint_dir;  // read this stage's tensors from here; empty: initialise from seed
  uint64_t seed = 0;
  int64_t timeout_ms = 120000;  // a peer silent this long fails the step
  StageProgram program;

  nlohmann::json ToJson() const;
  // Checks every field and the programs' consistency; errors name the field.
  static StatusOr<StageAssignment> FromJson(const nlohmann::json& j);
};

// The optimizer settings as the assignment's "adamw" field carries them.
nlohmann::json AdamWToJson(const optim::AdamWOptions& o);
nlohmann::json StageProgramToJson(const StageProgram& p);
StatusOr<StageProgram> StageProgramFromJson(const nlohmann::json& j);

class StageJob {
 public:
  // Throws OutOfMemoryError when the stage does not fit the device, moreh::Error otherwise.
  // net_device: the network interface the job's UCX traffic may use (UcxTransport::Create).
  static std::unique_ptr<StageJob> Create(const StageAssignment& a, runtime::Allocator* device,
                                          const std::string& net_device = "");
  ~StageJob();

  const std::string& address() const { return transport_->address(); }  // raw bytes
  const StageAssignment& assignment() const { return a_; }
  // peers: [{"rank": r, "address": base64 of the UCX address, "address_mac": ...}], including
  // every rank this one talks to (others are ignored). `trusted(address, mac)` must accept each
  // address before UCX sees it (the workers authenticate the addresses they hand out, so a client
  // cannot make a worker dial arbitrary bytes).
  void Connect(
      const nlohmann::json& peers,
      const std::function<bool(const std::string& address, const std::string& mac)>& trusted);
  // {"step", "micro_batches": [{"ids"?, "mask", "labels"?, "loss_weight"?}], "check_overflow"?,
  // "eval"?} -> {"loss", stats, "found_overflow"? (with check_overflow: inf/NaN in this rank's
  // gradients)}. eval: the forwards only (the loss; no gradient, no optimizer state touched).
  nlohmann::json Step(const nlohmann::json& m);
  // {} -> {"grad_squares", stats}: the gradient reduction of the coming update, and this rank's
  // share of the squared global gradient norm (StageRunner::GradSquares).
  nlohmann::json GradNorm(const nlohmann::json& m);
  // {"lr", "grad_scale"?, "skip"?} -> {stats}: gradient reduction over the data-parallel group and
  // AdamW, the gradients multiplied by grad_scale first (1 / the loss scale); skip drops them.
  nlohmann::json Update(const nlohmann::json& m);
  // {"tmp_dir", "dtype"}: writes this stage's tensors (data-parallel rank 0 only) as one shard;
  // -> {"file", "tensors": [names], "bytes"}.
  nlohmann::json Save(const nlohmann::json& m);
  void Abort() { aborted_.store(true); }

 private:
  StageJob() = default;
  StageAssignment a_;
  runtime::Allocator* device_ = nullptr;
  std::unique_ptr<StageRunner> runner_;
  std::unique_ptr<comm::UcxTransport> transport_;
  std::unique_ptr<PipeLinks> links_;
  std::unique_ptr<comm::Collectives> dp_, tp_, tied_;
  // GPU stages (CUDA builds): dp_, tp_ and the pipeline links over NCCL.
  void UseNccl();
  // The unique id of a new NCCL communicator over `ranks` (made by ranks[0], sent to the others on
  // `channel` of the job's UCX links).
  std::string NcclIdFor(const std::vector<int>& ranks, uint32_t channel);
  std::vector<std::vector<planner::ScheduleStep>> table_;  // 1F1B, every stage's row
  std::atomic<bool> aborted_{false};
};

}  // namespace moreh::parallel
