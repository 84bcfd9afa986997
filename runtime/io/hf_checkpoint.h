// Hugging Face checkpoint directories: `model.safetensors`, or shards listed by
// `model.safetensors.index.json` ({"metadata": {"total_size"}, "weight_map": {name: file}}), beside
// `config.json`.
//
// Saving is atomic: the new checkpoint is written into a sibling temporary directory (other files
// already in the target, such as tokenizer.model, are linked across), then exchanged with the
// target in one renameat2(RENAME_EXCHANGE); a kill at any moment leaves either the previous
// checkpoint or the new one, never a mix. Thread-compatible.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/io/safetensors.h"

namespace moreh::io {

class CheckpointReader {
 public:
  static StatusOr<CheckpointReader> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::vector<std::string> Names() const;
  // The entry and its file, or nullptr.
  const SafetensorsEntry* Find(const std::string& name, const SafetensorsFile** file) const;
  StatusOr<runtime::Tensor> Read(const std::string& name,
                                 runtime::Allocator* alloc = nullptr) const;

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::vector<std::pair<std::string, size_t>> names_;  // tensor -> file index, in file order
};

// HF's default shard size is 5 GB ("5GB" = 5 * 10^9 bytes).
inline constexpr int64_t kDefaultMaxShardBytes = 5'000'000'000;

// Writes tensors (in their own dtypes) and config.json (the given JSON text) into `dir`, sharding
// above max_shard_bytes, atomically replacing whatever checkpoint was there.
Status SaveCheckpoint(const std::string& dir,
                      const std::vector<std::pair<std::string, runtime::Tensor>>& tensors,
                      const std::string& config_json,
                      int64_t max_shard_bytes = kDefaultMaxShardBytes);

// The same save in phases, for checkpoints written by several processes (pipeline stages each
// write their shard files): Begin makes the sibling temporary directory and returns its path;
// the writers put their safetensors files in it; Commit writes the index (when the files are not
// one model.safetensors) and config.json and swaps the directory in atomically. Abort removes it.
StatusOr<std::string> BeginCheckpointSave(const std::string& dir);
// weight_map: (tensor name, file name in the temporary directory); total_bytes: sum of tensor
// bytes.
Status CommitCheckpointSave(const std::string& tmp, const std::string& dir,
                            const std::string& config_json,
                            const std::vector<std::pair<std::string, std::string>>& weight_map,
                            int64_t total_bytes);
void AbortCheckpointSave(const std::string& tmp);
// "model.safetensors" for one file, else "model-00002-of-00004.safetensors" (index from 0).
std::string ShardFileName(int index, int count);

}  // namespace moreh::io
