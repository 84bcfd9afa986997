// The daemons' connection limits as flags (--idle-timeout-ms, --auth-timeout-ms,
// --max-connections), with the daemon's defaults shown in the help.
#pragma once

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "runtime/net/json_connection.h"

namespace moreh::cli {

struct ConnectionFlags {
  int64_t idle_ms, auth_ms, max_connections;

  // idle_what: what the idle time-out closes ("a connection", "a connection without a job").
  ConnectionFlags(CLI::App& app, const net::ConnectionLimits& d, const std::string& idle_what)
      : idle_ms(d.idle_timeout.count()),
        auth_ms(d.auth_timeout.count()),
        max_connections(static_cast<int64_t>(d.max_connections)) {
    app.add_option("--idle-timeout-ms", idle_ms,
                   fmt::format("close {} silent this long ({})", idle_what, idle_ms))
        ->check(CLI::PositiveNumber);
    app.add_option("--auth-timeout-ms", auth_ms,
                   fmt::format("close a connection that has not said hello this long after "
                               "connecting ({})",
                               auth_ms))
        ->check(CLI::PositiveNumber);
    app.add_option("--max-connections", max_connections,
                   fmt::format("connections served at once ({})", max_connections))
        ->check(CLI::PositiveNumber);
  }

  void ApplyTo(net::ConnectionLimits* l) const {
    l->idle_timeout = std::chrono::milliseconds(idle_ms);
    l->auth_timeout = std::chrono::milliseconds(auth_ms);
    l->max_connections = static_cast<size_t>(max_connections);
  }
};

}  // namespace moreh::cli
