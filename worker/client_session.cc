#include "worker/client_session.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "runtime/core/error.h"
#include "runtime/core/field_reader.h"
#include "runtime/executor.h"
#include "runtime/net/auth.h"
#include "runtime/net/base64.h"
#include "runtime/net/tensor_codec.h"
#include "runtime/parallel/stage_job.h"

namespace moreh::worker {
namespace asio = boost::asio;
using json = nlohmann::json;
using net::Msg;

namespace {
// The error reply to a request that failed on a job thread; out of device memory carries
// code OUT_OF_MEMORY (the client turns it into the reference platform's error).
json FailureReply(Msg request, const std::exception& e) {
  const bool oom = dynamic_cast<const OutOfMemoryError*>(&e) != nullptr;
  return net::Error(net::MsgName(request), e.what(), oom ? net::kOutOfMemory : "");
}

Msg OkOf(Msg t) {
  switch (t) {
    case Msg::kRunGraph:
      return Msg::kRunGraphOk;
    case Msg::kJobSetup:
      return Msg::kJobSetupOk;
    case Msg::kJobConnect:
      return Msg::kJobConnectOk;
    case Msg::kJobStep:
      return Msg::kJobStepOk;
    case Msg::kJobUpdate:
      return Msg::kJobUpdateOk;
    case Msg::kJobGradNorm:
      return Msg::kJobGradNormOk;
    case Msg::kJobSave:
      return Msg::kJobSaveOk;
    default:
      return Msg::kJobEndOk;
  }
}
}  // namespace

void LeaseTable::Drop(uint64_t lease) {
  grants_.erase(lease);
  auto [begin, end] = sessions_.equal_range(lease);
  std::vector<std::shared_ptr<ClientSession>> live;
  for (auto it = begin; it != end; ++it) {
    if (auto s = it->second.lock()) live.push_back(std::move(s));
  }
  sessions_.erase(begin, end);
  for (auto& s : live) s->EndJobs();
  for (auto it = sessions_.begin(); it != sessions_.end();) {  // forget sessions that are gone
    it = it->second.expired() ? sessions_.erase(it) : std::next(it);
  }
}

void LeaseTable::Admit(uint64_t lease, std::weak_ptr<ClientSession> s) {
  sessions_.emplace(lease, std::move(s));
}

ClientSession::ClientSession(WorkerContext* w, std::unique_ptr<SessionLink> link)
    : w_(w), link_(std::move(link)) {}

ClientSession::~ClientSession() {
  for (auto& [d, job] : jobs_) job->Abort();
}

void ClientSession::Refuse(Msg t, const std::string& message, std::string_view code) {
  link_->Send(net::Error(net::MsgName(t), message, code));
}

Status ClientSession::Handle(const json& m) {
  auto type = net::TypeOf(m);
  if (!type.ok()) return type.status();
  const Msg t = *type;
  if (lease_ == 0) {
    if (t != Msg::kHello) return Status::InvalidArgument("the first message must be 'hello'");
    return OnHello(m);
  }
  switch (t) {
    case Msg::kHello:
      Refuse(t, "hello was already said");
      return Status::Ok();
    case Msg::kPing:
      link_->Send(net::Message(Msg::kPingOk));
      return Status::Ok();
    case Msg::kRunGraph:
    case Msg::kJobSetup:
    case Msg::kJobConnect:
    case Msg::kJobStep:
    case Msg::kJobUpdate:
    case Msg::kJobGradNorm:
    case Msg::kJobSave:
    case Msg::kJobEnd:
      break;
    default:
      return Status::InvalidArgument(
          fmt::format("unknown message type '{}' for a worker", net::MsgName(t)));
  }
  auto device = net::DeviceOf(m);
  Status fields = device.ok() ? net::CheckWorkerRequest(t, m) : device.status();
  if (!fields.ok()) {
    Refuse(t, fields.message());
    return Status::Ok();
  }
  const LeaseTable::Grant* g = w_->leases.Find(lease_);
  if (!g) {
    Refuse(t, fmt::format("lease {} was dropped", lease_), net::kUnknownLease);
    return Status::Ok();
  }
  const int d = static_cast<int>(*device);
  if (std::find(g->devices.begin(), g->devices.end(), *device) == g->devices.end() ||
      d >= w_->num_devices()) {
    Refuse(t, fmt::format("device {} is not part of lease {}", d, lease_));
    return Status::Ok();
  }
  if (t == Msg::kRunGraph) {
    OnRunGraph(m, d);
  } else {
    OnJob(t, m, d);
  }
  return Status::Ok();
}

Status ClientSession::OnHello(const json& m) {
  auto h = net::WorkerHello::FromJson(m);
  if (!h.ok()) return h.status();
  if (h->version != net::kProtocolVersion) {
    return Status::InvalidArgument(fmt::format("protocol version {} (this worker speaks {})",
                                               h->version, net::kProtocolVersion));
  }
  const LeaseTable::Grant* g = w_->leases.Find(h->lease);
  if (!g || !net::SecretsEqual(g->secret_hash, net::HashSecret(h->secret))) {
    return Status::InvalidArgument("no valid lease presented");
  }
  lease_ = h->lease;
  w_->leases.Admit(lease_, weak_from_this());
  link_->Authenticated();
  link_->Send(net::Message(Msg::kHelloOk));
  return Status::Ok();
}

void ClientSession::RunOnDevice(int device, std::function<json()> work,
                                std::function<void(const json&)> on_reply) {
  ++in_flight_;
  link_->Hold();
  asio::post(*w_->device_threads.at(static_cast<size_t>(device)),
             [self = shared_from_this(), work = std::move(work),
              on_reply = std::move(on_reply)]() mutable {
               json reply = work();
               asio::post(self->w_->io,
                          [self, reply = std::move(reply), on_reply = std::move(on_reply)] {
                            --self->in_flight_;
                            self->link_->Unhold();
                            if (self->closed_) return;
                            if (on_reply) on_reply(reply);
                            self->link_->Send(reply);
                          });
             });
}

void ClientSession::OnRunGraph(const json& m, int device) {
  FieldReader f(m, "run_graph");
  const json& graph = f.Object("graph");
  const json& inputs = f.Has("inputs") ? f.Array("inputs", 4096) : json::array();
  if (!f.ok()) return Refuse(Msg::kRunGraph, f.status().message());
  runtime::Allocator* alloc = w_->allocators.at(static_cast<size_t>(device));
  // Decoded and run on the job thread.
  RunOnDevice(device, [graph, inputs, alloc]() -> json {
    try {
      auto g = Graph::FromJson(graph.dump());
      g.status().ThrowIfError();
      std::vector<runtime::Tensor> in;
      for (const json& t : inputs) {
        auto x = net::DecodeTensor(t, alloc);
        x.status().ThrowIfError();
        in.push_back(std::move(x.value()));
      }
      auto compiled = runtime::Compile(std::move(g.value()));
      runtime::Executor ex(alloc);
      alloc->ResetPeak();
      const auto outs = ex.Run(*compiled, std::move(in));
      json jo = json::array();
      for (const auto& o : outs) jo.push_back(net::EncodeTensor(o));
      json reply = net::Message(Msg::kRunGraphOk);
      reply["outputs"] = jo;
      reply["peak_bytes"] = alloc->peak_bytes();
      return reply;
    } catch (const std::exception& e) {
      return FailureReply(Msg::kRunGraph, e);
    }
  });
}

void ClientSession::AddJob(int device, std::shared_ptr<parallel::StageJob> job) {
  if (!jobs_.count(device)) link_->Hold();
  jobs_[device] = std::move(job);
}

void ClientSession::RemoveJob(int device) {
  auto it = jobs_.find(device);
  if (it == jobs_.end()) return;
  it->second->Abort();
  jobs_.erase(it);
  link_->Unhold();
}

// Pipeline jobs (runtime/parallel/stage_job.h): job_setup builds the stage on the device's job
// thread; job_connect / job_step / job_update / job_save run there too; job_end drops it.
void ClientSession::OnJob(Msg t, const json& m, int device) {
  runtime::Allocator* alloc = w_->allocators.at(static_cast<size_t>(device));
  if (t == Msg::kJobSetup) {
    if (jobs_.count(device) || setting_up_.count(device)) {
      return Refuse(t, fmt::format("device {} already runs a job", device));
    }
    FieldReader f(m, "job_setup");
    const json& assignment = f.Object("assignment");
    if (!f.ok()) return Refuse(t, f.status().message());
    auto a = parallel::StageAssignment::FromJson(assignment);
    if (!a.ok()) return Refuse(t, a.status().message());
    setting_up_.insert(device);
    auto job = std::make_shared<std::shared_ptr<parallel::StageJob>>();
    const std::string key = w_->cluster_key, net_device = w_->net_device;
    RunOnDevice(
        device,
        [a = std::move(a.value()), alloc, job, key, net_device]() -> json {
          try {
            *job = parallel::StageJob::Create(a, alloc, net_device);
            json reply = net::Message(Msg::kJobSetupOk);
            reply["address"] = net::Base64Encode((*job)->address());
            reply["address_mac"] = net::Mac(key, (*job)->address());
            reply["peak_bytes"] = alloc->peak_bytes();
            reply["live_bytes"] = alloc->live_bytes();
            return reply;
          } catch (const std::exception& e) {
            job->reset();
            return FailureReply(Msg::kJobSetup, e);
          }
        },
        [self = shared_from_this(), job, device](const json&) {
          self->setting_up_.erase(device);
          if (*job) self->AddJob(device, *job);
        });
    return;
  }
  if (t == Msg::kJobEnd) {
    RemoveJob(device);
    link_->Send(net::Message(Msg::kJobEndOk));
    return;
  }
  auto it = jobs_.find(device);
  if (it == jobs_.end()) {
    return Refuse(t, fmt::format("no job on device {}; send job_setup", device));
  }
  std::shared_ptr<parallel::StageJob> job = it->second;
  const std::string key = w_->cluster_key;
  RunOnDevice(device, [job, t, m, key]() -> json {
    json reply;
    try {
      if (t == Msg::kJobConnect) {
        FieldReader f(m, "job_connect");
        const json& peers = f.Array("peers", 1 << 16);
        f.status().ThrowIfError();
        job->Connect(peers, [&key](const std::string& addr, const std::string& mac) {
          return net::SecretsEqual(net::Mac(key, addr), mac);
        });
        reply = json::object();
      } else if (t == Msg::kJobStep) {
        reply = job->Step(m);
      } else if (t == Msg::kJobUpdate) {
        reply = job->Update(m);
      } else if (t == Msg::kJobGradNorm) {
        reply = job->GradNorm(m);
      } else {
        reply = job->Save(m);
      }
      reply["type"] = net::MsgName(OkOf(t));
    } catch (const std::exception& e) {
      reply = FailureReply(t, e);
    }
    return reply;
  });
}

void ClientSession::EndJobs() {
  for (auto& [d, job] : jobs_) {
    job->Abort();
    link_->Unhold();
  }
  jobs_.clear();
}

void ClientSession::Closed() {
  closed_ = true;
  EndJobs();
}

}  // namespace moreh::worker
