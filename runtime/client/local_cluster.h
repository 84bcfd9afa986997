// An embedded local cluster: a moreh-scheduler and N moreh-worker daemons started as child
// processes on 127.0.0.1 with OS-chosen ports and a fresh cluster key, for users with no
// scheduler configured. The children die with the parent (PR_SET_PDEATHSIG), so not even a
// kill -9 of the parent leaves orphans; Stop() (or the destructor) ends them. Not thread-safe.
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

// The directory of the running executable (/proc/self/exe).
std::string ExecutableDir();

// Where `moreh-run cluster up` records a detached local cluster for this user:
// $MOREH_HOME or ~/.moreh, file local-cluster.json {"scheduler", "pids", "dir"}.
std::string LocalClusterStateFile();
// The scheduler of a recorded local cluster whose scheduler process is alive, or "".
std::string RecordedLocalScheduler();

}  // namespace moreh::client
