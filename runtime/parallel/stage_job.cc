#include "runtime/parallel/stage_job.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "runtime/core/error.h"
#include "runtime/core/field_reader.h"
#include "runtime/init.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/io/safetensors.h"
#include "runtime/models/llama_def.h"
#include "runtime/net/base64.h"
#include "runtime/net/tensor_codec.h"
#include "runtime/parallel/tp_shards.h"

#ifdef MOREH_WITH_CUDA
#include "runtime/comm/nccl_collectives.h"
#include "runtime/parallel/nccl_pipe_links.h"
#endif

namespace moreh::parallel {
using json = nlohmann::json;

namespace {

// Field access that throws moreh::Error naming the field (runtime/core/field_reader.h's words).
const json& Field(const json& j, const char* name) {
  MOREH_CHECK(j.is_object() && j.contains(name), "field '{}' is missing", name);
  return j[name];
}
template <typename Read>
auto Checked(const json& j, Read read) {
  FieldReader f(j, "field");
  auto v = read(f);
  if (!f.ok()) {
    // "field: 'x' must be ..." -> "field 'x' must be ...": the caller says which message it is.
    throw Error("field" + f.status().message().substr(6));
  }
  return v;
}
int64_t Int(const json& j, const char* name) {
  return Checked(j, [&](FieldReader& f) { return f.Int(name); });
}
double Num(const json& j, const char* name) {
  return Checked(j, [&](FieldReader& f) { return f.Num(name); });
}
bool Bool(const json& j, const char* name) {
  return Checked(j, [&](FieldReader& f) { return f.Bool(name); });
}
std::string Str(const json& j, const char* name) {
  return Checked(j, [&](FieldReader& f) { return f.Str(name, 1 << 20); });
}
std::vector<int> Ints(const json& j, const char* name) {
  return Checked(j, [&](FieldReader& f) {
    std::vector<int> out;
    const json& v = f.Array(name, 1 << 20);
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_number_integer() || v[i].get<int64_t>() < INT32_MIN ||
          v[i].get<int64_t>() > INT32_MAX) {
        f.FailField(name, fmt::format("[{}] must be an integer", i));
        break;
      }
      out.push_back(v[i].get<int>());
    }
    return out;
  });
}

json SubToJson(const SubProgram& s) {
  return {{"graph", json::parse(s.graph.ToJson())}, {"inputs", s.inputs}, {"outputs", s.outputs}};
}
SubProgram SubFromJson(const json& j, const char* what) {
  SubProgram s;
  auto g = Graph::FromJson(Field(j, "graph").dump());
  MOREH_CHECK(g.ok(), "{} graph: {}", what, g.status().message());
  s.graph = std::move(g.value());
  s.inputs = Ints(j, "inputs");
  s.outputs = Ints(j, "outputs");
  MOREH_CHECK(
      s.inputs.size() == s.graph.inputs().size() && s.outputs.size() == s.graph.outputs().size(),
      "{} program: {} inputs / {} outputs listed for a graph with {} / {}", what, s.inputs.size(),
      s.outputs.size(), s.graph.inputs().size(), s.graph.outputs().size());
  return s;
}

