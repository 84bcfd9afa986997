// A cheap Status / StatusOr for internal code that fails for expected reasons (I/O, parsing,
// network). The user-facing API turns a non-OK Status into moreh::Error (Status::ThrowIfError).
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "runtime/core/error.h"

namespace moreh {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kResourceExhausted,
  kUnavailable,
  kDeadlineExceeded,
  kFailedPrecondition,
  kInternal,
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return {}; }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status ResourceExhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
  }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status DeadlineExceeded(std::string m) {
    return {StatusCode::kDeadlineExceeded, std::move(m)};
  }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;
  void ThrowIfError() const {
    if (!ok()) throw Error(ToString());
  }
  // For the rare error that has no one to go to (a rollback after a failure).
  void IgnoreError() const {}

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status s) : status_(std::move(s)) {}  // NOLINT: implicit by design
  StatusOr(T v) : value_(std::move(v)) {}        // NOLINT
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & {
    status_.ThrowIfError();
    return *value_;
  }
  const T& value() const& {
    status_.ThrowIfError();
    return *value_;
  }
  T&& value() && {
    status_.ThrowIfError();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace moreh

// Returns a non-OK Status (or StatusOr's status) from the enclosing function.
#define MOREH_RETURN_IF_ERROR(expr)                \
  do {                                             \
    const ::moreh::Status moreh_status_ = (expr);  \
    if (!moreh_status_.ok()) return moreh_status_; \
  } while (0)
