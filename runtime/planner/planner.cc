#include "runtime/planner/planner.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

#include "runtime/core/error.h"
#include "runtime/log.h"
#include "runtime/option.h"
#include "runtime/planner/layer_cost.h"

namespace moreh::planner {
namespace {
// The runtime's data-parallel gradient buckets (parallel/stage_runner.cc, MOREH_GRAD_BUCKET_MB).
constexpr double kGradBucketBytes = 25.0 * 1024 * 1024;

// How much slower (by the model) a simpler candidate may be and still be chosen: the time model's
// typical error between close candidates (docs/benchmarks.md, ap_planner).
constexpr double kTieTolerance = 0.03;

struct Costs {
  PieceCost layer, head, embed;
};

// Piece costs depend only on (batch per device, tp, parameter shards): computed once per triple and
// shared.
class CostCache {
 public:
  CostCache(const TrainJob& job, const ClusterSpec& cl) : job_(job), cl_(cl) {}
  const Costs& Get(int b, int tp, int param_shards) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find({b, tp, param_shards});
    if (it != cache_.end()) return it->second;
    Costs c;
    c.layer = DecoderLayerCost(job_.model, b, job_.seq_len, tp, job_.compute_dtype, cl_.device,
                               param_shards);
    const int vtp = job_.vocab_parallel ? tp : 1;  // replicated embedding and head: 1
    c.head =
        HeadCost(job_.model, b, job_.seq_len, vtp, job_.compute_dtype, cl_.device, param_shards);
    c.embed = EmbeddingCost(job_.model, b, job_.seq_len, vtp, job_.compute_dtype, cl_.device);
    return cache_.emplace(std::make_tuple(b, tp, param_shards), c).first->second;
  }