StageProgram ProgramFromJson(const json& j) {
  StageProgram p;
  const json& spec = Field(j, "spec");
  auto cfg = models::LlamaConfig::FromJson(Field(spec, "model").dump(), "stage spec");
  MOREH_CHECK(cfg.ok(), "{}", cfg.status().message());
  p.spec.model = cfg.value();
  p.spec.first_layer = static_cast<int>(Int(spec, "first_layer"));
  p.spec.num_layers = static_cast<int>(Int(spec, "num_layers"));
  p.spec.first = Bool(spec, "first");
  p.spec.last = Bool(spec, "last");
  p.spec.micro_batch = Int(spec, "micro_batch");
  p.spec.seq_len = Int(spec, "seq_len");
  p.spec.recompute = static_cast<int>(Int(spec, "recompute"));
  p.spec.tp = static_cast<int>(Int(spec, "tp"));
  p.spec.param_shards = static_cast<int>(Int(spec, "param_shards"));
  if (spec.contains("compute_dtype")) {  // absent: f32 (programs of earlier clients)
    MOREH_CHECK(ParseDType(Str(spec, "compute_dtype"), &p.spec.compute_dtype) &&
                    IsFloating(p.spec.compute_dtype),
                "spec field 'compute_dtype' must be f32, bf16 or f16");
  }
  p.forward = SubFromJson(Field(j, "forward"), "forward");
  p.backward = SubFromJson(Field(j, "backward"), "backward");
  const json& names = Field(j, "params");
  MOREH_CHECK(names.is_array(), "field 'params' must be an array");
  for (const json& n : names) {
    MOREH_CHECK(n.is_string(), "field 'params' must hold names");
    p.params.push_back(n.get<std::string>());
  }
  p.param_values = Ints(j, "param_values");
  p.param_grads = Ints(j, "param_grads");
  p.num_forward_nodes = static_cast<int>(Int(j, "num_forward_nodes"));
  p.ids = static_cast<int>(Int(j, "ids"));
  p.activation = static_cast<int>(Int(j, "activation"));
  p.mask = static_cast<int>(Int(j, "mask"));
  p.labels = static_cast<int>(Int(j, "labels"));
  p.loss_weight = static_cast<int>(Int(j, "loss_weight"));
  p.grad_in = static_cast<int>(Int(j, "grad_in"));
  p.out = static_cast<int>(Int(j, "out"));
  p.grad_out = static_cast<int>(Int(j, "grad_out"));
  // Consistency: every value a program reads has a source the runner knows.
  MOREH_CHECK(p.params.size() == p.param_values.size() && p.params.size() == p.param_grads.size(),
              "stage program: {} parameter names, {} values, {} gradients", p.params.size(),
              p.param_values.size(), p.param_grads.size());
  MOREH_CHECK(p.spec.first == (p.ids >= 0) && p.spec.first == (p.activation < 0) &&
                  p.spec.last == (p.labels >= 0) && p.spec.last == (p.loss_weight >= 0) &&
                  p.spec.last == (p.grad_in < 0) && p.spec.first == (p.grad_out < 0) && p.mask >= 0,
              "stage program: data inputs do not match a {}{} stage", p.spec.first ? "first " : "",
              p.spec.last ? "last" : "middle");
  std::set<int> known(p.param_values.begin(), p.param_values.end());
  for (int v : {p.ids, p.activation, p.mask, p.labels, p.loss_weight}) {
    if (v >= 0) known.insert(v);
  }
  for (int v : p.forward.inputs) {
    MOREH_CHECK(known.count(v), "stage program: forward input {} is neither a parameter nor data",
                v);
  }
  MOREH_CHECK(!p.forward.outputs.empty() && p.forward.outputs[0] == p.out,
              "stage program: the forward's first output must be the stage output");
  known.insert(p.forward.outputs.begin(), p.forward.outputs.end());
  if (p.grad_in >= 0) known.insert(p.grad_in);
  for (int v : p.backward.inputs) {
    MOREH_CHECK(known.count(v), "stage program: backward input {} has no source", v);
  }
  std::vector<int> bo;
  if (p.grad_out >= 0) bo.push_back(p.grad_out);
  for (int v : p.param_grads) {
    if (v >= 0) bo.push_back(v);
  }
  MOREH_CHECK(bo == p.backward.outputs,
              "stage program: backward outputs must be the input gradient and parameter gradients");
  return p;
}

}  // namespace

