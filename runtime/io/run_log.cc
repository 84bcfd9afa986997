#include "runtime/io/run_log.h"

#include <fmt/format.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/core/error.h"

namespace moreh::io {
namespace {

// CRC-32C (Castagnoli), as TFRecord frames its records, and its masked form.
uint32_t Crc32c(const char* p, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0x82F63B78u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ static_cast<uint8_t>(p[i])) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}
uint32_t Masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u; }

// Protocol-buffer wire format, the few fields an Event with scalar summaries needs.
void Varint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void Key(std::string* out, int field, int wire) { Varint(out, (field << 3) | wire); }
template <typename T>
void Fixed(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts (x86-64, aarch64)
  out->append(b, sizeof(T));
}
void Bytes(std::string* out, int field, const std::string& s) {
  Key(out, field, 2);
  Varint(out, s.size());
  out->append(s);
}

// tensorflow.Event {wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
// summary = 5 (Summary {value = 1 (Value {tag = 1, simple_value = 2 (float)})})}.
std::string Event(double wall, int64_t step, const std::string* version,
                  const std::vector<std::pair<std::string, float>>& values) {
  std::string e;
  Key(&e, 1, 1);
  Fixed(&e, wall);
  Key(&e, 2, 0);
  Varint(&e, static_cast<uint64_t>(step));
  if (version) Bytes(&e, 3, *version);
  if (!values.empty()) {
    std::string summary;
    for (const auto& [tag, v] : values) {
      std::string value;
      Bytes(&value, 1, tag);
      Key(&value, 2, 5);
      Fixed(&value, v);
      Bytes(&summary, 1, value);
    }
    Bytes(&e, 5, summary);
  }
  return e;
}

double WallTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

RunLog::RunLog(std::string dir) : dir_(std::move(dir)) {}

void RunLog::Open() {
  const std::string& dir = dir_;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  MOREH_CHECK(!ec, "logging directory '{}': {}", dir, ec.message());
  jsonl_ = std::fopen((dir + "/metrics.jsonl").c_str(), "a");
  MOREH_CHECK(jsonl_ != nullptr, "logging directory '{}': cannot write metrics.jsonl", dir);
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const std::string events =
      fmt::format("{}/events.out.tfevents.{}.{}", dir, static_cast<int64_t>(WallTime()), host);
  events_ = std::fopen(events.c_str(), "wb");
  if (events_ == nullptr) {  // both or neither: the next Log tries again
    std::fclose(jsonl_);
    jsonl_ = nullptr;
    throw Error(fmt::format("logging directory '{}': cannot write {}", dir, events));
  }
  const std::string version = "brain.Event:2";
  WriteEvent(Event(WallTime(), 0, &version, {}));
}

RunLog::~RunLog() {
  try {
    Finish();
  } catch (...) {  // a destructor reports nothing; Finish() called directly throws
  }
  if (jsonl_) std::fclose(jsonl_);
  if (events_) std::fclose(events_);
}

void RunLog::WriteEvent(const std::string& e) {
  std::string rec;
  const uint64_t n = e.size();
  Fixed(&rec, n);
  Fixed(&rec, Masked(Crc32c(rec.data(), 8)));
  rec.append(e);
  Fixed(&rec, Masked(Crc32c(e.data(), e.size())));
  std::fwrite(rec.data(), 1, rec.size(), events_);
  std::fflush(events_);
}

void RunLog::Log(int64_t step, const std::map<std::string, double>& scalars,
                 const std::vector<int64_t>& peak_bytes, const std::string& split) {
  if (jsonl_ == nullptr) Open();
  nlohmann::json j = {{"step", step}, {"split", split}};
  std::vector<std::pair<std::string, float>> values;
  for (const auto& [k, v] : scalars) {
    j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
    values.emplace_back(split + "/" + k, static_cast<float>(v));
  }
  if (!peak_bytes.empty()) {
    j["peak_memory_bytes"] = peak_bytes;
    values.emplace_back(split + "/peak_memory_gib", static_cast<float>(*std::max_element(
                                                        peak_bytes.begin(), peak_bytes.end())) /
                                                        static_cast<float>(1 << 30));
  }
  std::fprintf(jsonl_, "%s\n", j.dump().c_str());
  std::fflush(jsonl_);
  WriteEvent(Event(WallTime(), step, nullptr, values));
  if (auto it = scalars.find("loss"); it != scalars.end() && std::isfinite(it->second)) {
    loss_[split].emplace_back(step, it->second);
  }
}

void RunLog::Finish() {
  if (finished_ || jsonl_ == nullptr) return;
  finished_ = true;
  const std::string svg = dir_ + "/loss_curve.svg";
  std::ofstream(svg) << LineChartSvg("loss", loss_);
  // The PNG where a converter is installed (librsvg's rsvg-convert; scripts/setup installs it).
  const std::string png = dir_ + "/loss_curve.png";
  std::string out = "-o", in = svg, tool = "rsvg-convert";
  char* argv[] = {tool.data(), out.data(), const_cast<char*>(png.c_str()), in.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawnp(&pid, tool.c_str(), nullptr, nullptr, argv, environ) != 0) return;  // none
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    spdlog::warn("loss curve: rsvg-convert could not write {}", png);
  }
}

std::string RunStamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", &tm);
  return buf;
}

std::string LineChartSvg(const std::string& title,
                         const std::map<std::string, std::vector<std::pair<int64_t, double>>>& s) {
  constexpr double W = 640, H = 400, L = 60, R = 20, T = 30, B = 40;
  int64_t x0 = INT64_MAX, x1 = INT64_MIN;
  double y0 = INFINITY, y1 = -INFINITY;
  for (const auto& [name, pts] : s) {
    for (const auto& [x, y] : pts) {
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{}\" y=\"18\" text-anchor=\"middle\">{}</text>\n",
      W, H, W / 2, title);
  if (x0 > x1) return svg + "<text x=\"60\" y=\"60\">no data</text>\n</svg>\n";
  if (x1 == x0) x1 = x0 + 1;
  if (y1 - y0 < 1e-12) y1 = y0 + 1;
  auto px = [&](double x) { return L + (x - x0) / static_cast<double>(x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  svg += fmt::format(
      "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n"
      "<line x1=\"{0}\" y1=\"{3}\" x2=\"{0}\" y2=\"{1}\" stroke=\"black\"/>\n",
      L, H - B, W - R, T);
  for (int i = 0; i <= 4; ++i) {
    const double y = y0 + (y1 - y0) * i / 4;
    const double x = x0 + static_cast<double>(x1 - x0) * i / 4;
    svg += fmt::format(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.3g}</text>\n"
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.0f}</text>\n",
        L - 4, py(y) + 4, y, px(x), H - B + 16, x);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", W / 2, H - 6);
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
  int k = 0;
  for (const auto& [name, pts] : s) {
    std::string path;
    for (const auto& [x, y] : pts) {
      path += fmt::format("{}{:.1f},{:.1f}", path.empty() ? "M" : " L", px(static_cast<double>(x)),
                          py(y));
    }
    const char* color = colors[k % 4];
    svg += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>\n", path,
                       color);
    svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>\n", W - R - 80,
                       T + 16 * (k + 1), color, name);
    ++k;
  }
  return svg + "</svg>\n";
}

}  // namespace moreh::io
