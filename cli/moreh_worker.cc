// moreh-worker: flags -> WorkerConfig -> Validate -> Create -> Run.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>

#include "cli/connection_flags.h"
#include "cli/key_file.h"
#include "runtime/log.h"
#include "worker/worker_daemon.h"

int main(int argc, char** argv) {
  // Idle OpenMP threads sleep instead of spinning: the devices of one host (CPU devices of a local
  // cluster) share its cores, and a spinning pool starves the others' kernels and skews their
  // start-up profiles 10x. libgomp reads the variable when it loads, so set it and start again.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);  // on failure, go on as we are
  }
  moreh::InitLogging();
  CLI::App app{"moreh-worker: serves this node's devices to the scheduler's jobs"};
  moreh::worker::WorkerConfig c;
  std::string scheduler = "127.0.0.1:0", devices = "cpu:1:1G", key_file;
  bool no_profile = false;
  char host[256] = "node";
  gethostname(host, sizeof host);
  c.node_name = host;
  app.add_option("--scheduler", scheduler, "scheduler HOST:PORT")->required();
  app.add_option("--devices", devices, "cpu:COUNT:MEMORY, e.g. cpu:4:256M");
  app.add_option("--node", c.node_name, "node name (default: the host name)");
  app.add_option("--key-file", key_file, "cluster key file (else MOREH_CLUSTER_KEY)");
  app.add_option("--listen-host", c.listen_host, "address of this worker's control endpoint");
  app.add_option("--listen-port", c.listen_port,
                 "port of the control endpoint (0: chosen by the OS)");
  app.add_flag("--no-profile", no_profile, "skip the start-up device profile");
  moreh::cli::ConnectionFlags connections(app, c.limits, "a connection without a job");
  CLI11_PARSE(app, argc, argv);
  const size_t colon = scheduler.rfind(':');
  auto spec = moreh::worker::ParseDevices(devices);
  auto key = moreh::cli::ReadClusterKey(key_file);
  if (colon == std::string::npos || !spec.ok() || !key.ok()) {
    spdlog::error("{}", colon == std::string::npos ? "--scheduler must be HOST:PORT"
                        : !spec.ok()               ? spec.status().message()
                                                   : key.status().message());
    return 2;
  }
  c.scheduler_host = scheduler.substr(0, colon);
  try {
    c.scheduler_port = std::stoi(scheduler.substr(colon + 1));
  } catch (const std::exception&) {
    spdlog::error("--scheduler port '{}' is not a number", scheduler.substr(colon + 1));
    return 2;
  }
  c.devices = spec.value();
  c.cluster_key = key.value();
  c.measure_profile = !no_profile;
  connections.ApplyTo(&c.limits);
  auto w = moreh::worker::WorkerDaemon::Create(c);
  if (!w.ok()) {
    spdlog::error("{}", w.status().message());
    return 1;
  }
  w.value()->Run();
  return 0;
}
