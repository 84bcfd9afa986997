#include "runtime/parallel/session.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "runtime/client/client.h"
#include "runtime/core/error.h"
#include "runtime/device.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/net/protocol.h"
#include "runtime/net/tensor_codec.h"
#include "runtime/option.h"
#include "runtime/parallel/micro_batches.h"
#include "runtime/parallel/stage_job.h"

namespace moreh::parallel {
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {
std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Rows [B, B_full) become padding: id 0, mask 0, label -100. A padded row counts no label, so the
// loss and every gradient equal the unpadded batch's.
runtime::Tensor PadRows(const runtime::Tensor& t, int64_t rows, int64_t fill) {
  if (!t.defined() || t.size(0) == rows) return t;
  runtime::Tensor out = runtime::Tensor::Full({rows, t.size(1)}, DType::kI64, fill);
  out.Slice(0, 0, t.size(0)).CopyFrom(t);
  return out;
}
}  // namespace

namespace {
std::mutex handles_mu;
std::map<const TensorImpl*, std::weak_ptr<Session>>& Handles() {
  static auto* h = new std::map<const TensorImpl*, std::weak_ptr<Session>>();
  return *h;
}
}  // namespace

Tensor MakeSessionHandle(const std::shared_ptr<Session>& s) {
  Tensor t = Tensor::FromData(runtime::Tensor::Zeros({1}, DType::kF32), /*requires_grad=*/true,
                              "moreh.distributed_parameters");
  std::lock_guard<std::mutex> lock(handles_mu);
  auto& h = Handles();
  for (auto it = h.begin(); it != h.end();) it = it->second.expired() ? h.erase(it) : std::next(it);
  h[t.impl()] = s;
  return t;
}

std::shared_ptr<Session> SessionOfHandle(const Tensor& t) {
  if (!t.defined()) return nullptr;
  std::lock_guard<std::mutex> lock(handles_mu);
  auto it = Handles().find(t.impl());
  return it == Handles().end() ? nullptr : it->second.lock();
}

bool DistributedRequested() {
  return option::advanced_parallelization_enabled() || !Env("MOREH_SCHEDULER").empty() ||
         !Env("MOREH_DEVICE_SIZE").empty() || !client::RecordedLocalScheduler().empty();
}

std::shared_ptr<Session> Session::Open(const SessionOptions& o, const models::LlamaConfig& config) {
  std::shared_ptr<Session> s(new Session());
  s->options_ = o;
  s->config_ = config;
  client::ClientOptions co;
  co.scheduler = o.scheduler;
  co.device_size = !o.device_size.empty() ? o.device_size : Env("MOREH_DEVICE_SIZE");
  co.local.device_memory = !o.local_memory.empty() ? o.local_memory
                           : !Env("MOREH_LOCAL_DEVICE_MEMORY").empty()
                               ? Env("MOREH_LOCAL_DEVICE_MEMORY")
                               : "1G";
  auto c = client::Client::Connect(co);
  if (!c.ok()) throw Error("cannot reach the MoAI Accelerator: " + c.status().message());
  s->client_ = std::move(c.value());
  std::random_device rd;
  s->job_id_ = (uint64_t{rd()} << 32 | rd()) & 0x7fffffffffffffffULL;
  return s;
}

Session::~Session() {
  for (Rank& r : ranks_) {
    if (!r.channel) continue;
    auto reply = r.channel->Call(
        net::Message(net::Msg::kJobEnd, {{"device", client_->devices()[r.device_index].device}}));
    (void)reply;
    r.channel->Close();
  }
}

planner::ClusterSpec Session::cluster() const {
  const auto& devs = client_->devices();
  planner::ClusterSpec c;
  c.name = "granted virtual device";
  c.num_devices = static_cast<int>(devs.size());
  std::map<std::string, int> per_node;
  auto host = [](const client::GrantedDevice& d) {
    return d.address.substr(0, d.address.rfind(':'));
  };
  for (const auto& d : devs) per_node[host(d)]++;  // devices on one host are one node
  c.device.memory_bytes = INT64_MAX;
  double flops = 0, bw = 0, concurrency = 0, loaded_latency = 0, link_bw = 0;
  for (const auto& d : devs) {
    // CPU devices on one host share its cores (and memory bus): the profile is what a device
    // achieves alone; host cores / threads of them compute at that speed at once.
    if (d.kind == "cpu" && d.host_cores > 0 && d.threads > 0) {
      const double conc = static_cast<double>(d.host_cores) / d.threads;
      concurrency = concurrency == 0 ? conc : std::min(concurrency, conc);
    }
    loaded_latency = std::max(loaded_latency, d.loaded_latency);
    if (d.link_bandwidth > 0) {
      link_bw = link_bw == 0 ? d.link_bandwidth : std::min(link_bw, d.link_bandwidth);
    }
    c.device.memory_bytes = std::min(c.device.memory_bytes, d.memory_bytes);
    flops = flops == 0 ? d.gemm_flops : std::min(flops, d.gemm_flops);
    bw = bw == 0 ? d.memory_bandwidth : std::min(bw, d.memory_bandwidth);
  }
  c.node_concurrency = concurrency;
  c.devices_per_node = 1;
  for (const auto& [n, k] : per_node) c.devices_per_node = std::max(c.devices_per_node, k);
  if (c.num_devices % c.devices_per_node != 0) c.devices_per_node = 1;
  c.device.name = devs.empty() ? "cpu" : (devs[0].name.empty() ? devs[0].kind : devs[0].name);
  c.device.widens_16bit = devs.empty() || devs[0].kind == "cpu";
  // GPU stages reduce over NCCL, which overlaps the gradient reduction with the backward.
  c.overlapped_dp_reduction = !c.device.widens_16bit;
  // The workers' start-up profile is what they achieved on a GEMM: efficiency 1 against it.
  c.device.peak_flops = flops > 0 ? flops : 100e9;
  c.device.gemm_efficiency = 1.0;
  c.device.other_efficiency = 0.3;
  c.device.memory_bandwidth = bw > 0 ? bw : 10e9;
  c.device.kernel_overhead_s = 2e-5;
  c.intra_node_bandwidth = link_bw > 0 ? link_bw : 4e9;  // as the workers measured it
  c.intra_node_latency = 2e-5;
  // Devices that take turns on a host's cores: a message waits for its receiver to get a core,
  // as the workers measured at start-up.
  if (concurrency > 0 && c.devices_per_node > concurrency && loaded_latency > 0) {
    c.intra_node_latency = loaded_latency;
  }
  c.inter_node_bandwidth = 1e9;
  c.inter_node_latency = 5e-5;
  return c;
}

planner::TrainJob Session::PlanningJob(const models::LlamaConfig& config, int64_t B, int64_t T,
                                       DType compute) {
  planner::TrainJob job;
  job.model = config;
  job.global_batch = B;
  job.seq_len = T;
  job.compute_dtype = compute;
  job.vocab_parallel = false;  // embedding and LM head are replicated over tensor parallelism
  return job;
}

DType Session::ComputeDType() const {
  DType dt;
  if (runtime::ComputeDTypeFromEnv(&dt)) return dt;
  const auto& devs = client_->devices();
  const bool all_gpus = !devs.empty() && std::all_of(devs.begin(), devs.end(), [](const auto& d) {
    return d.kind == "cuda";
  });
  return all_gpus ? DType::kBF16 : DType::kF32;
}

std::vector<json> Session::CallAll(const std::vector<json>& messages) const {
  using Clock = std::chrono::steady_clock;
  const size_t n = ranks_.size();
  std::vector<StatusOr<json>> replies(n, Status::Internal("not run"));
  std::vector<bool> after_cut(n, false);
  std::mutex mu;
  std::condition_variable cv;
  size_t done = 0, failed = 0;
  bool cut = false;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      StatusOr<json> r = ranks_[i].channel->Call(messages[i]);
      Status s = client::ReplyError(r, "worker");
      std::lock_guard<std::mutex> lock(mu);
      replies[i] = s.ok() ? std::move(r) : StatusOr<json>(s);
      after_cut[i] = cut;
      ++done;
      failed += !s.ok();
      cv.notify_all();
    });
  }
  // Wait for every reply while watching the workers: a worker that dies or stops answering is
  // named within seconds (its peers may wait on it much longer), as is a lost lease. After a
  // failed reply, a moment more lets the watch say whether a worker died and caused it.
  Status health;
  std::optional<Clock::time_point> first_failure;
  {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return done == n; });
      if (done == n && failed == 0) break;
      lock.unlock();
      health = client_->Health();
      lock.lock();
      if (!health.ok()) break;
      if (failed > 0) {
        if (!first_failure) first_failure = Clock::now();
        if (Clock::now() - *first_failure > std::chrono::milliseconds(1000)) break;
      }
    }
    if (failed > 0 || !health.ok()) {
      cut = true;  // the other workers drop the job instead of waiting for the failed one
      for (Rank& r : ranks_) r.channel->Shutdown();
    }
  }
  for (auto& t : threads) t.join();
  if (!cut) {
    std::vector<json> out;
    for (auto& r : replies) out.push_back(std::move(r.value()));
    return out;
  }
  auto where = [&](size_t i) {
    const auto& d = client_->devices()[ranks_[i].device_index];
    return fmt::format("worker '{}' ({}, device {}, rank {})", d.node, d.address, d.device, i);
  };
  std::string blame;
  if (!health.ok()) {
    // The watch names the worker; add the ranks it ran.
    blame = health.message();
    const std::string failed_address = client_->FailedWorker();
    std::vector<std::string> ran;
    for (size_t i = 0; i < n; ++i) {
      const auto& d = client_->devices()[ranks_[i].device_index];
      if (d.address == failed_address)
        ran.push_back(fmt::format("rank {} (device {})", i, d.device));
    }
    if (!ran.empty()) blame += fmt::format("; it ran {}", fmt::join(ran, ", "));
  }
  // Else a worker whose connection closed without our cut died; else the first error reply that
  // is not a consequence (an aborted job, a connection we cut).
  for (size_t i = 0; i < n && blame.empty(); ++i) {
    if (!replies[i].ok() && !after_cut[i] && client::ConnectionLost(replies[i].status())) {
      blame =
          where(i) + " died: its control connection closed (" + replies[i].status().message() + ")";
    }
  }
  for (size_t i = 0; i < n && blame.empty(); ++i) {
    if (replies[i].ok() || after_cut[i]) continue;
    const std::string& msg = replies[i].status().message();
    if (msg.find("the job was aborted") != std::string::npos) continue;
    blame = where(i) + ": " + msg;
  }
  for (Rank& r : ranks_) r.channel->Close();
  ranks_.clear();  // the job is gone on every worker
  throw Error(blame.empty() ? "the distributed job failed" : blame);
}

