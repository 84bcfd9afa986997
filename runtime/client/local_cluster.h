// An embedded local cluster: a moreh-scheduler and N moreh-worker daemons started as child
// processes on 127.0.0.1 with OS-chosen ports and a fresh cluster key, for users with no
// scheduler configured. Its directory (key, port, logs) is private to the user (0700, files
// 0600) and removed by Stop; one left by a killed owner is removed by the next Start. The children
// die with the parent (PR_SET_PDEATHSIG), so not even a kill -9 of the parent leaves orphans;
// Stop() (or the destructor) ends them. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace moreh::client {

struct LocalClusterConfig {
  int num_workers = 4;
  int devices_per_worker = 1;
  std::string device_memory = "1G";  // per device, as moreh-worker --devices takes it
  std::string bin_dir;               // where moreh-scheduler and moreh-worker are; default: ours
  // Detached daemons outlive this process (moreh-run cluster up): own session, no death signal,
  // not stopped by the destructor; DetachedState() records how to find and stop them.
  bool detached = false;
};

class LocalCluster {
 public:
  static StatusOr<std::unique_ptr<LocalCluster>> Start(const LocalClusterConfig& config);
  ~LocalCluster();
  void Stop();
  std::string scheduler_address() const;  // "127.0.0.1:PORT"
  const std::vector<pid_t>& pids() const { return pids_; }
  const std::string& dir() const { return dir_; }

 private:
  LocalCluster() = default;
  std::string dir_;
  int port_ = 0;
  bool detached_ = false;
  std::vector<pid_t> pids_;
};

// Removes this user's local-cluster directories (in the temporary directory) whose owner process
// is gone; returns how many. LocalCluster::Start calls it first.
int RemoveStaleClusterDirs();

// The directory of the running executable (/proc/self/exe).
std::string ExecutableDir();
// Where LocalCluster finds moreh-scheduler and moreh-worker when the config names no bin_dir:
// the directory set here (the Python package sets its own, since a Python program's executable
// is the interpreter), else the executable's.
void SetDefaultDaemonDir(const std::string& dir);
std::string DefaultDaemonDir();

// Where `moreh-run cluster up` records a detached local cluster for this user:
// $MOREH_HOME or ~/.moreh, file local-cluster.json {"scheduler", "pids", "dir"}.
std::string LocalClusterStateFile();
// The scheduler of a recorded local cluster whose scheduler process is alive, or "".
std::string RecordedLocalScheduler();

// What local-cluster.json records, checked: positive pids (the scheduler's first), and a directory
// that is one of ours (a moreh-cluster-* directory in the temporary directory), so that a damaged
// file can never make `cluster down` signal or delete anything else.
struct RecordedCluster {
  std::string scheduler;
  std::vector<pid_t> pids;
  std::string dir;
};
StatusOr<RecordedCluster> ReadRecordedCluster(const std::string& path);

}  // namespace moreh::client
