// Base64 (RFC 4648, with padding) for the small tensors a control message may carry.
#pragma once

#include <string>
#include <string_view>

#include "runtime/core/status.h"

namespace moreh::net {
std::string Base64Encode(std::string_view bytes);
StatusOr<std::string> Base64Decode(std::string_view text);
}  // namespace moreh::net
