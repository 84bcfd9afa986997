// NCCL for the emulated devices: communicators between the threads and processes of this host,
// over TCP on 127.0.0.1, so that the runtime's NCCL paths (data- and tensor-parallel groups,
// pipeline links between GPU stages, a worker's bus-bandwidth measurement) run where no GPU is.
//
// Like NCCL: ncclGetUniqueId starts a bootstrap root (a thread with a listening socket; the id
// holds its port), every rank of ncclCommInitRank(Config) reports to it and learns the others'
// addresses, and the ranks connect to one another. With `blocking = 0` the init returns
// ncclInProgress and completes in the background (ncclCommGetAsyncError says when), as NCCL's
// non-blocking communicators do. Operations between ncclGroupStart and ncclGroupEnd are posted
// together at the end: every send first, then every receive, so a group NCCL accepts cannot
// deadlock here.
//
// An operation is queued on its stream, as NCCL's kernels are (simt_streams.cc; a group queues
// its operations on each stream together): when the stream reaches it, it reads its buffers, so
// a stream that was not made to wait for the work that writes them sends stale data. Each
// communicator has a progress thread that writes its queued messages and reads its peers' into
// per-peer queues: a send copies its buffer and goes on; a receive waits for its message
// (MOREH_SIMT_NCCL_TIMEOUT_S, default 120 s). Reductions add in f32 in rank order, so
// every rank gets the same bits. A message of the wrong size, a peer gone, or a timeout fails the
// operation, names it on stderr, and stays the communicator's error (ncclCommGetAsyncError; the
// calls on it return it from then on).
#include <arpa/inet.h>
#include <fcntl.h>
#include <nccl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core/dtype.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr char kMagic[8] = {'s', 'i', 'm', 't', 'N', 'C', 'C', 'L'};
constexpr auto kBootstrapTimeout = std::chrono::minutes(10);

std::chrono::seconds OperationTimeout() {
  static const std::chrono::seconds timeout(
      moreh::simt::EnvInt("MOREH_SIMT_NCCL_TIMEOUT_S", 120, 1, 86400));
  return timeout;
}

void Report(const std::string& what) { std::fprintf(stderr, "simt nccl: %s\n", what.c_str()); }

// --- sockets ---

int Listen(uint16_t* port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

int Connect(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Waits until fd is readable (POLLIN) or writable; false at the deadline or when *stop is set.
bool WaitFor(int fd, short events, Clock::time_point deadline, const std::atomic<bool>* stop) {
  while (Clock::now() < deadline && (stop == nullptr || !stop->load())) {
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, 50);
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
  return false;
}

// Blocking exchange of small bootstrap records (the sockets are still blocking then).
bool WriteAll(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}
bool ReadAll(int fd, void* p, size_t n, Clock::time_point deadline, const std::atomic<bool>* stop) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    if (!WaitFor(fd, POLLIN, deadline, stop)) return false;
    const ssize_t r = recv(fd, c, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// --- the unique id and its bootstrap root ---

struct IdFields {
  char magic[8];
  uint64_t tag;  // ties the ranks to this id (a stale or foreign id is refused)
  uint16_t port;
};
static_assert(sizeof(IdFields) <= NCCL_UNIQUE_ID_BYTES);

struct Hello {
  uint64_t tag;
  int32_t rank, nranks;
  uint16_t port;  // the rank's own listener, for the peers that connect to it
};

// The root: collects every rank's hello, then sends each the table of listener ports.
void RunRoot(int listener, uint64_t tag) {
  const auto deadline = Clock::now() + kBootstrapTimeout;
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  int nranks = -1, joined = 0;
  while (joined != nranks && WaitFor(listener, POLLIN, deadline, nullptr)) {
    const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    Hello h{};
    const bool ok = ReadAll(fd, &h, sizeof h, Clock::now() + std::chrono::seconds(10), nullptr) &&
                    h.tag == tag && h.nranks >= 1 && h.rank >= 0 && h.rank < h.nranks &&
                    (nranks < 0 || h.nranks == nranks) &&
                    (nranks < 0 || fds[static_cast<size_t>(h.rank)] < 0);
    if (!ok) {  // the rank sees the connection close and fails its init
      Report("bootstrap: a rank's hello does not match this group (refused)");
      close(fd);
      continue;
    }
    if (nranks < 0) {
      nranks = h.nranks;
      fds.assign(static_cast<size_t>(nranks), -1);
      ports.assign(static_cast<size_t>(nranks), 0);
    }
    fds[static_cast<size_t>(h.rank)] = fd;
    ports[static_cast<size_t>(h.rank)] = h.port;
    ++joined;
  }
  for (int fd : fds) {
    if (fd < 0) continue;
    if (joined == nranks) WriteAll(fd, ports.data(), ports.size() * sizeof(uint16_t));
    close(fd);
  }
  close(listener);
}

// --- reductions ---

bool ToDType(ncclDataType_t t, moreh::DType* d) {
  switch (t) {
    case ncclFloat32:
      *d = moreh::DType::kF32;
      return true;
    case ncclBfloat16:
      *d = moreh::DType::kBF16;
      return true;
    case ncclFloat16:
      *d = moreh::DType::kF16;
      return true;
    default:
      return false;
  }
}

size_t ElementBytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
      return 8;
    default:
      return 0;
  }
}

}  // namespace

