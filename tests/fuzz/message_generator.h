// Structure-aware inputs for the daemons' handler fuzzers: protocol messages built from valid
// templates (docs/protocol.md), then mutated field by field into JSON of any type and value (edge
// integers, huge and fractional numbers, null, nested arrays and objects, long strings), with
// secrets and lease ids harvested from earlier replies so that authenticated paths are reached.
#pragma once

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/net/protocol.h"

namespace moreh::fuzz {

using json = nlohmann::json;

class MessageGenerator {
 public:
  explicit MessageGenerator(FuzzedDataProvider& in) : in_(in) {}

  // Strings and integers of a reply (lease ids, secrets, device ids) become candidate values.
  void Remember(const json& v, int depth = 0) {
    if (depth > 4) return;
    if (v.is_string() && strings_.size() < 64) strings_.push_back(v.get<std::string>());
    if (v.is_number_integer() && ints_.size() < 64) ints_.push_back(v.get<int64_t>());
    if (v.is_array() || v.is_object()) {
      for (const auto& e : v) Remember(e, depth + 1);
    }
  }

  json Value(int depth = 0) {
    switch (in_.ConsumeIntegralInRange<int>(0, depth > 2 ? 7 : 9)) {
      case 0:
        return nullptr;
      case 1:
        return in_.ConsumeBool();
      case 2: {
        static const int64_t kEdges[] = {0,
                                         1,
                                         -1,
                                         2,
                                         1000,
                                         std::numeric_limits<int32_t>::max(),
                                         std::numeric_limits<int64_t>::min(),
                                         std::numeric_limits<int64_t>::max(),
                                         65535,
                                         65536};
        return kEdges[in_.ConsumeIntegralInRange<size_t>(0, std::size(kEdges) - 1)];
      }
      case 3:
        return in_.ConsumeIntegral<int64_t>();
      case 4:
        return std::numeric_limits<uint64_t>::max() - in_.ConsumeIntegral<uint8_t>();
      case 5: {
        static const double kEdges[] = {0.5, -0.0, 1e300, -1e300, 1e-300, 3.0};
        return kEdges[in_.ConsumeIntegralInRange<size_t>(0, std::size(kEdges) - 1)];
      }
      case 6:
        if (!strings_.empty()) {
          return strings_[in_.ConsumeIntegralInRange<size_t>(0, strings_.size() - 1)];
        }
        [[fallthrough]];
      case 7:
        return in_.ConsumeBool() ? in_.ConsumeRandomLengthString(64)
                                 : std::string(in_.ConsumeIntegralInRange<size_t>(0, 9000), 'x');
      case 8: {
        json a = json::array();
        for (int n = in_.ConsumeIntegralInRange<int>(0, 3); n > 0; --n)
          a.push_back(Value(depth + 1));
        return a;
      }
      default: {
        json o = json::object();
        for (int n = in_.ConsumeIntegralInRange<int>(0, 3); n > 0; --n) {
          o[in_.ConsumeRandomLengthString(8)] = Value(depth + 1);
        }
        return o;
      }
    }
  }

  // A message from one of `templates` (or, rarely, of any type name), with a few mutations.
  // Template values "$secret" and "$lease" take a remembered string / integer.
  json Message(const std::vector<json>& templates) {
    json m;
    if (in_.ConsumeIntegralInRange<int>(0, 15) == 0) {
      m = json::object();
      m["type"] =
          in_.ConsumeBool()
              ? std::string(net::MsgName(static_cast<net::Msg>(
                    in_.ConsumeIntegralInRange<int>(0, static_cast<int>(net::Msg::kJobEndOk)))))
              : in_.ConsumeRandomLengthString(16);
    } else {
      m = templates[in_.ConsumeIntegralInRange<size_t>(0, templates.size() - 1)];
      Fill(m);
    }
    for (int n = in_.ConsumeIntegralInRange<int>(0, 3); n > 0 && in_.remaining_bytes() > 0; --n) {
      Mutate(m, 0);
    }
    return m;
  }

 private:
  void Fill(json& v) {
    if (v.is_string() && v == "$secret") {
      v = strings_.empty() ? std::string("s1")
                           : strings_[in_.ConsumeIntegralInRange<size_t>(0, strings_.size() - 1)];
    } else if (v.is_string() && v == "$lease") {
      v = ints_.empty() ? int64_t{1}
                        : ints_[in_.ConsumeIntegralInRange<size_t>(0, ints_.size() - 1)];
    } else if (v.is_array() || v.is_object()) {
      for (auto& e : v) Fill(e);
    }
  }

  // Replaces, removes or adds one field somewhere in `v` (never the top-level "type").
  void Mutate(json& v, int depth) {
    if (v.is_array() && !v.empty() && depth < 4 && in_.ConsumeBool()) {
      return Mutate(v[in_.ConsumeIntegralInRange<size_t>(0, v.size() - 1)], depth + 1);
    }
    if (!v.is_object() || v.empty()) {
      v = Value(depth);
      return;
    }
    std::vector<std::string> keys;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (depth > 0 || it.key() != "type") keys.push_back(it.key());
    }
    const int op = in_.ConsumeIntegralInRange<int>(0, 4);
    if (keys.empty() || op == 0) {
      v[in_.ConsumeBool() ? in_.ConsumeRandomLengthString(12) : std::string("device")] =
          Value(depth + 1);
      return;
    }
    const std::string& k = keys[in_.ConsumeIntegralInRange<size_t>(0, keys.size() - 1)];
    if (op == 1) {
      v.erase(k);
    } else if (op == 2 && (v[k].is_object() || v[k].is_array())) {
      Mutate(v[k], depth + 1);
    } else {
      v[k] = Value(depth + 1);
    }
  }

  FuzzedDataProvider& in_;
  std::vector<std::string> strings_;
  std::vector<int64_t> ints_;
};

// Every reply a daemon sends: an object with a known type; errors carry a message.
inline bool WellFormedReply(const json& r) {
  auto t = net::TypeOf(r);
  if (!t.ok()) return false;
  if (*t == net::Msg::kError) return net::ErrorReply::FromJson(r).ok();
  return true;
}

}  // namespace moreh::fuzz