json StageProgramToJson(const StageProgram& p) {
  const StageSpec& s = p.spec;
  return {{"spec",
           {{"model", json::parse(s.model.ToJson())},
            {"first_layer", s.first_layer},
            {"num_layers", s.num_layers},
            {"first", s.first},
            {"last", s.last},
            {"micro_batch", s.micro_batch},
            {"seq_len", s.seq_len},
            {"recompute", s.recompute},
            {"tp", s.tp},
            {"param_shards", s.param_shards},
            {"compute_dtype", std::string(DTypeName(s.compute_dtype))}}},
          {"forward", SubToJson(p.forward)},
          {"backward", SubToJson(p.backward)},
          {"params", p.params},
          {"param_values", p.param_values},
          {"param_grads", p.param_grads},
          {"num_forward_nodes", p.num_forward_nodes},
          {"ids", p.ids},
          {"activation", p.activation},
          {"mask", p.mask},
          {"labels", p.labels},
          {"loss_weight", p.loss_weight},
          {"grad_in", p.grad_in},
          {"out", p.out},
          {"grad_out", p.grad_out}};
}

StatusOr<StageProgram> StageProgramFromJson(const json& j) {
  try {
    return ProgramFromJson(j);
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("stage program: ") + e.what());
  }
}

json AdamWToJson(const optim::AdamWOptions& o) {
  return {{"lr", o.lr},
          {"beta1", o.beta1},
          {"beta2", o.beta2},
          {"eps", o.eps},
          {"weight_decay", o.weight_decay},
          {"exclude_bias_and_norm", o.exclude_bias_and_norm}};
}

json StageAssignment::ToJson() const {
  return {{"job", job},
          {"rank", rank},
          {"world", world},
          {"stage", stage},
          {"num_stages", num_stages},
          {"num_micro_batches", num_micro_batches},
          {"dp_rank", dp_rank},
          {"dp_group", dp_group},
          {"tp_rank", tp_rank},
          {"tp_group", tp_group},
          {"prev_rank", prev_rank},
          {"next_rank", next_rank},
          {"tied_rank", tied_rank},
          {"distribute_param", distribute_param},
          {"adamw", AdamWToJson(adamw)},
          {"checkpoint_dir", checkpoint_dir},
          {"seed", seed},
          {"timeout_ms", timeout_ms},
          {"program", StageProgramToJson(program)}};
}

