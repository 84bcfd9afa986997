// moreh-smi: the user's virtual device (size, devices, memory, the process using it), its virtual
// devices (`device --list|--add SIZE|--rm ID|--switch ID`), and the cluster (`--cluster`). Replies
// are read through runtime/net/protocol.h, so a malformed one is an error, not a crash.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>

#include "cli/scheduler_address.h"
#include "runtime/client/channel.h"
#include "runtime/net/protocol.h"

namespace {
using json = nlohmann::json;

int Fail(const std::string& m) {
  std::fprintf(stderr, "moreh-smi: %s\n", m.c_str());
  return 1;
}

int64_t DeviceMemory(const moreh::net::ClusterView& cluster) {
  for (const auto& n : cluster.nodes) {
    if (!n.devices.empty()) return n.devices[0].memory_bytes;
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
  auto st = ch.value()->Call(moreh::net::Message(moreh::net::Msg::kClusterStatus));
  moreh::Status ss = moreh::client::ReplyError(st, "moreh-smi");
  if (!ss.ok()) return Fail(ss.message());
  auto view = moreh::net::ClusterView::FromJson(st.value());
  if (!view.ok()) return Fail("the scheduler's reply: " + view.status().message());
  const moreh::net::ClusterView& cl = view.value();
  if (cluster) {
    std::printf("%-16s %-22s %-6s %s\n", "node", "address", "alive", "devices (id:leased)");
    for (const auto& n : cl.nodes) {
      std::string devs;
      for (const auto& d : n.devices) {
        devs += fmt::format("{}{}:{}", devs.empty() ? "" : " ", d.id, d.lease ? "leased" : "free");
      }
      std::printf("%-16s %-22s %-6s %s\n", n.name.c_str(), n.address.c_str(),
                  n.alive ? "yes" : "no", devs.c_str());
      // What the devices are: "  2 x NVIDIA H200 (139.81 GiB)", one line per kind.
      std::map<std::string, int> kinds;
      for (const auto& d : n.devices) {
        ++kinds[fmt::format("{} ({:.2f} GiB)", d.name.empty() ? d.kind : d.name,
                            static_cast<double>(d.memory_bytes) / 1073741824.0)];
      }
      for (const auto& [what, count] : kinds) std::printf("  %d x %s\n", count, what.c_str());
    }
    std::printf("free devices: %lld, leases: %lld\n", static_cast<long long>(cl.free_devices),
                static_cast<long long>(cl.num_leases));
    return 0;
  }
  using moreh::net::Message;
  using moreh::net::Msg;
  json req = Message(reset ? Msg::kVdevReset : Msg::kVdevList);
  try {
    if (!add.empty()) req = Message(Msg::kVdevAdd, {{"size", add}});
    if (!rm_id.empty()) req = Message(Msg::kVdevRemove, {{"id", std::stoi(rm_id)}});
    if (!switch_id.empty()) req = Message(Msg::kVdevSwitch, {{"id", std::stoi(switch_id)}});
  } catch (const std::exception&) {
    return Fail("a virtual device id is a number");
  }
  auto r = ch.value()->Call(req);
  moreh::Status s = moreh::client::ReplyError(r, "moreh-smi");
  if (!s.ok()) return Fail(s.message());
  auto vdevs = moreh::net::Vdevs::FromJson(r.value());
  if (!vdevs.ok()) return Fail("the scheduler's reply: " + vdevs.status().message());
  const int64_t mem = DeviceMemory(cl);
  auto memory = [&](int64_t n) {
    return mem ? fmt::format("{:.1f} GiB", static_cast<double>(n * mem) / 1073741824.0)
               : std::string("?");
  };
  if (app.got_subcommand(dev)) {
    std::printf("%-4s %-10s %-8s %-12s %s\n", "id", "size", "devices", "memory", "");
    for (const auto& d : vdevs->devices) {
      std::printf("%-4lld %-10s %-8lld %-12s %s\n", static_cast<long long>(d.id), d.size.c_str(),
                  static_cast<long long>(d.num_devices), memory(d.num_devices).c_str(),
                  d.current ? "* current" : "");
    }
    return 0;
  }
  for (const auto& d : vdevs->devices) {
    if (!d.current) continue;
    std::printf("+------------------------------------------------------------------+\n");
    std::printf("| Virtual device %-3lld size %-10s devices %-4lld memory %-10s |\n",
                static_cast<long long>(d.id), d.size.c_str(), static_cast<long long>(d.num_devices),
                memory(d.num_devices).c_str());
    std::printf(
        "| %-64s |\n",
        d.pid ? fmt::format("in use by process {} (lease {})", d.pid, d.lease).c_str() : "idle");
    std::printf("+------------------------------------------------------------------+\n");
  }
  return 0;
}
