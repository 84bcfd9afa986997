#include "runtime/core/tensor.h"

#include <algorithm>
#include <cstring>

#include "runtime/core/error.h"

namespace moreh::runtime {

namespace {
Allocator* OrCpu(Allocator* a) { return a ? a : CpuAllocator(); }

// Calls fn(dst_index, src_elem_offset) for every element of a strided tensor in row-major order.
template <typename F>
void ForEachStrided(const Shape& shape, const Shape& strides, int64_t offset, F&& fn) {
  const int rank = static_cast<int>(shape.size());
  const int64_t n = Numel(shape);
  if (n == 0) return;
  if (rank == 0) {
    fn(0, offset);
    return;
  }
  std::vector<int64_t> idx(rank, 0);
  int64_t off = offset;
  const int64_t inner = shape[rank - 1], inner_stride = strides[rank - 1];
  for (int64_t i = 0; i < n; i += inner) {
    for (int64_t j = 0; j < inner; ++j) fn(i + j, off + j * inner_stride);
    for (int d = rank - 2; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}
}  // namespace

Tensor Tensor::Empty(const Shape& shape, DType dtype, Allocator* alloc) {
  for (int64_t d : shape)
    MOREH_CHECK(d >= 0, "Tensor: negative dimension in shape {}", ShapeToString(shape));
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = ContiguousStrides(shape);
  t.buffer_ = OrCpu(alloc)->Allocate(Numel(shape) * DTypeSize(dtype));
  return t;
}

Tensor Tensor::Zeros(const Shape& shape, DType dtype, Allocator* alloc) {
  Tensor t = Empty(shape, dtype, alloc);
  if (!t.on_host()) {
    t.allocator()->memory().Fill(t.raw_data(), dtype, t.numel(), 0.0);
  } else if (t.nbytes()) {
    std::memset(t.raw_data(), 0, static_cast<size_t>(t.nbytes()));
  }
  return t;
}

Tensor Tensor::Full(const Shape& shape, DType dtype, double value, Allocator* alloc) {
  Tensor t = Empty(shape, dtype, alloc);
  t.Fill(value);
  return t;
}

void Tensor::Fill(double value) {
  MOREH_CHECK(defined(), "Tensor::Fill: undefined tensor");
  if (!on_host()) {
    MOREH_CHECK(is_contiguous(), "Tensor::Fill: strided {} on {}", ToString(),
                allocator()->device_name());
    allocator()->memory().Fill(raw_data(), dtype_, numel(), value);
    return;
  }
  const Tensor c = Contiguous();
  const int64_t n = c.numel();
  switch (dtype_) {
    case DType::kF32:
      std::fill_n(c.data<float>(), n, static_cast<float>(value));
      break;
    case DType::kI32:
      std::fill_n(c.data<int32_t>(), n, static_cast<int32_t>(value));
      break;
    case DType::kI64:
      std::fill_n(c.data<int64_t>(), n, static_cast<int64_t>(value));
      break;
    case DType::kBF16:
    case DType::kF16: {
      const float v = static_cast<float>(value);
      uint16_t h;
      ConvertElements(&v, DType::kF32, &h, dtype_, 1);
      std::fill_n(c.data_u16(), n, h);
      break;
    }
  }
  if (c.buffer() != buffer_ || !is_contiguous()) CopyFrom(c);
}

Tensor Tensor::FromData(const void* data, const Shape& shape, DType dtype, Allocator* alloc) {
  Tensor t = Empty(shape, dtype, alloc);
  if (t.nbytes()) t.allocator()->memory().CopyBytes(t.raw_data(), data, t.nbytes());
  return t;
}

Tensor Tensor::FromFloats(const std::vector<float>& v, const Shape& shape, DType dtype) {
  MOREH_CHECK(static_cast<int64_t>(v.size()) == Numel(shape),
              "Tensor::FromFloats: {} values for shape {}", v.size(), ShapeToString(shape));
  Tensor t = Empty(shape, dtype);
  ConvertElements(v.data(), DType::kF32, t.raw_data(), dtype, t.numel());
  return t;
}

int64_t Tensor::size(int axis) const {
  const int a = NormalizeAxis(axis, dim());
  MOREH_CHECK(a >= 0, "Tensor::size: axis {} out of range for {}", axis, ToString());
  return shape_[a];
}

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] != 1 && strides_[i] != expect) return false;
    expect *= shape_[i];
  }
  return true;
}

