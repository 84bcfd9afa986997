// Errors raised by the runtime's user-facing C++ API.
//
// The runtime follows libtorch: bad input (a shape or dtype mismatch, a wrong axis, a value used
// after it was freed) throws moreh::Error with a message that names the op and the shapes; running
// out of a device's memory throws moreh::OutOfMemoryError. MOREH_CHECK is for these user-reachable
// conditions and throws; it never aborts the process.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace moreh {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "Error Code 4: OUT_OF_MEMORY", in the reference platform's words. Carries the numbers so callers
// (the planner, the client) can react without parsing the message.
class OutOfMemoryError : public Error {
 public:
  OutOfMemoryError(std::string device, int64_t requested, int64_t available, int64_t capacity);
  const std::string& device() const { return device_; }
  int64_t requested() const { return requested_; }
  int64_t available() const { return available_; }
  int64_t capacity() const { return capacity_; }

 private:
  std::string device_;
  int64_t requested_, available_, capacity_;
};

}  // namespace moreh

#define MOREH_CHECK(cond, ...)                          \
  do {                                                  \
    if (!(cond)) [[unlikely]]                           \
      throw ::moreh::Error(::fmt::format(__VA_ARGS__)); \
  } while (0)
