// Attrs: the small, ordered attribute map of a graph node (ints, floats, int lists, strings).
// Part of a node's identity: it is hashed and serialized with the graph. Value type; not shared.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace moreh {

class Attrs {
 public:
  using Value = std::variant<int64_t, double, std::vector<int64_t>, std::string>;

  Attrs() = default;
  Attrs(std::initializer_list<std::pair<std::string, Value>> items);
  Attrs& Set(std::string key, Value v);  // replaces an existing key; keeps keys sorted

  bool Has(std::string_view key) const { return Find(key) != nullptr; }
  // Getters throw moreh::Error naming the key when it is missing or of another type.
  int64_t GetInt(std::string_view key) const;
  int64_t GetInt(std::string_view key, int64_t dflt) const;
  double GetFloat(std::string_view key) const;
  const std::vector<int64_t>& GetInts(std::string_view key) const;
  const std::string& GetString(std::string_view key) const;

  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }
  bool operator==(const Attrs& o) const { return items_ == o.items_; }
  std::string ToString() const;

 private:
  const Value* Find(std::string_view key) const;
  std::vector<std::pair<std::string, Value>> items_;
};

}  // namespace moreh
