// The control plane's wire format: each message is a 4-byte big-endian length, then that many
// bytes of one JSON object carrying a string "type". A FrameDecoder is fed bytes as they arrive and
// yields whole messages; oversized frames, bad JSON, non-objects and missing types are errors (the
// connection is then answered and closed). Bulk tensors never travel here. Not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "runtime/core/status.h"

namespace moreh::net {

inline constexpr uint32_t kMaxFrameBytes = 1 << 20;  // 1 MiB
// Before a connection has authenticated, its frames may be only this large (a hello is small).
inline constexpr uint32_t kMaxFrameBytesBeforeAuth = 64 << 10;
inline constexpr int kMaxJsonDepth = 32;

std::string EncodeFrame(const nlohmann::json& message);

class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_frame_bytes = kMaxFrameBytes) : max_(max_frame_bytes) {}
  // Appends bytes; returns an error (and stays failed) on the first malformed frame.
  Status Feed(std::string_view bytes);
  // Raises (or lowers) the limit for frames not yet complete (a connection that authenticated).
  void set_max_frame_bytes(uint32_t n) { max_ = n; }
  bool HasMessage() const { return !ready_.empty(); }
  nlohmann::json Pop();

 private:
  uint32_t max_;
  std::string buf_;
  std::deque<nlohmann::json> ready_;
  bool failed_ = false;
};

// Parses one JSON object with a string "type", depth-limited. Exposed for the fuzzer.
StatusOr<nlohmann::json> ParseMessage(std::string_view text);

}  // namespace moreh::net
