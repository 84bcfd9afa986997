#include "runtime/data/progress.h"

#include <fmt/format.h>

#include <cstdio>

namespace moreh::data {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() { Finish(); }

void ProgressBar::Update(int64_t done) {
  done_ = done;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ >= std::chrono::milliseconds(100)) {
    last_draw_ = now;
    Draw(false);
  }
}

void ProgressBar::Clear() {
  if (finished_) return;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  last_draw_ = std::chrono::steady_clock::time_point();  // redraw at the next Update
}

void ProgressBar::Finish() {
  if (finished_) return;
  finished_ = true;
  done_ = total_;
  Draw(true);
}

void ProgressBar::Draw(bool final) {
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  constexpr int kWidth = 40;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar;
  for (int i = 0; i < kWidth; ++i) bar += i < filled ? "\u2588" : " ";
  const double rate = secs > 0 ? static_cast<double>(done_) / secs : 0.0;
  const double left = rate > 0 ? static_cast<double>(total_ - done_) / rate : 0.0;
  auto mmss = [](double s) {
    const int t = static_cast<int>(s);
    return fmt::format("{:02d}:{:02d}", t / 60, t % 60);
  };
  std::fprintf(stderr, "\r%s: %3d%%|%s| %lld/%lld [%s<%s, %.2f %s/s%s%s]%s", label_.c_str(),
               static_cast<int>(frac * 100), bar.c_str(), static_cast<long long>(done_),
               static_cast<long long>(total_), mmss(secs).c_str(), mmss(left).c_str(), rate,
               unit_.c_str(), postfix_.empty() ? "" : ", ", postfix_.c_str(), final ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace moreh::data