 private:
  const TrainJob& job_;
  const ClusterSpec& cl_;
  std::mutex mu_;
  std::map<std::tuple<int, int, int>, Costs> cache_;
};

double RingAllReduce(double bytes, int n, double bw, double lat) {
  if (n <= 1 || bytes <= 0) return 0;
  return 2.0 * (n - 1) / n * bytes / bw + 2.0 * (n - 1) * lat;
}

// One ring all-gather or reduce-scatter of `bytes` in total, issued as `tensors` collectives.
double RingPass(double bytes, int tensors, int n, double bw, double lat) {
  if (n <= 1 || bytes <= 0) return 0;
  return (n - 1.0) / n * bytes / bw + tensors * (n - 1.0) * lat;
}

// A stage's peak is the larger of two phases: the training step (parameters, optimizer state,
// activations of the micro-batches in flight, working sets) and the optimizer step (parameters,
// optimizer state and, in the f32 runtime with distribute_param, the reduce-scattered gradient
// shard, after the step's activations are gone). On the first stage also the embedding's
// backward, the last thing a micro-batch's backward does there (its activations are gone, the
// table's dense gradient is not). Each phase is fixed + layers x per_layer.
struct StageMemory {
  double per_layer;  // bytes one more layer adds to this stage (training step)
  double fixed;      // bytes independent of the layer count (training step)
  double update_per_layer = 0, update_fixed = 0;  // the optimizer step
  double edge_per_layer = 0, edge_fixed = 0;      // the embedding's backward (first stage)
  double Peak(double layers) const {
    return std::max({fixed + layers * per_layer, update_fixed + layers * update_per_layer,
                     edge_fixed + layers * edge_per_layer});
  }
  // The most layers that fit in `budget` (may be negative when none does).
  double MaxLayers(double budget) const {
    double n = (budget - fixed) / per_layer;
    if (update_per_layer > 0) n = std::min(n, (budget - update_fixed) / update_per_layer);
    if (edge_per_layer > 0) n = std::min(n, (budget - edge_fixed) / edge_per_layer);
    return n;
  }
};

// Per-device bytes of stage s, as the stage runner allocates them. Mixed precision: the compute
// copy of the weights (2, bf16), f32 gradient accumulators (4), f32 master weights and AdamW m, v
// (12); f32: weights 4, gradients 4, m and v 8.
// The last stage's head parameters: the final norm and the LM head; with tied embeddings over
// several stages it holds its own copy of the embedding (as Megatron-LM does; the copies'
// gradients are summed between the first and the last stage before each update).
double HeadParams(const TrainJob& job, const Candidate& c, const Costs& k) {
  const bool tied_copy = job.model.tie_word_embeddings && c.num_stages > 1;
  return static_cast<double>(k.head.params) + (tied_copy ? static_cast<double>(k.embed.params) : 0);
}

StageMemory StageBytes(const TrainJob& job, const ClusterSpec& cl, const Candidate& c,
                       const Costs& k, int s) {
  const bool mixed = job.compute_dtype != DType::kF32;
  const double dp = c.dp;
  const double w = mixed ? DTypeSize(job.compute_dtype) : 4, gsz = 4, opt = mixed ? 12 : 8;
  const double w_per = c.distribute_low_prec_param ? w / dp : w;
  // The runner keeps the whole gradient and reduce-scatters it into a shard at the optimizer step
  // (distribute_param); with the parameters themselves sharded (distribute_low_prec_param) the
  // gradients arrive reduce-scattered.
  const double g_per = c.distribute_low_prec_param ? gsz / dp : gsz;
  const double g_shard = c.distribute_param && !c.distribute_low_prec_param ? gsz / dp : 0;
  const double o_per = c.distribute_param ? opt / dp : opt;
  const double per_param = w_per + g_per + o_per;
  const int p = c.num_stages;
  const double inflight = std::min(c.num_micro_batches, p - s);
  StageMemory m;
  // Unfused attention keeps the T x T probabilities unless the attention core is recomputed
  // (selective recomputation is exactly that, as in Megatron-LM).
  const double probs = job.flash_attention
                           ? 0.0
                           : static_cast<double>(c.batch_per_device) *
                                 static_cast<double>(job.model.num_attention_heads / c.tp) *
                                 static_cast<double>(job.seq_len * job.seq_len) *
                                 DTypeSize(job.compute_dtype);
  const double saved_per_micro_batch = static_cast<double>(k.layer.saved_bytes[c.recompute]) +
                                       (c.recompute == kRecomputeNone ? probs : 0.0);
  m.per_layer = static_cast<double>(k.layer.params) * per_param + saved_per_micro_batch * inflight;
  double fixed = static_cast<double>(cl.device.reserved_bytes);
  // Working set of one layer's forward or backward program beyond its saved activations, as the
  // executor runs them (layer_cost.h): temporaries, activation gradients, each weight gradient
  // until it is added into the stage's gradient buffer, the activations recomputation brings
  // back, and with sharded parameters the gathered weights.
  const bool z3 = c.distribute_low_prec_param;
  double transient = static_cast<double>(z3 ? k.layer.sharded_transient_bytes[c.recompute]
                                            : k.layer.transient_bytes[c.recompute]);
  if (c.recompute != kRecomputeNone) transient += probs;
  // Tied embeddings in one program (a single stage): the head's gradient of the shared weight is
  // held through the whole backward until the embedding's is added to it (a third table-sized
  // tensor, the sum; widened to f32 on the CPU in 16 bits).
  const bool tied_here = job.model.tie_word_embeddings && s == 0 && s == p - 1;
  const double table = static_cast<double>(k.embed.params) * w;
  if (tied_here) transient += table;
  // The embedding's gather, or its dense gradient and its shard.
  const double shard = 1.0 / dp;
  double stage_params = 0;  // parameters outside the decoder layers
  double embed = 0;         // the embedding's backward: its dense gradient (and shard); its gather
  if (s == 0) {
    stage_params += static_cast<double>(k.embed.params);
    double dense = static_cast<double>(k.embed.transient_bytes[0]);
    if (tied_here) {
      const bool widened = cl.device.widens_16bit && w == 2;
      dense = std::max(dense + table,
                       3 * table + (widened ? 12.0 * static_cast<double>(k.embed.params) : 0.0));
    }
    // Sharded: the full gradient and its reduce-scattered shard (after the kernel's f32 copies,
    // and a tied sum's parts, are gone).
    embed = z3 ? std::max({dense, table + table * shard}) : dense;
  }
  if (s == p - 1) {
    // The head's forward and backward (its saved activations are gone once its backward is
    // done, before the layers' backward).
    stage_params += HeadParams(job, c, k);
    transient = std::max(transient, static_cast<double>(k.head.saved_bytes[0]) +
                                        static_cast<double>(z3 ? k.head.sharded_transient_bytes[0]
                                                               : k.head.transient_bytes[0]));
  }
  fixed += stage_params * per_param;
  // The runner pads its flat buffers to a multiple of 16 elements per replica.
  fixed += 16.0 * dp * (w + gsz + opt);
  m.update_per_layer = static_cast<double>(k.layer.params) * (per_param + g_shard);
  m.update_fixed =
      static_cast<double>(cl.device.reserved_bytes) + stage_params * (per_param + g_shard);
  if (p > 1) {  // activation send/receive buffers
    fixed += 2.0 * static_cast<double>(c.batch_per_device * job.seq_len * job.model.hidden_size *
                                       DTypeSize(job.compute_dtype));
  }
  {
    // The step's token ids, mask and labels (i64) of every micro-batch in the device's memory
    // (the worker decodes them there before the step).
    const double tokens = static_cast<double>(c.batch_per_device * job.seq_len);
    fixed += 8 * tokens * (1 + (s == 0) + (s == p - 1)) * c.num_micro_batches;
  }
  m.fixed = fixed + transient;
  if (s == 0) {  // the micro-batch's own activations (and, on a last stage, the head's) are gone
    m.edge_fixed = fixed + embed;
    m.edge_per_layer = m.per_layer - saved_per_micro_batch;
  }
  return m;
}

// Splits the layers into contiguous stages balancing predicted time within the memory budget.
// Returns false (with *why) when they cannot fit.
bool PartitionStages(const TrainJob& job, const ClusterSpec& cl, const Candidate& c, const Costs& k,
                     double budget, double layer_time, const std::vector<double>& extra_time,
                     std::vector<int>* layers, std::string* why) {
  const int p = c.num_stages, L = static_cast<int>(job.model.num_hidden_layers);
  std::vector<int> max_layers(p);
  int64_t total_max = 0;
  for (int s = 0; s < p; ++s) {
    const StageMemory m = StageBytes(job, cl, c, k, s);
    const double fit = m.MaxLayers(budget);
    max_layers[s] = fit <= 0 ? 0 : static_cast<int>(std::min<double>(L, fit));
    if (max_layers[s] < 1) {
      *why = fmt::format("stage {} needs {:.2f} GiB before any layer (budget {:.2f} GiB)", s,
                         m.Peak(1) / (1 << 30), budget / (1 << 30));
      return false;
    }
    total_max += max_layers[s];
  }
  if (total_max < L) {
    *why = fmt::format("only {} of {} layers fit in {:.2f} GiB per device", total_max, L,
                       budget / (1 << 30));
    return false;
  }
  auto count = [&](double t, std::vector<int>* n) {
    int64_t sum = 0;
    for (int s = 0; s < p; ++s) {
      const double room = t - extra_time[s];
      // Every stage holds at least one layer, even one whose fixed work (the embedding, the
      // head) alone takes longer than the others' layers: a balance that left it none could not
      // run.
      const int by_time = room <= 0 ? 0 : static_cast<int>(room / layer_time + 1e-9);
      (*n)[s] = std::min(max_layers[s], std::max(1, by_time));
      sum += (*n)[s];
    }
    return sum;
  };
  double lo = 0, hi = L * layer_time + *std::max_element(extra_time.begin(), extra_time.end());
  std::vector<int> n(p);
  for (int it = 0; it < 60 && hi - lo > 1e-9 * hi; ++it) {
    const double mid = 0.5 * (lo + hi);
    (count(mid, &n) >= L ? hi : lo) = mid;
  }
  count(hi, &n);
  int64_t sum = 0;
  for (int x : n) sum += x;
  while (sum > L) {  // drop layers from the slowest stages
    int worst = -1;
    for (int s = 0; s < p; ++s) {
      if (n[s] > 1 && (worst < 0 || n[s] * layer_time + extra_time[s] >
                                        n[worst] * layer_time + extra_time[worst])) {
        worst = s;
      }
    }
    if (worst < 0) break;
    --n[worst];
    --sum;
  }
  for (int s = 0; s < p; ++s) {
    if (n[s] < 1 || sum != L) {
      *why = "cannot give every stage a layer";
      return false;
    }
  }
  *layers = n;
  return true;
}

}  // namespace

