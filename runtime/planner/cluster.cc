#include "runtime/planner/cluster.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

namespace moreh::planner {
namespace {
using json = nlohmann::json;

Status Bad(const std::string& source, const std::string& what) {
  return Status::InvalidArgument(source + ": " + what);
}

template <typename T>
Status Read(const json& j, const char* key, T* out, const std::string& where, bool required) {
  const auto it = j.find(key);
  if (it == j.end()) {
    return required ? Bad(where, std::string("missing field '") + key + "'") : Status::Ok();
  }
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) return Bad(where, std::string("'") + key + "' must be a string");
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return Bad(where, std::string("'") + key + "' must be true or false");
  } else {
    if (!it->is_number()) return Bad(where, std::string("'") + key + "' must be a number");
  }
  *out = it->get<T>();
  return Status::Ok();
}
}  // namespace

Status ClusterSpec::Validate() const {
  auto bad = [&](const std::string& m) { return Bad("cluster '" + name + "'", m); };
  if (num_devices < 1) return bad(fmt::format("num_devices must be >= 1 (got {})", num_devices));
  if (devices_per_node < 1 || devices_per_node > num_devices) {
    return bad(
        fmt::format("devices_per_node must be in [1, num_devices] (got {})", devices_per_node));
  }
  if (num_devices % devices_per_node != 0) {
    return bad(fmt::format("num_devices {} is not a multiple of devices_per_node {}", num_devices,
                           devices_per_node));
  }
  if (device.memory_bytes <= 0) return bad("device.memory_bytes must be positive");
  if (device.peak_flops <= 0 || device.memory_bandwidth <= 0) {
    return bad("device.peak_flops and device.memory_bandwidth must be positive");
  }
  if (device.gemm_efficiency <= 0 || device.gemm_efficiency > 1 || device.other_efficiency <= 0 ||
      device.other_efficiency > 1) {
    return bad("device efficiencies must be in (0, 1]");
  }
  if ((devices_per_node > 1 && intra_node_bandwidth <= 0) ||
      (num_devices > devices_per_node && inter_node_bandwidth <= 0)) {
    return bad("link bandwidths must be positive where links exist");
  }
  if (!(node_concurrency >= 0)) {
    return bad(fmt::format("node_concurrency must be >= 0 (got {})", node_concurrency));
  }
  return Status::Ok();
}

StatusOr<ClusterSpec> ClusterSpec::FromJson(std::string_view text, const std::string& source) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Bad(source, "not a JSON object");
  ClusterSpec c;
  Status s = Read(j, "name", &c.name, source, false);
  if (s.ok()) s = Read(j, "num_devices", &c.num_devices, source, true);
  if (s.ok()) s = Read(j, "devices_per_node", &c.devices_per_node, source, true);
  if (s.ok()) s = Read(j, "intra_node_bandwidth", &c.intra_node_bandwidth, source, false);
  if (s.ok()) s = Read(j, "intra_node_latency", &c.intra_node_latency, source, false);
  if (s.ok()) s = Read(j, "inter_node_bandwidth", &c.inter_node_bandwidth, source, false);
  if (s.ok()) s = Read(j, "inter_node_latency", &c.inter_node_latency, source, false);
  if (s.ok()) s = Read(j, "node_concurrency", &c.node_concurrency, source, false);
  if (s.ok()) {
    s = Read(j, "overlapped_dp_reduction", &c.overlapped_dp_reduction, source, false);
  }
  if (!s.ok()) return s;
  const auto d = j.find("device");
  if (d == j.end() || !d->is_object()) return Bad(source, "missing object 'device'");
  const std::string where = source + ": device";
  DeviceProfile& p = c.device;
  s = Read(*d, "name", &p.name, where, false);
  if (s.ok()) s = Read(*d, "memory_bytes", &p.memory_bytes, where, true);
  if (s.ok()) s = Read(*d, "peak_flops", &p.peak_flops, where, true);
  if (s.ok()) s = Read(*d, "gemm_efficiency", &p.gemm_efficiency, where, false);
  if (s.ok()) s = Read(*d, "other_efficiency", &p.other_efficiency, where, false);
  if (s.ok()) s = Read(*d, "memory_bandwidth", &p.memory_bandwidth, where, true);
  if (s.ok()) s = Read(*d, "kernel_overhead_s", &p.kernel_overhead_s, where, false);
  if (s.ok()) s = Read(*d, "reserved_bytes", &p.reserved_bytes, where, false);
  if (s.ok()) s = Read(*d, "widens_16bit", &p.widens_16bit, where, false);
  if (!s.ok()) return s;
  Status v = c.Validate();
  if (!v.ok()) return Bad(source, v.message());
  return c;
}

StatusOr<ClusterSpec> ClusterSpec::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + ": cannot open the cluster file");
  std::stringstream ss;
  ss << in.rdbuf();
  return FromJson(ss.str(), path);
}

std::string ClusterSpec::ToJson() const {
  const json j = {{"name", name},
                  {"num_devices", num_devices},
                  {"devices_per_node", devices_per_node},
                  {"intra_node_bandwidth", intra_node_bandwidth},
                  {"intra_node_latency", intra_node_latency},
                  {"inter_node_bandwidth", inter_node_bandwidth},
                  {"inter_node_latency", inter_node_latency},
                  {"node_concurrency", node_concurrency},
                  {"overlapped_dp_reduction", overlapped_dp_reduction},
                  {"device",
                   {{"name", device.name},
                    {"memory_bytes", device.memory_bytes},
                    {"peak_flops", device.peak_flops},
                    {"gemm_efficiency", device.gemm_efficiency},
                    {"other_efficiency", device.other_efficiency},
                    {"memory_bandwidth", device.memory_bandwidth},
                    {"kernel_overhead_s", device.kernel_overhead_s},
                    {"reserved_bytes", device.reserved_bytes},
                    {"widens_16bit", device.widens_16bit}}}};
  return j.dump(2);
}

int DeviceSizeCount(std::string_view name) {
  static const std::pair<std::string_view, int> kTable[] = {
      {"small", 1},     {"medium", 2},     {"large", 4},     {"xlarge", 8},   {"1.5xlarge", 12},
      {"2xlarge", 16},  {"3xlarge", 24},   {"4xlarge", 32},  {"6xlarge", 48}, {"8xlarge", 64},
      {"12xlarge", 96}, {"24xlarge", 192}, {"48xlarge", 384}};
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& [n, count] : kTable) {
    if (n == lower) return count;
  }
  return -1;
}

ClusterSpec ReferenceCluster(int num_devices) {
  ClusterSpec c;
  c.name = "reference platform";
  c.num_devices = num_devices;
  c.devices_per_node = std::min(num_devices, 8);
  c.device.name = "MoAI accelerator device";
  c.device.memory_bytes = 68'702'699'520;  // 64 GiB minus 16 MiB
  c.device.peak_flops = 181e12;
  c.device.gemm_efficiency = 0.55;
  c.device.other_efficiency = 0.3;
  c.device.memory_bandwidth = 1.6e12;
  c.device.kernel_overhead_s = 1e-5;
  c.device.reserved_bytes = 1 << 30;
  c.intra_node_bandwidth = 100e9;
  c.intra_node_latency = 5e-6;
  c.inter_node_bandwidth = 25e9;
  c.inter_node_latency = 1e-5;
  return c;
}

}  // namespace moreh::planner
