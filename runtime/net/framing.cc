#include "runtime/net/framing.h"

#include <fmt/format.h>

namespace moreh::net {

std::string EncodeFrame(const nlohmann::json& message) {
  const std::string body = message.dump();
  std::string out(4, '\0');
  const uint32_t n = static_cast<uint32_t>(body.size());
  out[0] = static_cast<char>((n >> 24) & 0xff);
  out[1] = static_cast<char>((n >> 16) & 0xff);
  out[2] = static_cast<char>((n >> 8) & 0xff);
  out[3] = static_cast<char>(n & 0xff);
  return out + body;
}

StatusOr<nlohmann::json> ParseMessage(std::string_view text) {
  // Refuse deep nesting before the parser recurses into it.
  int depth = 0, max_depth = 0;
  bool in_string = false, escape = false;
  for (char c : text) {
    if (in_string) {
      if (escape)
        escape = false;
      else if (c == '\\')
        escape = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      max_depth = std::max(max_depth, ++depth);
    else if (c == '}' || c == ']')
      --depth;
    if (max_depth > kMaxJsonDepth) {
      return Status::InvalidArgument(fmt::format("message nests deeper than {}", kMaxJsonDepth));
    }
  }
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("message is not valid JSON");
  if (!j.is_object()) return Status::InvalidArgument("message is not a JSON object");
  const auto t = j.find("type");
  if (t == j.end() || !t->is_string()) {
    return Status::InvalidArgument("message has no string 'type'");
  }
  return j;
}

Status FrameDecoder::Feed(std::string_view bytes) {
  if (failed_) return Status::InvalidArgument("connection already failed");
  buf_.append(bytes);
  while (buf_.size() >= 4) {
    const auto b = [&](int i) {
      return static_cast<uint32_t>(static_cast<unsigned char>(buf_[i]));
    };
    const uint32_t n = (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
    if (n > max_) {
      failed_ = true;
      return Status::InvalidArgument(
          fmt::format("frame of {} bytes exceeds the {}-byte limit", n, max_));
    }
    if (buf_.size() < 4 + static_cast<size_t>(n)) break;
    auto m = ParseMessage(std::string_view(buf_).substr(4, n));
    if (!m.ok()) {
      failed_ = true;
      return m.status();
    }
    ready_.push_back(std::move(m.value()));
    buf_.erase(0, 4 + static_cast<size_t>(n));
  }
  return Status::Ok();
}

nlohmann::json FrameDecoder::Pop() {
  nlohmann::json j = std::move(ready_.front());
  ready_.pop_front();
  return j;
}

}  // namespace moreh::net