double ModelFlopsPerToken(const models::LlamaConfig& c, int64_t seq_len) {
  return 6.0 * static_cast<double>(c.NumParameters()) +
         12.0 * static_cast<double>(c.num_hidden_layers * c.hidden_size * seq_len);
}

PlannerOptions PlannerOptions::FromEnvironment() {
  PlannerOptions o;
  if (const char* v = std::getenv("MOREH_ADVANCED_PARALLELIZATION_MAX_PARALLEL_COMPILE_THREADS")) {
    o.threads = std::max(0, std::atoi(v));
  }
  if (const char* v = std::getenv("MOREH_ADVANCED_PARALLELIZATION_MEMORY_USAGE_CORRECTION_RATIO")) {
    const int r = std::atoi(v);
    if (r > 0 && r <= 100) o.memory_usage_ratio = r / 100.0;
  }
  if (const char* v = std::getenv("MOREH_ADVANCED_PARALLELIZATION_DETAILED_LOG")) {
    o.detailed_log = std::atoi(v);
  }
  return o;
}

PlannerOptions PlannerOptions::FromUserOptions() {
  PlannerOptions o = FromEnvironment();
  const option::AdvancedParallelizationOptions u = option::advanced_parallelization_options();
  o.advanced_parallelization = option::advanced_parallelization_enabled();
  o.pipeline = u.pipeline;
  o.max_stages = u.max_stages;
  o.max_micro_batches = u.max_micro_batches;
  o.recompute_levels = u.recomputation;
  o.distribute_param = u.distribute_parameters;
  o.max_tp = u.max_tp;
  return o;
}

