// The scheduler's persisted state: nodes and leases in SQLite (WAL mode) in the state directory,
// which is private to the scheduler's user (0700, files 0600). Secrets and tokens are stored as
// SHA-256 hashes only, so a copy of the database lets no one renew a lease or act as a user.
// Every change is one transaction, so a crash at any point leaves the last committed state; a
// restart reloads it (nodes come back dead until their workers re-register; leases keep their
// wall-clock expiry). A database that fails SQLite's integrity check makes Open fail with a clear
// message: the daemon refuses to start rather than start empty. Not thread-safe.
#pragma once

#include <memory>
#include <string>

#include "runtime/core/status.h"
#include "scheduler/registry.h"

struct sqlite3;

namespace moreh::scheduler {

class StateStore {
 public:
  static StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir);
  ~StateStore();

  Status SaveNode(const Node& n);
  Status SaveLease(const Lease& l, uint64_t next_lease_id);
  Status DeleteLease(uint64_t id);
  Status SaveUser(const std::string& user, const UserState& u);
  // Fills `r` with the stored nodes (dead) and leases.
  Status Load(Registry* r);
  const std::string& path() const { return path_; }

 private:
  StateStore() = default;
  Status Exec(const std::string& sql);
  Status Migrate();
  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace moreh::scheduler
