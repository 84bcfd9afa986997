// Reads a cluster key: from --key-file, else MOREH_CLUSTER_KEY. A key file must be private (no
// access for group or others, as ssh demands of its keys): whoever reads it can join the cluster.
// Errors name the file.
#pragma once

#include <fmt/format.h>
#include <sys/stat.h>

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
  struct stat st {};
  if (::stat(key_file.c_str(), &st) != 0) {
    return Status::NotFound(key_file + ": cannot open the cluster key file");
  }
  if ((st.st_mode & 077) != 0) {
    return Status::InvalidArgument(fmt::format(
        "{}: the cluster key file is readable by other users (mode {:04o}); make it private with "
        "'chmod 600 {}'",
        key_file, st.st_mode & 07777, key_file));
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