std::string Candidate::Describe() const {
  return fmt::format(
      "num_stages : {}, num_micro_batches : {}, batch_per_device : {}, {}, recomputation : {}, "
      "distribute_param : {}, distribute_low_prec_param : {}",
      num_stages, num_micro_batches, batch_per_device,
      tp == 1 ? std::string("No TP") : fmt::format("TP : {}", tp), recompute, distribute_param,
      distribute_low_prec_param);
}

static Candidate Evaluate(const TrainJob& job, const ClusterSpec& cl, const PlannerOptions& o,
                          Candidate c, CostCache& cache) {
  const Costs& k = cache.Get(c.batch_per_device, c.tp, c.distribute_low_prec_param ? c.dp : 1);
  const double budget = static_cast<double>(cl.device.memory_bytes) * o.memory_usage_ratio;
  const int p = c.num_stages;
  const DeviceProfile& dev = cl.device;
  // Links: TP inside a node; DP and PP groups cross nodes once tp * dp exceeds a node.
  const double tp_ar = RingAllReduce(static_cast<double>(k.layer.tp_allreduce_bytes), c.tp,
                                     cl.intra_node_bandwidth, cl.intra_node_latency);
  const bool dp_inter = c.tp * c.dp > cl.devices_per_node;
  double dp_bw = dp_inter ? cl.inter_node_bandwidth : cl.intra_node_bandwidth;
  if (cl.node_concurrency > 0 && !dp_inter) {
    // Devices that share a host's cores reduce their gradients all at once after the pipeline
    // drains, and a ring moves (and adds) its data on those cores: each link gets the node's
    // compute share. (4 CPU devices on 2 cores: the all-reduce measured 36 ms where the two-process
    // link bandwidth alone predicted 6 ms.)
    const double talking = std::min<double>(cl.devices_per_node, c.num_stages * c.tp * c.dp);
    dp_bw *= std::min(1.0, cl.node_concurrency / talking);
  }
  const double dp_lat = dp_inter ? cl.inter_node_latency : cl.intra_node_latency;
  const bool pp_inter = c.tp * c.dp >= cl.devices_per_node && cl.num_devices > cl.devices_per_node;
  // Unfused attention moves the T x T scores through memory: about 4 passes forward (write scores,
  // softmax read and write, read for P V) and 6 backward.
  double attn_pass = 0;
  if (!job.flash_attention) {
    attn_pass = static_cast<double>(c.batch_per_device) * job.model.num_attention_heads / c.tp *
                static_cast<double>(job.seq_len * job.seq_len) * DTypeSize(job.compute_dtype) /
                dev.memory_bandwidth;
  }
  // Compute per layer and micro-batch, and the tensor-parallel all-reduces (two forward, two
  // backward), which wait on links rather than compute.
  const double layer_fwd = k.layer.fwd_time + 4 * attn_pass;
  const double layer_bwd = k.layer.bwd_time + 6 * attn_pass + k.layer.recompute_time[c.recompute] +
                           (c.recompute == kRecomputeFull ? 4 * attn_pass : 0);
  const double layer_fwd_wait = 2 * tp_ar, layer_bwd_wait = 2 * tp_ar;
  std::vector<double> extra(p, 0);
  extra[0] += k.embed.fwd_time + k.embed.bwd_time;
  extra[p - 1] += k.head.fwd_time + k.head.bwd_time;
  std::vector<int> layers;
  if (!PartitionStages(job, cl, c, k, budget,
                       layer_fwd + layer_bwd + layer_fwd_wait + layer_bwd_wait, extra, &layers,
                       &c.reason)) {
    c.feasible = false;
    // Still report the memory of an even split, to say how far off it is.
    int64_t worst = 0;
    for (int s = 0; s < p; ++s) {
      const StageMemory m = StageBytes(job, cl, c, k, s);
      const double n = std::ceil(static_cast<double>(job.model.num_hidden_layers) / p);
      worst = std::max(worst, static_cast<int64_t>(m.Peak(n)));
    }
    c.peak_bytes = worst;
    return c;
  }
  c.stage_layers = layers;
  std::vector<StageCost> cost(p);
  c.peak_bytes = 0;
  double dp_max = 0, opt_max = 0;
  const bool mixed = job.compute_dtype != DType::kF32;
  for (int s = 0; s < p; ++s) {
    StageCost& sc = cost[s];
    sc.fwd = layers[s] * layer_fwd + (s == 0 ? k.embed.fwd_time : 0) +
             (s == p - 1 ? k.head.fwd_time : 0);
    sc.bwd = layers[s] * layer_bwd + (s == 0 ? k.embed.bwd_time : 0) +
             (s == p - 1 ? k.head.bwd_time : 0);
    sc.fwd_wait = layers[s] * layer_fwd_wait;
    sc.bwd_wait = layers[s] * layer_bwd_wait;
    const StageMemory m = StageBytes(job, cl, c, k, s);
    const int64_t bytes = static_cast<int64_t>(m.Peak(layers[s]));
    c.stage_peak_bytes.push_back(bytes);
    c.peak_bytes = std::max(c.peak_bytes, bytes);
    const double params = static_cast<double>(layers[s] * k.layer.params) +
                          (s == 0 ? k.embed.params : 0) + (s == p - 1 ? HeadParams(job, c, k) : 0);
    if (c.distribute_low_prec_param) {
      // Sharded parameters are gathered tensor by tensor for every micro-batch's forward and
      // again for its backward, which reduce-scatters their gradients: three ring passes (n - 1
      // hops each) per tensor and micro-batch, on the pipeline's critical path; nothing is left
      // for the optimizer step.
      const int tensors = layers[s] * k.layer.num_param_tensors +
                          (s == 0 ? k.embed.num_param_tensors : 0) +
                          (s == p - 1 ? k.head.num_param_tensors : 0);
      const double gather = RingPass(params * (mixed ? 2 : 4), tensors, c.dp, dp_bw, dp_lat);
      sc.fwd_wait += gather;
      sc.bwd_wait += 2 * gather;
    } else {
      // Gradient reduction over DP (reduce-scatter + all-gather when sharded: the same volume),
      // in f32 (mixed precision accumulates the gradients in f32). Where the runtime overlaps it
      // with the backward (NCCL: buckets reduced during the last micro-batch's backward, not with
      // the sharded optimizer), only what outlasts that backward is on the step's path, and at
      // least the last bucket, which starts as the backward ends.
      // With the master weights sharded (mixed precision, distribute_param) the gather half moves
      // the compute dtype instead.
      const double gather_bytes = c.distribute_param && mixed ? DTypeSize(job.compute_dtype) : 4;
      const double reduce = RingAllReduce(params * (4 + gather_bytes) / 2, c.dp, dp_bw, dp_lat);
      double exposed = reduce;
      if (cl.overlapped_dp_reduction && !c.distribute_param && c.dp > 1) {
        // The runner's last bucket (from the last parameter back, closed at 25 MiB) holds the
        // first stage's embedding whatever its size.
        const double last =
            std::max(kGradBucketBytes, s == 0 ? static_cast<double>(k.embed.params) * 4 : 0.0);
        exposed = std::max(reduce - sc.bwd, reduce * std::min(1.0, last / (params * 4)));
      }
      if (job.model.tie_word_embeddings && p > 1 && (s == 0 || s == p - 1)) {
        // The tied copies' gradient sum between the first and the last stage, before the update.
        exposed += RingAllReduce(static_cast<double>(k.embed.params) * 4, 2,
                                 pp_inter ? cl.inter_node_bandwidth : cl.intra_node_bandwidth,
                                 pp_inter ? cl.inter_node_latency : cl.intra_node_latency);
      }
      dp_max = std::max(dp_max, exposed);
    }
    const double opt_params = c.distribute_param ? params / c.dp : params;
    opt_max = std::max(opt_max, opt_params * (mixed ? 30.0 : 24.0) / dev.memory_bandwidth);
  }
  const double act_bytes = static_cast<double>(
      c.batch_per_device * job.seq_len * job.model.hidden_size * DTypeSize(job.compute_dtype));
  const double send =
      p > 1 ? act_bytes / (pp_inter ? cl.inter_node_bandwidth : cl.intra_node_bandwidth) +
                  (pp_inter ? cl.inter_node_latency : cl.intra_node_latency)
            : 0;
  // Devices that share a node's compute (CPU devices on one host): rank = tp_rank + tp * (dp_rank
  // + dp * stage), nodes hold consecutive ranks.
  // The optimizer step is not slowed by the sharing: it is memory-bound, and the devices do not
  // reach it at the same moment (measured: a quarter of llama-mini's AdamW in 2-3 ms per device on
  // 4 devices sharing 2 cores, where slowing it 4x predicted 15 ms).
  ComputeSharing sharing;
  if (cl.node_concurrency > 0) {
    sharing.node_concurrency = cl.node_concurrency;
    const int hop = c.tp * c.dp;
    for (int s = 0; s < p; ++s) {
      std::map<int, int> per_node;
      for (int r = s * hop; r < (s + 1) * hop; ++r) per_node[r / cl.devices_per_node]++;
      sharing.stage_nodes.emplace_back(per_node.begin(), per_node.end());
    }
    // A device waiting for its next input polls its transport and keeps part of a core busy
    // (fitted to five full runs of ./bench/run ap_planner on 4 CPU devices sharing 2 cores).
    sharing.waiting_load = 0.2;
  }
  const auto table = OneFOneB(p, c.num_micro_batches, false);
  c.pipeline_time = SimulatePipeline(table, cost, send, sharing);
  double ideal = 0;
  for (int s = 0; s < p; ++s) {
    ideal = std::max(ideal, (cost[s].fwd + cost[s].bwd + cost[s].fwd_wait + cost[s].bwd_wait) *
                                c.num_micro_batches);
  }
  c.bubble_fraction = c.pipeline_time > 0 ? 1.0 - ideal / c.pipeline_time : 0;
  c.dp_time = dp_max;
  c.optimizer_time = opt_max;
  c.step_time = c.pipeline_time + c.dp_time + c.optimizer_time;
  c.tokens_per_s = static_cast<double>(job.global_batch * job.seq_len) / c.step_time;
  c.mfu = c.tokens_per_s * ModelFlopsPerToken(job.model, job.seq_len) /
          (static_cast<double>(cl.num_devices) * dev.peak_flops);
  c.feasible = c.peak_bytes <= budget;
  if (!c.feasible) c.reason = "exceeds the memory budget";
  return c;
}

