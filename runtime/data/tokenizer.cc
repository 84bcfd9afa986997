#include "runtime/data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>

#include "runtime/data/hf_tokenizer.h"

namespace moreh::data {
namespace fs = std::filesystem;

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

StatusOr<Tokenizer> Tokenizer::Load(const std::string& path) {
  std::string file = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path json = fs::path(path) / "tokenizer.json";
    file = (fs::exists(json, ec) ? json : fs::path(path) / "tokenizer.model").string();
  }
  if (!fs::exists(file, ec)) return Status::NotFound(file + ": no such file");
  Tokenizer t;
  if (fs::path(file).extension() == ".json") {
    // transformers reads tokenizer_config.json from the directory of tokenizer.json.
    std::string config;
    if (fs::path(file).filename() == "tokenizer.json") {
      const fs::path c = fs::path(file).parent_path() / "tokenizer_config.json";
      if (fs::exists(c, ec)) config = c.string();
    }
    auto hf = HfTokenizer::Load(file, config);
    if (!hf.ok()) return hf.status();
    t.hf_ = std::move(hf).value();
    t.pad_id_ = t.hf_->pad_id() >= 0 ? t.hf_->pad_id() : 0;
    return t;
  }
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto st = t.sp_->Load(file);
  if (!st.ok()) {
    return Status::InvalidArgument(file + ": not a SentencePiece model (" + st.ToString() + ")");
  }
  const int pad = t.sp_->pad_id();
  t.pad_id_ = pad >= 0 ? pad : 0;
  for (int i = 0; i < t.sp_->GetPieceSize(); ++i) {
    t.max_piece_bytes_ = std::max<int64_t>(t.max_piece_bytes_, t.sp_->IdToPiece(i).size());
  }
  return t;
}

std::vector<int64_t> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  if (hf_) return hf_->Encode(text, add_bos);
  std::vector<int> ids;
  sp_->Encode(text, &ids).IgnoreError();
  std::vector<int64_t> out;
  out.reserve(ids.size() + 1);
  if (add_bos && bos_id() >= 0) out.push_back(bos_id());
  for (int id : ids) out.push_back(id);
  return out;
}

std::vector<int64_t> Tokenizer::EncodeToLength(std::string_view text, int64_t max_length) const {
  // Only a prefix can reach the first max_length tokens: none is longer than the longest piece
  // (a byte-fallback token is one byte). Twice that, so the last kept token is far from the cut,
  // bounds the memory of tokenizing a huge record by the block, not by the record.
  const size_t keep = hf_ ? hf_->PrefixBytesFor(max_length)
                          : static_cast<size_t>(std::max<int64_t>(max_length, 1) *
                                                    std::max<int64_t>(max_piece_bytes_, 4) * 2 +
                                                256);
  if (keep > 0 && text.size() > keep) {
    size_t cut = keep;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;  // UTF-8
    text = text.substr(0, cut);
  }
  std::vector<int64_t> ids = Encode(text);
  ids.resize(static_cast<size_t>(max_length), pad_id_);
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int64_t>& ids) const {
  if (hf_) return hf_->Decode(ids);
  std::vector<int> v(ids.begin(), ids.end());
  std::string out;
  sp_->Decode(v, &out).IgnoreError();
  return out;
}

int64_t Tokenizer::vocab_size() const { return hf_ ? hf_->vocab_size() : sp_->GetPieceSize(); }
int64_t Tokenizer::bos_id() const { return hf_ ? hf_->bos_id() : sp_->bos_id(); }
int64_t Tokenizer::eos_id() const { return hf_ ? hf_->eos_id() : sp_->eos_id(); }

}  // namespace moreh::data
