#include "runtime/net/protocol.h"

#include <fmt/format.h>

#include <array>
#include <cctype>

namespace moreh::net {
using json = nlohmann::json;

namespace {
constexpr std::string_view kNames[] = {
#define MOREH_MESSAGE(id, name) name,
#include "runtime/net/messages.def"
#undef MOREH_MESSAGE
};

// Limits on what a peer may claim (generous for real clusters, small enough to bound memory).
constexpr size_t kMaxName = 255;      // node and device names, sizes
constexpr size_t kMaxAddress = 300;   // HOST:PORT
constexpr size_t kMaxSecret = 256;    // keys, tokens, secrets, hashes
constexpr size_t kMaxDevices = 4096;  // per node or per lease
constexpr int64_t kMaxDeviceId = 65535;
constexpr int64_t kMaxMemory = int64_t{1} << 50;  // 1 PiB per device
constexpr int64_t kMaxPid = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxVdevId = 1 << 20;
constexpr double kMaxRate = 1e18;  // FLOP/s and bytes/s

// HOST:PORT with a port in [1, 65535].
void CheckAddress(FieldReader& f, std::string_view key, const std::string& a) {
  const size_t colon = a.rfind(':');
  int port = 0;
  bool digits =
      colon != std::string::npos && colon > 0 && colon + 1 < a.size() && a.size() - colon - 1 <= 5;
  for (size_t i = colon + 1; digits && i < a.size(); ++i) {
    digits = std::isdigit(static_cast<unsigned char>(a[i])) != 0;
    port = port * 10 + (a[i] - '0');
  }
  if (!digits || port < 1 || port > 65535) {
    f.FailField(key, fmt::format("is '{}', not HOST:PORT with a port in [1, 65535]", a));
  }
}

void CheckNotEmpty(FieldReader& f, std::string_view key, const std::string& v) {
  if (f.ok() && v.empty()) f.FailField(key, "must not be empty");
}

// The message's own type for error messages (the receiver may share one parser among several).
std::string Where(const json& m, const char* fallback) {
  const auto t = m.is_object() ? m.find("type") : m.end();
  if (t == m.end() || !t->is_string()) return fallback;
  return t->get<std::string>().substr(0, 64);
}

template <typename T>
StatusOr<T> Done(const FieldReader& f, T v) {
  if (!f.ok()) return f.status();
  return v;
}

std::vector<json> ToJsonAll(const auto& items) {
  std::vector<json> out;
  for (const auto& i : items) out.push_back(i.ToJson());
  return out;
}
}  // namespace

std::string_view MsgName(Msg m) { return kNames[static_cast<size_t>(m)]; }

std::optional<Msg> MsgFromName(std::string_view name) {
  for (size_t i = 0; i < std::size(kNames); ++i) {
    if (kNames[i] == name) return static_cast<Msg>(i);
  }
  return std::nullopt;
}

json Message(Msg m) { return {{"type", MsgName(m)}}; }

json Message(Msg m, json fields) {
  json out = fields.is_object() ? std::move(fields) : json::object();
  out["type"] = MsgName(m);
  return out;
}

StatusOr<Msg> TypeOf(const json& m) {
  const auto t = m.find("type");
  if (!m.is_object() || t == m.end() || !t->is_string()) {
    return Status::InvalidArgument("message has no string 'type'");
  }
  const std::string& name = t->get_ref<const std::string&>();
  auto msg = MsgFromName(name);
  if (!msg) {
    return Status::InvalidArgument(fmt::format("unknown message type '{}'",
                                               name.substr(0, std::min<size_t>(name.size(), 64))));
  }
  return *msg;
}

json ErrorReply::ToJson() const {
  json j = Message(Msg::kError);
  j["request"] = request;
  j["message"] = message;
  if (!code.empty()) j["code"] = code;
  if (code == kNotEnoughDevices) {
    j["needed"] = needed;
    j["free"] = free;
    j["alive"] = alive;
  }
  return j;
}

StatusOr<ErrorReply> ErrorReply::FromJson(const json& m) {
  FieldReader f(m, "error");
  ErrorReply e;
  e.request = f.OptStr("request", "", kMaxName);
  e.message = f.OptStr("message", "", 1 << 16);
  e.code = f.OptStr("code", "", kMaxName);
  e.needed = f.OptInt("needed", 0, 0, FieldReader::kIntMax);
  e.free = f.OptInt("free", 0, 0, FieldReader::kIntMax);
  e.alive = f.OptInt("alive", 0, 0, FieldReader::kIntMax);
  return Done(f, e);
}

json Error(std::string_view request, std::string_view message, std::string_view code) {
  ErrorReply e;
  e.request = request;
  e.message = message;
  e.code = code;
  return e.ToJson();
}

const std::vector<std::pair<std::string, int>>& DeviceSizes() {
  static const auto* table = new std::vector<std::pair<std::string, int>>{
      {"Small", 1},     {"Medium", 2},     {"Large", 4},     {"xLarge", 8},   {"1.5xLarge", 12},
      {"2xLarge", 16},  {"3xLarge", 24},   {"4xLarge", 32},  {"6xLarge", 48}, {"8xLarge", 64},
      {"12xLarge", 96}, {"24xLarge", 192}, {"48xLarge", 384}};
  return *table;
}

int DeviceSizeCount(std::string_view name) {
  auto lower = [](std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
  };
  const std::string want = lower(name);
  for (const auto& [n, count] : DeviceSizes()) {
    if (lower(n) == want) return count;
  }
  return -1;
}

// ---- To the scheduler ---------------------------------------------------------------------------
json SchedulerHello::ToJson() const {
  json j = Message(Msg::kHello);
  j["version"] = version;
  if (role == Role::kWorker) {
    j["role"] = "worker";
    j["key"] = key;
  } else {
    j["role"] = "client";
    j["token"] = token;
  }
  return j;
}

StatusOr<SchedulerHello> SchedulerHello::FromJson(const json& m) {
  FieldReader f(m, "hello");
  SchedulerHello h;
  h.version = f.Int("version", 0, 1 << 20);
  const std::string role = f.Str("role", kMaxName);
  if (f.ok() && role == "worker") {
    h.role = Role::kWorker;
    h.key = f.Str("key", kMaxSecret);
  } else if (f.ok() && role == "client") {
    h.role = Role::kClient;
    h.token = f.Str("token", kMaxSecret);
    CheckNotEmpty(f, "token", h.token);
  } else if (f.ok()) {
    f.FailField("role", fmt::format("is '{}'; it must be 'worker' or 'client'", role));
  }
  return Done(f, h);
}

json WorkerProfile::ToJson() const {
  json j = {{"gemm_flops_f32", gemm_flops_f32},
            {"memory_bandwidth", memory_bandwidth},
            {"threads", threads},
            {"host_cores", host_cores},
            {"loaded_latency_s", loaded_latency_s},
            {"link_bandwidth", link_bandwidth}};
  if (gemm_flops_bf16 > 0) j["gemm_flops_bf16"] = gemm_flops_bf16;
  if (gpu_memory_bandwidth > 0) j["gpu_memory_bandwidth"] = gpu_memory_bandwidth;
  return j;
}

WorkerProfile WorkerProfile::Read(FieldReader& f) {
  WorkerProfile p;
  p.gemm_flops_f32 = f.OptNum("gemm_flops_f32", 0, 0, kMaxRate);
  p.memory_bandwidth = f.OptNum("memory_bandwidth", 0, 0, kMaxRate);
  p.threads = f.OptInt("threads", 0, 0, 1 << 20);
  p.host_cores = f.OptInt("host_cores", 0, 0, 1 << 20);
  p.loaded_latency_s = f.OptNum("loaded_latency_s", 0, 0, 3600);
  p.link_bandwidth = f.OptNum("link_bandwidth", 0, 0, kMaxRate);
  p.gemm_flops_bf16 = f.OptNum("gemm_flops_bf16", 0, 0, kMaxRate);
  p.gpu_memory_bandwidth = f.OptNum("gpu_memory_bandwidth", 0, 0, kMaxRate);
  return p;
}

json DeviceInfo::ToJson() const {
  return {{"id", id}, {"kind", kind}, {"name", name}, {"memory_bytes", memory_bytes}};
}

DeviceInfo DeviceInfo::Read(FieldReader& f) {
  DeviceInfo d;
  d.id = f.Int("id", 0, kMaxDeviceId);
  d.kind = f.Str("kind", kMaxName);
  if (f.ok() && d.kind != "cpu" && d.kind != "cuda") {
    f.FailField("kind", fmt::format("is '{}'; it must be 'cpu' or 'cuda'", d.kind));
  }
  d.name = f.Str("name", kMaxName);
  d.memory_bytes = f.Int("memory_bytes", 1, kMaxMemory);
  return d;
}

json RegisterWorker::ToJson() const {
  json j = Message(Msg::kRegisterWorker);
  j["node"] = node;
  j["address"] = address;
  j["devices"] = ToJsonAll(devices);
  j["profile"] = profile.ToJson();
  return j;
}

StatusOr<RegisterWorker> RegisterWorker::FromJson(const json& m) {
  FieldReader f(m, "register_worker");
  RegisterWorker r;
  r.node = f.Str("node", kMaxName);
  CheckNotEmpty(f, "node", r.node);
  r.address = f.Str("address", kMaxAddress);
  if (f.ok()) CheckAddress(f, "address", r.address);
  const json& devices = f.Array("devices", kMaxDevices);
  if (f.ok() && devices.empty()) f.FailField("devices", "must not be empty");
  for (size_t i = 0; i < devices.size() && f.ok(); ++i) {
    FieldReader d = f.Element(devices, i, "devices");
    r.devices.push_back(DeviceInfo::Read(d));
    for (size_t k = 0; k + 1 < r.devices.size() && f.ok(); ++k) {
      if (r.devices[k].id == r.devices.back().id) {
        f.FailField("devices", fmt::format("lists device id {} twice", r.devices[k].id));
      }
    }
  }
  if (f.Has("profile")) {
    FieldReader p = f.Sub("profile");
    r.profile = WorkerProfile::Read(p);
  }
  return Done(f, r);
}

json AllocateRequest::ToJson() const {
  json j = Message(Msg::kAllocate);
  j["request_id"] = request_id;
  j["pid"] = pid;
  if (!device_size.empty()) j["device_size"] = device_size;
  if (num_devices > 0) j["num_devices"] = num_devices;
  return j;
}

StatusOr<AllocateRequest> AllocateRequest::FromJson(const json& m) {
  FieldReader f(m, "allocate");
  AllocateRequest r;
  r.request_id = f.Str("request_id", 128);
  CheckNotEmpty(f, "request_id", r.request_id);
  r.pid = f.OptInt("pid", 0, 0, kMaxPid);
  r.device_size = f.OptStr("device_size", "", kMaxName);
  if (f.Has("device_size")) CheckNotEmpty(f, "device_size", r.device_size);
  r.num_devices = f.OptInt("num_devices", 0, 1, kMaxDevices);
  if (f.ok() && f.Has("device_size") && f.Has("num_devices")) {
    f.Fail("give 'device_size' or 'num_devices', not both");
  }
  return Done(f, r);
}

json LeaseCredentials::ToJson(Msg type) const {
  json j = Message(type);
  j["lease"] = lease;
  j["secret"] = secret;
  return j;
}

StatusOr<LeaseCredentials> LeaseCredentials::FromJson(const json& m) {
  FieldReader f(m, Where(m, "renew"));
  LeaseCredentials c;
  c.lease = f.U64("lease", 1);
  c.secret = f.Str("secret", kMaxSecret);
  return Done(f, c);
}

StatusOr<VdevSize> VdevSize::FromJson(const json& m) {
  FieldReader f(m, Where(m, "vdev_add"));
  VdevSize v;
  v.size = f.Str("size", kMaxName);
  CheckNotEmpty(f, "size", v.size);
  return Done(f, v);
}

StatusOr<VdevId> VdevId::FromJson(const json& m) {
  FieldReader f(m, Where(m, "vdev_switch"));
  VdevId v;
  v.id = f.Int("id", 0, kMaxVdevId);
  return Done(f, v);
}

// ---- From the scheduler -------------------------------------------------------------------------
json RegisterOk::ToJson() const {
  json j = Message(Msg::kRegisterOk);
  j["heartbeat_period_ms"] = heartbeat_period_ms;
  return j;
}

StatusOr<RegisterOk> RegisterOk::FromJson(const json& m) {
  FieldReader f(m, "register_ok");
  RegisterOk r;
  r.heartbeat_period_ms = f.Int("heartbeat_period_ms", 1, 3600000);
  return Done(f, r);
}

json GrantedDeviceInfo::ToJson() const {
  return {
      {"node", node}, {"address", address},           {"device", device},           {"kind", kind},
      {"name", name}, {"memory_bytes", memory_bytes}, {"profile", profile.ToJson()}};
}

GrantedDeviceInfo GrantedDeviceInfo::Read(FieldReader& f) {
  GrantedDeviceInfo g;
  g.node = f.Str("node", kMaxName);
  g.address = f.Str("address", kMaxAddress);
  if (f.ok()) CheckAddress(f, "address", g.address);
  g.device = f.Int("device", 0, kMaxDeviceId);
  g.kind = f.Str("kind", kMaxName);
  g.name = f.Str("name", kMaxName);
  g.memory_bytes = f.Int("memory_bytes", 1, kMaxMemory);
  if (f.Has("profile")) {
    FieldReader p = f.Sub("profile");
    g.profile = WorkerProfile::Read(p);
  }
  return g;
}

json AllocateOk::ToJson() const {
  json j = Message(Msg::kAllocateOk);
  j["lease"] = lease;
  j["secret"] = secret;
  j["ttl_ms"] = ttl_ms;
  j["devices"] = ToJsonAll(devices);
  return j;
}

StatusOr<AllocateOk> AllocateOk::FromJson(const json& m) {
  FieldReader f(m, "allocate_ok");
  AllocateOk a;
  a.lease = f.U64("lease", 1);
  a.secret = f.Str("secret", kMaxSecret);
  a.ttl_ms = f.Int("ttl_ms", 1, 86400000);
  const json& devices = f.Array("devices", kMaxDevices);
  if (f.ok() && devices.empty()) f.FailField("devices", "must not be empty");
  for (size_t i = 0; i < devices.size() && f.ok(); ++i) {
    FieldReader d = f.Element(devices, i, "devices");
    a.devices.push_back(GrantedDeviceInfo::Read(d));
  }
  return Done(f, a);
}

json Busy::ToJson() const {
  json j = Message(Msg::kBusy);
  j["pid"] = pid;
  j["vdev"] = vdev;
  return j;
}

StatusOr<Busy> Busy::FromJson(const json& m) {
  FieldReader f(m, "busy");
  Busy b;
  b.pid = f.Int("pid", 0, kMaxPid);
  b.vdev = f.OptInt("vdev", 0, 0, kMaxVdevId);
  return Done(f, b);
}

json LeaseLost::ToJson() const {
  json j = Message(Msg::kLeaseLost);
  j["lease"] = lease;
  j["reason"] = reason;
  return j;
}

StatusOr<LeaseLost> LeaseLost::FromJson(const json& m) {
  FieldReader f(m, "lease_lost");
  LeaseLost l;
  l.lease = f.U64("lease", 1);
  l.reason = f.OptStr("reason", "", 1 << 12);
  return Done(f, l);
}

json LeaseGranted::ToJson() const {
  json j = Message(Msg::kLeaseGranted);
  j["lease"] = lease;
  j["secret_hash"] = secret_hash;
  j["devices"] = devices;
  return j;
}

StatusOr<LeaseGranted> LeaseGranted::FromJson(const json& m) {
  FieldReader f(m, "lease_granted");
  LeaseGranted g;
  g.lease = f.U64("lease", 1);
  g.secret_hash = f.Str("secret_hash", kMaxSecret);
  const json& devices = f.Array("devices", kMaxDevices);
  for (size_t i = 0; i < devices.size() && f.ok(); ++i) {
    if (!devices[i].is_number_integer() || devices[i].get<int64_t>() < 0 ||
        devices[i].get<int64_t>() > kMaxDeviceId) {
      f.FailField("devices", fmt::format("[{}] must be a device id in [0, {}]", i, kMaxDeviceId));
    } else {
      g.devices.push_back(devices[i].get<int64_t>());
    }
  }
  return Done(f, g);
}

json DropLease::ToJson() const {
  json j = Message(Msg::kDropLease);
  j["lease"] = lease;
  return j;
}

StatusOr<DropLease> DropLease::FromJson(const json& m) {
  FieldReader f(m, "drop_lease");
  DropLease d;
  d.lease = f.U64("lease", 1);
  return Done(f, d);
}

json Vdevs::ToJson() const {
  json list = json::array();
  for (const auto& d : devices) {
    list.push_back({{"id", d.id},
                    {"size", d.size},
                    {"num_devices", d.num_devices},
                    {"current", d.current},
                    {"pid", d.pid},
                    {"lease", d.lease}});
  }
  json j = Message(Msg::kVdevs);
  j["devices"] = list;
  j["current"] = current;
  return j;
}

StatusOr<Vdevs> Vdevs::FromJson(const json& m) {
  FieldReader f(m, "vdevs");
  Vdevs v;
  const json& devices = f.Array("devices", 1024);
  for (size_t i = 0; i < devices.size() && f.ok(); ++i) {
    FieldReader d = f.Element(devices, i, "devices");
    VirtualDeviceInfo x;
    x.id = d.Int("id", 0, kMaxVdevId);
    x.size = d.Str("size", kMaxName);
    x.num_devices = d.Int("num_devices", -1, FieldReader::kIntMax);
    x.current = d.Bool("current");
    x.pid = d.Int("pid", 0, kMaxPid);
    x.lease = d.U64("lease");
    v.devices.push_back(std::move(x));
  }
  v.current = f.Int("current", 0, kMaxVdevId);
  return Done(f, v);
}

json ClusterView::ToJson() const {
  json list = json::array();
  for (const NodeView& n : nodes) {
    json devs = json::array();
    for (const auto& d : n.devices) {
      devs.push_back({{"id", d.id},
                      {"kind", d.kind},
                      {"name", d.name},
                      {"memory_bytes", d.memory_bytes},
                      {"lease", d.lease}});
    }
    list.push_back({{"name", n.name},
                    {"address", n.address},
                    {"alive", n.alive},
                    {"devices", devs},
                    {"profile", n.profile.ToJson()}});
  }
  return {{"nodes", list}, {"num_leases", num_leases}, {"free_devices", free_devices}};
}

StatusOr<ClusterView> ClusterView::FromJson(const json& m) {
  FieldReader top(m, "cluster_status_ok");
  FieldReader f = top.Sub("cluster");
  ClusterView v;
  const json& nodes = f.Array("nodes", 1 << 16);
  for (size_t i = 0; i < nodes.size() && f.ok(); ++i) {
    FieldReader n = f.Element(nodes, i, "nodes");
    NodeView node;
    node.name = n.Str("name", kMaxName);
    node.address = n.Str("address", kMaxAddress);
    node.alive = n.Bool("alive");
    const json& devices = n.Array("devices", kMaxDevices);
    for (size_t k = 0; k < devices.size() && f.ok(); ++k) {
      FieldReader d = n.Element(devices, k, "devices");
      NodeView::Device dev;
      dev.id = d.Int("id", 0, kMaxDeviceId);
      dev.kind = d.Str("kind", kMaxName);
      dev.name = d.Str("name", kMaxName);
      dev.memory_bytes = d.Int("memory_bytes", 0, kMaxMemory);
      dev.lease = d.U64("lease");
      node.devices.push_back(std::move(dev));
    }
    if (n.Has("profile")) {
      FieldReader p = n.Sub("profile");
      node.profile = WorkerProfile::Read(p);
    }
    v.nodes.push_back(std::move(node));
  }
  v.num_leases = f.Int("num_leases", 0);
  v.free_devices = f.Int("free_devices", 0);
  return Done(f, v);
}

// ---- To a worker --------------------------------------------------------------------------------
json WorkerHello::ToJson() const {
  json j = Message(Msg::kHello);
  j["version"] = version;
  j["lease"] = lease;
  j["secret"] = secret;
  return j;
}

StatusOr<WorkerHello> WorkerHello::FromJson(const json& m) {
  FieldReader f(m, "hello");
  WorkerHello h;
  h.version = f.Int("version", 0, 1 << 20);
  h.lease = f.U64("lease", 1);
  h.secret = f.Str("secret", kMaxSecret);
  return Done(f, h);
}

Status CheckWorkerRequest(Msg type, const json& m) {
  FieldReader f(m, std::string(MsgName(type)));
  switch (type) {
    case Msg::kRunGraph:
      f.Object("graph");
      if (f.Has("inputs")) f.Array("inputs", 4096);
      break;
    case Msg::kJobSetup:
      f.Object("assignment");
      break;
    case Msg::kJobConnect:
      f.Array("peers", 1 << 16);
      break;
    case Msg::kJobStep:
      f.Int("step", 0);
      f.Array("micro_batches", 4096);
      f.OptBool("check_overflow", false);
      f.OptBool("eval", false);
      break;
    case Msg::kJobGradNorm:
      break;
    case Msg::kJobUpdate:
      f.Num("lr", 0);
      f.OptNum("grad_scale", 1, 0);
      f.OptBool("skip", false);
      break;
    case Msg::kJobSave: {
      const std::string dir = f.Str("tmp_dir");
      CheckNotEmpty(f, "tmp_dir", dir);
      const std::string dtype = f.Str("dtype", kMaxName);
      if (f.ok() && dtype != "f32" && dtype != "bf16" && dtype != "f16") {
        f.FailField("dtype", fmt::format("is '{}'; it must be f32, bf16 or f16", dtype));
      }
      break;
    }
    default:
      break;
  }
  return f.status();
}

StatusOr<int64_t> DeviceOf(const json& m) {
  FieldReader f(m, Where(m, "request"));
  const int64_t d = f.Int("device", 0, kMaxDeviceId);
  return Done(f, d);
}

}  // namespace moreh::net
