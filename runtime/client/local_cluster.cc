#include "runtime/client/local_cluster.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/core/field_reader.h"
#include "runtime/net/auth.h"

namespace moreh::client {
namespace fs = std::filesystem;

std::string ExecutableDir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

namespace {
std::mutex daemon_dir_mu;
std::string daemon_dir;  // guarded by daemon_dir_mu
}  // namespace

void SetDefaultDaemonDir(const std::string& dir) {
  std::lock_guard<std::mutex> lock(daemon_dir_mu);
  daemon_dir = dir;
}

std::string DefaultDaemonDir() {
  std::lock_guard<std::mutex> lock(daemon_dir_mu);
  return daemon_dir.empty() ? ExecutableDir() : daemon_dir;
}

namespace {
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log, bool detached) {
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid != 0) return pid;
  // Child: die with the parent (unless detached), quietly log to a private file, then exec.
  if (detached) {
    setsid();
  } else {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
  }
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd >= 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

// Writes `text` to `path` created with mode 0600 (never readable by others, not even briefly);
// with replace, through a temporary file renamed over it.
Status WritePrivateFile(const std::string& path, const std::string& text, bool replace) {
  const std::string target = replace ? path + ".tmp" : path;
  const int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return Status::Internal(fmt::format("{}: cannot create: {}", target, strerror(errno)));
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!ok || (replace && std::rename(target.c_str(), path.c_str()) != 0)) {
    return Status::Internal(path + ": cannot write");
  }
  return Status::Ok();
}

// The process that owns a local cluster's directory: its "owner" file, else the pid in its name.
pid_t OwnerOf(const fs::path& dir) {
  pid_t pid = 0;
  std::ifstream in(dir / "owner");
  if (!(in >> pid)) {
    const std::string name = dir.filename().string();  // moreh-cluster-<pid>-<random>
    pid = static_cast<pid_t>(std::atol(name.c_str() + std::strlen("moreh-cluster-")));
  }
  return pid;
}
}  // namespace

int RemoveStaleClusterDirs() {
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::temp_directory_path(), ec)) {
    const std::string name = e.path().filename().string();
    struct stat st {};
    if (name.rfind("moreh-cluster-", 0) != 0 || ::lstat(e.path().c_str(), &st) != 0 ||
        !S_ISDIR(st.st_mode) || st.st_uid != ::getuid()) {
      continue;
    }
    const pid_t owner = OwnerOf(e.path());
    if (owner > 0 && (::kill(owner, 0) == 0 || errno != ESRCH)) continue;  // alive (or not ours)
    std::error_code rm;
    fs::remove_all(e.path(), rm);
    removed += !rm;
  }
  return removed;
}

StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(const LocalClusterConfig& c) {
  if (c.num_workers < 1 || c.devices_per_worker < 1) {
    return Status::InvalidArgument("local cluster: workers and devices must be >= 1");
  }
  const std::string bin = c.bin_dir.empty() ? DefaultDaemonDir() : c.bin_dir;
  for (const char* tool : {"moreh-scheduler", "moreh-worker"}) {
    if (!fs::exists(fs::path(bin) / tool)) {
      return Status::NotFound(fmt::format("local cluster: {} not found in {}", tool, bin));
    }
  }
  // Directories of clusters whose owner is gone (a client killed with -9) go first.
  if (const int n = RemoveStaleClusterDirs()) {
    spdlog::debug("removed {} local cluster directories left by processes that are gone", n);
  }
  std::unique_ptr<LocalCluster> lc(new LocalCluster());
  lc->detached_ = c.detached;
  lc->dir_ = (fs::temp_directory_path() /
              fmt::format("moreh-cluster-{}-{}", getpid(), net::RandomSecret().substr(0, 8)))
                 .string();
  // Private: the key, the logs and the port file are the user's alone.
  if (::mkdir(lc->dir_.c_str(), 0700) != 0) {
    return Status::Internal(fmt::format("{}: cannot create: {}", lc->dir_, strerror(errno)));
  }
  const std::string key_file = lc->dir_ + "/key";
  Status ks = WritePrivateFile(lc->dir_ + "/owner", fmt::format("{}\n", getpid()), false);
  if (ks.ok())
    ks = WritePrivateFile(key_file, net::RandomSecret() + net::RandomSecret() + "\n", false);
  if (!ks.ok()) return ks;
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
  // A detached cluster outlives this process: its directory belongs to its scheduler.
  if (c.detached) {
    Status os = WritePrivateFile(lc->dir_ + "/owner", fmt::format("{}\n", lc->pids_[0]), true);
    if (!os.ok()) return os;
  }
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

StatusOr<RecordedCluster> ReadRecordedCluster(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + ": no local cluster is recorded");
  const auto j = nlohmann::json::parse(in, nullptr, false);
  FieldReader f(j, path);
  RecordedCluster c;
  c.scheduler = f.Str("scheduler");
  const nlohmann::json& pids = f.Array("pids", 1 << 16);
  for (size_t i = 0; i < pids.size() && f.ok(); ++i) {
    if (!pids[i].is_number_integer() || pids[i].get<int64_t>() < 2 ||
        pids[i].get<int64_t>() > (int64_t{1} << 22)) {
      f.FailField("pids", fmt::format("[{}] is not a process id", i));
    } else {
      c.pids.push_back(static_cast<pid_t>(pids[i].get<int64_t>()));
    }
  }
  if (f.ok() && c.pids.empty()) f.FailField("pids", "is empty");
  c.dir = f.OptStr("dir", "");
  const fs::path dir(c.dir);
  if (f.ok() && !c.dir.empty() &&
      (dir.parent_path() != fs::temp_directory_path() ||
       dir.filename().string().rfind("moreh-cluster-", 0) != 0)) {
    f.FailField("dir", "is not a local cluster's directory (" +
                           (fs::temp_directory_path() / "moreh-cluster-*").string() + ")");
  }
  if (!f.ok()) return f.status();
  return c;
}

std::string RecordedLocalScheduler() {
  auto c = ReadRecordedCluster(LocalClusterStateFile());
  if (!c.ok() || kill(c->pids[0], 0) != 0) return "";
  return c->scheduler;
}

}  // namespace moreh::client
