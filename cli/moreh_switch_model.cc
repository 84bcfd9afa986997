// moreh-switch-model: change the size of your current virtual device. Without --size, a numbered
// menu of the sizes (devices, total memory, the current one marked) read from the terminal.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "cli/scheduler_address.h"
#include "runtime/client/channel.h"
#include "runtime/planner/cluster.h"

namespace {
using json = nlohmann::json;
const char* kSizes[] = {"Small",    "Medium",   "Large",   "xLarge",  "1.5xLarge",
                        "2xLarge",  "3xLarge",  "4xLarge", "6xLarge", "8xLarge",
                        "12xLarge", "24xLarge", "48xLarge"};

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
  auto cur = ch.value()->Call({{"type", "vdev_list"}});
  if (!cur.ok()) return Fail(cur.status().message());
  std::string current;
  for (const auto& d : cur.value()["devices"]) {
    if (d["current"].get<bool>()) current = d["size"];
  }
  if (size.empty()) {
    auto st = ch.value()->Call({{"type", "cluster_status"}});
    int64_t mem = 0;
    if (st.ok()) {
      for (const auto& n : st.value()["cluster"]["nodes"]) {
        if (!n["devices"].empty()) mem = n["devices"][0]["memory_bytes"].get<int64_t>();
      }
    }
    std::printf("Current MoAI Accelerator: %s\n\n", current.c_str());
    for (size_t i = 0; i < std::size(kSizes); ++i) {
      const int n = moreh::planner::DeviceSizeCount(kSizes[i]);
      std::printf("%2zu. %-10s: %4d device(s), %s%s\n", i + 1, kSizes[i], n,
                  mem ? fmt::format("{:8.1f} GiB", n * mem / 1073741824.0).c_str() : "       ?",
                  current == kSizes[i] ? "  *" : "");
    }
    std::printf(" q. Quit\n\nSelection (1-%zu, q): ", std::size(kSizes));
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
    if (pick < 1 || pick > static_cast<int>(std::size(kSizes)))
      return Fail("no menu entry " + line);
    size = kSizes[pick - 1];
  }
  auto r = ch.value()->Call({{"type", "vdev_set_size"}, {"size", size}});
  moreh::Status s = moreh::client::ReplyError(r, "switch");
  if (!s.ok()) return Fail(s.message());
  std::printf("The MoAI Accelerator model is successfully switched to \"%s\".\n", size.c_str());
  return 0;
}
