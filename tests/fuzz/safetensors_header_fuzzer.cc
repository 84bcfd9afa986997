// libFuzzer target: the safetensors header parser must reject or accept any byte string without
// crashing, hanging or tripping a sanitizer. Input: 8 bytes of little-endian data-section size
// (bounded), then the header text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t data_size = 0;
  for (int i = 7; i >= 0; --i) data_size = (data_size << 8) | data[i];
  data_size %= uint64_t{1} << 32;
  std::map<std::string, std::string> metadata;
  auto r = moreh::io::ParseSafetensorsHeader(
      std::string_view(reinterpret_cast<const char*>(data + 8), size - 8), data_size, &metadata);
  if (r.ok()) {
    // Accepted headers must describe a consistent layout.
    uint64_t covered = 0;
    for (const auto& e : r.value()) {
      if (e.begin != covered || e.end < e.begin) __builtin_trap();
      covered = e.end;
    }
    if (covered != data_size) __builtin_trap();
  }
  return 0;
}