void Session::Setup(int64_t B, int64_t T) {
  const planner::TrainJob job = PlanningJob(config_, B, T, ComputeDType());
  planner::PlannerOptions po = planner::PlannerOptions::FromUserOptions();
  po.advanced_parallelization = options_.advanced_parallelization;
  const planner::ClusterSpec cl = cluster();
  if (po.detailed_log > 0) spdlog::info("cluster for planning: {}", cl.ToJson());
  plan_ = planner::PlanTraining(job, cl, po);  // throws OutOfMemoryError when nothing fits
  if (job.compute_dtype != DType::kF32) {
    spdlog::info(
        "Mixed precision: {} weights, activations and gradients; f32 master weights, "
        "gradient accumulation and optimizer states",
        DTypeName(job.compute_dtype));
  }
  if (auto o = runtime::LossScalingFor(job.compute_dtype)) {
    scaler_.emplace(*o);
    spdlog::info("Loss scaling: {}, initial scale {:g}",
                 o->growth_interval > 0 ? "dynamic" : "constant", o->initial_scale);
  }
  const std::string forced = !options_.force_config.empty()
                                 ? options_.force_config
                                 : Env("MOREH_ADVANCED_PARALLELIZATION_CONFIG");
  if (!forced.empty()) {
    // A given configuration instead of the planner's choice (benchmarks, tests, experts).
    const json f = json::parse(forced, nullptr, false);
    MOREH_CHECK(f.is_object(), "MOREH_ADVANCED_PARALLELIZATION_CONFIG is not a JSON object: {}",
                forced);
    planner::Candidate want;
    want.num_stages = f.value("num_stages", 1);
    want.tp = f.value("tp", 1);
    want.num_micro_batches = f.value("num_micro_batches", 1);
    want.recompute = f.value("recompute", 0);
    want.distribute_param = f.value("distribute_param", false);
    want.distribute_low_prec_param = f.value("distribute_low_prec_param", false);
    want.distribute_param = want.distribute_param || want.distribute_low_prec_param;
    const int parallel = want.num_stages * want.tp;
    MOREH_CHECK(parallel > 0 && cl.num_devices % parallel == 0,
                "the given configuration needs stages x tp ({}) to divide {} devices", parallel,
                cl.num_devices);
    want.dp = f.value("dp", cl.num_devices / parallel);
    MOREH_CHECK(want.dp > 0 && want.num_micro_batches > 0 &&
                    B % (int64_t{want.dp} * want.num_micro_batches) == 0,
                "batch {} does not split into {} replicas x {} micro-batches", B, want.dp,
                want.num_micro_batches);
    want.batch_per_device = static_cast<int>(B / want.dp / want.num_micro_batches);
    plan_.chosen = planner::EvaluateCandidate(job, cl, po, want);
    MOREH_CHECK(plan_.chosen.feasible, "the given configuration does not fit: {} ({})",
                plan_.chosen.Describe(), plan_.chosen.reason);
    spdlog::info("Configuration given by MOREH_ADVANCED_PARALLELIZATION_CONFIG: {}",
                 plan_.chosen.Describe());
  }
  const planner::Candidate& c = plan_.chosen;
  const int pp = c.num_stages, dp = c.dp, tp = c.tp, world = pp * dp * tp;
  MOREH_CHECK(world <= static_cast<int>(client_->devices().size()),
              "the plan needs {} devices; {} were granted", world, client_->devices().size());
  batch_ = B;
  seq_len_ = T;
  std::string ckpt;
  if (io::CheckpointReader::Open(options_.model_dir).ok()) {
    ckpt = fs::absolute(options_.model_dir).lexically_normal().string();
  }
  std::vector<json> programs;
  for (int s = 0; s < pp; ++s) {
    StageSpec spec = StageSpecFor(config_, c, s, T);
    spec.compute_dtype = job.compute_dtype;
    programs.push_back(StageProgramToJson(BuildStageProgram(spec)));
  }
  std::vector<json> setup;
  // rank = tp_rank + tp * (dp_rank + dp * stage): tensor-parallel peers on consecutive devices
  // (one node), then replicas, then stages, as Megatron-LM lays them out.
  const int hop = tp * dp;
  for (int r = 0; r < world; ++r) {
    Rank rk;
    rk.device_index = r;
    rk.stage = r / hop;
    rk.dp_rank = (r / tp) % dp;
    rk.tp_rank = r % tp;
    const auto& d = client_->devices()[r];
    auto ch = client_->OpenWorker(d.address);
    if (!ch.ok())
      throw Error(fmt::format("worker '{}' ({}): {}", d.node, d.address, ch.status().message()));
    rk.channel = std::move(ch.value());
    json a = {{"job", job_id_},
              {"rank", r},
              {"world", world},
              {"stage", rk.stage},
              {"num_stages", pp},
              {"num_micro_batches", c.num_micro_batches},
              {"dp_rank", rk.dp_rank},
              {"tp_rank", rk.tp_rank},
              {"prev_rank", rk.stage > 0 ? r - hop : -1},
              {"next_rank", rk.stage < pp - 1 ? r + hop : -1},
              // Tied embeddings over stages: the first and the last stage of a replica pair up.
              {"tied_rank", !config_.tie_word_embeddings || pp == 1 ? -1
                            : rk.stage == 0                         ? r + hop * (pp - 1)
                            : rk.stage == pp - 1                    ? r - hop * (pp - 1)
                                                                    : -1},
              {"distribute_param", c.distribute_param},
              {"adamw", AdamWToJson(adamw_)},
              {"checkpoint_dir", ckpt},
              {"seed", options_.seed},
              {"timeout_ms", options_.timeout_ms},
              {"program", programs[rk.stage]}};
    json dp_group = json::array(), tp_group = json::array();
    for (int k = 0; k < dp; ++k) dp_group.push_back(rk.stage * hop + k * tp + rk.tp_rank);
    for (int k = 0; k < tp; ++k) tp_group.push_back(r - rk.tp_rank + k);
    a["dp_group"] = dp_group;
    a["tp_group"] = tp_group;
    setup.push_back(net::Message(net::Msg::kJobSetup, {{"device", d.device}, {"assignment", a}}));
    ranks_.push_back(std::move(rk));
  }
  const std::vector<json> replies = CallAll(setup);
  json peers = json::array();
  for (int r = 0; r < world; ++r) {
    peers.push_back({{"rank", r},
                     {"address", replies[r]["address"]},
                     {"address_mac", replies[r].value("address_mac", std::string())}});
  }
  std::vector<json> connect;
  for (int r = 0; r < world; ++r) {
    connect.push_back(net::Message(net::Msg::kJobConnect,
                                   {{"device", client_->devices()[r].device}, {"peers", peers}}));
  }
  CallAll(connect);
  spdlog::info(
      "Stage programs compiled and shipped to {} devices ({} stage(s) x {} replica(s) x TP {}, {} "
      "micro-batch(es) of {})",
      world, pp, dp, tp, c.num_micro_batches, c.batch_per_device);
}

