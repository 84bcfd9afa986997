#include "scheduler/state_store.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "runtime/net/auth.h"

namespace moreh::scheduler {
namespace {
using json = nlohmann::json;

int64_t WallMs(Clock::time_point t) {
  const auto now_steady = Clock::now();
  const auto now_wall = std::chrono::system_clock::now();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             (now_wall + (t - now_steady)).time_since_epoch())
      .count();
}

Clock::time_point FromWallMs(int64_t ms) {
  const auto wall = std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
  return Clock::now() + (wall - std::chrono::system_clock::now());
}

// A prepared statement with RAII finalize.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_ = nullptr;
};

// A text column ("" for NULL).
std::string Text(sqlite3_stmt* s, int col) {
  const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s, col));
  return t ? t : "";
}
}  // namespace

StateStore::~StateStore() {
  if (db_) sqlite3_close(db_);
}

Status StateStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string m = err ? err : "unknown error";
    sqlite3_free(err);
    return Status::Internal(fmt::format("{}: {}", path_, m));
  }
  return Status::Ok();
}

namespace {
// Only the scheduler's user may read its state (lease and token hashes, the cluster's layout):
// the directory 0700 and its files 0600, also when an older version created them wider.
Status MakePrivate(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return Status::InvalidArgument(dir + ": cannot create the state directory: " + ec.message());
  if (::chmod(dir.c_str(), 0700) != 0) {
    return Status::InvalidArgument(dir + ": cannot make the state directory private (mode 0700)");
  }
  for (const char* name : {"scheduler.db", "scheduler.db-wal", "scheduler.db-shm"}) {
    const std::string f = (fs::path(dir) / name).string();
    if (fs::exists(f, ec) && ::chmod(f.c_str(), 0600) != 0) {
      return Status::InvalidArgument(f + ": cannot make the state file private (mode 0600)");
    }
  }
  return Status::Ok();
}

// Sets the process's umask for the scope (SQLite creates the database, -wal and -shm files).
class Umask {
 public:
  explicit Umask(mode_t m) : old_(::umask(m)) {}
  ~Umask() { ::umask(old_); }

 private:
  mode_t old_;
};
}  // namespace

StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir) {
  Status priv = MakePrivate(dir);
  if (!priv.ok()) return priv;
  const Umask umask(077);
  std::unique_ptr<StateStore> s(new StateStore());
  s->path_ = (std::filesystem::path(dir) / "scheduler.db").string();
  if (sqlite3_open(s->path_.c_str(), &s->db_) != SQLITE_OK) {
    return Status::Internal(s->path_ + ": cannot open: " + sqlite3_errmsg(s->db_));
  }
  {
    Stmt check(s->db_, "PRAGMA integrity_check");
    const int rc = check.get() ? sqlite3_step(check.get()) : SQLITE_ERROR;
    const char* text = rc == SQLITE_ROW
                           ? reinterpret_cast<const char*>(sqlite3_column_text(check.get(), 0))
                           : nullptr;
    if (!check.get() || rc != SQLITE_ROW || !text || std::string(text) != "ok") {
      return Status::Internal(fmt::format(
          "{}: the scheduler database is corrupt ({}); refusing to start with an empty state. "
          "Restore it from a backup, or move it away to start afresh.",
          s->path_, text ? text : sqlite3_errmsg(s->db_)));
    }
  }
  Status st = s->Exec(
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
      "CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, address TEXT, devices TEXT,"
      " profile TEXT);"
      "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER);");
  if (!st.ok()) return st;
  st = s->Migrate();
  if (!st.ok()) return st;
  return s;
}

