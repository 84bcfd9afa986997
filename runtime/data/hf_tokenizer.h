// HfTokenizer: a Hugging Face `tokenizer.json` (the `tokenizers` library's format), encoding and
// decoding to the same ids and text as tokenizers 0.20.3 and transformers' AutoTokenizer do, for
// the byte-level BPE files of Llama 3 and Qwen2/3 and the SentencePiece-style BPE files (byte
// fallback) of Llama 2, Mistral and Gemma. What it does not implement (WordPiece or Unigram models,
// BPE dropout, other normalizers and pre-tokenizers) is refused at Load with the file and field
// named, so a file is never tokenized differently from the library. docs/model-families.md §6 is
// the format's description. Thread-safe for encoding and decoding after Load.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"

namespace moreh::data {

class HfTokenizer {
 public:
  // `json_path` is a tokenizer.json. `config_path`, a tokenizer_config.json or empty, supplies
  // what transformers takes from it: bos/eos/pad tokens, clean_up_tokenization_spaces, and for the
  // Llama and Gemma tokenizer classes the BOS/EOS template (add_bos_token, add_eos_token).
  static StatusOr<std::unique_ptr<HfTokenizer>> Load(const std::string& json_path,
                                                     const std::string& config_path);
  ~HfTokenizer();
  HfTokenizer(const HfTokenizer&) = delete;
  HfTokenizer& operator=(const HfTokenizer&) = delete;

  // `add_special_tokens` applies the post-processor's template (transformers' default).
  std::vector<int64_t> Encode(std::string_view text, bool add_special_tokens) const;
  // tokenizer.decode(ids) of transformers: special tokens kept; ids that name no token skipped.
  std::string Decode(const std::vector<int64_t>& ids) const;

  int64_t vocab_size() const;  // max id + 1 over the model's vocab and the added tokens
  int64_t bos_id() const;      // -1 when there is none
  int64_t eos_id() const;      // -1 when there is none
  int64_t pad_id() const;      // tokenizer_config's pad_token, -1 when there is none
  // How many bytes of text a prefix must have so that its first n tokens are those of the whole
  // text; 0 when no bound is known (EncodeToLength then tokenizes everything).
  size_t PrefixBytesFor(int64_t n) const;
  int64_t TokenToId(std::string_view token) const;  // -1 when unknown

  struct Impl;

 private:
  explicit HfTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moreh::data
