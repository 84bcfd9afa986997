// moreh-scheduler: flags -> SchedulerConfig -> Validate -> Create -> Run.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include "cli/key_file.h"
#include "runtime/log.h"
#include "scheduler/scheduler_server.h"

int main(int argc, char** argv) {
  moreh::InitLogging();
  CLI::App app{"moreh-scheduler: allocates devices of the cluster's worker daemons to jobs"};
  moreh::scheduler::SchedulerConfig c;
  std::string key_file;
  int64_t heartbeat_ms = 1000, dead_after_ms = 5000, lease_ttl_ms = 30000, idle_ms = 30000;
  app.add_option("--host", c.host, "listen address (127.0.0.1 unless told otherwise)");
  app.add_option("--port", c.port, "listen port (0: chosen by the OS)");
  app.add_option("--port-file", c.port_file, "write the chosen port here");
  app.add_option("--key-file", key_file, "cluster key file (else MOREH_CLUSTER_KEY)");
  app.add_option("--state-dir", c.state_dir, "directory of the persisted state (SQLite)");
  app.add_option("--heartbeat-ms", heartbeat_ms)->check(CLI::PositiveNumber);
  app.add_option("--dead-after-ms", dead_after_ms)->check(CLI::PositiveNumber);
  app.add_option("--lease-ttl-ms", lease_ttl_ms)->check(CLI::PositiveNumber);
  app.add_option("--idle-timeout-ms", idle_ms)->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  auto key = moreh::cli::ReadClusterKey(key_file);
  if (!key.ok()) {
    spdlog::error("{}", key.status().message());
    return 2;
  }
  c.cluster_key = key.value();
  c.heartbeat_period = std::chrono::milliseconds(heartbeat_ms);
  c.dead_after = std::chrono::milliseconds(dead_after_ms);
  c.lease_ttl = std::chrono::milliseconds(lease_ttl_ms);
  c.idle_timeout = std::chrono::milliseconds(idle_ms);
  auto server = moreh::scheduler::SchedulerServer::Create(c);
  if (!server.ok()) {
    spdlog::error("{}", server.status().message());
    return 1;
  }
  server.value()->Run();
  return 0;
}