StatusOr<StageAssignment> StageAssignment::FromJson(const json& j) {
  try {
    StageAssignment a;
    a.job = static_cast<uint64_t>(Int(j, "job"));
    a.rank = static_cast<int>(Int(j, "rank"));
    a.world = static_cast<int>(Int(j, "world"));
    a.stage = static_cast<int>(Int(j, "stage"));
    a.num_stages = static_cast<int>(Int(j, "num_stages"));
    a.num_micro_batches = static_cast<int>(Int(j, "num_micro_batches"));
    a.dp_rank = static_cast<int>(Int(j, "dp_rank"));
    a.dp_group = Ints(j, "dp_group");
    a.tp_rank = static_cast<int>(Int(j, "tp_rank"));
    a.tp_group = Ints(j, "tp_group");
    a.prev_rank = static_cast<int>(Int(j, "prev_rank"));
    a.next_rank = static_cast<int>(Int(j, "next_rank"));
    a.tied_rank = j.contains("tied_rank") ? static_cast<int>(Int(j, "tied_rank")) : -1;
    a.distribute_param = Bool(j, "distribute_param");
    const json& o = Field(j, "adamw");
    a.adamw = {Num(o, "lr"),
               Num(o, "beta1"),
               Num(o, "beta2"),
               Num(o, "eps"),
               Num(o, "weight_decay"),
               o.contains("exclude_bias_and_norm") && Bool(o, "exclude_bias_and_norm")};
    a.checkpoint_dir = Str(j, "checkpoint_dir");
    a.seed = static_cast<uint64_t>(Int(j, "seed"));
    a.timeout_ms = Int(j, "timeout_ms");
    MOREH_CHECK(a.world >= 1 && a.world <= 65535 && a.rank >= 0 && a.rank < a.world,
                "rank {} of world {}", a.rank, a.world);
    MOREH_CHECK(a.num_stages >= 1 && a.stage >= 0 && a.stage < a.num_stages, "stage {} of {}",
                a.stage, a.num_stages);
    MOREH_CHECK(a.num_micro_batches >= 1 && a.num_micro_batches <= 4096,
                "num_micro_batches {} (1..4096)", a.num_micro_batches);
    const int dp = static_cast<int>(a.dp_group.size());
    MOREH_CHECK(dp >= 1 && a.dp_rank >= 0 && a.dp_rank < dp && a.dp_group[a.dp_rank] == a.rank,
                "data-parallel rank {} in group of {} must be this rank ({})", a.dp_rank, dp,
                a.rank);
    for (int r : a.dp_group) MOREH_CHECK(r >= 0 && r < a.world, "dp_group rank {} out of range", r);
    const int tp = static_cast<int>(a.tp_group.size());
    MOREH_CHECK(tp >= 1 && a.tp_rank >= 0 && a.tp_rank < tp && a.tp_group[a.tp_rank] == a.rank,
                "tensor-parallel rank {} in group of {} must be this rank ({})", a.tp_rank, tp,
                a.rank);
    for (int r : a.tp_group) MOREH_CHECK(r >= 0 && r < a.world, "tp_group rank {} out of range", r);
    MOREH_CHECK((a.stage == 0) == (a.prev_rank < 0) &&
                    (a.stage == a.num_stages - 1) == (a.next_rank < 0) && a.prev_rank < a.world &&
                    a.next_rank < a.world,
                "stage {} of {} with previous rank {} and next rank {}", a.stage, a.num_stages,
                a.prev_rank, a.next_rank);
    MOREH_CHECK(a.timeout_ms > 0 && a.timeout_ms <= 3600000, "timeout_ms {} (1..3600000)",
                a.timeout_ms);
    MOREH_CHECK(a.tied_rank < a.world && a.tied_rank != a.rank &&
                    (a.tied_rank < 0 ||
                     (a.num_stages > 1 && (a.stage == 0 || a.stage == a.num_stages - 1))),
                "tied_rank {} for rank {} of stage {} of {}", a.tied_rank, a.rank, a.stage,
                a.num_stages);
    auto p = StageProgramFromJson(Field(j, "program"));
    if (!p.ok()) return p.status();
    a.program = std::move(p.value());
    MOREH_CHECK(a.program.spec.param_shards == 1 ||
                    a.program.spec.param_shards == static_cast<int>(a.dp_group.size()),
                "parameters sharded {} ways over a data-parallel group of {}",
                a.program.spec.param_shards, a.dp_group.size());
    MOREH_CHECK(a.program.spec.tp == static_cast<int>(a.tp_group.size()),
                "the program is for tensor parallelism {}, the group has {} ranks",
                a.program.spec.tp, a.tp_group.size());
    // The first and the last stage hold the copies of tied embeddings; the stages between none.
    const bool holds_copy = a.program.spec.model.tie_word_embeddings && a.num_stages > 1 &&
                            (a.stage == 0 || a.stage == a.num_stages - 1);
    MOREH_CHECK((a.tied_rank >= 0) == holds_copy,
                "stage {} of {}: tied_rank {} (tied embeddings: the first and the last stage name "
                "each other, the others none)",
                a.stage, a.num_stages, a.tied_rank);
    MOREH_CHECK(a.program.spec.first == (a.stage == 0) &&
                    a.program.spec.last == (a.stage == a.num_stages - 1),
                "the program is not for stage {} of {}", a.stage, a.num_stages);
    return a;
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("job_setup: ") + e.what());
  }
}