double Session::ForwardBackward(const runtime::Tensor& ids, const runtime::Tensor& mask,
                                const runtime::Tensor& labels, double num_items) {
  return RunStep(ids, mask, labels, num_items, /*eval=*/false);
}

double Session::Evaluate(const runtime::Tensor& ids, const runtime::Tensor& mask,
                         const runtime::Tensor& labels) {
  return RunStep(ids, mask, labels, 0, /*eval=*/true);
}

double Session::RunStep(const runtime::Tensor& ids_in, const runtime::Tensor& mask_in,
                        const runtime::Tensor& labels_in, double num_items, bool eval) {
  MOREH_CHECK(num_items >= 0 && std::isfinite(num_items),
              "num_items_in_batch {} must be a count of tokens (> 0; 0: this batch's own)",
              num_items);
  MOREH_CHECK(eval || !clip_.has_value(),
              "a backward between clip_grad_norm and the optimizer step: step() first");
  MOREH_CHECK(ids_in.defined() && ids_in.dim() == 2, "input_ids must be [B, T], got {}",
              ids_in.defined() ? ids_in.ToString() : "undefined");
  MOREH_CHECK(labels_in.defined(),
              "the distributed runtime trains: pass labels to the model so it returns the loss");
  if (ranks_.empty()) {
    MOREH_CHECK(step_ == 0,
                "the distributed job was lost after a failure; start the program again");
    Setup(ids_in.size(0), ids_in.size(1));
  }
  MOREH_CHECK(ids_in.size(1) == seq_len_ && ids_in.size(0) <= batch_,
              "batch {} does not fit the job compiled for [{}, {}]", ids_in.ToString(), batch_,
              seq_len_);
  const runtime::Tensor ids = PadRows(ids_in.To(DType::kI64), batch_, 0);
  const runtime::Tensor labels = PadRows(labels_in.To(DType::kI64), batch_, -100);
  const runtime::Tensor mask =
      PadRows(mask_in.defined() ? mask_in.To(DType::kI64)
                                : runtime::Tensor::Full(ids_in.shape(), DType::kI64, 1),
              batch_, 0);
  const planner::Candidate& c = plan_.chosen;
  const auto split = SplitBatch(ids, mask, labels, c.dp, c.num_micro_batches, num_items);
  std::vector<json> msgs;
  for (size_t r = 0; r < ranks_.size(); ++r) {
    const Rank& rk = ranks_[r];
    json mbs = json::array();
    for (const MicroBatch& mb : split[rk.dp_rank]) {
      json j = {{"mask", net::EncodeTensor(mb.mask)}};
      if (rk.stage == 0) j["ids"] = net::EncodeTensor(mb.ids);
      if (rk.stage == c.num_stages - 1) {
        j["labels"] = net::EncodeTensor(mb.labels);
        // Loss scaling multiplies the loss, and with it every gradient, by a power of two.
        const runtime::Tensor w =
            scaler_ && !eval
                ? runtime::Tensor::FromVector<float>(
                      {mb.loss_weight.ToFloats()[0] * static_cast<float>(scaler_->scale())}, {})
                : mb.loss_weight;
        j["loss_weight"] = net::EncodeTensor(w);
      }
      mbs.push_back(std::move(j));
    }
    json m =
        net::Message(net::Msg::kJobStep, {{"device", client_->devices()[rk.device_index].device},
                                          {"step", step_},
                                          {"micro_batches", std::move(mbs)}});
    if (scaler_ && !eval) m["check_overflow"] = true;
    if (eval) m["eval"] = true;
    msgs.push_back(std::move(m));
  }
  const std::vector<json> replies = CallAll(msgs);
  ++step_;  // evaluation steps too: the pipeline's message tags are per step
  double loss = 0;
  for (size_t r = 0; r < ranks_.size(); ++r) {
    if (ranks_[r].stage == c.num_stages - 1 && ranks_[r].tp_rank == 0) {
      loss += replies[r].value("loss", 0.0);
    }
    overflow_ = overflow_ || replies[r].value("found_overflow", false);
  }
  (eval ? last_eval_ : last_step_) = replies;
  return scaler_ && !eval ? loss / scaler_->scale() : loss;
}

