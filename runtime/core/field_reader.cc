#include "runtime/core/field_reader.h"

#include <fmt/format.h>

#include <cmath>

namespace moreh {
using json = nlohmann::json;

namespace {
const json& EmptyObject() {
  static const json* j = new json(json::object());
  return *j;
}
const json& EmptyArray() {
  static const json* j = new json(json::array());
  return *j;
}
}  // namespace

FieldReader::FieldReader(const json& object, std::string where, std::string path)
    : FieldReader(&object, std::move(where), std::move(path), std::make_shared<Status>()) {
  if (!object.is_object()) Fail(fmt::format("must be a JSON object, not {}", TypeName(object)));
}

FieldReader::FieldReader(const json* object, std::string where, std::string path,
                         std::shared_ptr<Status> status)
    : object_(object->is_object() ? object : &EmptyObject()),
      where_(std::move(where)),
      path_(std::move(path)),
      status_(std::move(status)) {}

std::string_view FieldReader::TypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a fractional number";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "binary data";
  }
}

void FieldReader::Fail(const std::string& message) {
  if (!status_->ok()) return;
  const std::string at = path_.empty() ? "" : "'" + path_.substr(0, path_.size() - 1) + "' ";
  *status_ = Status::InvalidArgument(fmt::format("{}: {}{}", where_, at, message));
}

void FieldReader::FailField(std::string_view key, const std::string& message) {
  if (!status_->ok()) return;
  *status_ = Status::InvalidArgument(fmt::format("{}: '{}' {}", where_, Name(key), message));
}

std::string FieldReader::Name(std::string_view key) const { return path_ + std::string(key); }

bool FieldReader::Has(std::string_view key) const { return object_->contains(key); }

bool FieldReader::IsNull(std::string_view key) const {
  const auto it = object_->find(key);
  return it != object_->end() && it->is_null();
}

const json* FieldReader::Find(std::string_view key) {
  const auto it = object_->find(key);
  if (it == object_->end()) {
    FailField(key, "is missing");
    return nullptr;
  }
  return &*it;
}

bool FieldReader::CheckType(std::string_view key, const json& v, bool ok, const char* want) {
  if (ok) return true;
  FailField(key, fmt::format("must be {}, not {}", want, TypeName(v)));
  return false;
}

std::string FieldReader::Str(std::string_view key, size_t max_bytes) {
  const json* v = Find(key);
  if (!v || !CheckType(key, *v, v->is_string(), "a string")) return "";
  const std::string& s = v->get_ref<const std::string&>();
  if (s.size() > max_bytes) {
    FailField(key, fmt::format("is {} bytes long; at most {} are allowed", s.size(), max_bytes));
    return "";
  }
  return s;
}

int64_t FieldReader::Int(std::string_view key, int64_t lo, int64_t hi) {
  const json* v = Find(key);
  if (!v || !CheckType(key, *v, v->is_number_integer(), "an integer")) return lo > 0 ? lo : 0;
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(kIntMax)) {
    FailField(key, fmt::format("is {}; it must be in [{}, {}]", v->get<uint64_t>(), lo, hi));
    return lo > 0 ? lo : 0;
  }
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) {
    FailField(key, fmt::format("is {}; it must be in [{}, {}]", x, lo, hi));
    return lo > 0 ? lo : 0;
  }
  return x;
}

uint64_t FieldReader::U64(std::string_view key, uint64_t lo, uint64_t hi) {
  const json* v = Find(key);
  if (!v || !CheckType(key, *v, v->is_number_integer(), "an integer")) return lo;
  if (!v->is_number_unsigned() && v->get<int64_t>() < 0) {
    FailField(key, fmt::format("is {}; it must be in [{}, {}]", v->get<int64_t>(), lo, hi));
    return lo;
  }
  const uint64_t x = v->get<uint64_t>();
  if (x < lo || x > hi) {
    FailField(key, fmt::format("is {}; it must be in [{}, {}]", x, lo, hi));
    return lo;
  }
  return x;
}

double FieldReader::Num(std::string_view key, double lo, double hi) {
  const json* v = Find(key);
  if (!v || !CheckType(key, *v, v->is_number(), "a number")) return lo > 0 ? lo : 0;
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    FailField(key, fmt::format("is {}; it must be in [{}, {}]", x, lo, hi));
    return lo > 0 ? lo : 0;
  }
  return x;
}

bool FieldReader::Bool(std::string_view key) {
  const json* v = Find(key);
  if (!v || !CheckType(key, *v, v->is_boolean(), "true or false")) return false;
  return v->get<bool>();
}

const json& FieldReader::Array(std::string_view key, size_t max_size) {
  const json* v = Find(key);
  if (!v || !CheckType(key, *v, v->is_array(), "an array")) return EmptyArray();
  if (v->size() > max_size) {
    FailField(key, fmt::format("has {} elements; at most {} are allowed", v->size(), max_size));
    return EmptyArray();
  }
  return *v;
}

const json& FieldReader::Object(std::string_view key) {
  const json* v = Find(key);
  if (!v || !CheckType(key, *v, v->is_object(), "an object")) return EmptyObject();
  return *v;
}

std::string FieldReader::OptStr(std::string_view key, std::string fallback, size_t max_bytes) {
  return Has(key) ? Str(key, max_bytes) : fallback;
}

int64_t FieldReader::OptInt(std::string_view key, int64_t fallback, int64_t lo, int64_t hi) {
  return Has(key) ? Int(key, lo, hi) : fallback;
}

uint64_t FieldReader::OptU64(std::string_view key, uint64_t fallback, uint64_t lo, uint64_t hi) {
  return Has(key) ? U64(key, lo, hi) : fallback;
}

double FieldReader::OptNum(std::string_view key, double fallback, double lo, double hi) {
  return Has(key) ? Num(key, lo, hi) : fallback;
}

bool FieldReader::OptBool(std::string_view key, bool fallback) {
  return Has(key) ? Bool(key) : fallback;
}

FieldReader FieldReader::Sub(std::string_view key) {
  const json& o = Object(key);
  return FieldReader(&o, where_, Name(key) + ".", status_);
}

FieldReader FieldReader::Element(const json& array, size_t i, std::string_view array_key) {
  const std::string name = fmt::format("{}[{}]", Name(array_key), i);
  if (!array.is_array() || i >= array.size()) {
    if (status_->ok()) *status_ = Status::InvalidArgument(where_ + ": no '" + name + "'");
    return FieldReader(&EmptyObject(), where_, name + ".", status_);
  }
  const json& e = array[i];
  if (!e.is_object() && status_->ok()) {
    *status_ = Status::InvalidArgument(
        fmt::format("{}: '{}' must be an object, not {}", where_, name, TypeName(e)));
  }
  return FieldReader(&e, where_, name + ".", status_);
}

}  // namespace moreh
