#include "runtime/comm/collectives.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace moreh::comm {
namespace {
constexpr int64_t kMinSegmentBytes = 1 << 20;
constexpr int kMaxSegments = 512;

std::vector<int64_t> Blocks(int64_t count, int n) {
  std::vector<int64_t> off(n + 1);
  for (int i = 0; i <= n; ++i) off[i] = count * i / n;
  return off;
}

Status CheckDType(DType d) {
  if (IsFloating(d)) return Status::Ok();  // f32; bf16 and f16 are reduced in f32
  return Status::InvalidArgument(
      fmt::format("collectives support f32, bf16 and f16, not {}", DTypeName(d)));
}

// seq: 14 bits of operation, 1 bit of phase, 8 bits of step, 9 bits of segment.
uint32_t Seq(uint32_t op, int phase, int step, int seg) {
  return ((op & 0x3fff) << 18) | (static_cast<uint32_t>(phase) << 17) |
         (static_cast<uint32_t>(step & 0xff) << 9) | static_cast<uint32_t>(seg & 0x1ff);
}
}  // namespace

RingCollectives::RingCollectives(UcxTransport* transport, std::vector<int> ranks, uint32_t channel,
                                 std::chrono::milliseconds timeout)
    : t_(transport), ranks_(std::move(ranks)), channel_(channel), timeout_(timeout) {
  for (size_t i = 0; i < ranks_.size(); ++i) {
    if (ranks_[i] == t_->rank()) me_ = static_cast<int>(i);
  }
  MOREH_CHECK(me_ >= 0, "RingCollectives: rank {} is not in the group", t_->rank());
  MOREH_CHECK(ranks_.size() <= 256, "RingCollectives: groups of at most 256 ranks");
}

// Sends `send` to the right and receives `recv` from the left, in segments; each received
// segment is added into `reduce_into` (f32) as soon as it lands, while later ones are in flight.
Status RingCollectives::Exchange(const char* send, int64_t send_bytes, char* recv,
                                 int64_t recv_bytes, uint32_t seq_base, float* reduce_into) {
  auto segments = [](int64_t bytes) {
    const int64_t seg =
        std::max<int64_t>(kMinSegmentBytes, (bytes + kMaxSegments - 1) / kMaxSegments);
    return std::make_pair(seg / 4 * 4, bytes == 0 ? 0 : (bytes + seg / 4 * 4 - 1) / (seg / 4 * 4));
  };
  const auto [rseg, rn] = segments(recv_bytes);
  const auto [sseg, sn] = segments(send_bytes);
  std::vector<Request> recvs, sends;
  for (int64_t k = 0; k < rn; ++k) {
    const int64_t off = k * rseg, len = std::min(rseg, recv_bytes - off);
    auto r = t_->Recv(Left(), recv + off, static_cast<size_t>(len), channel_,
                      seq_base | static_cast<uint32_t>(k));
    if (!r.ok()) return r.status();
    recvs.push_back(r.value());
  }
  for (int64_t k = 0; k < sn; ++k) {
    const int64_t off = k * sseg, len = std::min(sseg, send_bytes - off);
    auto r = t_->Send(Right(), send + off, static_cast<size_t>(len), channel_,
                      seq_base | static_cast<uint32_t>(k));
    if (!r.ok()) return r.status();
    sends.push_back(r.value());
  }
  for (int64_t k = 0; k < rn; ++k) {
    Status s = t_->Wait(recvs[k], timeout_);
    if (!s.ok()) return s;
    if (reduce_into) {
      const int64_t off = k * rseg, len = std::min(rseg, recv_bytes - off);
      const float* src = reinterpret_cast<const float*>(recv + off);
      float* dst = reduce_into + off / 4;
      for (int64_t i = 0; i < len / 4; ++i) dst[i] += src[i];
    }
  }
  return t_->WaitAll(sends, timeout_);
}

