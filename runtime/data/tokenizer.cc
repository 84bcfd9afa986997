#include "runtime/data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>

namespace moreh::data {

Tokenizer::Tokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

StatusOr<Tokenizer> Tokenizer::Load(const std::string& path) {
  std::string file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    file = (std::filesystem::path(path) / "tokenizer.model").string();
  }
  if (!std::filesystem::exists(file, ec)) return Status::NotFound(file + ": no such file");
  Tokenizer t;
  const auto st = t.sp_->Load(file);
  if (!st.ok()) {
    return Status::InvalidArgument(file + ": not a SentencePiece model (" + st.ToString() + ")");
  }
  const int pad = t.sp_->pad_id();
  t.pad_id_ = pad >= 0 ? pad : 0;
  return t;
}

std::vector<int64_t> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int> ids;
  sp_->Encode(text, &ids).IgnoreError();
  std::vector<int64_t> out;
  out.reserve(ids.size() + 1);
  if (add_bos && bos_id() >= 0) out.push_back(bos_id());
  for (int id : ids) out.push_back(id);
  return out;
}

std::vector<int64_t> Tokenizer::EncodeToLength(std::string_view text, int64_t max_length) const {
  std::vector<int64_t> ids = Encode(text);
  ids.resize(static_cast<size_t>(max_length), pad_id_);
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int64_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  std::string out;
  sp_->Decode(v, &out).IgnoreError();
  return out;
}

int64_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int64_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int64_t Tokenizer::eos_id() const { return sp_->eos_id(); }

}  // namespace moreh::data