// Schema 2 keeps only hashes of lease secrets and user tokens. A schema-1 database (plain text)
// is converted in one transaction.
Status StateStore::Migrate() {
  int64_t version = 0;
  {
    Stmt q(db_, "SELECT value FROM meta WHERE key = 'schema'");
    if (sqlite3_step(q.get()) == SQLITE_ROW) version = sqlite3_column_int64(q.get(), 0);
  }
  if (version >= 2) return Status::Ok();
  bool old_tables = false;
  {
    Stmt q(db_, "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'leases'");
    old_tables = sqlite3_step(q.get()) == SQLITE_ROW;
  }
  Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  auto fail = [&](const Status& e) {
    Exec("ROLLBACK").IgnoreError();
    return e;
  };
  if (old_tables) {
    s = Exec(
        "ALTER TABLE leases RENAME COLUMN secret TO secret_hash;"
        "ALTER TABLE leases RENAME COLUMN token TO user;"
        "ALTER TABLE users RENAME COLUMN token TO user;");
    if (!s.ok()) return fail(s);
    std::vector<std::pair<int64_t, std::pair<std::string, std::string>>> leases;
    {
      Stmt q(db_, "SELECT id, secret_hash, user FROM leases");
      while (sqlite3_step(q.get()) == SQLITE_ROW) {
        leases.push_back({sqlite3_column_int64(q.get(), 0), {Text(q.get(), 1), Text(q.get(), 2)}});
      }
    }
    for (const auto& [id, su] : leases) {
      Stmt u(db_, "UPDATE leases SET secret_hash = ?, user = ? WHERE id = ?");
      const std::string sh = net::HashSecret(su.first), uh = net::HashSecret(su.second);
      sqlite3_bind_text(u.get(), 1, sh.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(u.get(), 2, uh.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(u.get(), 3, id);
      if (sqlite3_step(u.get()) != SQLITE_DONE)
        return fail(Status::Internal(path_ + ": " + sqlite3_errmsg(db_)));
    }
    std::vector<std::string> users;
    {
      Stmt q(db_, "SELECT user FROM users");
      while (sqlite3_step(q.get()) == SQLITE_ROW) users.push_back(Text(q.get(), 0));
    }
    for (const std::string& u : users) {
      Stmt q(db_, "UPDATE users SET user = ? WHERE user = ?");
      const std::string h = net::HashSecret(u);
      sqlite3_bind_text(q.get(), 1, h.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(q.get(), 2, u.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(q.get()) != SQLITE_DONE)
        return fail(Status::Internal(path_ + ": " + sqlite3_errmsg(db_)));
    }
    spdlog::info("{}: converted to schema 2 ({} leases, {} users now stored as hashes)", path_,
                 leases.size(), users.size());
  } else {
    s = Exec(
        "CREATE TABLE leases (id INTEGER PRIMARY KEY, secret_hash TEXT, user TEXT,"
        " request_id TEXT, devices TEXT, expiry_ms INTEGER);"
        "CREATE TABLE users (user TEXT PRIMARY KEY, state TEXT);");
    if (!s.ok()) return fail(s);
  }
  s = Exec("INSERT OR REPLACE INTO meta VALUES ('schema', 2)");
  if (!s.ok()) return fail(s);
  s = Exec("COMMIT");
  if (!s.ok()) return fail(s);
  // The plain-text secrets may linger in free pages and the WAL: rewrite the file.
  if (old_tables) {
    s = Exec("PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);");
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

Status StateStore::SaveNode(const Node& n) {
  json devices = json::array();
  for (const Device& d : n.devices) {
    devices.push_back(
        {{"id", d.id}, {"kind", d.kind}, {"name", d.name}, {"memory_bytes", d.memory_bytes}});
  }
  Stmt q(db_, "INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?)");
  const std::string dj = devices.dump(), pj = n.profile.dump();
  sqlite3_bind_text(q.get(), 1, n.name.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(q.get(), 2, n.address.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(q.get(), 3, dj.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(q.get(), 4, pj.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(q.get()) != SQLITE_DONE)
    return Status::Internal(path_ + ": " + sqlite3_errmsg(db_));
  return Status::Ok();
}

Status StateStore::SaveLease(const Lease& l, uint64_t next_lease_id) {
  Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  json devices = json::array();
  for (const auto& [node, id] : l.devices) devices.push_back({node, id});
  const std::string dj = json{{"devices", devices}, {"vdev", l.vdev}, {"pid", l.pid}}.dump();
  {
    Stmt q(db_, "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?)");
    sqlite3_bind_int64(q.get(), 1, static_cast<int64_t>(l.id));
    sqlite3_bind_text(q.get(), 2, l.secret_hash.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q.get(), 3, l.user.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q.get(), 4, l.request_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q.get(), 5, dj.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q.get(), 6, WallMs(l.expiry));
    Stmt m(db_, "INSERT OR REPLACE INTO meta VALUES ('next_lease', ?)");
    sqlite3_bind_int64(m.get(), 1, static_cast<int64_t>(next_lease_id));
    if (sqlite3_step(q.get()) != SQLITE_DONE || sqlite3_step(m.get()) != SQLITE_DONE) {
      const std::string err = sqlite3_errmsg(db_);
      Exec("ROLLBACK").IgnoreError();
      return Status::Internal(path_ + ": " + err);
    }
  }
  return Exec("COMMIT");
}

Status StateStore::DeleteLease(uint64_t id) {
  Stmt q(db_, "DELETE FROM leases WHERE id = ?");
  sqlite3_bind_int64(q.get(), 1, static_cast<int64_t>(id));
  if (sqlite3_step(q.get()) != SQLITE_DONE)
    return Status::Internal(path_ + ": " + sqlite3_errmsg(db_));
  return Status::Ok();
}

Status StateStore::SaveUser(const std::string& user, const UserState& u) {
  json devices = json::array();
  for (const auto& d : u.devices) devices.push_back({{"id", d.id}, {"size", d.size}});
  const std::string sj = json{{"current", u.current}, {"devices", devices}}.dump();
  Stmt q(db_, "INSERT OR REPLACE INTO users VALUES (?, ?)");
  sqlite3_bind_text(q.get(), 1, user.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(q.get(), 2, sj.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(q.get()) != SQLITE_DONE)
    return Status::Internal(path_ + ": " + sqlite3_errmsg(db_));
  return Status::Ok();
}

Status StateStore::Load(Registry* r) {
  try {
    Stmt nodes(db_, "SELECT name, address, devices, profile FROM nodes");
    while (sqlite3_step(nodes.get()) == SQLITE_ROW) {
      Node n;
      n.name = Text(nodes.get(), 0);
      n.address = Text(nodes.get(), 1);
      for (const json& d : json::parse(Text(nodes.get(), 2))) {
        n.devices.push_back({d.at("id").get<int>(), d.at("kind").get<std::string>(),
                             d.at("name").get<std::string>(), d.at("memory_bytes").get<int64_t>(),
                             0});
      }
      n.profile = json::parse(Text(nodes.get(), 3));
      r->RestoreNode(std::move(n));
    }
    Stmt leases(db_, "SELECT id, secret_hash, user, request_id, devices, expiry_ms FROM leases");
    while (sqlite3_step(leases.get()) == SQLITE_ROW) {
      Lease l;
      l.id = static_cast<uint64_t>(sqlite3_column_int64(leases.get(), 0));
      l.secret_hash = Text(leases.get(), 1);
      l.user = Text(leases.get(), 2);
      l.request_id = Text(leases.get(), 3);
      const json lj = json::parse(Text(leases.get(), 4));
      for (const json& d : lj.at("devices")) {
        l.devices.emplace_back(d.at(0).get<std::string>(), d.at(1).get<int>());
      }
      l.vdev = lj.value("vdev", -1);
      l.pid = lj.value("pid", int64_t{0});
      l.expiry = FromWallMs(sqlite3_column_int64(leases.get(), 5));
      r->RestoreLease(std::move(l));
    }
    Stmt users(db_, "SELECT user, state FROM users");
    while (sqlite3_step(users.get()) == SQLITE_ROW) {
      const json uj = json::parse(Text(users.get(), 1));
      UserState u;
      u.current = uj.at("current").get<int>();
      for (const json& d : uj.at("devices"))
        u.devices.push_back({d.at("id").get<int>(), d.at("size").get<std::string>()});
      r->RestoreUser(Text(users.get(), 0), std::move(u));
    }
    Stmt meta(db_, "SELECT value FROM meta WHERE key = 'next_lease'");
    if (sqlite3_step(meta.get()) == SQLITE_ROW) {
      r->set_next_lease(static_cast<uint64_t>(sqlite3_column_int64(meta.get(), 0)));
    }
  } catch (const std::exception& e) {
    return Status::Internal(path_ + ": a stored row is malformed (" + e.what() + ")");
  }
  return Status::Ok();
}

}  // namespace moreh::scheduler