Candidate EvaluateCandidate(const TrainJob& job, const ClusterSpec& cluster,
                            const PlannerOptions& options, Candidate c) {
  CostCache cache(job, cluster);
  return Evaluate(job, cluster, options, c, cache);
}

namespace {
std::vector<Candidate> Enumerate(const TrainJob& job, const ClusterSpec& cl,
                                 const PlannerOptions& o) {
  std::vector<Candidate> out;
  const int D = cl.num_devices;
  const auto& m = job.model;
  if (!o.advanced_parallelization) {  // plain data parallelism: one replica per device
    Candidate c;
    c.dp = D;
    c.batch_per_device = static_cast<int>(std::max<int64_t>(1, job.global_batch / D));
    out.push_back(c);
    return out;
  }
  const int max_tp = o.max_tp > 0 ? std::min(o.max_tp, cl.devices_per_node) : cl.devices_per_node;
  for (int tp = 1; tp <= max_tp; tp *= 2) {
    if (D % tp || m.num_attention_heads % tp || m.num_key_value_heads % tp ||
        m.intermediate_size % tp) {
      continue;
    }
    const int max_pp = !o.pipeline ? 1
                                   : std::min<int>(o.max_stages > 0 ? o.max_stages : D,
                                                   static_cast<int>(m.num_hidden_layers));
    for (int pp = 1; pp <= max_pp; ++pp) {
      if ((D / tp) % pp) continue;
      const int dp = D / tp / pp;
      if (job.global_batch % dp) continue;
      const int64_t per_dp = job.global_batch / dp;
      for (int64_t bpd = 1; bpd <= per_dp; ++bpd) {
        if (per_dp % bpd) continue;
        const int64_t mb = per_dp / bpd;
        if (o.max_micro_batches > 0 && mb > o.max_micro_batches) continue;
        if (pp > 1 && mb < pp) continue;  // fewer micro-batches than stages only idles devices
        for (int r : o.recompute_levels) {
          for (int dist = 0;
               dist < (o.distribute_param && dp > 1 ? (o.distribute_low_prec_param ? 3 : 2) : 1);
               ++dist) {
            Candidate c;
            c.tp = tp;
            c.num_stages = pp;
            c.dp = dp;
            c.batch_per_device = static_cast<int>(bpd);
            c.num_micro_batches = static_cast<int>(mb);
            c.recompute = r;
            c.distribute_param = dist >= 1;
            c.distribute_low_prec_param = dist == 2;
            out.push_back(c);
          }
        }
      }
    }
  }
  return out;
}
}  // namespace