// --- the communicator ---

struct ncclComm {
  int rank = 0, nranks = 1;
  std::vector<int> fds;  // per peer (-1 for this rank)
  std::atomic<ncclResult_t> state{ncclInProgress};
  std::atomic<bool> stop{false};
  std::thread init, progress;
  int wake[2] = {-1, -1};  // a pipe: a queued send wakes the progress thread

  std::mutex mu;
  std::condition_variable arrived;
  std::vector<std::deque<std::string>> outbound;  // framed messages (8-byte length, payload)
  std::vector<size_t> written;                    // of outbound's front
  std::vector<std::deque<std::string>> inbound;   // payloads
  struct Incoming {                               // the message being read from a peer
    char header[8];
    size_t header_got = 0, payload_got = 0;
    std::string payload;
  };
  std::vector<Incoming> incoming;  // the progress thread's own
  std::vector<bool> closed;
  bool shut = false;         // Close() began: no more sends are queued (under mu)
  std::atomic<int> refs{1};  // the handle's, and each queued operation's

  void Retain() { ++refs; }
  void Release() {
    if (--refs == 0) delete this;
  }

  ncclResult_t Fail(ncclResult_t r, const std::string& what) {
    Report(what);
    ncclResult_t now = state.load();  // the first error stays
    while ((now == ncclSuccess || now == ncclInProgress) && !state.compare_exchange_weak(now, r)) {
    }
    return r;
  }

  // Every rank reports to the root, then connects to the lower ranks and accepts the higher.
  ncclResult_t Bootstrap(const IdFields& id) {
    const auto deadline = Clock::now() + kBootstrapTimeout;
    uint16_t my_port = 0;
    const int listener = Listen(&my_port);
    const int root = Connect(id.port);
    if (listener < 0 || root < 0) {
      if (listener >= 0) close(listener);
      if (root >= 0) close(root);
      return Fail(ncclSystemError,
                  "bootstrap: cannot reach the root (127.0.0.1:" + std::to_string(id.port) + ")");
    }
    const Hello h{id.tag, rank, nranks, my_port};
    std::vector<uint16_t> ports(static_cast<size_t>(nranks));
    const bool told = WriteAll(root, &h, sizeof h) &&
                      ReadAll(root, ports.data(), ports.size() * sizeof(uint16_t), deadline, &stop);
    close(root);
    if (!told) {
      close(listener);
      return Fail(ncclSystemError, "bootstrap: the group did not assemble (rank " +
                                       std::to_string(rank) + " of " + std::to_string(nranks) +
                                       ")");
    }
    fds.assign(static_cast<size_t>(nranks), -1);
    bool ok = true;
    for (int j = 0; j < rank && ok; ++j) {
      const int fd = Connect(ports[static_cast<size_t>(j)]);
      const int32_t me = rank;
      ok = fd >= 0 && WriteAll(fd, &id.tag, sizeof id.tag) && WriteAll(fd, &me, sizeof me);
      fds[static_cast<size_t>(j)] = fd;
    }
    for (int k = rank + 1; k < nranks && ok; ++k) {
      ok = WaitFor(listener, POLLIN, deadline, &stop);
      const int fd = ok ? accept4(listener, nullptr, nullptr, SOCK_CLOEXEC) : -1;
      uint64_t tag = 0;
      int32_t peer = -1;
      ok = fd >= 0 && ReadAll(fd, &tag, sizeof tag, deadline, &stop) &&
           ReadAll(fd, &peer, sizeof peer, deadline, &stop) && tag == id.tag && peer > rank &&
           peer < nranks && fds[static_cast<size_t>(peer)] < 0;
      if (fd >= 0 && !ok) close(fd);
      if (ok) fds[static_cast<size_t>(peer)] = fd;
    }
    close(listener);
    if (!ok) return Fail(ncclSystemError, "bootstrap: connecting to the peers failed");
    for (int fd : fds) {
      if (fd < 0) continue;
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    const size_t n = static_cast<size_t>(nranks);
    outbound.resize(n);
    written.assign(n, 0);
    inbound.resize(n);
    incoming.resize(n);
    closed.assign(n, false);
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) return Fail(ncclSystemError, "pipe2");
    progress = std::thread([this] { Progress(); });
    state = ncclSuccess;
    return ncclSuccess;
  }