double Session::ClipGradNorm(double max_norm) {
  MOREH_CHECK(!ranks_.empty(), "clip_grad_norm before the first forward of the distributed job");
  MOREH_CHECK(!clip_.has_value(), "clip_grad_norm twice before one optimizer step");
  std::vector<json> msgs;
  for (const Rank& rk : ranks_) {
    msgs.push_back(net::Message(net::Msg::kJobGradNorm,
                                {{"device", client_->devices()[rk.device_index].device}}));
  }
  const std::vector<json> replies = CallAll(msgs);
  double squares = 0.0;
  for (const json& r : replies) {
    // JSON has no inf: a rank whose gradients overflowed (loss scaling) sends null.
    const auto it = r.find("grad_squares");
    squares += it != r.end() && it->is_number() ? it->get<double>()
                                                : std::numeric_limits<double>::infinity();
  }
  // Under loss scaling the gradients carry the scale until the update divides it out.
  const double norm = std::sqrt(squares) / (scaler_ ? scaler_->scale() : 1.0);
  clip_ = 1.0;
  if (std::isfinite(norm) && max_norm > 0 && std::isfinite(max_norm)) {
    clip_ = std::min(1.0, max_norm / (norm + 1e-6));  // torch.nn.utils.clip_grad_norm_
  }
  return norm;
}

