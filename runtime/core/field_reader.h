// FieldReader: typed, range-checked reads of a JSON object's fields, for everything read from the
// network or from a file (protocol messages, config.json, a job's assignment). The first problem is
// kept and names where it was found and the field:
//   allocate: 'pid' must be an integer, not a string
//   register_worker: 'devices[2].memory_bytes' is 0; it must be in [1, 1125899906842624]
// Reads after an error return defaults, so a parser reads every field and checks status() once.
// A field present with the value null counts as present (and is the wrong type); callers that take
// null for "unset" (Hugging Face configs do) ask IsNull first.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "runtime/core/status.h"

namespace moreh {

class FieldReader {
 public:
  static constexpr size_t kMaxString = 4096;
  static constexpr int64_t kIntMax = std::numeric_limits<int64_t>::max();
  static constexpr int64_t kIntMin = std::numeric_limits<int64_t>::min();

  // `where` prefixes every error ("allocate", "config.json"); `path` prefixes field names
  // ("devices[2]." for a nested object).
  FieldReader(const nlohmann::json& object, std::string where, std::string path = "");
  // The reader keeps a pointer to the object: never a temporary.
  FieldReader(const nlohmann::json&& object, std::string where, std::string path = "") = delete;

  bool ok() const { return status_->ok(); }
  const Status& status() const { return *status_; }
  // Records a problem of the caller's own (the first one wins), prefixed like the others.
  void Fail(const std::string& message);
  void FailField(std::string_view key, const std::string& message);

  bool Has(std::string_view key) const;
  bool IsNull(std::string_view key) const;

  // Required fields: missing is an error.
  std::string Str(std::string_view key, size_t max_bytes = kMaxString);
  int64_t Int(std::string_view key, int64_t lo = kIntMin, int64_t hi = kIntMax);
  uint64_t U64(std::string_view key, uint64_t lo = 0,
               uint64_t hi = std::numeric_limits<uint64_t>::max());
  double Num(std::string_view key, double lo = -std::numeric_limits<double>::max(),
             double hi = std::numeric_limits<double>::max());  // finite
  bool Bool(std::string_view key);
  // The array (at most max_size elements) or object itself; an empty one after an error.
  const nlohmann::json& Array(std::string_view key, size_t max_size);
  const nlohmann::json& Object(std::string_view key);

  // Optional fields: absent gives the fallback; present with the wrong type is an error.
  std::string OptStr(std::string_view key, std::string fallback, size_t max_bytes = kMaxString);
  int64_t OptInt(std::string_view key, int64_t fallback, int64_t lo = kIntMin,
                 int64_t hi = kIntMax);
  uint64_t OptU64(std::string_view key, uint64_t fallback, uint64_t lo = 0,
                  uint64_t hi = std::numeric_limits<uint64_t>::max());
  double OptNum(std::string_view key, double fallback,
                double lo = -std::numeric_limits<double>::max(),
                double hi = std::numeric_limits<double>::max());
  bool OptBool(std::string_view key, bool fallback);

  // A reader for the object field `key` (an error when it is not one), or for element i of an
  // array read above (an error when that is not an object); it shares this reader's status.
  FieldReader Sub(std::string_view key);
  FieldReader Element(const nlohmann::json& array, size_t i, std::string_view array_key);

  // "a string", "an integer", ... for messages.
  static std::string_view TypeName(const nlohmann::json& v);

 private:
  const nlohmann::json* Find(std::string_view key);  // nullptr (and an error) when missing
  bool CheckType(std::string_view key, const nlohmann::json& v, bool ok, const char* want);
  std::string Name(std::string_view key) const;

  FieldReader(const nlohmann::json* object, std::string where, std::string path,
              std::shared_ptr<Status> status);
  const nlohmann::json* object_;
  std::string where_, path_;
  std::shared_ptr<Status> status_;  // shared with Sub and Element readers
};

}  // namespace moreh
