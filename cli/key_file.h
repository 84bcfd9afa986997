// Reads a cluster key: from --key-file, else MOREH_CLUSTER_KEY. Errors name the file.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "runtime/core/status.h"

namespace moreh::cli {

inline StatusOr<std::string> ReadClusterKey(const std::string& key_file) {
  if (key_file.empty()) {
    const char* env = std::getenv("MOREH_CLUSTER_KEY");
    return std::string(env ? env : "");
  }
  std::ifstream in(key_file);
  if (!in) return Status::NotFound(key_file + ": cannot open the cluster key file");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string key = ss.str();
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' '))
    key.pop_back();
  if (key.empty()) return Status::InvalidArgument(key_file + ": the cluster key file is empty");
  return key;
}

}  // namespace moreh::cli