std::unique_ptr<StageJob> StageJob::Create(const StageAssignment& a, runtime::Allocator* device,
                                           const std::string& net_device) {
  std::unique_ptr<StageJob> job(new StageJob());
  job->a_ = a;
  job->device_ = device ? device : runtime::CpuAllocator();
  job->runner_ =
      std::make_unique<StageRunner>(a.program, device, a.adamw, static_cast<int>(a.dp_group.size()),
                                    a.dp_rank, a.distribute_param);
  StageRunner& r = *job->runner_;
  const auto& names = r.param_names();
  const int shards = a.program.spec.param_shards;
  if (!a.checkpoint_dir.empty()) {
    auto reader = io::CheckpointReader::Open(a.checkpoint_dir);
    reader.status().ThrowIfError();
    for (size_t i = 0; i < names.size(); ++i) {
      // Only this stage's tensors are read, each at its offset in its file.
      auto t = reader->Read(names[i]);
      MOREH_CHECK(t.ok(), "{}", t.status().message());
      const Shape full = FullParamShape(a.program.spec.model, names[i]);
      MOREH_CHECK(t->shape() == full, "{}: tensor '{}' has shape {} but the model needs {}",
                  a.checkpoint_dir, names[i], ShapeToString(t->shape()), ShapeToString(full));
      runtime::Tensor mine = ShardOf(t.value(), TpShardDim(a.program.spec.model, names[i]),
                                     a.program.spec.tp, a.tp_rank);
      if (shards > 1) mine = FlatShardOf(mine.To(DType::kF32), shards, a.dp_rank);
      r.parameter(i).CopyFrom(mine);
    }
  } else {
    const models::LlamaConfig& model = a.program.spec.model;
    for (size_t i = 0; i < names.size(); ++i) {
      // As the definition initialises it (models/llama_def.h), this rank's shard of it.
      auto spec = models::FindParam(model, names[i]);
      spec.status().ThrowIfError();
      const models::ParamSpec& p = spec.value();
      runtime::Tensor mine = runtime::Tensor::Empty(p.TpShape(a.program.spec.tp), DType::kF32);
      if (p.init == models::ParamInit::kOnes || p.init == models::ParamInit::kZeros) {
        mine.Fill(p.init == models::ParamInit::kOnes ? 1.0 : 0.0);
      } else {
        FillNormalShard(mine, p.shape, p.tp_dim, a.program.spec.tp, a.tp_rank, a.seed, p.name,
                        model.initializer_range);
      }
      if (shards > 1) mine = FlatShardOf(mine, shards, a.dp_rank);
      r.parameter(i).CopyFrom(mine);
    }
  }
  job->table_ = planner::OneFOneB(a.num_stages, a.num_micro_batches, false);
  auto t = comm::UcxTransport::Create(a.rank, net_device);
  t.status().ThrowIfError();
  job->transport_ = std::move(t.value());
  job->transport_->set_abort_flag(&job->aborted_);
  const auto timeout = std::chrono::milliseconds(a.timeout_ms);
  job->links_ =
      std::make_unique<UcxPipeLinks>(job->transport_.get(), a.prev_rank, a.next_rank, timeout);
  // The ring over UCX (on a GPU through host copies of the device buffers, until Connect replaces
  // it with NCCL).
  auto group = [&](const std::vector<int>& ranks, uint32_t channel) {
    std::unique_ptr<comm::Collectives> c =
        std::make_unique<comm::RingCollectives>(job->transport_.get(), ranks, channel, timeout);
    const bool host = device == nullptr || device->host_accessible();
    if (!host) c = std::make_unique<comm::HostStagedCollectives>(std::move(c), &device->memory());
    return c;
  };
  if (a.dp_group.size() > 1) {
    job->dp_ = group(a.dp_group, 16);
    job->runner_->set_data_parallel(job->dp_.get());
  }
  if (a.tp_group.size() > 1) {
    job->tp_ = group(a.tp_group, 17);
    job->runner_->set_tensor_parallel(job->tp_.get());
  }
  if (a.tied_rank >= 0) {  // the first stage's rank first in the pair
    job->tied_ = group({std::min(a.rank, a.tied_rank), std::max(a.rank, a.tied_rank)}, 22);
    job->runner_->set_tied_embeddings(job->tied_.get());
  }
  return job;
}

StageJob::~StageJob() = default;

