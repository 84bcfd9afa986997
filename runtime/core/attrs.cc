#include "runtime/core/attrs.h"

#include <algorithm>

#include "runtime/core/error.h"

namespace moreh {

Attrs::Attrs(std::initializer_list<std::pair<std::string, Value>> items) {
  for (const auto& [k, v] : items) Set(k, v);
}

Attrs& Attrs::Set(std::string key, Value v) {
  auto it = std::lower_bound(items_.begin(), items_.end(), key,
                             [](const auto& item, const std::string& k) { return item.first < k; });
  if (it != items_.end() && it->first == key) {
    it->second = std::move(v);
  } else {
    items_.insert(it, {std::move(key), std::move(v)});
  }
  return *this;
}

const Attrs::Value* Attrs::Find(std::string_view key) const {
  for (const auto& [k, v] : items_) {
    if (k == key) return &v;
  }
  return nullptr;
}

namespace {
template <typename T>
const T& Get(const Attrs::Value* v, std::string_view key, const char* type) {
  MOREH_CHECK(v != nullptr, "attribute '{}' is missing", key);
  const T* p = std::get_if<T>(v);
  MOREH_CHECK(p != nullptr, "attribute '{}' is not of type {}", key, type);
  return *p;
}
}  // namespace

int64_t Attrs::GetInt(std::string_view key) const { return Get<int64_t>(Find(key), key, "int"); }
int64_t Attrs::GetInt(std::string_view key, int64_t dflt) const {
  return Has(key) ? GetInt(key) : dflt;
}
double Attrs::GetFloat(std::string_view key) const {
  const Value* v = Find(key);
  if (v && std::holds_alternative<int64_t>(*v)) return static_cast<double>(std::get<int64_t>(*v));
  return Get<double>(v, key, "float");
}
const std::vector<int64_t>& Attrs::GetInts(std::string_view key) const {
  return Get<std::vector<int64_t>>(Find(key), key, "int list");
}
const std::string& Attrs::GetString(std::string_view key) const {
  return Get<std::string>(Find(key), key, "string");
}

std::string Attrs::ToString() const {
  std::string s = "{";
  for (size_t i = 0; i < items_.size(); ++i) {
    if (i) s += ", ";
    s += items_[i].first + "=";
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
            s += "[";
            for (size_t j = 0; j < v.size(); ++j) s += (j ? ", " : "") + std::to_string(v[j]);
            s += "]";
          } else if constexpr (std::is_same_v<T, std::string>) {
            s += v;
          } else {
            s += fmt::format("{}", v);
          }
        },
        items_[i].second);
  }
  return s + "}";
}

}  // namespace moreh
