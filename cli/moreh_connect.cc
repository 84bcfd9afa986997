// moreh-run connect: request the current virtual device, connect to its workers, print the grant,
// release. A quick check that a cluster (or the embedded local one) serves this user.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <thread>

#include "cli/moreh_plan.h"
#include "runtime/client/client.h"

namespace moreh::cli {

int ConnectMain(int argc, char** argv) {
  CLI::App app{"Request the virtual device and connect to its workers", "moreh-run connect"};
  client::ClientOptions o;
  app.add_option("--scheduler", o.scheduler,
                 "HOST:PORT (default: MOREH_SCHEDULER, else a local cluster)");
  app.add_option("--device-size", o.device_size, "Small, Medium, Large, xLarge, ...");
  app.add_option("--device-memory", o.local.device_memory,
                 "per device of a local cluster, e.g. 256M");
  double hold = 0;
  app.add_option("--hold-seconds", hold, "keep the lease (renewed) this long before releasing");
  CLI11_PARSE(app, argc, argv);
  auto c = client::Client::Connect(o);
  if (!c.ok()) {
    spdlog::error("{}", c.status().message());
    return 1;
  }
  std::printf("lease %llu from %s:\n", static_cast<unsigned long long>(c.value()->lease()),
              c.value()->scheduler().c_str());
  for (const auto& d : c.value()->devices()) {
    std::printf("  %s device %d at %s\n", d.node.c_str(), d.device, d.address.c_str());
  }
  std::fflush(stdout);
  if (hold > 0) std::this_thread::sleep_for(std::chrono::duration<double>(hold));
  return 0;
}

}  // namespace moreh::cli
