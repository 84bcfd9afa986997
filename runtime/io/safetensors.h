// Reading and writing the safetensors format (Hugging Face): an 8-byte little-endian header
// length N, N bytes of JSON header {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {str: str}}, then the data section. Offsets are relative to the data section.
//
// Every header is validated before use: size cap, JSON object, known dtype, non-negative shape,
// offsets inside the data section, byte length = numel x dtype size, no overlaps and no holes
// (the whole data section indexed, as the specification requires). Errors name the file and the
// problem. Reading uses pread into device memory; nothing is memory-mapped past the call.
// Functions are thread-safe; a SafetensorsFile may be read from several threads.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/core/tensor.h"

namespace moreh::io {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100 << 20;  // as the reference library

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
};

// Validates a header (the JSON text) against a data section of `data_size` bytes. Entries come back
// sorted by offset. Exposed for tests and the fuzzer.
StatusOr<std::vector<SafetensorsEntry>> ParseSafetensorsHeader(
    std::string_view header, uint64_t data_size, std::map<std::string, std::string>* metadata);

class SafetensorsFile {
 public:
  static StatusOr<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* Find(std::string_view name) const;
  // The tensor in its stored dtype.
  StatusOr<runtime::Tensor> Read(std::string_view name, runtime::Allocator* alloc = nullptr) const;

 private:
  std::string path_;
  uint64_t data_offset_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, size_t, std::less<>> index_;
};

// Writes `tensors` (any layout; written compact, in their own dtype) with `metadata`. Not atomic by
// itself: callers write to a temporary path and rename (see hf_checkpoint.h).
Status WriteSafetensors(const std::string& path,
                        const std::vector<std::pair<std::string, runtime::Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata);

// "F32" <-> DType (F32, BF16, F16, I32, I64).
std::string_view SafetensorsDTypeName(DType dtype);

}  // namespace moreh::io