Status RingCollectives::RingReduceScatter(float* work, const std::vector<int64_t>& off,
                                          uint32_t op) {
  const int n = size();
  int64_t max_block = 0;
  for (int i = 0; i < n; ++i) max_block = std::max(max_block, off[i + 1] - off[i]);
  scratch_.resize(static_cast<size_t>(max_block));
  for (int s = 0; s < n - 1; ++s) {
    const int send_b = ((me_ - s - 1) % n + n) % n, recv_b = ((me_ - s - 2) % n + n) % n;
    Status st =
        Exchange(reinterpret_cast<const char*>(work + off[send_b]),
                 (off[send_b + 1] - off[send_b]) * 4, reinterpret_cast<char*>(scratch_.data()),
                 (off[recv_b + 1] - off[recv_b]) * 4, Seq(op, 0, s, 0), work + off[recv_b]);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

Status RingCollectives::RingAllGather(char* buf, const std::vector<int64_t>& off, int64_t elem,
                                      uint32_t op) {
  const int n = size();
  for (int s = 0; s < n - 1; ++s) {
    const int send_b = ((me_ - s) % n + n) % n, recv_b = ((me_ - s - 1) % n + n) % n;
    Status st = Exchange(buf + off[send_b] * elem, (off[send_b + 1] - off[send_b]) * elem,
                         buf + off[recv_b] * elem, (off[recv_b + 1] - off[recv_b]) * elem,
                         Seq(op, 1, s, 0), nullptr);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

Status RingCollectives::AllReduce(const void* in, void* out, int64_t count, DType dt,
                                  ReduceOp rop) {
  Status s = CheckDType(dt);
  if (!s.ok() || count < 0) return s.ok() ? Status::InvalidArgument("negative count") : s;
  const uint32_t op = op_seq_++;
  const int n = size();
  // f32 runs in `out` itself; bf16 and f16 go through an f32 buffer so partial sums stay f32.
  std::vector<float> tmp;
  float* work = static_cast<float*>(out);
  if (dt == DType::kF32) {
    if (in != out) std::memcpy(out, in, static_cast<size_t>(count) * 4);
  } else {
    tmp.resize(static_cast<size_t>(count));
    ConvertElements(in, dt, tmp.data(), DType::kF32, count);
    work = tmp.data();
  }
  const std::vector<int64_t> off = Blocks(count, n);
  if (n > 1) {
    s = RingReduceScatter(work, off, op);
    if (s.ok()) s = RingAllGather(reinterpret_cast<char*>(work), off, 4, op);
    if (!s.ok()) return s;
  }
  if (rop == ReduceOp::kAvg) {
    const float inv = 1.0f / static_cast<float>(n);
    for (int64_t i = 0; i < count; ++i) work[i] *= inv;
  }
  if (dt != DType::kF32) ConvertElements(work, DType::kF32, out, dt, count);
  return Status::Ok();
}

Status RingCollectives::ReduceScatter(const void* in, void* out, int64_t count, DType dt,
                                      ReduceOp rop) {
  Status s = CheckDType(dt);
  if (!s.ok()) return s;
  const uint32_t op = op_seq_++;
  const int n = size();
  if (dt != DType::kF32) {  // bf16, f16: partial sums in an f32 copy of the whole input
    std::vector<float> work(static_cast<size_t>(count * n));
    ConvertElements(in, dt, work.data(), DType::kF32, count * n);
    std::vector<int64_t> off(n + 1);
    for (int i = 0; i <= n; ++i) off[i] = count * i;
    if (n > 1) {
      s = RingReduceScatter(work.data(), off, op);
      if (!s.ok()) return s;
    }
    float* mine = work.data() + off[me_];
    if (rop == ReduceOp::kAvg) {
      for (int64_t i = 0; i < count; ++i) mine[i] /= static_cast<float>(n);
    }
    ConvertElements(mine, DType::kF32, out, dt, count);
    return Status::Ok();
  }
  // f32 reads the input in place: the partial sum travelling round the ring alternates between
  // `out` and one block of scratch so that the last step lands in `out` (two blocks of memory
  // besides the receive buffer, not a copy of the input).
  const float* src = static_cast<const float*>(in);
  float* dst = static_cast<float*>(out);
  if (n == 1) {
    if (dst != src) std::memcpy(dst, src, static_cast<size_t>(count) * 4);
    return Status::Ok();
  }
  scratch_.resize(static_cast<size_t>(count));
  std::vector<float> other(n > 2 ? static_cast<size_t>(count) : 0);
  const float* sending = nullptr;
  for (int st = 0; st < n - 1; ++st) {
    const int send_b = ((me_ - st - 1) % n + n) % n, recv_b = ((me_ - st - 2) % n + n) % n;
    // Step n - 2 writes `out`; the steps before alternate with `other`.
    float* acc = (n - 2 - st) % 2 == 0 ? dst : other.data();
    std::memcpy(acc, src + recv_b * count, static_cast<size_t>(count) * 4);
    const float* send = st == 0 ? src + send_b * count : sending;
    s = Exchange(reinterpret_cast<const char*>(send), count * 4,
                 reinterpret_cast<char*>(scratch_.data()), count * 4, Seq(op, 0, st, 0), acc);
    if (!s.ok()) return s;
    sending = acc;
  }
  if (rop == ReduceOp::kAvg) {
    for (int64_t i = 0; i < count; ++i) dst[i] /= static_cast<float>(n);
  }
  return Status::Ok();
}

Status RingCollectives::AllGather(const void* in, void* out, int64_t count, DType dt) {
  Status s = CheckDType(dt);
  if (!s.ok()) return s;
  const uint32_t op = op_seq_++;
  const int n = size();
  const int64_t elem = DTypeSize(dt);
  std::vector<int64_t> off(n + 1);
  for (int i = 0; i <= n; ++i) off[i] = count * i;
  char* o = static_cast<char*>(out);
  std::memmove(o + off[me_] * elem, in, static_cast<size_t>(count * elem));
  return n > 1 ? RingAllGather(o, off, elem, op) : Status::Ok();
}

Status RingCollectives::Broadcast(void* buf, int64_t count, DType dt, int root) {
  Status s = CheckDType(dt);
  if (!s.ok()) return s;
  if (root < 0 || root >= size()) {
    return Status::InvalidArgument(
        fmt::format("broadcast root {} outside the group of {}", root, size()));
  }
  const uint32_t op = op_seq_++;
  const int n = size();
  if (n == 1) return Status::Ok();
  const int64_t bytes = count * DTypeSize(dt);
  const int pos = ((me_ - root) % n + n) % n;  // distance from the root along the ring
  char* b = static_cast<char*>(buf);
  if (pos > 0) {
    auto r = t_->Recv(Left(), b, static_cast<size_t>(bytes), channel_, Seq(op, 0, 0, 0));
    if (!r.ok()) return r.status();
    s = t_->Wait(r.value(), timeout_);
    if (!s.ok()) return s;
  }
  if (pos < n - 1) {
    auto r = t_->Send(Right(), b, static_cast<size_t>(bytes), channel_, Seq(op, 0, 0, 0));
    if (!r.ok()) return r.status();
    return t_->Wait(r.value(), timeout_);
  }
  return Status::Ok();
}

Status RingCollectives::Barrier() {
  float x = 1;
  return AllReduce(&x, &x, 1, DType::kF32, ReduceOp::kSum);
}

// --- HostStagedCollectives
// ----------------------------------------------------------------------------------------

char* HostStagedCollectives::In(int64_t bytes) {
  if (static_cast<int64_t>(in_.size()) < bytes) in_.resize(static_cast<size_t>(bytes));
  return in_.data();
}

char* HostStagedCollectives::Out(int64_t bytes) {
  if (static_cast<int64_t>(out_.size()) < bytes) out_.resize(static_cast<size_t>(bytes));
  return out_.data();
}

Status HostStagedCollectives::AllReduce(const void* in, void* out, int64_t count, DType dtype,
                                        ReduceOp op) {
  const int64_t bytes = count * DTypeSize(dtype);
  char* h = In(bytes);
  device_->CopyBytes(h, in, bytes);
  Status s = inner_->AllReduce(h, h, count, dtype, op);
  if (s.ok()) device_->CopyBytes(out, h, bytes);
  return s;
}

Status HostStagedCollectives::ReduceScatter(const void* in, void* out, int64_t count, DType dtype,
                                            ReduceOp op) {
  const int64_t bytes = count * DTypeSize(dtype);
  char* h_in = In(bytes * size());
  char* h_out = Out(bytes);
  device_->CopyBytes(h_in, in, bytes * size());
  Status s = inner_->ReduceScatter(h_in, h_out, count, dtype, op);
  if (s.ok()) device_->CopyBytes(out, h_out, bytes);
  return s;
}

Status HostStagedCollectives::AllGather(const void* in, void* out, int64_t count, DType dtype) {
  const int64_t bytes = count * DTypeSize(dtype);
  char* h_in = In(bytes);
  char* h_out = Out(bytes * size());
  device_->CopyBytes(h_in, in, bytes);
  Status s = inner_->AllGather(h_in, h_out, count, dtype);
  if (s.ok()) device_->CopyBytes(out, h_out, bytes * size());
  return s;
}

Status HostStagedCollectives::Broadcast(void* buf, int64_t count, DType dtype, int root) {
  const int64_t bytes = count * DTypeSize(dtype);
  char* h = In(bytes);
  device_->CopyBytes(h, buf, bytes);
  Status s = inner_->Broadcast(h, count, dtype, root);
  if (s.ok()) device_->CopyBytes(buf, h, bytes);
  return s;
}

}  // namespace moreh::comm
