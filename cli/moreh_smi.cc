// moreh-smi: the user's virtual device (size, devices, memory, the process using it), its virtual
// devices (`device --list|--add SIZE|--rm ID|--switch ID`), and the cluster (`--cluster`).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>

#include "cli/scheduler_address.h"
#include "runtime/client/channel.h"
#include "runtime/planner/cluster.h"

namespace {
using json = nlohmann::json;

int Fail(const std::string& m) {
  std::fprintf(stderr, "moreh-smi: %s\n", m.c_str());
  return 1;
}

int64_t DeviceMemory(const json& cluster) {
  for (const auto& n : cluster["nodes"]) {
    if (!n["devices"].empty()) return n["devices"][0]["memory_bytes"].get<int64_t>();
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moreh-smi: the state of your virtual device and of the cluster"};
  std::string scheduler, add, rm_id, switch_id;
  bool list = false, cluster = false;
  app.add_option("--scheduler", scheduler, "HOST:PORT (default: MOREH_SCHEDULER)");
  app.add_flag("--cluster", cluster, "nodes and devices of the cluster");
  bool reset = false;
  app.add_flag("--reset", reset, "end the job holding your current virtual device");
  auto* dev = app.add_subcommand("device", "manage your virtual devices");
  dev->add_flag("--list", list, "list them");
  dev->add_option("--add", add, "add one of this size");
  dev->add_option("--rm", rm_id, "remove this one (by id)");
  dev->add_option("--switch", switch_id, "make this one current (by id)");
  CLI11_PARSE(app, argc, argv);
  boost::asio::io_context io;
  auto ch = moreh::cli::ConnectAsUser(io, scheduler);
  if (!ch.ok()) return Fail(ch.status().message());
  auto st = ch.value()->Call({{"type", "cluster_status"}});
  if (!st.ok()) return Fail(st.status().message());
  const json cl = st.value()["cluster"];
  if (cluster) {
    std::printf("%-16s %-22s %-6s %s\n", "node", "address", "alive", "devices (id:leased)");
    for (const auto& n : cl["nodes"]) {
      std::string devs;
      for (const auto& d : n["devices"]) {
        devs += fmt::format("{}{}:{}", devs.empty() ? "" : " ", d["id"].get<int>(),
                            d["lease"].get<uint64_t>() ? "leased" : "free");
      }
      std::printf("%-16s %-22s %-6s %s\n", n["name"].get<std::string>().c_str(),
                  n["address"].get<std::string>().c_str(), n["alive"].get<bool>() ? "yes" : "no",
                  devs.c_str());
      // What the devices are: "  2 x NVIDIA H200 (139.81 GiB)", one line per kind.
      std::map<std::string, int> kinds;
      for (const auto& d : n["devices"]) {
        const std::string name =
            d.value("name", "").empty() ? d.value("kind", "?") : d.value("name", "");
        ++kinds[fmt::format("{} ({:.2f} GiB)", name,
                            d.value("memory_bytes", int64_t{0}) / 1073741824.0)];
      }
      for (const auto& [what, count] : kinds) std::printf("  %d x %s\n", count, what.c_str());
    }
    std::printf("free devices: %d, leases: %d\n", cl["free_devices"].get<int>(),
                cl["num_leases"].get<int>());
    return 0;
  }
  json req = {{"type", reset ? "vdev_reset" : "vdev_list"}};
  try {
    if (!add.empty()) req = {{"type", "vdev_add"}, {"size", add}};
    if (!rm_id.empty()) req = {{"type", "vdev_remove"}, {"id", std::stoi(rm_id)}};
    if (!switch_id.empty()) req = {{"type", "vdev_switch"}, {"id", std::stoi(switch_id)}};
  } catch (const std::exception&) {
    return Fail("a virtual device id is a number");
  }
  auto r = ch.value()->Call(req);
  moreh::Status s = moreh::client::ReplyError(r, "moreh-smi");
  if (!s.ok()) return Fail(s.message());
  const json v = r.value();
  const int64_t mem = DeviceMemory(cl);
  if (app.got_subcommand(dev)) {
    std::printf("%-4s %-10s %-8s %-12s %s\n", "id", "size", "devices", "memory", "");
    for (const auto& d : v["devices"]) {
      std::printf(
          "%-4d %-10s %-8d %-12s %s\n", d["id"].get<int>(), d["size"].get<std::string>().c_str(),
          d["num_devices"].get<int>(),
          mem ? fmt::format("{:.1f} GiB", d["num_devices"].get<int>() * mem / 1073741824.0).c_str()
              : "?",
          d["current"].get<bool>() ? "* current" : "");
    }
    return 0;
  }
  for (const auto& d : v["devices"]) {
    if (!d["current"].get<bool>()) continue;
    const int64_t pid = d["pid"].get<int64_t>();
    std::printf("+------------------------------------------------------------------+\n");
    std::printf(
        "| Virtual device %-3d size %-10s devices %-4d memory %-10s |\n", d["id"].get<int>(),
        d["size"].get<std::string>().c_str(), d["num_devices"].get<int>(),
        mem ? fmt::format("{:.1f} GiB", d["num_devices"].get<int>() * mem / 1073741824.0).c_str()
            : "?");
    std::printf("| %-64s |\n", pid ? fmt::format("in use by process {} (lease {})", pid,
                                                 d["lease"].get<uint64_t>())
                                         .c_str()
                                   : "idle");
    std::printf("+------------------------------------------------------------------+\n");
  }
  return 0;
}
