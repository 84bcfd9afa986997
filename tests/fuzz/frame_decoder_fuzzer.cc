// libFuzzer target: the control plane's frame decoder and message parser must take any byte
// stream, fed in arbitrary pieces, without crashing, hanging or tripping a sanitizer.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/net/framing.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moreh::net::FrameDecoder dec(4096);
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  // The first byte chooses how the stream is cut into reads.
  const size_t step = size ? 1 + data[0] % 64 : 1;
  for (size_t i = 0; i < size; i += step) {
    if (!dec.Feed(all.substr(i, step)).ok()) break;
    while (dec.HasMessage()) {
      const auto m = dec.Pop();
      if (!m.is_object() || !m.contains("type")) __builtin_trap();
    }
  }
  return 0;
}