void Session::Update(double lr) {
  MOREH_CHECK(!ranks_.empty(), "optimizer step before the first forward of the distributed job");
  const double scale = scaler_ ? scaler_->scale() : 1.0;
  const double clip = clip_.value_or(1.0);
  clip_.reset();
  std::vector<json> msgs;
  for (const Rank& rk : ranks_) {
    json m = net::Message(net::Msg::kJobUpdate,
                          {{"device", client_->devices()[rk.device_index].device}, {"lr", lr}});
    if (scaler_ || clip != 1.0) m["grad_scale"] = clip / scale;
    if (scaler_) m["skip"] = overflow_;
    msgs.push_back(std::move(m));
  }
  last_update_ = CallAll(msgs);
  if (scaler_) {
    const bool applied = scaler_->Update(overflow_);
    overflow_ = false;
    if (!applied) spdlog::warn("{}", scaler_->OverflowMessage(scale));
  }
}

std::vector<int64_t> Session::last_peak_bytes() const {
  std::vector<int64_t> peak(last_step_.size(), 0);
  for (const auto* replies : {&last_step_, &last_update_}) {
    for (size_t r = 0; r < replies->size() && r < peak.size(); ++r) {
      peak[r] = std::max(peak[r], (*replies)[r].value("peak_bytes", int64_t{0}));
    }
  }
  return peak;
}

