// moreh-run cluster up|down|status: a local cluster kept running in the background for repeated
// runs (recorded in ~/.moreh/local-cluster.json, which clients and tools then use); and
// moreh-run [--scheduler ADDR] [--device-size NAME] -- PROGRAM ARGS...: run a user's program with
// the client configured (an embedded local cluster for its lifetime when no scheduler is
// configured).
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/moreh_plan.h"
#include "cli/scheduler_address.h"
#include "runtime/client/local_cluster.h"
#include "runtime/net/protocol.h"

namespace moreh::cli {
namespace fs = std::filesystem;
using json = nlohmann::json;

int ClusterMain(int argc, char** argv) {
  CLI::App app{"Start, stop or inspect a local cluster in the background", "moreh-run cluster"};
  std::string action;
  int workers = 4, devices = 1;
  std::string memory = "1G";
  app.add_option("action", action, "up, down or status")
      ->required()
      ->check(CLI::IsMember({"up", "down", "status"}));
  app.add_option("--workers", workers, "worker daemons (up)")->check(CLI::PositiveNumber);
  app.add_option("--devices-per-worker", devices)->check(CLI::PositiveNumber);
  app.add_option("--device-memory", memory, "per device, e.g. 256M");
  CLI11_PARSE(app, argc, argv);
  const std::string state = client::LocalClusterStateFile();
  if (action == "up") {
    if (const std::string running = client::RecordedLocalScheduler(); !running.empty()) {
      std::printf("a local cluster is already up (scheduler %s)\n", running.c_str());
      return 0;
    }
    client::LocalClusterConfig c;
    c.num_workers = workers;
    c.devices_per_worker = devices;
    c.device_memory = memory;
    c.detached = true;
    auto lc = client::LocalCluster::Start(c);
    if (!lc.ok()) {
      spdlog::error("{}", lc.status().message());
      return 1;
    }
    std::error_code ec;
    fs::create_directories(fs::path(state).parent_path(), ec);
    std::ofstream(state) << json{
        {"scheduler", lc.value()->scheduler_address()},
        {"pids", lc.value()->pids()},
        {"dir",
         lc.value()->dir()}}.dump();
    std::printf("local cluster up: scheduler %s, %d workers x %d device(s) of %s\n",
                lc.value()->scheduler_address().c_str(), workers, devices, memory.c_str());
    return 0;
  }
  auto recorded = client::ReadRecordedCluster(state);
  if (!recorded.ok()) {
    if (recorded.status().code() != StatusCode::kNotFound) {
      spdlog::error("{}", recorded.status().message());
      return 2;
    }
    std::printf("no local cluster is up\n");
    return action == "status" ? 1 : 0;
  }
  const client::RecordedCluster& r = recorded.value();
  if (action == "down") {
    for (pid_t p : r.pids) kill(p, SIGTERM);
    std::error_code ec;
    if (!r.dir.empty()) fs::remove_all(r.dir, ec);
    fs::remove(state, ec);
    std::printf("local cluster down\n");
    return 0;
  }
  int alive = 0;
  for (pid_t p : r.pids) alive += kill(p, 0) == 0;
  std::printf("local cluster: scheduler %s, %d of %zu daemons running\n", r.scheduler.c_str(),
              alive, r.pids.size());
  return alive == static_cast<int>(r.pids.size()) ? 0 : 1;
}

int RunProgramMain(const std::string& scheduler_flag, const std::string& device_size,
                   char** program) {
  std::unique_ptr<client::LocalCluster> local;
  std::string scheduler = SchedulerAddress(scheduler_flag);
  if (scheduler.empty()) {
    client::LocalClusterConfig c;
    c.num_workers = std::max(1, net::DeviceSizeCount(device_size.empty() ? "Small" : device_size));
    auto lc = client::LocalCluster::Start(c);
    if (!lc.ok()) {
      spdlog::error("{}", lc.status().message());
      return 1;
    }
    local = std::move(lc.value());
    scheduler = local->scheduler_address();
  }
  setenv("MOREH_SCHEDULER", scheduler.c_str(), 1);
  const pid_t pid = fork();
  if (pid == 0) {
    execvp(program[0], program);
    std::fprintf(stderr, "moreh-run: cannot run '%s'\n", program[0]);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (local) local->Stop();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace moreh::cli
