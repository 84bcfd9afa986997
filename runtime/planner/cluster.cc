#include "runtime/planner/cluster.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "runtime/core/field_reader.h"

namespace moreh::planner {
namespace {
using json = nlohmann::json;

Status Bad(const std::string& source, const std::string& what) {
  return Status::InvalidArgument(source + ": " + what);
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
  constexpr double kMax = 1e30;
  FieldReader f(j, source);
  ClusterSpec c;
  c.name = f.OptStr("name", c.name);
  c.num_devices = static_cast<int>(f.Int("num_devices", 1, 1 << 24));
  c.devices_per_node = static_cast<int>(f.Int("devices_per_node", 1, 1 << 24));
  c.intra_node_bandwidth = f.OptNum("intra_node_bandwidth", c.intra_node_bandwidth, 0, kMax);
  c.intra_node_latency = f.OptNum("intra_node_latency", c.intra_node_latency, 0, 3600);
  c.inter_node_bandwidth = f.OptNum("inter_node_bandwidth", c.inter_node_bandwidth, 0, kMax);
  c.inter_node_latency = f.OptNum("inter_node_latency", c.inter_node_latency, 0, 3600);
  c.node_concurrency = f.OptNum("node_concurrency", c.node_concurrency, 0, 1 << 20);
  c.overlapped_dp_reduction = f.OptBool("overlapped_dp_reduction", c.overlapped_dp_reduction);
  FieldReader d = f.Sub("device");
  DeviceProfile& p = c.device;
  p.name = d.OptStr("name", p.name);
  p.memory_bytes = d.Int("memory_bytes", 1);
  p.peak_flops = d.Num("peak_flops", 0, kMax);
  p.gemm_efficiency = d.OptNum("gemm_efficiency", p.gemm_efficiency, 0, 1);
  p.other_efficiency = d.OptNum("other_efficiency", p.other_efficiency, 0, 1);
  p.memory_bandwidth = d.Num("memory_bandwidth", 0, kMax);
  p.kernel_overhead_s = d.OptNum("kernel_overhead_s", p.kernel_overhead_s, 0, 3600);
  p.reserved_bytes = d.OptInt("reserved_bytes", p.reserved_bytes, 0);
  p.widens_16bit = d.OptBool("widens_16bit", p.widens_16bit);
  if (!f.ok()) return f.status();
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
