// Datasets for fine-tuning: JSONL records (the reference's summarization schema by default), plain
// text, tokenization to fixed blocks, and a DataLoader with batch size, seeded shuffle and epochs.
// Errors name the file, the line and the problem. Not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/data/tokenizer.h"
#include "runtime/tensor.h"

namespace moreh::data {

using Record = std::map<std::string, std::string>;

// Lines longer than this are refused (a runaway line would otherwise cost its size many times
// over): 16 MiB, or MOREH_MAX_LINE_BYTES (moreh-run train --max-line-bytes).
inline constexpr int64_t kDefaultMaxLineBytes = int64_t{16} << 20;
// MOREH_MAX_LINE_BYTES when set (a malformed value is an error naming it), else the default.
StatusOr<int64_t> MaxLineBytes();

// One JSON object per line; every field in `fields` must be present and a string. Blank lines
// are skipped. An empty dataset is an error, as are a line over max_line_bytes (0: MaxLineBytes())
// and a line that is not UTF-8 (each named with the file, the line and the byte).
StatusOr<std::vector<Record>> ReadJsonl(const std::string& path,
                                        const std::vector<std::string>& fields,
                                        int64_t max_line_bytes = 0);

// The offset of the first byte of `s` that is not well-formed UTF-8, or -1.
int64_t FirstInvalidUtf8(std::string_view s);

// The reference script's prompt: "[SUMMARIZE] {article} [/SUMMARIZE]\n{highlights}".
std::string SummarizationPrompt(const Record& r, const std::string& article_field = "article",
                                const std::string& summary_field = "highlights");

struct TokenizedDataset {
  int64_t block_size = 0;
  std::vector<std::vector<int64_t>> examples;  // each exactly block_size ids
};

// tokenizer(prompt(r), padding="max_length", truncation=True, max_length=block_size) for each
// record, with a "Map" progress bar.
StatusOr<TokenizedDataset> TokenizeRecords(const std::vector<Record>& records,
                                           const Tokenizer& tokenizer, int64_t block_size,
                                           const std::function<std::string(const Record&)>& prompt);

// A plain-text file: the whole text tokenized (BOS once), cut into blocks; the last one padded.
StatusOr<TokenizedDataset> TokenizeTextFile(const std::string& path, const Tokenizer& tokenizer,
                                            int64_t block_size);

class DataLoader {
 public:
  // Keeps the last partial batch (PyTorch's drop_last=False). Shuffling is a permutation drawn from
  // (seed, epoch), so a run is reproducible and epochs differ.
  DataLoader(const TokenizedDataset* dataset, int64_t batch_size, bool shuffle, uint64_t seed);
  int64_t size() const;  // batches per epoch
  void set_epoch(int64_t epoch);
  // input_ids [b, block_size] i64 of batch i of the current epoch.
  Tensor Batch(int64_t i) const;

 private:
  const TokenizedDataset* dataset_;
  int64_t batch_size_;
  bool shuffle_;
  uint64_t seed_;
  std::vector<int64_t> order_;
};

// (input_ids != pad_id) as i64, as the reference's create_mask.
Tensor CreateMask(const Tensor& input_ids, int64_t pad_id);
// input_ids with pads set to ignore_index, as the reference's mask_pads.
Tensor MaskPads(const Tensor& input_ids, int64_t pad_id, int64_t ignore_index = -100);

}  // namespace moreh::data