std::vector<int64_t> Session::last_eval_peak_bytes() const {
  std::vector<int64_t> peak;
  for (const json& r : last_eval_) peak.push_back(r.value("peak_bytes", int64_t{0}));
  return peak;
}

void Session::Save(const std::string& dir) const {
  MOREH_CHECK(!ranks_.empty(), "save_pretrained: the distributed job has not run a step");
  const DType dt = config_.checkpoint_dtype();
  auto tmp = io::BeginCheckpointSave(dir);
  tmp.status().ThrowIfError();
  std::vector<json> msgs;
  for (const Rank& rk : ranks_) {
    msgs.push_back(
        net::Message(net::Msg::kJobSave, {{"device", client_->devices()[rk.device_index].device},
                                          {"tmp_dir", *tmp},
                                          {"dtype", std::string(DTypeName(dt))}}));
  }
  std::vector<json> replies;
  try {
    replies = CallAll(msgs);
  } catch (...) {
    io::AbortCheckpointSave(*tmp);
    throw;
  }
  std::vector<std::pair<std::string, std::string>> weight_map;
  int64_t total = 0;
  for (const json& r : replies) {
    const std::string file = r.value("file", std::string());
    if (file.empty()) continue;
    for (const json& n : r["tensors"]) weight_map.emplace_back(n.get<std::string>(), file);
    total += r.value("bytes", int64_t{0});
  }
  io::CommitCheckpointSave(*tmp, dir, config_.ToJson(), weight_map, total).ThrowIfError();
}

}  // namespace moreh::parallel
