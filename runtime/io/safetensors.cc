#include "runtime/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

namespace moreh::io {
namespace {

using json = nlohmann::json;

bool ParseSafetensorsDType(std::string_view s, DType* out) {
  static const std::pair<std::string_view, DType> kTable[] = {{"F32", DType::kF32},
                                                              {"BF16", DType::kBF16},
                                                              {"F16", DType::kF16},
                                                              {"I32", DType::kI32},
                                                              {"I64", DType::kI64}};
  for (const auto& [name, dt] : kTable) {
    if (name == s) {
      *out = dt;
      return true;
    }
  }
  return false;
}

Status Invalid(const std::string& what) { return Status::InvalidArgument(what); }

// Reads exactly n bytes at offset, retrying short reads.
Status PreadAll(int fd, void* buf, uint64_t n, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      return Invalid(
          path + ": read failed at offset " + std::to_string(offset) +
          (r < 0 ? std::string(": ") + std::strerror(errno) : ": unexpected end of file"));
    }
    p += r;
    n -= static_cast<uint64_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};
}  // namespace

std::string_view SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

StatusOr<std::vector<SafetensorsEntry>> ParseSafetensorsHeader(
    std::string_view header, uint64_t data_size, std::map<std::string, std::string>* metadata) {
  const json j = json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("header is not valid JSON");
  if (!j.is_object()) return Invalid("header is not a JSON object");
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return Invalid("__metadata__ is not an object");
      for (const auto& [k, val] : v.items()) {
        if (!val.is_string()) return Invalid("__metadata__['" + k + "'] is not a string");
        if (metadata) (*metadata)[k] = val.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!v.is_object()) return Invalid(where + " is not an object");
    const auto dt = v.find("dtype");
    const auto sh = v.find("shape");
    const auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) return Invalid(where + ": missing string 'dtype'");
    if (sh == v.end() || !sh->is_array()) return Invalid(where + ": missing array 'shape'");
    if (off == v.end() || !off->is_array() || off->size() != 2) {
      return Invalid(where + ": 'data_offsets' must be [begin, end]");
    }
    SafetensorsEntry e;
    e.name = name;
    if (!ParseSafetensorsDType(dt->get<std::string>(), &e.dtype)) {
      return Invalid(where + ": unsupported dtype '" + dt->get<std::string>() + "'");
    }
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
        return Invalid(where + ": shape entries must be non-negative integers");
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (uint64_t{1} << 40) || (dim != 0 && numel > (uint64_t{1} << 62) / dim)) {
        return Invalid(where + ": shape is too large");
      }
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const json& o : *off) {
      if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0)) {
        return Invalid(where + ": data_offsets must be non-negative integers");
      }
    }
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    if (e.begin > e.end || e.end > data_size) {
      return Invalid(where + ": data_offsets [" + std::to_string(e.begin) + ", " +
                     std::to_string(e.end) + "] out of range (data section is " +
                     std::to_string(data_size) + " bytes)");
    }
    const uint64_t want = numel * static_cast<uint64_t>(DTypeSize(e.dtype));
    if (e.end - e.begin != want) {
      return Invalid(where + ": " + std::to_string(e.end - e.begin) + " bytes for shape " +
                     ShapeToString(e.shape) + " of " + std::string(dt->get<std::string>()) +
                     " (needs " + std::to_string(want) + ")");
    }
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  for (const SafetensorsEntry& e : entries) {
    if (e.begin < covered) return Invalid("tensor '" + e.name + "' overlaps the previous tensor");
    if (e.begin > covered) {
      return Invalid("bytes [" + std::to_string(covered) + ", " + std::to_string(e.begin) +
                     ") of the data section belong to no tensor");
    }
    covered = e.end;
  }
  if (covered != data_size) {
    return Invalid("the data section has " + std::to_string(data_size - covered) +
                   " trailing bytes that belong to no tensor");
  }
  return entries;
}

StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Status::NotFound(path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Invalid(path + ": " + std::strerror(errno));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8)
    return Invalid(path + ": too short for a safetensors file (" + std::to_string(size) +
                   " bytes)");
  unsigned char len_bytes[8];
  Status s = PreadAll(fd.get(), len_bytes, 8, 0, path);
  if (!s.ok()) return s;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  if (n > kMaxSafetensorsHeaderBytes) {
    return Invalid(path + ": header of " + std::to_string(n) + " bytes exceeds the " +
                   std::to_string(kMaxSafetensorsHeaderBytes) + "-byte limit");
  }
  if (n > size - 8) {
    return Invalid(path + ": header length " + std::to_string(n) +
                   " runs past the end of the file");
  }
  std::string header(n, '\0');
  s = PreadAll(fd.get(), header.data(), n, 8, path);
  if (!s.ok()) return s;
  SafetensorsFile f;
  f.path_ = path;
  f.data_offset_ = 8 + n;
  auto entries = ParseSafetensorsHeader(header, size - 8 - n, &f.metadata_);
  if (!entries.ok()) return Invalid(path + ": " + entries.status().message());
  f.entries_ = std::move(entries.value());
  for (size_t i = 0; i < f.entries_.size(); ++i) f.index_[f.entries_[i].name] = i;
  return f;
}

const SafetensorsEntry* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

StatusOr<runtime::Tensor> SafetensorsFile::Read(std::string_view name,
                                                runtime::Allocator* alloc) const {
  const SafetensorsEntry* e = Find(name);
  if (!e) return Status::NotFound(path_ + ": no tensor '" + std::string(name) + "'");
  Fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Status::NotFound(path_ + ": " + std::strerror(errno));
  // Device memory (a GPU's) is read through a host buffer.
  const bool direct = alloc == nullptr || alloc->host_accessible();
  runtime::Tensor t = runtime::Tensor::Empty(e->shape, e->dtype, direct ? alloc : nullptr);
  Status s = PreadAll(fd.get(), t.raw_data(), e->end - e->begin, data_offset_ + e->begin, path_);
  if (!s.ok()) return s;
  return direct ? t : t.CopyTo(alloc);
}

Status WriteSafetensors(const std::string& path,
                        const std::vector<std::pair<std::string, runtime::Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__" || header.contains(name)) {
      return Invalid(path + ": duplicate or reserved tensor name '" + name + "'");
    }
    const uint64_t bytes = static_cast<uint64_t>(t.nbytes());
    header[name] = {{"dtype", SafetensorsDTypeName(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');  // the data section starts 8-byte aligned
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return Invalid(path + ": " + std::strerror(errno));
  auto write_all = [&](const void* p, uint64_t n) -> Status {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd.get(), c, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return Invalid(path + ": write failed: " + std::strerror(errno));
      c += w;
      n -= static_cast<uint64_t>(w);
    }
    return Status::Ok();
  };
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((h.size() >> (8 * i)) & 0xff);
  Status s = write_all(len, 8);
  if (s.ok()) s = write_all(h.data(), h.size());
  for (const auto& [name, t] : tensors) {
    if (!s.ok()) break;
    const runtime::Tensor c = t.HostContiguous();
    s = write_all(c.raw_data(), static_cast<uint64_t>(c.nbytes()));
  }
  if (s.ok() && ::fsync(fd.get()) != 0)
    s = Invalid(path + ": fsync failed: " + std::strerror(errno));
  return s;
}

}  // namespace moreh::io
