// Tokenizer: a SentencePiece model (tokenizer.model), used as transformers' LlamaTokenizer uses it:
// BOS prepended, no EOS, right padding and truncation to a block. The pad id is settable (the
// reference script sets 0). Thread-safe for encoding after Load.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace moreh::data {

class Tokenizer {
 public:
  // `path` is a tokenizer.model file or a directory holding one.
  static StatusOr<Tokenizer> Load(const std::string& path);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int64_t> Encode(std::string_view text, bool add_bos = true) const;
  // Encode, then truncate to `max_length` and pad to it with pad_id (padding="max_length"). Only
  // the part of `text` that can reach max_length tokens is tokenized.
  std::vector<int64_t> EncodeToLength(std::string_view text, int64_t max_length) const;
  std::string Decode(const std::vector<int64_t>& ids) const;

  int64_t vocab_size() const;
  int64_t bos_id() const;
  int64_t eos_id() const;
  int64_t pad_id() const { return pad_id_; }
  void set_pad_id(int64_t id) { pad_id_ = id; }

 private:
  Tokenizer();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int64_t pad_id_ = 0;
  int64_t max_piece_bytes_ = 1;  // the longest piece of the vocabulary
};

}  // namespace moreh::data