void StageJob::Connect(const json& peers,
                       const std::function<bool(const std::string&, const std::string&)>& trusted) {
  MOREH_CHECK(peers.is_array(), "job_connect: 'peers' must be an array");
  std::set<int> want(a_.dp_group.begin(), a_.dp_group.end());
  want.insert(a_.tp_group.begin(), a_.tp_group.end());
  want.erase(a_.rank);
  if (a_.prev_rank >= 0) want.insert(a_.prev_rank);
  if (a_.next_rank >= 0) want.insert(a_.next_rank);
  if (a_.tied_rank >= 0) want.insert(a_.tied_rank);
  for (const json& p : peers) {
    const int rank = static_cast<int>(Int(p, "rank"));
    auto address = net::Base64Decode(Str(p, "address"));
    MOREH_CHECK(address.ok() && address->size() >= 16 && address->size() <= 65536,
                "job_connect: rank {}: the address is not a UCX worker address", rank);
    if (!want.count(rank)) continue;
    MOREH_CHECK(trusted(address.value(), p.value("address_mac", std::string())),
                "job_connect: rank {}: the address was not issued by a worker of this cluster",
                rank);
    Status s = transport_->Connect(rank, address.value());
    MOREH_CHECK(s.ok(), "job_connect: rank {}: {}", rank, s.message());
    want.erase(rank);
  }
  MOREH_CHECK(want.empty(), "job_connect: no address for rank {}", *want.begin());
#ifdef MOREH_WITH_CUDA
  if (!device_->host_accessible()) UseNccl();
#endif
}

#ifdef MOREH_WITH_CUDA
// GPU stages: the data- and tensor-parallel groups become NCCL communicators (replacing the ring
// through host copies that Create made), and the pipeline links NCCL links between neighbouring
// GPUs (replacing UCX from host copies). Every rank joins its groups in the same order (NCCL's
// init waits for the whole group, which job_connect reaches together): data-parallel, tensor-
// parallel, then the link to the previous stage and the one to the next, a chain that resolves
// from the first stage on.
std::string StageJob::NcclIdFor(const std::vector<int>& ranks, uint32_t channel) {
  const auto timeout = std::chrono::milliseconds(a_.timeout_ms);
  std::string id(comm::kNcclUniqueIdBytes, '\0');
  if (ranks[0] == a_.rank) {
    auto made = comm::NcclUniqueId();
    made.status().ThrowIfError();
    id = made.value();
    std::vector<comm::Request> sends;
    for (size_t i = 1; i < ranks.size(); ++i) {
      auto r = transport_->Send(ranks[i], id.data(), id.size(), channel, 0);
      r.status().ThrowIfError();
      sends.push_back(r.value());
    }
    transport_->WaitAll(sends, timeout).ThrowIfError();
  } else {
    auto r = transport_->Recv(ranks[0], id.data(), id.size(), channel, 0);
    r.status().ThrowIfError();
    transport_->Wait(r.value(), timeout).ThrowIfError();
  }
  return id;
}

