#include "runtime/io/hf_checkpoint.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace moreh::io {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
Status Invalid(const std::string& m) { return Status::InvalidArgument(m); }

bool IsCheckpointFile(const std::string& name) {
  return name == "config.json" || name == "model.safetensors.index.json" ||
         (name.rfind("model", 0) == 0 && name.size() > 12 &&
          name.compare(name.size() - 12, 12, ".safetensors") == 0);
}

Status WriteTextFile(const fs::path& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Invalid(path.string() + ": " + std::strerror(errno));
  const char* p = text.data();
  size_t n = text.size();
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      ::close(fd);
      return Invalid(path.string() + ": write failed: " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok ? Status::Ok() : Invalid(path.string() + ": fsync failed");
}

void SyncDir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
}  // namespace

StatusOr<CheckpointReader> CheckpointReader::Open(const std::string& dir) {
  CheckpointReader r;
  r.dir_ = dir;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::exists(index, ec)) {
    std::ifstream in(index);
    std::stringstream ss;
    ss << in.rdbuf();
    const json j = json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return Invalid(index.string() + ": not valid JSON");
    const auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object()) {
      return Invalid(index.string() + ": missing object 'weight_map'");
    }
    std::map<std::string, size_t> file_index;
    for (const auto& [name, file] : wm->items()) {
      if (!file.is_string())
        return Invalid(index.string() + ": weight_map['" + name + "'] is not a string");
      const std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f == ".." || f.empty()) {
        return Invalid(index.string() + ": shard name '" + f + "' is not a plain file name");
      }
      if (!file_index.count(f)) {
        auto sf = SafetensorsFile::Open((fs::path(dir) / f).string());
        if (!sf.ok()) {  // a missing shard is a broken checkpoint, not an absent one
          return Invalid(index.string() + ": shard " + f + ": " + sf.status().message());
        }
        file_index[f] = r.files_.size();
        r.files_.push_back(std::make_shared<SafetensorsFile>(std::move(sf.value())));
      }
      const size_t fi = file_index[f];
      if (!r.files_[fi]->Find(name)) {
        return Invalid(index.string() + ": '" + name + "' is mapped to " + f + ", which lacks it");
      }
      r.names_.emplace_back(name, fi);
    }
    return r;
  }
  if (!fs::exists(single, ec)) {
    return Status::NotFound(dir + ": no model.safetensors or model.safetensors.index.json");
  }
  auto sf = SafetensorsFile::Open(single.string());
  if (!sf.ok()) return sf.status();
  r.files_.push_back(std::make_shared<SafetensorsFile>(std::move(sf.value())));
  for (const auto& e : r.files_[0]->entries()) r.names_.emplace_back(e.name, 0);
  return r;
}

std::vector<std::string> CheckpointReader::Names() const {
  std::vector<std::string> n;
  for (const auto& [name, f] : names_) n.push_back(name);
  return n;
}

const SafetensorsEntry* CheckpointReader::Find(const std::string& name,
                                               const SafetensorsFile** file) const {
  for (const auto& f : files_) {
    if (const SafetensorsEntry* e = f->Find(name)) {
      if (file) *file = f.get();
      return e;
    }
  }
  return nullptr;
}

StatusOr<runtime::Tensor> CheckpointReader::Read(const std::string& name,
                                                 runtime::Allocator* alloc) const {
  const SafetensorsFile* f = nullptr;
  if (!Find(name, &f)) return Status::NotFound(dir_ + ": missing tensor '" + name + "'");
  return f->Read(name, alloc);
}

namespace {
fs::path TargetOf(const std::string& dir_in) {
  const fs::path dir = fs::absolute(fs::path(dir_in)).lexically_normal();
  return dir.has_filename() ? dir : dir.parent_path();
}
}  // namespace

