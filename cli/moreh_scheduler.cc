// moreh-scheduler: flags -> SchedulerConfig -> Validate -> Create -> Run.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/connection_flags.h"
#include "cli/key_file.h"
#include "runtime/log.h"
#include "scheduler/scheduler_server.h"

int main(int argc, char** argv) {
  moreh::InitLogging();
  CLI::App app{"moreh-scheduler: allocates devices of the cluster's worker daemons to jobs"};
  moreh::scheduler::SchedulerConfig c;
  std::string key_file;
  int64_t heartbeat_ms = 1000, dead_after_ms = 5000, lease_ttl_ms = 30000;
  app.add_option("--host", c.host, "listen address (127.0.0.1 unless told otherwise)");
  app.add_option("--port", c.port, "listen port (0: chosen by the OS)");
  app.add_option("--port-file", c.port_file, "write the chosen port here");
  app.add_option("--key-file", key_file, "cluster key file (else MOREH_CLUSTER_KEY)");
  app.add_option("--state-dir", c.state_dir, "directory of the persisted state (SQLite)");
  std::string config_file;
  app.add_option("--config", config_file,
                 "JSON config (host, port, state_dir, key_file, heartbeat_ms, dead_after_ms, "
                 "lease_ttl_ms, idle_timeout_ms, auth_timeout_ms, max_connections, device_sizes "
                 "{name: devices}); flags given on the command line win");
  app.add_option("--heartbeat-ms", heartbeat_ms)->check(CLI::PositiveNumber);
  app.add_option("--dead-after-ms", dead_after_ms)->check(CLI::PositiveNumber);
  app.add_option("--lease-ttl-ms", lease_ttl_ms)->check(CLI::PositiveNumber);
  moreh::cli::ConnectionFlags connections(app, c.limits, "a connection");
  CLI11_PARSE(app, argc, argv);
  if (!config_file.empty()) {
    std::ifstream in(config_file);
    const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!in.is_open() || j.is_discarded() || !j.is_object()) {
      spdlog::error("{}: {}", config_file, in.is_open() ? "not a JSON object" : "cannot open");
      return 2;
    }
    auto take = [&](const char* key, auto* out, const char* flag) {
      if (!j.contains(key) || (*flag && app.count(flag) > 0)) return true;
      try {
        *out = j.at(key).get<std::decay_t<decltype(*out)>>();
        return true;
      } catch (const std::exception&) {
        spdlog::error("{}: '{}' has the wrong type", config_file, key);
        return false;
      }
    };
    if (!take("host", &c.host, "--host") || !take("port", &c.port, "--port") ||
        !take("state_dir", &c.state_dir, "--state-dir") ||
        !take("key_file", &key_file, "--key-file") ||
        !take("heartbeat_ms", &heartbeat_ms, "--heartbeat-ms") ||
        !take("dead_after_ms", &dead_after_ms, "--dead-after-ms") ||
        !take("lease_ttl_ms", &lease_ttl_ms, "--lease-ttl-ms") ||
        !take("idle_timeout_ms", &connections.idle_ms, "--idle-timeout-ms") ||
        !take("auth_timeout_ms", &connections.auth_ms, "--auth-timeout-ms") ||
        !take("max_connections", &connections.max_connections, "--max-connections") ||
        !take("device_sizes", &c.device_sizes, "")) {
      return 2;
    }
  }
  auto key = moreh::cli::ReadClusterKey(key_file);
  if (!key.ok()) {
    spdlog::error("{}", key.status().message());
    return 2;
  }
  c.cluster_key = key.value();
  c.heartbeat_period = std::chrono::milliseconds(heartbeat_ms);
  c.dead_after = std::chrono::milliseconds(dead_after_ms);
  c.lease_ttl = std::chrono::milliseconds(lease_ttl_ms);
  connections.ApplyTo(&c.limits);
  auto server = moreh::scheduler::SchedulerServer::Create(c);
  if (!server.ok()) {
    spdlog::error("{}", server.status().message());
    return 1;
  }
  server.value()->Run();
  return 0;
}