void StageJob::UseNccl() {
  const auto timeout = std::chrono::milliseconds(a_.timeout_ms);
  const std::string& name = device_->device_name();  // "cuda:N"
  MOREH_CHECK(name.rfind("cuda:", 0) == 0, "job_connect: device '{}' is not a GPU", name);
  const int gpu = std::stoi(name.substr(5));
  auto group = [&](const std::vector<int>& ranks, uint32_t channel) {
    const std::string id = NcclIdFor(ranks, channel);
    const int me = static_cast<int>(std::find(ranks.begin(), ranks.end(), a_.rank) - ranks.begin());
    auto c = comm::NcclCollectives::Create(id, me, static_cast<int>(ranks.size()), gpu, timeout,
                                           &aborted_);
    c.status().ThrowIfError();
    return std::unique_ptr<comm::Collectives>(std::move(c.value()));
  };
  if (a_.dp_group.size() > 1) {
    dp_ = group(a_.dp_group, 18);
    runner_->set_data_parallel(dp_.get());
  }
  if (a_.tp_group.size() > 1) {
    tp_ = group(a_.tp_group, 19);
    runner_->set_tensor_parallel(tp_.get());
  }
  if (a_.tied_rank >= 0) {
    tied_ = group({std::min(a_.rank, a_.tied_rank), std::max(a_.rank, a_.tied_rank)}, 22);
    runner_->set_tied_embeddings(tied_.get());
  }
  std::vector<std::string> uses;  // logged: which of the job's traffic goes over NCCL
  if (a_.dp_group.size() > 1) {
    uses.push_back(fmt::format("data parallelism ({} ranks)", a_.dp_group.size()));
  }
  if (a_.tp_group.size() > 1) {
    uses.push_back(fmt::format("tensor parallelism ({} ranks)", a_.tp_group.size()));
  }
  if (a_.prev_rank >= 0 || a_.next_rank >= 0) uses.push_back("the pipeline links");
  if (!uses.empty()) {
    spdlog::info("rank {} on {}: NCCL for {}", a_.rank, name, fmt::join(uses, ", "));
  }
  if (a_.prev_rank < 0 && a_.next_rank < 0) return;
  // Activations on channel 20's link, gradients on 21's; the earlier stage makes both ids.
  auto link = [&](int lower, int upper, uint32_t channel, bool sender) {
    auto l = comm::NcclPeerLink::Create(NcclIdFor({lower, upper}, channel), sender, gpu, timeout,
                                        &aborted_);
    l.status().ThrowIfError();
    return std::move(l.value());
  };
  NcclPipeLinks::Links l;
  if (a_.prev_rank >= 0) {
    l.activations_in = link(a_.prev_rank, a_.rank, 20, false);
    l.gradients_out = link(a_.prev_rank, a_.rank, 21, true);
  }
  if (a_.next_rank >= 0) {
    l.activations_out = link(a_.rank, a_.next_rank, 20, true);
    l.gradients_in = link(a_.rank, a_.next_rank, 21, false);
  }
  links_ = std::make_unique<NcclPipeLinks>(std::move(l), a_.prev_rank, a_.next_rank);
}
#endif

json StageJob::Step(const json& m) {
  const int64_t step = Int(m, "step");
  const json& list = Field(m, "micro_batches");
  MOREH_CHECK(list.is_array() && static_cast<int>(list.size()) == a_.num_micro_batches,
              "job_step: {} micro-batches expected", a_.num_micro_batches);
  const StageSpec& s = a_.program.spec;
  const Shape bt{s.micro_batch, s.seq_len};
  auto tensor = [&](const json& j, const char* name, DType dt, const Shape& shape) {
    // Into the device's memory when the host can read it (checked below); a GPU stage gets them
    // from host memory at their first use.
    auto t = net::DecodeTensor(Field(j, name), device_->host_accessible() ? device_ : nullptr);
    MOREH_CHECK(t.ok(), "job_step: '{}': {}", name, t.status().message());
    MOREH_CHECK(t->dtype() == dt && t->shape() == shape, "job_step: '{}' is {} but must be {}{}",
                name, t->ToString(), DTypeName(dt), ShapeToString(shape));
    return t.value();
  };
  std::vector<MicroBatch> mbs;
  for (const json& j : list) {
    MicroBatch mb;
    mb.mask = tensor(j, "mask", DType::kI64, bt);
    if (s.first) {
      mb.ids = tensor(j, "ids", DType::kI64, bt);
      const int64_t* ids = mb.ids.data<int64_t>();
      for (int64_t i = 0; i < mb.ids.numel(); ++i) {
        MOREH_CHECK(ids[i] >= 0 && ids[i] < s.model.vocab_size,
                    "job_step: token id {} outside the vocabulary [0, {})", ids[i],
                    s.model.vocab_size);
      }
    }
    if (s.last) {
      mb.labels = tensor(j, "labels", DType::kI64, bt);
      mb.loss_weight = tensor(j, "loss_weight", DType::kF32, {});
    }
    mbs.push_back(std::move(mb));
  }
  // Loss scaling: the loss weights arrive scaled; each rank says whether its gradients overflowed.
  const bool check = m.contains("check_overflow") && Bool(m, "check_overflow");
  const bool eval = m.contains("eval") && Bool(m, "eval");
  runner_->ResetStats();
  device_->ResetPeak();
  links_->set_step(step);
  runner_->set_overflow_check(check && !eval);
  const double loss = eval ? runner_->Evaluate(mbs, links_.get())
                           : runner_->RunMicroBatches(table_[a_.stage], mbs, links_.get());
  const StageStats& st = runner_->stats();
  json reply = {{"loss", loss},
                {"forward_s", st.forward_s},
                {"backward_s", st.backward_s},
                {"wait_s", st.wait_s},
                {"peak_bytes", st.peak_bytes}};
  if (check) reply["found_overflow"] = st.found_overflow;
  return reply;
}

