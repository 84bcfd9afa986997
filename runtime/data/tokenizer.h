// Tokenizer: a SentencePiece model (tokenizer.model), used as transformers' LlamaTokenizer uses it
// (BOS prepended, no EOS), or a Hugging Face tokenizer.json (runtime/data/hf_tokenizer.h), used as
// transformers' AutoTokenizer uses it. Right padding and truncation to a block. The pad id is
// settable (the reference script sets 0). Thread-safe for encoding after Load.
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

class HfTokenizer;

class Tokenizer {
 public:
  // `path` is a tokenizer.model, a tokenizer.json, or a directory holding one (tokenizer.json is
  // preferred when both are there; a tokenizer_config.json beside it is read as transformers
  // reads it).
  static StatusOr<Tokenizer> Load(const std::string& path);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_bos: for a tokenizer.json, apply its post-processor's template (add_special_tokens).
  std::vector<int64_t> Encode(std::string_view text, bool add_bos = true) const;
  // Encode, then truncate to `max_length` and pad to it with pad_id (padding="max_length"). Only
  // the part of `text` that can reach max_length tokens is tokenized.
  std::vector<int64_t> EncodeToLength(std::string_view text, int64_t max_length) const;
  std::string Decode(const std::vector<int64_t>& ids) const;

  int64_t vocab_size() const;
  int64_t bos_id() const;  // -1 when there is none
  int64_t eos_id() const;  // -1 when there is none
  int64_t pad_id() const { return pad_id_; }
  void set_pad_id(int64_t id) { pad_id_ = id; }

 private:
  Tokenizer();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::unique_ptr<HfTokenizer> hf_;  // set for a tokenizer.json, sp_ otherwise
  int64_t pad_id_ = 0;
  int64_t max_piece_bytes_ = 1;  // the longest piece of the vocabulary
};

}  // namespace moreh::data
