// A tqdm-style progress bar on stderr, as the reference's log shows it:
//   Map: 100%|██████████| 2000/2000 [00:01<00:00, 1523.40 examples/s]
// Redrawn at most ten times a second; the final state is printed by Finish() (or the destructor).
// Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace moreh::data {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "examples");
  ~ProgressBar();
  void Update(int64_t done);
  // Text after the rate ("loss=6.12, 1520 tokens/s"), shown from the next draw.
  void set_postfix(std::string postfix) { postfix_ = std::move(postfix); }
  // Erases the bar's line, so a log line can take it (the next Update draws the bar again).
  void Clear();
  void Finish();

 private:
  void Draw(bool final);
  std::string label_, unit_, postfix_;
  int64_t total_, done_ = 0;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace moreh::data