Plan PlanTraining(const TrainJob& job, const ClusterSpec& cl, const PlannerOptions& o) {
  InitLogging();
  cl.Validate().ThrowIfError();
  job.model.Validate().ThrowIfError();
  MOREH_CHECK(job.global_batch > 0 && job.seq_len > 0,
              "planner: batch ({}) and sequence ({}) must be positive", job.global_batch,
              job.seq_len);
  Plan plan;
  plan.device_memory = cl.device.memory_bytes;
  plan.budget_bytes = static_cast<double>(cl.device.memory_bytes) * o.memory_usage_ratio;
  std::vector<Candidate> cands = Enumerate(job, cl, o);
  MOREH_CHECK(!cands.empty(),
              "planner: no parallel configuration of {} devices splits this job: the global batch "
              "({}) must divide into the data-parallel replicas (and, with pipeline stages, into "
              "at least as many micro-batches as stages), tensor parallelism must divide the "
              "attention heads ({}), key/value heads ({}) and MLP width ({}), and stages must not "
              "outnumber the layers ({}), within the limits given to "
              "enable_advanced_parallelization; use a larger batch or fewer devices",
              cl.num_devices, job.global_batch, job.model.num_attention_heads,
              job.model.num_key_value_heads, job.model.intermediate_size,
              job.model.num_hidden_layers);
  if (o.log && o.advanced_parallelization) {
    spdlog::info("Got DBs from backend for auto config.");
    spdlog::info("The number of candidates is {}.", cands.size());
    spdlog::info("Parallel Graph Compile start...");
  }
  const auto t0 = std::chrono::steady_clock::now();
  CostCache cache(job, cl);
  int threads = o.threads > 0 ? o.threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, std::min<int>(threads, static_cast<int>(cands.size())));
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  std::exception_ptr error;
  std::mutex error_mu;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      try {
        for (size_t i = next++; i < cands.size(); i = next++) {
          cands[i] = Evaluate(job, cl, o, cands[i], cache);
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        error = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  const auto t1 = std::chrono::steady_clock::now();
  plan.compile_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  for (const Candidate& c : cands) plan.num_feasible += c.feasible;
  if (o.log && o.advanced_parallelization) {
    spdlog::info("Elapsed Time to compile all candidates = {} [ms]",
                 static_cast<int64_t>(plan.compile_ms));
    spdlog::info("Parallel Graph Compile finished.");
    spdlog::info("The number of possible candidates is {}.", plan.num_feasible);
    spdlog::info("SelectBestGraphFromCandidates start...");
  }
  const Candidate* best = nullptr;
  const Candidate* smallest = nullptr;
  for (const Candidate& c : cands) {
    if (!smallest || c.peak_bytes < smallest->peak_bytes) smallest = &c;
    if (c.feasible && (!best || c.step_time < best->step_time)) best = &c;
  }
  // Predictions closer than the time model's error do not tell candidates apart: among those
  // within kTieTolerance of the fastest, take the simplest (fewest pipeline stages, then the least
  // tensor parallelism, sharding, recomputation and micro-batches), which has the fewest ways to
  // run slower than modelled.
  if (best) {
    auto simpler = [](const Candidate& a, const Candidate& b) {
      return std::make_tuple(a.num_stages, a.tp, a.distribute_low_prec_param, a.distribute_param,
                             a.recompute, a.num_micro_batches) <
             std::make_tuple(b.num_stages, b.tp, b.distribute_low_prec_param, b.distribute_param,
                             b.recompute, b.num_micro_batches);
    };
    const double limit = best->step_time * (1 + kTieTolerance);
    const Candidate* fastest = best;
    for (const Candidate& c : cands) {
      if (c.feasible && c.step_time <= limit && simpler(c, *best)) best = &c;
    }
    if (best != fastest && o.detailed_log >= 1) {
      spdlog::info("  {:.1f} % slower by the model than the fastest, and simpler: chosen",
                   100 * (best->step_time / fastest->step_time - 1));
    }
  }
  const auto t2 = std::chrono::steady_clock::now();
  plan.select_ms = std::chrono::duration<double, std::milli>(t2 - t1).count();
  if (o.log && o.advanced_parallelization) {
    spdlog::info("Elapsed Time to compute cost for survived candidates = {} [ms]",
                 static_cast<int64_t>(plan.select_ms));
    spdlog::info("SelectBestGraphFromCandidates finished.");
  }
  if (o.detailed_log >= 1) {
    for (const Candidate& c : cands) {
      spdlog::info("  {} | {} | peak {:.2f} GiB | step {:.3f} s | {:.0f} tokens/s | MFU {:.1f}%{}",
                   c.Describe(), c.feasible ? "ok" : "infeasible",
                   static_cast<double>(c.peak_bytes) / (1 << 30), c.step_time, c.tokens_per_s,
                   100 * c.mfu, c.feasible ? "" : " (" + c.reason + ")");
    }
  }
  plan.candidates = std::move(cands);
  if (!best) {
    const int64_t requested = smallest ? smallest->peak_bytes : 0;
    if (o.detailed_log >= 2) std::ofstream("autoconfig_log.dump") << plan.ToJson();
    throw OutOfMemoryError(cl.device.name, requested, static_cast<int64_t>(plan.budget_bytes),
                           cl.device.memory_bytes);
  }
  plan.chosen = *best;
  plan.schedule =
      OneFOneB(best->num_stages, best->num_micro_batches, best->recompute == kRecomputeFull);
  if (o.log && o.advanced_parallelization) {
    spdlog::info("Configuration for parallelism is selected.");
    spdlog::info("{}", plan.chosen.Describe());
  }
  if (o.detailed_log >= 2) std::ofstream("autoconfig_log.dump") << plan.ToJson();
  return plan;
}

std::string Candidate::ConfigJson() const {
  return nlohmann::json{{"num_stages", num_stages},
                        {"tp", tp},
                        {"dp", dp},
                        {"num_micro_batches", num_micro_batches},
                        {"recompute", recompute},
                        {"distribute_param", distribute_param},
                        {"distribute_low_prec_param", distribute_low_prec_param}}
      .dump();
}

std::string Plan::ToJson() const {
  using json = nlohmann::json;
  auto cj = [](const Candidate& c) {
    return json{{"num_stages", c.num_stages},
                {"num_micro_batches", c.num_micro_batches},
                {"batch_per_device", c.batch_per_device},
                {"tp", c.tp},
                {"dp", c.dp},
                {"recomputation", c.recompute},
                {"distribute_param", c.distribute_param},
                {"distribute_low_prec_param", c.distribute_low_prec_param},
                {"feasible", c.feasible},
                {"reason", c.reason},
                {"stage_layers", c.stage_layers},
                {"stage_peak_bytes", c.stage_peak_bytes},
                {"peak_bytes", c.peak_bytes},
                {"step_time_s", c.step_time},
                {"pipeline_time_s", c.pipeline_time},
                {"bubble_fraction", c.bubble_fraction},
                {"dp_time_s", c.dp_time},
                {"optimizer_time_s", c.optimizer_time},
                {"tokens_per_s", c.tokens_per_s},
                {"mfu", c.mfu}};
  };
  json j;
  j["device_memory_bytes"] = device_memory;
  j["budget_bytes"] = budget_bytes;
  j["compile_ms"] = compile_ms;
  j["num_candidates"] = candidates.size();
  j["num_feasible"] = num_feasible;
  if (chosen.feasible) j["chosen"] = cj(chosen);
  json all = json::array();
  for (const Candidate& c : candidates) all.push_back(cj(c));
  j["candidates"] = std::move(all);
  json sched = json::array();
  for (const auto& stage : schedule) {
    json steps = json::array();
    for (const auto& s : stage) {
      steps.push_back({{"micro_batch", s.micro_batch},
                       {"phase", s.phase == Phase::kForward    ? "forward"
                                 : s.phase == Phase::kBackward ? "backward"
                                                               : "recompute"}});
    }
    sched.push_back(std::move(steps));
  }
  j["schedule"] = std::move(sched);
  return j.dump(2);
}

}  // namespace moreh::planner