  void Progress() {
    std::vector<pollfd> p;
    while (!stop.load()) {
      p.clear();
      p.push_back({wake[0], POLLIN, 0});
      {
        std::lock_guard<std::mutex> lock(mu);
        for (size_t j = 0; j < fds.size(); ++j) {
          if (fds[j] < 0 || closed[j]) continue;
          p.push_back(
              {fds[j], static_cast<short>(POLLIN | (outbound[j].empty() ? 0 : POLLOUT)), 0});
        }
      }
      if (poll(p.data(), p.size(), 100) <= 0) continue;
      if (p[0].revents & POLLIN) {
        char buf[64];
        while (read(wake[0], buf, sizeof buf) > 0) {
        }
      }
      for (size_t i = 1; i < p.size(); ++i) {
        const size_t j = PeerOf(p[i].fd);
        if (p[i].revents & POLLOUT) Write(j);
        if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) Read(j);
      }
    }
  }
  size_t PeerOf(int fd) const {
    for (size_t j = 0; j < fds.size(); ++j) {
      if (fds[j] == fd) return j;
    }
    return 0;
  }
  void Write(size_t j) {
    std::lock_guard<std::mutex> lock(mu);
    while (!outbound[j].empty()) {
      const std::string& m = outbound[j].front();
      const ssize_t w = send(fds[j], m.data() + written[j], m.size() - written[j], MSG_NOSIGNAL);
      if (w < 0 && (errno == EAGAIN || errno == EINTR)) return;
      if (w < 0) {
        closed[j] = true;
        arrived.notify_all();
        return;
      }
      written[j] += static_cast<size_t>(w);
      if (written[j] < m.size()) return;
      outbound[j].pop_front();
      written[j] = 0;
    }
  }
  // Reads what peer j sent: the 8-byte length, then the payload straight into its string.
  void Read(size_t j) {
    Incoming& in = incoming[j];
    while (true) {
      char* dst =
          in.header_got < 8 ? in.header + in.header_got : in.payload.data() + in.payload_got;
      const size_t want =
          in.header_got < 8 ? 8 - in.header_got : in.payload.size() - in.payload_got;
      const ssize_t r = want == 0 ? 0 : recv(fds[j], dst, want, 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
      if (want > 0 && r <= 0) {  // the peer closed (or failed): its receivers are told
        std::lock_guard<std::mutex> lock(mu);
        closed[j] = true;
        arrived.notify_all();
        return;
      }
      if (in.header_got < 8) {
        in.header_got += static_cast<size_t>(r);
        if (in.header_got < 8) continue;
        uint64_t len = 0;
        std::memcpy(&len, in.header, 8);
        in.payload.resize(len);
        in.payload_got = 0;
      } else {
        in.payload_got += static_cast<size_t>(r);
      }
      if (in.payload_got == in.payload.size()) {
        std::lock_guard<std::mutex> lock(mu);
        inbound[j].push_back(std::move(in.payload));
        in.payload = std::string();
        in.header_got = 0;
        arrived.notify_all();
      }
    }
  }

  void Send(int peer, const void* data, size_t bytes) {
    std::string m(8 + bytes, '\0');
    const uint64_t len = bytes;
    std::memcpy(m.data(), &len, 8);
    if (bytes) std::memcpy(m.data() + 8, data, bytes);
    std::lock_guard<std::mutex> lock(mu);
    if (shut) return;  // ended (aborted): the peer hears nothing more
    outbound[static_cast<size_t>(peer)].push_back(std::move(m));
    const char one = 1;
    (void)!write(wake[1], &one, 1);
  }
  // The next message from peer, of exactly `bytes`.
  ncclResult_t Recv(int peer, size_t bytes, std::string* out, const char* what) {
    const size_t j = static_cast<size_t>(peer);
    std::unique_lock<std::mutex> lock(mu);
    const bool got = arrived.wait_for(
        lock, OperationTimeout(), [&] { return !inbound[j].empty() || closed[j] || stop.load(); });
    if (inbound[j].empty()) {
      lock.unlock();
      return Fail(got ? ncclRemoteError : ncclSystemError,
                  std::string(what) + ": rank " + std::to_string(rank) + " waited for rank " +
                      std::to_string(peer) + (got ? ", which is gone" : " in vain (timeout)"));
    }
    *out = std::move(inbound[j].front());
    inbound[j].pop_front();
    lock.unlock();
    if (out->size() != bytes) {
      return Fail(ncclInvalidUsage, std::string(what) + ": rank " + std::to_string(rank) +
                                        " expected " + std::to_string(bytes) + " bytes from rank " +
                                        std::to_string(peer) + ", got " +
                                        std::to_string(out->size()));
    }
    return ncclSuccess;
  }

  // Waits for a non-blocking init; the state then.
  ncclResult_t Ready() {
    if (init.joinable()) init.join();
    return state.load();
  }

  // Flushes what is queued (destroy) or not (abort), then stops and closes.
  void Close(bool flush) {
    if (init.joinable()) {
      if (!flush) stop = true;
      init.join();
    }
    if (flush && progress.joinable()) {
      const auto deadline = Clock::now() + std::chrono::seconds(10);
      while (Clock::now() < deadline) {
        bool empty = true;
        {
          std::lock_guard<std::mutex> lock(mu);
          for (size_t j = 0; j < outbound.size(); ++j) empty &= outbound[j].empty() || closed[j];
        }
        if (empty) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      shut = true;
      stop = true;
    }
    arrived.notify_all();
    if (progress.joinable()) progress.join();
    for (int fd : fds) {
      if (fd >= 0) close(fd);
    }
    for (int fd : wake) {
      if (fd >= 0) close(fd);
    }
  }
};

namespace {

// An operation: its sends are posted first, then it completes (receives, reduces, writes).
struct Op {
  ncclComm* comm;
  std::function<void()> post;
  std::function<ncclResult_t()> complete;
  cudaStream_t stream = nullptr;
};

thread_local int g_group_depth = 0;
thread_local std::vector<Op> g_group;

// Queues ops on their streams once every communicator is ready (else its state is the answer):
// on each stream, every send of its ops is posted before any of them completes. A failure is the
// communicator's error (as NCCL's, seen by ncclCommGetAsyncError). With synchronous streams they
// run now, every send of every stream first.
ncclResult_t Queue(std::vector<Op> ops) {
  for (Op& op : ops) {
    const ncclResult_t ready = op.comm->Ready();
    if (ready != ncclSuccess) return ready;
  }
  if (moreh::simt::SynchronousStreams()) {
    for (Op& op : ops) op.post();
    for (Op& op : ops) op.complete();
    return ncclSuccess;
  }
  while (!ops.empty()) {
    const cudaStream_t stream = ops.front().stream;
    auto on_stream = std::make_shared<std::vector<Op>>();
    std::vector<Op> rest;
    for (Op& op : ops) (op.stream == stream ? *on_stream : rest).push_back(std::move(op));
    ops.swap(rest);
    for (Op& op : *on_stream) op.comm->Retain();
    moreh::simt::Enqueue(stream, [on_stream] {
      for (Op& op : *on_stream) op.post();
      for (Op& op : *on_stream) op.complete();
      for (Op& op : *on_stream) op.comm->Release();
    });
  }
  return ncclSuccess;
}

ncclResult_t Submit(Op op) {
  if (op.comm == nullptr) return ncclInvalidArgument;
  if (g_group_depth > 0) {
    g_group.push_back(std::move(op));
    return ncclSuccess;
  }
  std::vector<Op> ops;
  ops.push_back(std::move(op));
  return Queue(std::move(ops));
}

// The rank-ordered sum (or mean) of one chunk from every rank (`mine` this rank's, which may be
// `out`: each element is read from every rank before it is written) into out, in f32.
ncclResult_t Reduce(ncclComm* c, const void* mine, size_t count, moreh::DType t, ncclRedOp_t op,
                    void* out, const char* what) {
  const size_t bytes = count * moreh::DTypeSize(t);
  std::vector<std::string> theirs(static_cast<size_t>(c->nranks));
  std::vector<const char*> src(static_cast<size_t>(c->nranks));
  for (int q = 0; q < c->nranks; ++q) {
    const size_t k = static_cast<size_t>(q);
    if (q == c->rank) {
      src[k] = static_cast<const char*>(mine);
      continue;
    }
    const ncclResult_t r = c->Recv(q, bytes, &theirs[k], what);
    if (r != ncclSuccess) return r;
    src[k] = theirs[k].data();
  }
  constexpr size_t kChunk = 4096;
  std::vector<float> sum(kChunk), v(kChunk);
  for (size_t i0 = 0; i0 < count; i0 += kChunk) {
    const size_t n = std::min(kChunk, count - i0);
    const size_t at = i0 * moreh::DTypeSize(t);
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (const char* p : src) {
      moreh::ConvertElements(p + at, t, v.data(), moreh::DType::kF32, static_cast<int64_t>(n));
      for (size_t i = 0; i < n; ++i) sum[i] += v[i];
    }
    if (op == ncclAvg) {
      for (size_t i = 0; i < n; ++i) sum[i] /= static_cast<float>(c->nranks);
    }
    moreh::ConvertElements(sum.data(), moreh::DType::kF32, static_cast<char*>(out) + at, t,
                           static_cast<int64_t>(n));
  }
  return ncclSuccess;
}

ncclResult_t CheckReduction(ncclDataType_t t, ncclRedOp_t op, moreh::DType* d) {
  if (!ToDType(t, d)) {
    Report("reductions are emulated for f32, bf16 and f16 only");
    return ncclInvalidArgument;
  }
  if (op != ncclSum && op != ncclAvg) {
    Report("reductions are emulated for sum and avg only");
    return ncclInvalidArgument;
  }
  return ncclSuccess;
}

}  // namespace

extern "C" {

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error";
    case ncclSystemError:
      return "unhandled system error (emulated NCCL: see its stderr line)";
    case ncclInternalError:
      return "internal error";
    case ncclInvalidArgument:
      return "invalid argument (emulated NCCL: see its stderr line)";
    case ncclInvalidUsage:
      return "invalid usage (emulated NCCL: see its stderr line)";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    default:
      return "unknown result code";
  }
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  uint16_t port = 0;
  const int listener = Listen(&port);
  if (listener < 0) return ncclSystemError;
  IdFields f{};
  std::memcpy(f.magic, kMagic, sizeof kMagic);
  f.tag = std::random_device{}() * 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(getpid()) << 32 ^
          static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  f.port = port;
  std::memset(id->internal, 0, sizeof id->internal);
  std::memcpy(id->internal, &f, sizeof f);
  std::thread(RunRoot, listener, f.tag).detach();
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t* config) {
  IdFields id;
  std::memcpy(&id, commId.internal, sizeof id);
  if (comm == nullptr || nranks < 1 || rank < 0 || rank >= nranks ||
      std::memcmp(id.magic, kMagic, sizeof kMagic) != 0) {
    Report("ncclCommInitRank: bad arguments or a unique id not made by ncclGetUniqueId");
    return ncclInvalidArgument;
  }
  auto* c = new ncclComm;
  c->rank = rank;
  c->nranks = nranks;
  *comm = c;
  if (config != nullptr && config->blocking == 0) {
    c->init = std::thread([c, id] { c->Bootstrap(id); });
    return ncclInProgress;
  }
  return c->Bootstrap(id);
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
  return ncclCommInitRankConfig(comm, nranks, commId, rank, nullptr);
}

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  (void)devlist;
  if (comms == nullptr || ndev < 1) return ncclInvalidArgument;
  ncclUniqueId id;
  if (ncclGetUniqueId(&id) != ncclSuccess) return ncclSystemError;
  std::vector<ncclResult_t> r(static_cast<size_t>(ndev));
  std::vector<std::thread> t;
  for (int d = 0; d < ndev; ++d) {
    t.emplace_back(
        [&, d] { r[static_cast<size_t>(d)] = ncclCommInitRank(&comms[d], ndev, id, d); });
  }
  for (auto& x : t) x.join();
  for (ncclResult_t x : r) {
    if (x != ncclSuccess) return x;
  }
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* err) {
  if (comm == nullptr || err == nullptr) return ncclInvalidArgument;
  *err = comm->state.load();
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm == nullptr) return ncclInvalidArgument;
  comm->Close(true);
  comm->Release();
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm == nullptr) return ncclInvalidArgument;
  comm->Close(false);
  comm->Release();
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++g_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (g_group_depth == 0) return ncclInvalidUsage;
  if (--g_group_depth > 0) return ncclSuccess;
  std::vector<Op> ops;
  ops.swap(g_group);
  return Queue(std::move(ops));
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  moreh::DType t;
  if (ncclResult_t r = CheckReduction(datatype, op, &t); r != ncclSuccess) return r;
  const size_t bytes = count * ElementBytes(datatype);
  return Submit({comm,
                 [=] {
                   for (int q = 0; q < comm->nranks; ++q) {
                     if (q != comm->rank) comm->Send(q, sendbuff, bytes);
                   }
                 },
                 [=] { return Reduce(comm, sendbuff, count, t, op, recvbuff, "all_reduce"); },
                 stream});
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
  moreh::DType t;
  if (ncclResult_t r = CheckReduction(datatype, op, &t); r != ncclSuccess) return r;
  const size_t bytes = recvcount * ElementBytes(datatype);
  const char* in = static_cast<const char*>(sendbuff);
  return Submit({comm,
                 [=] {
                   for (int q = 0; q < comm->nranks; ++q) {
                     if (q != comm->rank) comm->Send(q, in + static_cast<size_t>(q) * bytes, bytes);
                   }
                 },
                 [=] {
                   return Reduce(comm, in + static_cast<size_t>(comm->rank) * bytes, recvcount, t,
                                 op, recvbuff, "reduce_scatter");
                 },
                 stream});
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = sendcount * ElementBytes(datatype);
  if (bytes == 0 && sendcount > 0) return ncclInvalidArgument;
  char* out = static_cast<char*>(recvbuff);
  return Submit({comm,
                 [=] {
                   for (int q = 0; q < comm->nranks; ++q) {
                     if (q != comm->rank) comm->Send(q, sendbuff, bytes);
                   }
                 },
                 [=]() -> ncclResult_t {
                   // This rank's block first: in place, sendbuff is that block already.
                   if (bytes)
                     std::memmove(out + static_cast<size_t>(comm->rank) * bytes, sendbuff, bytes);
                   std::string theirs;
                   for (int q = 0; q < comm->nranks; ++q) {
                     if (q == comm->rank) continue;
                     const ncclResult_t r = comm->Recv(q, bytes, &theirs, "all_gather");
                     if (r != ncclSuccess) return r;
                     if (bytes)
                       std::memcpy(out + static_cast<size_t>(q) * bytes, theirs.data(), bytes);
                   }
                   return ncclSuccess;
                 },
                 stream});
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  const size_t bytes = count * ElementBytes(datatype);
  if ((bytes == 0 && count > 0) || comm == nullptr || root < 0 || root >= comm->nranks) {
    return ncclInvalidArgument;
  }
  return Submit({comm,
                 [=] {
                   if (comm->rank != root) return;
                   for (int q = 0; q < comm->nranks; ++q) {
                     if (q != root) comm->Send(q, sendbuff, bytes);
                   }
                 },
                 [=]() -> ncclResult_t {
                   if (comm->rank == root) {
                     if (bytes) std::memmove(recvbuff, sendbuff, bytes);
                     return ncclSuccess;
                   }
                   std::string theirs;
                   const ncclResult_t r = comm->Recv(root, bytes, &theirs, "broadcast");
                   if (r == ncclSuccess && bytes) std::memcpy(recvbuff, theirs.data(), bytes);
                   return r;
                 },
                 stream});
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = count * ElementBytes(datatype);
  if ((bytes == 0 && count > 0) || comm == nullptr || peer < 0 || peer >= comm->nranks ||
      peer == comm->rank) {
    return ncclInvalidArgument;
  }
  return Submit(
      {comm, [=] { comm->Send(peer, sendbuff, bytes); }, [] { return ncclSuccess; }, stream});
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = count * ElementBytes(datatype);
  if ((bytes == 0 && count > 0) || comm == nullptr || peer < 0 || peer >= comm->nranks ||
      peer == comm->rank) {
    return ncclInvalidArgument;
  }
  return Submit({comm, [] {},
                 [=]() -> ncclResult_t {
                   std::string m;
                   const ncclResult_t r = comm->Recv(peer, bytes, &m, "recv");
                   if (r == ncclSuccess && bytes) std::memcpy(recvbuff, m.data(), bytes);
                   return r;
                 },
                 stream});
}

}  // extern "C"
