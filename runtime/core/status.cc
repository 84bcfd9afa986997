#include "runtime/core/status.h"

namespace moreh {

std::string Status::ToString() const {
  static constexpr const char* kNames[] = {
      "OK",          "InvalidArgument",  "NotFound",           "ResourceExhausted",
      "Unavailable", "DeadlineExceeded", "FailedPrecondition", "Internal"};
  return ok() ? "OK" : std::string(kNames[static_cast<int>(code_)]) + ": " + message_;
}

}  // namespace moreh
