#include "runtime/client/local_cluster.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

namespace moreh::client {
namespace fs = std::filesystem;

std::string ExecutableDir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

namespace {
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log, bool detached) {
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid != 0) return pid;
  // Child: die with the parent (unless detached), quietly log to a file, then exec.
  if (detached) {
    setsid();
  } else {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
  }
  FILE* f = std::freopen(log.c_str(), "w", stdout);
  if (f) dup2(fileno(stdout), STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}
}  // namespace

StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(const LocalClusterConfig& c) {
  if (c.num_workers < 1 || c.devices_per_worker < 1) {
    return Status::InvalidArgument("local cluster: workers and devices must be >= 1");
  }
  const std::string bin = c.bin_dir.empty() ? ExecutableDir() : c.bin_dir;
  for (const char* tool : {"moreh-scheduler", "moreh-worker"}) {
    if (!fs::exists(fs::path(bin) / tool)) {
      return Status::NotFound(fmt::format("local cluster: {} not found in {}", tool, bin));
    }
  }
  std::unique_ptr<LocalCluster> lc(new LocalCluster());
  lc->detached_ = c.detached;
  std::random_device rd;
  lc->dir_ =
      (fs::temp_directory_path() / fmt::format("moreh-cluster-{}-{:08x}", getpid(), rd())).string();
  fs::create_directories(lc->dir_);
  const std::string key_file = lc->dir_ + "/key";
  {
    std::ofstream k(key_file);
    k << fmt::format("{:08x}{:08x}{:08x}{:08x}", rd(), rd(), rd(), rd()) << "\n";
  }
  fs::permissions(key_file, fs::perms::owner_read | fs::perms::owner_write);
  const std::string port_file = lc->dir_ + "/port";
  lc->pids_.push_back(Spawn({bin + "/moreh-scheduler", "--key-file", key_file, "--port-file",
                             port_file, "--heartbeat-ms", "500", "--dead-after-ms", "3000"},
                            lc->dir_ + "/scheduler.log", c.detached));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!fs::exists(port_file)) {
    if (std::chrono::steady_clock::now() > deadline) {
      return Status(
          StatusCode::kDeadlineExceeded,
          "local cluster: the scheduler did not start (see " + lc->dir_ + "/scheduler.log)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::ifstream(port_file) >> lc->port_;
  for (int i = 0; i < c.num_workers; ++i) {
    lc->pids_.push_back(
        Spawn({bin + "/moreh-worker", "--scheduler", lc->scheduler_address(), "--key-file",
               key_file, "--node", fmt::format("local{}", i), "--devices",
               fmt::format("cpu:{}:{}", c.devices_per_worker, c.device_memory)},
              fmt::format("{}/worker{}.log", lc->dir_, i), c.detached));
  }
  return lc;
}

std::string LocalCluster::scheduler_address() const { return fmt::format("127.0.0.1:{}", port_); }

void LocalCluster::Stop() {
  for (pid_t p : pids_) kill(p, SIGTERM);
  for (pid_t p : pids_) {
    int status = 0;
    for (int i = 0; i < 200 && waitpid(p, &status, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (waitpid(p, &status, WNOHANG) == 0) {
      kill(p, SIGKILL);
      waitpid(p, &status, 0);
    }
  }
  pids_.clear();
  std::error_code ec;
  if (!dir_.empty()) fs::remove_all(dir_, ec);
}

LocalCluster::~LocalCluster() {
  if (!detached_) Stop();
}

std::string LocalClusterStateFile() {
  const char* home = std::getenv("MOREH_HOME");
  std::string dir = home && *home
                        ? home
                        : std::string(std::getenv("HOME") ? std::getenv("HOME") : ".") + "/.moreh";
  return dir + "/local-cluster.json";
}

std::string RecordedLocalScheduler() {
  std::ifstream in(LocalClusterStateFile());
  if (!in) return "";
  const auto j = nlohmann::json::parse(in, nullptr, false);
  if (!j.is_object() || !j.contains("scheduler") || !j.contains("pids") || j["pids"].empty())
    return "";
  const pid_t sched = j["pids"][0].get<pid_t>();
  if (kill(sched, 0) != 0) return "";
  return j["scheduler"].get<std::string>();
}

}  // namespace moreh::client
