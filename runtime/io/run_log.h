// A training run's record, in the formats people read: one JSON object per step in
// metrics.jsonl, TensorBoard event files (events.out.tfevents.*: scalars under train/ and eval/,
// readable by tensorboard), and at the end a picture of the loss curves (loss_curve.svg, train and
// eval). Files are flushed after every step, so a killed run keeps what it logged. Not
// thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace moreh::io {

class RunLog {
 public:
  // Writes into `dir` (created with its parents at the first Log, so a run that fails before
  // its first step leaves nothing). Log throws moreh::Error naming the directory when it cannot.
  explicit RunLog(std::string dir);
  ~RunLog();
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  // One step's scalars ("loss", "learning_rate", "tokens_per_s", ...) and, as a list, the peak
  // memory of each device; `split` "train" or "eval".
  void Log(int64_t step, const std::map<std::string, double>& scalars,
           const std::vector<int64_t>& peak_bytes = {}, const std::string& split = "train");
  // Writes loss_curve.svg when anything was logged (also done by the destructor).
  void Finish();
  const std::string& dir() const { return dir_; }

 private:
  void Open();
  void WriteEvent(const std::string& event);
  std::string dir_;
  std::FILE* jsonl_ = nullptr;
  std::FILE* events_ = nullptr;
  std::map<std::string, std::vector<std::pair<int64_t, double>>> loss_;  // split -> (step, loss)
  bool finished_ = false;
};

// The local time as "20261204-201500" (a run directory's name).
std::string RunStamp();

// The SVG of one or more (step, value) series on shared axes, with a legend.
std::string LineChartSvg(const std::string& title,
                         const std::map<std::string, std::vector<std::pair<int64_t, double>>>& s);

}  // namespace moreh::io
