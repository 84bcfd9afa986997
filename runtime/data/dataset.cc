#include "runtime/data/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>

#include "runtime/core/allocator.h"
#include "runtime/data/progress.h"

namespace moreh::data {
namespace {
Status Bad(const std::string& m) { return Status::InvalidArgument(m); }

Status CheckBlock(int64_t block_size) {
  if (block_size <= 0) return Bad(fmt::format("block size must be positive, got {}", block_size));
  return Status::Ok();
}
}  // namespace

StatusOr<int64_t> MaxLineBytes() {
  const char* v = std::getenv("MOREH_MAX_LINE_BYTES");
  if (!v || !*v) return kDefaultMaxLineBytes;
  const int64_t n = runtime::ParseMemoryBytes(v);
  if (n <= 0) {
    return Bad(fmt::format("MOREH_MAX_LINE_BYTES='{}' must be a size such as 64M or 1048576", v));
  }
  return n;
}

int64_t FirstInvalidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + len > n) return static_cast<int64_t>(i);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return static_cast<int64_t>(i);
    }
    i += len;
  }
  return -1;
}

StatusOr<std::vector<Record>> ReadJsonl(const std::string& path,
                                        const std::vector<std::string>& fields,
                                        int64_t max_line_bytes) {
  if (max_line_bytes <= 0) {
    auto m = MaxLineBytes();
    if (!m.ok()) return m.status();
    max_line_bytes = m.value();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path + ": cannot open the dataset");
  std::vector<Record> records;
  std::string line;
  int64_t lineno = 0;
  while (in.peek() != std::char_traits<char>::eof()) {
    ++lineno;
    // Read the line, but never more of it than the limit.
    line.clear();
    bool complete = false;
    char buf[65536];
    while (!complete) {
      in.getline(buf, sizeof buf);
      const std::streamsize got = in.gcount();
      if (in.eof()) {
        line.append(buf, static_cast<size_t>(got));
        complete = true;
      } else if (in.fail()) {  // the buffer filled before the line ended
        in.clear();
        line.append(buf, static_cast<size_t>(got));
      } else {  // the newline was read (and counted in gcount)
        line.append(buf, static_cast<size_t>(got > 0 ? got - 1 : 0));
        complete = true;
      }
      if (static_cast<int64_t>(line.size()) > max_line_bytes) {
        return Bad(fmt::format(
            "{}:{}: the line is longer than {} bytes, the limit for one record (raise it with "
            "--max-line-bytes or MOREH_MAX_LINE_BYTES if such records are meant)",
            path, lineno, max_line_bytes));
      }
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (const int64_t bad = FirstInvalidUtf8(line); bad >= 0) {
      return Bad(fmt::format("{}:{}: not valid UTF-8 (byte {} of the line, 0x{:02x})", path, lineno,
                             bad + 1, static_cast<unsigned char>(line[static_cast<size_t>(bad)])));
    }
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return Bad(fmt::format("{}:{}: not a JSON object", path, lineno));
    }
    Record r;
    for (const std::string& f : fields) {
      const auto it = j.find(f);
      if (it == j.end()) return Bad(fmt::format("{}:{}: missing field '{}'", path, lineno, f));
      if (!it->is_string()) {
        return Bad(fmt::format("{}:{}: field '{}' is not a string", path, lineno, f));
      }
      r[f] = it->get<std::string>();
    }
    records.push_back(std::move(r));
  }
  if (records.empty()) return Bad(path + ": the dataset is empty");
  return records;
}

std::string SummarizationPrompt(const Record& r, const std::string& article_field,
                                const std::string& summary_field) {
  return "[SUMMARIZE] " + r.at(article_field) + " [/SUMMARIZE]\n" + r.at(summary_field);
}

StatusOr<TokenizedDataset> TokenizeRecords(
    const std::vector<Record>& records, const Tokenizer& tokenizer, int64_t block_size,
    const std::function<std::string(const Record&)>& prompt) {
  Status s = CheckBlock(block_size);
  if (!s.ok()) return s;
  TokenizedDataset d;
  d.block_size = block_size;
  d.examples.reserve(records.size());
  ProgressBar bar("Map", static_cast<int64_t>(records.size()));
  for (size_t i = 0; i < records.size(); ++i) {
    d.examples.push_back(tokenizer.EncodeToLength(prompt(records[i]), block_size));
    bar.Update(static_cast<int64_t>(i + 1));
  }
  bar.Finish();
  return d;
}

StatusOr<TokenizedDataset> TokenizeTextFile(const std::string& path, const Tokenizer& tokenizer,
                                            int64_t block_size) {
  Status s = CheckBlock(block_size);
  if (!s.ok()) return s;
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + ": cannot open the dataset");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::vector<int64_t> ids = tokenizer.Encode(ss.str());
  if (ids.size() <= 1) return Bad(path + ": the dataset is empty");
  TokenizedDataset d;
  d.block_size = block_size;
  for (size_t i = 0; i < ids.size(); i += static_cast<size_t>(block_size)) {
    std::vector<int64_t> ex(
        ids.begin() + static_cast<int64_t>(i),
        ids.begin() + static_cast<int64_t>(std::min(ids.size(), i + block_size)));
    ex.resize(static_cast<size_t>(block_size), tokenizer.pad_id());
    d.examples.push_back(std::move(ex));
  }
  return d;
}

DataLoader::DataLoader(const TokenizedDataset* dataset, int64_t batch_size, bool shuffle,
                       uint64_t seed)
    : dataset_(dataset), batch_size_(batch_size), shuffle_(shuffle), seed_(seed) {
  MOREH_CHECK(dataset_ != nullptr && !dataset_->examples.empty(), "DataLoader: empty dataset");
  MOREH_CHECK(batch_size_ > 0, "DataLoader: batch size must be positive, got {}", batch_size_);
  set_epoch(0);
}

int64_t DataLoader::size() const {
  const int64_t n = static_cast<int64_t>(dataset_->examples.size());
  return (n + batch_size_ - 1) / batch_size_;
}

void DataLoader::set_epoch(int64_t epoch) {
  order_.resize(dataset_->examples.size());
  std::iota(order_.begin(), order_.end(), 0);
  if (shuffle_) {
    std::mt19937_64 rng(seed_ * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(epoch));
    std::shuffle(order_.begin(), order_.end(), rng);
  }
}

Tensor DataLoader::Batch(int64_t i) const {
  MOREH_CHECK(i >= 0 && i < size(), "DataLoader: batch {} out of range [0, {})", i, size());
  const int64_t n = static_cast<int64_t>(order_.size());
  const int64_t b = std::min(batch_size_, n - i * batch_size_), t = dataset_->block_size;
  std::vector<int64_t> ids(static_cast<size_t>(b * t));
  for (int64_t r = 0; r < b; ++r) {
    const auto& ex = dataset_->examples[order_[i * batch_size_ + r]];
    std::copy(ex.begin(), ex.end(), ids.begin() + r * t);
  }
  return Tensor::FromVector(ids, {b, t});
}

Tensor CreateMask(const Tensor& input_ids, int64_t pad_id) {
  std::vector<int64_t> v = input_ids.data().ToInts();
  for (int64_t& x : v) x = x != pad_id;
  return Tensor::FromVector(v, input_ids.shape());
}

Tensor MaskPads(const Tensor& input_ids, int64_t pad_id, int64_t ignore_index) {
  std::vector<int64_t> v = input_ids.data().ToInts();
  for (int64_t& x : v) x = x == pad_id ? ignore_index : x;
  return Tensor::FromVector(v, input_ids.shape());
}

}  // namespace moreh::data
