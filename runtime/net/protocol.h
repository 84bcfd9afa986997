// The control-plane protocol, defined once (docs/protocol.md): the version, every message type
// (messages.def), the device-size table, and a struct per message that travels with fields, each
// with ToJson and a FromJson that checks every field's type and range and names the message and
// the field in its error ("allocate: 'pid' must be an integer, not a string"). Daemons and clients
// read network messages only through these (or, for a job's payload, the FieldReader of
// stage_job.cc), so nothing a peer sends reaches the code behind them unchecked.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/core/field_reader.h"
#include "runtime/core/status.h"

namespace moreh::net {

inline constexpr int kProtocolVersion = 1;

enum class Msg : uint8_t {
#define MOREH_MESSAGE(id, name) id,
#include "runtime/net/messages.def"
#undef MOREH_MESSAGE
};
std::string_view MsgName(Msg m);
std::optional<Msg> MsgFromName(std::string_view name);
// {"type": "<name>"}, and with the fields of `fields` (an object) added.
nlohmann::json Message(Msg m);
nlohmann::json Message(Msg m, nlohmann::json fields);
// The type of a decoded frame (the frame decoder checked that "type" is a string).
StatusOr<Msg> TypeOf(const nlohmann::json& m);

// Error codes an error reply may carry.
inline constexpr std::string_view kOutOfMemory = "OUT_OF_MEMORY";
// allocate: not enough devices now (needed, free, alive say what there is); the client waits.
inline constexpr std::string_view kNotEnoughDevices = "NOT_ENOUGH_DEVICES";
// A lease, secret or user the receiver does not know.
inline constexpr std::string_view kUnknownLease = "UNKNOWN_LEASE";

// {"type": "error", "request", "message", "code"?, "needed"?, "free"?, "alive"?}
struct ErrorReply {
  std::string request;  // the type of the refused request ("" for a refused connection)
  std::string message;
  std::string code;
  int64_t needed = 0, free = 0, alive = 0;  // code NOT_ENOUGH_DEVICES
  nlohmann::json ToJson() const;
  static StatusOr<ErrorReply> FromJson(const nlohmann::json& m);
};
nlohmann::json Error(std::string_view request, std::string_view message,
                     std::string_view code = "");

// The reference platform's device sizes: name -> number of devices (Small 1 ... 48xLarge 384).
// Names match case-insensitively; -1 for an unknown name.
int DeviceSizeCount(std::string_view name);
const std::vector<std::pair<std::string, int>>& DeviceSizes();

// ---- To the scheduler ---------------------------------------------------------------------------
enum class Role { kWorker, kClient };
struct SchedulerHello {
  int64_t version = kProtocolVersion;
  Role role = Role::kClient;
  std::string key;    // a worker's cluster key
  std::string token;  // a client's user token
  nlohmann::json ToJson() const;
  static StatusOr<SchedulerHello> FromJson(const nlohmann::json& m);
};

// A worker's start-up measurements (the planner's "DB"); 0 means not measured.
struct WorkerProfile {
  double gemm_flops_f32 = 0;    // per CPU second x threads: one device alone
  double memory_bandwidth = 0;  // bytes/s, with the device's threads
  int64_t threads = 0, host_cores = 0;
  double loaded_latency_s = 0;  // one-way UCX latency while every core is busy
  double link_bandwidth = 0;    // bytes/s between two processes of the host (NCCL between GPUs)
  double gemm_flops_bf16 = 0, gpu_memory_bandwidth = 0;  // the first GPU, with --devices cuda:all
  nlohmann::json ToJson() const;
  static WorkerProfile Read(FieldReader& f);
};

struct DeviceInfo {
  int64_t id = 0;
  std::string kind;  // "cpu" or "cuda"
  std::string name;
  int64_t memory_bytes = 0;
  nlohmann::json ToJson() const;
  static DeviceInfo Read(FieldReader& f);
};

struct RegisterWorker {
  std::string node;
  std::string address;  // HOST:PORT of the worker's control endpoint
  std::vector<DeviceInfo> devices;
  WorkerProfile profile;
  nlohmann::json ToJson() const;
  static StatusOr<RegisterWorker> FromJson(const nlohmann::json& m);
};

struct AllocateRequest {
  std::string request_id;  // client-chosen: a retry returns the same grant
  int64_t pid = 0;
  std::string device_size;  // or
  int64_t num_devices = 0;  // or neither: the token's current virtual device
  nlohmann::json ToJson() const;
  static StatusOr<AllocateRequest> FromJson(const nlohmann::json& m);
};

// renew and release.
struct LeaseCredentials {
  uint64_t lease = 0;
  std::string secret;
  nlohmann::json ToJson(Msg type) const;
  static StatusOr<LeaseCredentials> FromJson(const nlohmann::json& m);
};

// vdev_add and vdev_set_size.
struct VdevSize {
  std::string size;
  static StatusOr<VdevSize> FromJson(const nlohmann::json& m);
};
// vdev_remove and vdev_switch.
struct VdevId {
  int64_t id = 0;
  static StatusOr<VdevId> FromJson(const nlohmann::json& m);
};

// ---- From the scheduler -------------------------------------------------------------------------
struct RegisterOk {
  int64_t heartbeat_period_ms = 1000;
  nlohmann::json ToJson() const;
  static StatusOr<RegisterOk> FromJson(const nlohmann::json& m);
};

struct GrantedDeviceInfo {
  std::string node, address;
  int64_t device = 0;
  std::string kind, name;
  int64_t memory_bytes = 0;
  WorkerProfile profile;
  nlohmann::json ToJson() const;
  static GrantedDeviceInfo Read(FieldReader& f);
};

struct AllocateOk {
  uint64_t lease = 0;
  std::string secret;
  int64_t ttl_ms = 0;
  std::vector<GrantedDeviceInfo> devices;
  nlohmann::json ToJson() const;
  static StatusOr<AllocateOk> FromJson(const nlohmann::json& m);
};

struct Busy {
  int64_t pid = 0, vdev = 0;
  nlohmann::json ToJson() const;
  static StatusOr<Busy> FromJson(const nlohmann::json& m);
};

struct LeaseLost {
  uint64_t lease = 0;
  std::string reason;
  nlohmann::json ToJson() const;
  static StatusOr<LeaseLost> FromJson(const nlohmann::json& m);
};

// To each worker with devices in a new lease: the hash of its secret (runtime/net/auth.h), which
// the worker compares with the hash of what a client presents.
struct LeaseGranted {
  uint64_t lease = 0;
  std::string secret_hash;
  std::vector<int64_t> devices;
  nlohmann::json ToJson() const;
  static StatusOr<LeaseGranted> FromJson(const nlohmann::json& m);
};

struct DropLease {
  uint64_t lease = 0;
  nlohmann::json ToJson() const;
  static StatusOr<DropLease> FromJson(const nlohmann::json& m);
};

struct VirtualDeviceInfo {
  int64_t id = 0;
  std::string size;
  int64_t num_devices = 0;
  bool current = false;
  int64_t pid = 0;     // the process using it (0: none)
  uint64_t lease = 0;  // the lease holding it (0: none)
};
struct Vdevs {
  std::vector<VirtualDeviceInfo> devices;
  int64_t current = 0;
  nlohmann::json ToJson() const;
  static StatusOr<Vdevs> FromJson(const nlohmann::json& m);
};

// cluster_status_ok {cluster}: the scheduler's view (moreh-smi --cluster).
struct NodeView {
  std::string name, address;
  bool alive = false;
  struct Device {
    int64_t id = 0;
    std::string kind, name;
    int64_t memory_bytes = 0;
    uint64_t lease = 0;  // 0: free
  };
  std::vector<Device> devices;
  WorkerProfile profile;
};
struct ClusterView {
  std::vector<NodeView> nodes;
  int64_t num_leases = 0, free_devices = 0;
  nlohmann::json ToJson() const;  // the "cluster" object
  static StatusOr<ClusterView> FromJson(const nlohmann::json& cluster_status_ok);
};

// ---- To a worker --------------------------------------------------------------------------------
struct WorkerHello {
  int64_t version = kProtocolVersion;
  uint64_t lease = 0;
  std::string secret;
  nlohmann::json ToJson() const;
  static StatusOr<WorkerHello> FromJson(const nlohmann::json& m);
};

// run_graph and job_*: the device of the lease a request is for.
StatusOr<int64_t> DeviceOf(const nlohmann::json& m);

// The top-level fields of run_graph and job_* (what runs them reads the payloads inside: the
// graph, tensors, a stage assignment), checked before the request goes to a device.
Status CheckWorkerRequest(Msg type, const nlohmann::json& m);

}  // namespace moreh::net