std::string Tensor::ToString() const {
  return fmt::format("{}{}", DTypeName(dtype_), ShapeToString(shape_));
}

void Tensor::CheckDType(DType want) const {
  MOREH_CHECK(defined(), "Tensor: access to an undefined tensor");
  MOREH_CHECK(dtype_ == want, "Tensor: data<{}>() on a {} tensor", DTypeName(want), ToString());
}

Tensor Tensor::View(Shape shape) const {
  MOREH_CHECK(is_contiguous(), "Tensor::View: {} is not contiguous", ToString());
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      MOREH_CHECK(infer < 0, "Tensor::View: more than one -1 in {}", ShapeToString(shape));
      infer = static_cast<int>(i);
    } else {
      MOREH_CHECK(shape[i] >= 0, "Tensor::View: bad shape {}", ShapeToString(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    MOREH_CHECK(known > 0 && numel() % known == 0, "Tensor::View: cannot view {} as {}", ToString(),
                ShapeToString(shape));
    shape[infer] = numel() / known;
  }
  MOREH_CHECK(Numel(shape) == numel(), "Tensor::View: cannot view {} as {}", ToString(),
              ShapeToString(shape));
  Tensor t = *this;
  t.strides_ = ContiguousStrides(shape);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::Transpose(int d0, int d1) const {
  const int a = NormalizeAxis(d0, dim()), b = NormalizeAxis(d1, dim());
  MOREH_CHECK(a >= 0 && b >= 0, "Tensor::Transpose: axes ({}, {}) out of range for {}", d0, d1,
              ToString());
  Tensor t = *this;
  std::swap(t.shape_[a], t.shape_[b]);
  std::swap(t.strides_[a], t.strides_[b]);
  return t;
}

Tensor Tensor::Expand(const Shape& shape) const {
  MOREH_CHECK(shape.size() >= shape_.size(), "Tensor::Expand: cannot expand {} to {}", ToString(),
              ShapeToString(shape));
  const size_t lead = shape.size() - shape_.size();
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_.assign(shape.size(), 0);
  for (size_t i = 0; i < shape_.size(); ++i) {
    if (shape_[i] == shape[lead + i]) {
      t.strides_[lead + i] = strides_[i];
    } else {
      MOREH_CHECK(shape_[i] == 1, "Tensor::Expand: cannot expand {} to {}", ToString(),
                  ShapeToString(shape));
    }
  }
  return t;
}

Tensor Tensor::Slice(int axis, int64_t begin, int64_t end) const {
  const int a = NormalizeAxis(axis, dim());
  MOREH_CHECK(a >= 0 && 0 <= begin && begin <= end && end <= (a >= 0 ? shape_[a] : 0),
              "Tensor::Slice: [{}, {}) on axis {} out of range for {}", begin, end, axis,
              ToString());
  Tensor t = *this;
  t.offset_ += begin * strides_[a];
  t.shape_[a] = end - begin;
  return t;
}

Tensor Tensor::Contiguous() const { return is_contiguous() ? *this : Clone(); }

Tensor Tensor::Clone() const {
  Tensor t = Empty(shape_, dtype_, allocator());
  t.CopyFrom(*this);
  return t;
}

Tensor Tensor::To(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor t = Empty(shape_, dtype, allocator());
  t.CopyFrom(*this);
  return t;
}

Tensor Tensor::CopyTo(Allocator* alloc) const {
  Tensor t = Empty(shape_, dtype_, alloc);
  t.CopyFrom(*this);
  return t;
}

void Tensor::CopyFrom(const Tensor& src) {
  MOREH_CHECK(src.shape_ == shape_, "Tensor::CopyFrom: shape {} into {}", src.ToString(),
              ToString());
  const int64_t n = numel();
  if (n == 0) return;
  if (!on_host() || !src.on_host()) {
    CopyFromDevice(src);
    return;
  }
  if (is_contiguous() && src.is_contiguous()) {
    ConvertElements(src.raw_data(), src.dtype_, raw_data(), dtype_, n);
    return;
  }
  const Tensor s = src.is_contiguous() ? src : [&] {
    // Gather the strided source into a compact buffer of its own dtype.
    Tensor c = Empty(src.shape_, src.dtype_, src.allocator());
    const int64_t es = DTypeSize(src.dtype_);
    char* dst = static_cast<char*>(c.raw_data());
    const char* base = static_cast<const char*>(src.buffer_->data());
    ForEachStrided(src.shape_, src.strides_, src.offset_, [&](int64_t i, int64_t off) {
      std::memcpy(dst + i * es, base + off * es, static_cast<size_t>(es));
    });
    return c;
  }();
  if (is_contiguous()) {
    ConvertElements(s.raw_data(), s.dtype_, raw_data(), dtype_, n);
    return;
  }
  const Tensor conv = s.To(dtype_);
  const int64_t es = DTypeSize(dtype_);
  const char* from = static_cast<const char*>(conv.raw_data());
  char* base = static_cast<char*>(buffer_->data());
  ForEachStrided(shape_, strides_, offset_, [&](int64_t i, int64_t off) {
    std::memcpy(base + off * es, from + i * es, static_cast<size_t>(es));
  });
}

// One side (or both) in device memory: device-to-device copies convert on the device; across
// the boundary the bytes move compact, in the source's dtype, and convert on the host.
void Tensor::CopyFromDevice(const Tensor& src) {
  if (!on_host() && !src.on_host()) {
    MOREH_CHECK(src.allocator()->device_name() == allocator()->device_name(),
                "Tensor::CopyFrom: {} on {} into {} on {} (copy through the host)", src.ToString(),
                src.allocator()->device_name(), ToString(), allocator()->device_name());
    MOREH_CHECK(is_contiguous(), "Tensor::CopyFrom: strided destination {} on {}", ToString(),
                allocator()->device_name());
    allocator()->memory().CopyStrided(raw_data(), dtype_, src.buffer_->data(), src.dtype_,
                                      src.shape_, src.strides_, src.offset_);
    return;
  }
  if (!on_host()) {  // host -> device
    MOREH_CHECK(is_contiguous(), "Tensor::CopyFrom: strided destination {} on {}", ToString(),
                allocator()->device_name());
    const Tensor h =
        src.dtype_ == dtype_ && src.is_contiguous() ? src : src.To(dtype_).Contiguous();
    allocator()->memory().CopyBytes(raw_data(), h.raw_data(), nbytes());
    return;
  }
  // device -> host
  const Tensor c = src.Contiguous();  // on the device
  Tensor h = Empty(shape_, src.dtype_, nullptr);
  c.allocator()->memory().CopyBytes(h.raw_data(), c.raw_data(), h.nbytes());
  CopyFrom(h);
}

std::vector<float> Tensor::ToFloats() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  const Tensor c = HostContiguous();
  ConvertElements(c.raw_data(), dtype_, out.data(), DType::kF32, numel());
  return out;
}

std::vector<int64_t> Tensor::ToInts() const {
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  const Tensor c = HostContiguous();
  ConvertElements(c.raw_data(), dtype_, out.data(), DType::kI64, numel());
  return out;
}

}  // namespace moreh::runtime