json StageJob::GradNorm(const json&) {
  runner_->ResetStats();
  runner_->ReduceGradients(dp_.get());
  return {{"grad_squares", runner_->GradSquares()},
          {"update_s", runner_->stats().update_s},
          {"peak_bytes", runner_->stats().peak_bytes}};
}

json StageJob::Update(const json& m) {
  const double lr = Num(m, "lr");
  MOREH_CHECK(lr >= 0 && std::isfinite(lr), "job_update: lr {} must be >= 0", lr);
  const double grad_scale = m.contains("grad_scale") ? Num(m, "grad_scale") : 1.0;
  MOREH_CHECK(grad_scale > 0 && std::isfinite(grad_scale),
              "job_update: grad_scale {} must be > 0 and finite", grad_scale);
  const bool skip = m.contains("skip") && Bool(m, "skip");
  runner_->Update(dp_.get(), lr, grad_scale, skip);
  return {{"update_s", runner_->stats().update_s}, {"peak_bytes", runner_->stats().peak_bytes}};
}

json StageJob::Save(const json& m) {
  // First, before any check that could fail on one replica only: every replica takes part.
  runner_->GatherMasters();  // where the master weights are sharded
  const std::string dir = Str(m, "tmp_dir");
  DType dt;
  MOREH_CHECK(ParseDType(Str(m, "dtype"), &dt) && IsFloating(dt),
              "job_save: dtype must be f32, "
              "bf16 or f16");
  MOREH_CHECK(std::filesystem::is_directory(dir), "job_save: '{}' is not a directory", dir);
  const int shards = a_.program.spec.param_shards;
  // With sharded parameters every replica takes part in the gathers; otherwise the first replica's
  // tensor-parallel ranks do. The first rank writes.
  const json nothing = {{"file", ""}, {"tensors", json::array()}, {"bytes", 0}};
  if (a_.dp_rank != 0 && shards == 1) return nothing;
  const std::string file = io::ShardFileName(a_.stage, a_.num_stages);
  std::vector<std::pair<std::string, runtime::Tensor>> tensors;
  int64_t bytes = 0;
  for (size_t i = 0; i < runner_->param_names().size(); ++i) {
    const std::string& n = runner_->param_names()[i];
    // The last stage's copy of tied embeddings is the first stage's tensor: written there.
    if (a_.tied_rank >= 0 && a_.stage > 0 && n == "model.embed_tokens.weight") continue;
    runtime::Tensor mine = runner_->parameter(i);
    if (shards > 1) {
      mine = GatherFlatShards(dp_.get(), mine,
                              TpParamShape(a_.program.spec.model, n, a_.program.spec.tp));
    }
    runtime::Tensor full = GatherShards(tp_.get(), mine, TpShardDim(a_.program.spec.model, n));
    if (a_.tp_rank != 0 || a_.dp_rank != 0) continue;
    tensors.emplace_back(n, full.To(dt));
    bytes += tensors.back().second.nbytes();
  }
  if (a_.tp_rank != 0 || a_.dp_rank != 0) return nothing;
  io::WriteSafetensors((std::filesystem::path(dir) / file).string(), tensors, {{"format", "pt"}})
      .ThrowIfError();
  json names = json::array();
  for (const auto& [n, t] : tensors) names.push_back(n);
  return {{"file", file}, {"tensors", names}, {"bytes", bytes}};
}

}  // namespace moreh::parallel
