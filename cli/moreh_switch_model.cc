// moreh-switch-model: change the size of your current virtual device. Without --size, a numbered
// menu of the sizes (devices, total memory, the current one marked) read from the terminal.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "cli/scheduler_address.h"
#include "runtime/client/channel.h"
#include "runtime/net/protocol.h"

namespace {
using json = nlohmann::json;

int Fail(const std::string& m) {
  std::fprintf(stderr, "moreh-switch-model: %s\n", m.c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moreh-switch-model: change the size of your virtual device"};
  std::string scheduler, size;
  app.add_option("--scheduler", scheduler, "HOST:PORT (default: MOREH_SCHEDULER)");
  app.add_option("--size", size, "the new size (Small ... 48xLarge); without it, a menu");
  CLI11_PARSE(app, argc, argv);
  boost::asio::io_context io;
  auto ch = moreh::cli::ConnectAsUser(io, scheduler);
  if (!ch.ok()) return Fail(ch.status().message());
  auto cur = ch.value()->Call(moreh::net::Message(moreh::net::Msg::kVdevList));
  moreh::Status cs = moreh::client::ReplyError(cur, "moreh-switch-model");
  if (!cs.ok()) return Fail(cs.message());
  auto vdevs = moreh::net::Vdevs::FromJson(cur.value());
  if (!vdevs.ok()) return Fail("the scheduler's reply: " + vdevs.status().message());
  std::string current;
  for (const auto& d : vdevs->devices) {
    if (d.current) current = d.size;
  }
  if (size.empty()) {
    auto st = ch.value()->Call(moreh::net::Message(moreh::net::Msg::kClusterStatus));
    int64_t mem = 0;
    if (st.ok()) {
      auto view = moreh::net::ClusterView::FromJson(st.value());
      for (const auto& n : view.ok() ? view->nodes : std::vector<moreh::net::NodeView>()) {
        if (!n.devices.empty()) mem = n.devices[0].memory_bytes;
      }
    }
    std::printf("Current MoAI Accelerator: %s\n\n", current.c_str());
    const auto& sizes = moreh::net::DeviceSizes();
    for (size_t i = 0; i < sizes.size(); ++i) {
      const auto& [name, n] = sizes[i];
      std::printf("%2zu. %-10s: %4d device(s), %s%s\n", i + 1, name.c_str(), n,
                  mem ? fmt::format("{:8.1f} GiB", n * mem / 1073741824.0).c_str() : "       ?",
                  current == name ? "  *" : "");
    }
    std::printf(" q. Quit\n\nSelection (1-%zu, q): ", sizes.size());
    std::fflush(stdout);
    std::string line;
    if (!std::getline(std::cin, line) || line == "q" || line.empty()) {
      std::printf("\nNo change.\n");
      return 0;
    }
    int pick = 0;
    try {
      pick = std::stoi(line);
    } catch (const std::exception&) {
      return Fail("'" + line + "' is not a menu number");
    }
    if (pick < 1 || pick > static_cast<int>(sizes.size())) return Fail("no menu entry " + line);
    size = sizes[static_cast<size_t>(pick - 1)].first;
  }
  json set = moreh::net::Message(moreh::net::Msg::kVdevSetSize);
  set["size"] = size;
  auto r = ch.value()->Call(set);
  moreh::Status s = moreh::client::ReplyError(r, "switch");
  if (!s.ok()) return Fail(s.message());
  std::printf("The MoAI Accelerator model is successfully switched to \"%s\".\n", size.c_str());
  return 0;
}