StatusOr<std::string> BeginCheckpointSave(const std::string& dir_in) {
  const fs::path target = TargetOf(dir_in);
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  const fs::path tmp =
      target.parent_path() / fmt::format(".{}.tmp-{}", target.filename().string(), ::getpid());
  fs::remove_all(tmp, ec);
  // Temporary directories of saves that were killed (their process is gone) are removed.
  const std::string stale_prefix = "." + target.filename().string() + ".tmp-";
  for (const auto& e : fs::directory_iterator(target.parent_path(), ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(stale_prefix, 0) != 0) continue;
    const long pid = std::strtol(n.c_str() + stale_prefix.size(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      fs::remove_all(e.path(), ec);
    }
  }
  if (!fs::create_directory(tmp, ec)) {
    return Invalid(tmp.string() + ": cannot create: " + ec.message());
  }
  return tmp.string();
}

void AbortCheckpointSave(const std::string& tmp) {
  std::error_code ec;
  fs::remove_all(tmp, ec);
}

Status CommitCheckpointSave(const std::string& tmp_in, const std::string& dir_in,
                            const std::string& config_json,
                            const std::vector<std::pair<std::string, std::string>>& weight_map,
                            int64_t total_bytes) {
  const fs::path tmp(tmp_in), target = TargetOf(dir_in);
  std::error_code ec;
  std::set<std::string> files;
  json wm = json::object();
  for (const auto& [tensor, file] : weight_map) {
    files.insert(file);
    wm[tensor] = file;
  }
  Status st = Status::Ok();
  if (files.size() > 1 || (files.size() == 1 && *files.begin() != "model.safetensors")) {
    const json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", wm}};
    st = WriteTextFile(tmp / "model.safetensors.index.json", index.dump(2));
  }
  if (st.ok()) st = WriteTextFile(tmp / "config.json", config_json);
  if (!st.ok()) {
    fs::remove_all(tmp, ec);
    return st;
  }
  const bool exists = fs::exists(target, ec);
  if (exists) {
    if (!fs::is_directory(target, ec)) {
      fs::remove_all(tmp, ec);
      return Invalid(target.string() + ": exists and is not a directory");
    }
    // Keep what else lives in the directory (tokenizer, notes); replace the checkpoint files.
    for (const auto& entry : fs::directory_iterator(target, ec)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file() || IsCheckpointFile(name)) continue;
      fs::create_hard_link(entry.path(), tmp / name, ec);
      if (ec) fs::copy_file(entry.path(), tmp / name, ec);
    }
  }
  SyncDir(tmp);
  if (exists) {
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0) {
      const std::string err = std::strerror(errno);
      fs::remove_all(tmp, ec);
      return Invalid(target.string() + ": cannot replace the checkpoint: " + err);
    }
    // Subdirectories (the run's logs: runs/) move into the new checkpoint whole; files a run
    // still writes there keep being written (a rename keeps open files).
    for (const auto& entry : fs::directory_iterator(tmp, ec)) {
      const fs::path to = target / entry.path().filename();
      if (entry.is_directory() && !fs::exists(to)) fs::rename(entry.path(), to, ec);
    }
    fs::remove_all(tmp, ec);  // now the previous checkpoint
  } else if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    fs::remove_all(tmp, ec);
    return Invalid(target.string() + ": cannot create the checkpoint: " + err);
  }
  SyncDir(target.parent_path());
  return Status::Ok();
}

std::string ShardFileName(int index, int count) {
  return count == 1 ? "model.safetensors"
                    : fmt::format("model-{:05d}-of-{:05d}.safetensors", index + 1, count);
}

Status SaveCheckpoint(const std::string& dir,
                      const std::vector<std::pair<std::string, runtime::Tensor>>& tensors,
                      const std::string& config_json, int64_t max_shard_bytes) {
  auto tmp = BeginCheckpointSave(dir);
  if (!tmp.ok()) return tmp.status();
  // Group into shards of at most max_shard_bytes (a tensor larger than that gets its own shard).
  std::vector<std::vector<size_t>> shards(1);
  int64_t current = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t b = tensors[i].second.nbytes();
    if (!shards.back().empty() && current + b > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += b;
    total += b;
  }
  const std::map<std::string, std::string> meta{{"format", "pt"}};
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = ShardFileName(static_cast<int>(s), static_cast<int>(shards.size()));
    std::vector<std::pair<std::string, runtime::Tensor>> part;
    for (size_t i : shards[s]) {
      part.push_back(tensors[i]);
      weight_map.emplace_back(tensors[i].first, name);
    }
    Status st = WriteSafetensors((fs::path(*tmp) / name).string(), part, meta);
    if (!st.ok()) {
      AbortCheckpointSave(*tmp);
      return st;
    }
  }
  return CommitCheckpointSave(*tmp, dir, config_json, weight_map, total);
}

}  // namespace moreh::io
