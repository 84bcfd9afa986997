// runtime::Tensor: a concrete n-dimensional array on a device. A small value type.
//
// A Tensor is (dtype, shape, strides, storage offset, buffer). Strides and the offset count
// elements, not bytes. Copies of a Tensor and its views (View, Transpose, Expand, Slice) share the
// buffer; the buffer returns to its allocator when the last one goes. Not thread-safe for
// concurrent writes to the same elements; distinct tensors may be used from any thread.
//
// The user-facing, lazily recorded moreh::Tensor lives in runtime/tensor.h; this is what it holds
// once computed, and what kernels read and write.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/allocator.h"
#include "runtime/core/dtype.h"
#include "runtime/core/shape.h"

namespace moreh::runtime {

template <typename T>
constexpr DType DTypeOf();
template <>
constexpr DType DTypeOf<float>() {
  return DType::kF32;
}
template <>
constexpr DType DTypeOf<int32_t>() {
  return DType::kI32;
}
template <>
constexpr DType DTypeOf<int64_t>() {
  return DType::kI64;
}

class Tensor {
 public:
  Tensor() = default;  // undefined

  // Uninitialised contiguous storage from `alloc` (the CPU device by default).
  static Tensor Empty(const Shape& shape, DType dtype, Allocator* alloc = nullptr);
  static Tensor Zeros(const Shape& shape, DType dtype, Allocator* alloc = nullptr);
  static Tensor Full(const Shape& shape, DType dtype, double value, Allocator* alloc = nullptr);
  // Copies `data` (numel elements of `dtype`).
  static Tensor FromData(const void* data, const Shape& shape, DType dtype,
                         Allocator* alloc = nullptr);
  template <typename T>
  static Tensor FromVector(const std::vector<T>& v, const Shape& shape) {
    return FromData(v.data(), shape, DTypeOf<T>(), nullptr);
  }
  // Values converted from f32 to `dtype` (for bf16/f16 inputs in tests).
  static Tensor FromFloats(const std::vector<float>& v, const Shape& shape, DType dtype);

  bool defined() const { return buffer_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int dim() const { return static_cast<int>(shape_.size()); }
  int64_t size(int axis) const;
  int64_t numel() const { return Numel(shape_); }
  int64_t nbytes() const { return numel() * DTypeSize(dtype_); }
  bool is_contiguous() const;
  const std::shared_ptr<Buffer>& buffer() const { return buffer_; }
  Allocator* allocator() const { return buffer_ ? buffer_->allocator() : nullptr; }
  std::string ToString() const;  // "f32[2, 3]"

  // Address of element 0 of this view.
  void* raw_data() const {
    return static_cast<char*>(buffer_->data()) + offset_ * DTypeSize(dtype_);
  }
  template <typename T>
  T* data() const {
    CheckDType(DTypeOf<T>());
    return static_cast<T*>(raw_data());
  }
  uint16_t* data_u16() const { return static_cast<uint16_t*>(raw_data()); }

  // Views (share the buffer). View needs a contiguous tensor and the same numel; one dim may be -1.
  Tensor View(Shape shape) const;
  Tensor Transpose(int d0, int d1) const;
  Tensor Expand(const Shape& shape) const;  // size-1 (or new leading) dims broadcast, stride 0
  Tensor Slice(int axis, int64_t begin, int64_t end) const;

  // Whether the host can read this tensor's memory (false for a GPU's). Kernels of the tensor's
  // device read data(); everything else here (CopyFrom, Fill, ToFloats, ...) works on both.
  bool on_host() const { return buffer_ == nullptr || buffer_->allocator()->host_accessible(); }
  // A compact copy in `alloc`'s memory (null: the CPU device), same dtype.
  Tensor CopyTo(Allocator* alloc) const;
  // Compact and readable by the host: this when it already is, else a copy (from a GPU, to host
  // memory).
  Tensor HostContiguous() const { return on_host() ? Contiguous() : CopyTo(nullptr); }

  Tensor Contiguous() const;  // this if contiguous, else a compact copy
  Tensor Clone() const;       // always a compact copy
  Tensor To(DType dtype) const;
  // Same shape; any dtype; strided either side on the host. On a device: a strided source, a
  // contiguous destination.
  void CopyFrom(const Tensor& src);
  void Fill(double value);  // every element (converted to the dtype)
  std::vector<float> ToFloats() const;
  std::vector<int64_t> ToInts() const;

 private:
  void CheckDType(DType want) const;
  void CopyFromDevice(const Tensor& src);
  DType dtype_ = DType::kF32;
  Shape shape_, strides_;
  int64_t offset_ = 0;
  std::shared_ptr<Buffer> buffer_;
};

}  // namespace moreh::runtime
