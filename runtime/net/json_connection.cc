#include "runtime/net/json_connection.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>

#include "runtime/net/protocol.h"

namespace moreh::net {
namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;

namespace {
// A connection that was told why it is closed gets this long to read it.
constexpr std::chrono::milliseconds kCloseGrace{1000};
}  // namespace

Status ConnectionLimits::Validate() const {
  if (max_frame_before_auth < 1024 || max_frame < max_frame_before_auth) {
    return Status::InvalidArgument(
        fmt::format("frame limits: {} bytes before authentication, {} after (at least 1024, and "
                    "the second not below the first)",
                    max_frame_before_auth, max_frame));
  }
  if (auth_timeout.count() <= 0 || idle_timeout.count() <= 0) {
    return Status::InvalidArgument("connection time-outs must be positive");
  }
  if (max_connections < 1 || max_unauthenticated < 1 || max_queued_bytes < max_frame) {
    return Status::InvalidArgument(fmt::format(
        "connection caps: {} connections, {} unauthenticated, {} queued bytes (each at least 1, "
        "the bytes at least one frame)",
        max_connections, max_unauthenticated, max_queued_bytes));
  }
  return Status::Ok();
}

JsonConnection::JsonConnection(tcp::socket socket, ConnectionSet* set)
    : socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      set_(set),
      decoder_(set->limits().max_frame_before_auth),
      unauth_pos_(set->waiting_.end()) {
  boost::system::error_code ec;
  const auto ep = socket_.remote_endpoint(ec);
  peer_ = ec ? std::string("?") : fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

void JsonConnection::Start(Handler on_message, std::function<void()> on_close) {
  on_message_ = std::move(on_message);
  on_close_ = std::move(on_close);
  ArmTimer(set_->limits().auth_timeout);
  Read();
}

void JsonConnection::ArmTimer(std::chrono::milliseconds after) {
  timer_.expires_after(after);
  timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->closed_) return;
    if (self->closing_) return self->Close();  // told why; it did not read it in time
    const auto& l = self->set_->limits();
    if (self->authenticated_ && self->holds_ > 0) return self->ArmTimer(l.idle_timeout);
    self->Fail(Status::DeadlineExceeded(
        self->authenticated_
            ? fmt::format("no message for {} ms: the connection is closed", l.idle_timeout.count())
            : fmt::format("no successful hello within {} ms of connecting: the connection is "
                          "closed",
                          l.auth_timeout.count())));
  });
}

void JsonConnection::Read() {
  socket_.async_read_some(
      asio::buffer(buf_), [self = shared_from_this()](boost::system::error_code ec, size_t n) {
        if (ec) return self->Close();
        if (self->closing_ || self->closed_) return;
        Status s = self->decoder_.Feed(std::string_view(self->buf_.data(), n));
        while (s.ok() && self->decoder_.HasMessage() && !self->closing_ && !self->closed_) {
          if (self->authenticated_) self->ArmTimer(self->set_->limits().idle_timeout);
          self->Dispatch(self->decoder_.Pop());
        }
        if (!s.ok()) return self->Fail(s);
        if (!self->closing_ && !self->closed_) self->Read();
      });
}

void JsonConnection::Dispatch(const json& m) {
  const std::string type = m["type"].get<std::string>().substr(0, 64);
  Status s;
  try {
    s = on_message_(m);
  } catch (const std::exception& e) {
    // A defect behind the protocol's checks: answer it, log it, and serve on.
    spdlog::error("{}: handling '{}' failed: {}", peer_, type, e.what());
    Send(Error(type, fmt::format("internal error while handling '{}': {}", type, e.what())));
    return;
  }
  if (!s.ok()) Fail(s, type);
}

void JsonConnection::Send(const json& m) {
  if (closed_) return;
  std::string frame = EncodeFrame(m);
  if (queued_bytes_ + frame.size() > set_->limits().max_queued_bytes) {
    spdlog::warn("{}: {} bytes of replies not read; closing the connection", peer_,
                 queued_bytes_ + frame.size());
    return Close();
  }
  queued_bytes_ += frame.size();
  out_.push_back(std::move(frame));
  if (out_.size() == 1) Write();
}

void JsonConnection::PostSend(json m) {
  asio::post(socket_.get_executor(),
             [self = shared_from_this(), m = std::move(m)] { self->Send(m); });
}

void JsonConnection::Write() {
  asio::async_write(socket_, asio::buffer(out_.front()),
                    [self = shared_from_this()](boost::system::error_code ec, size_t) {
                      if (ec) return self->Close();
                      self->queued_bytes_ -= self->out_.front().size();
                      self->out_.pop_front();
                      if (!self->out_.empty()) return self->Write();
                      if (self->closing_) self->Close();
                    });
}

void JsonConnection::Fail(const Status& s, std::string_view request) {
  if (closing_ || closed_) return;
  closing_ = true;
  Send(Error(request, s.message()));
  if (closed_) return;
  ArmTimer(kCloseGrace);
}

void JsonConnection::Authenticated() {
  if (authenticated_) return;
  authenticated_ = true;
  decoder_.set_max_frame_bytes(set_->limits().max_frame);
  if (unauth_pos_ != set_->waiting_.end()) {
    set_->waiting_.erase(unauth_pos_);
    unauth_pos_ = set_->waiting_.end();
  }
  ArmTimer(set_->limits().idle_timeout);
}

void JsonConnection::Close() {
  if (closed_) return;
  closed_ = true;
  auto keep = shared_from_this();  // the set may hold the last reference
  boost::system::error_code ec;
  timer_.cancel();
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  out_.clear();
  queued_bytes_ = 0;
  set_->Remove(this);
  if (on_close_) {
    auto f = std::move(on_close_);
    on_close_ = nullptr;
    f();
  }
}

ConnectionSet::ConnectionSet(asio::io_context& io, ConnectionLimits limits)
    : io_(io), limits_(limits), retry_(std::make_unique<asio::steady_timer>(io)) {}

ConnectionSet::~ConnectionSet() = default;

void ConnectionSet::AcceptOn(tcp::acceptor& acceptor,
                             std::function<void(std::shared_ptr<JsonConnection>)> on_accept) {
  on_accept_ = std::move(on_accept);
  Accept(acceptor);
}

void ConnectionSet::Accept(tcp::acceptor& acceptor) {
  acceptor.async_accept([this, &acceptor](boost::system::error_code ec, tcp::socket socket) {
    if (!acceptor.is_open()) return;
    if (ec) {
      // Out of file descriptors, say: pause instead of spinning on the failing accept.
      spdlog::warn("accepting a connection failed: {}; retrying in 100 ms", ec.message());
      retry_->expires_after(std::chrono::milliseconds(100));
      retry_->async_wait([this, &acceptor](boost::system::error_code e) {
        if (!e) Accept(acceptor);
      });
      return;
    }
    if (all_.size() >= limits_.max_connections) {
      // Refused with the reason, written without waiting (it fits a new socket's buffer).
      const std::string frame = EncodeFrame(
          Error("", fmt::format("this daemon serves at most {} connections; try again later",
                                limits_.max_connections)));
      boost::system::error_code e;
      socket.non_blocking(true, e);
      socket.write_some(asio::buffer(frame), e);
      socket.shutdown(tcp::socket::shutdown_both, e);
      socket.close(e);
    } else {
      Admit(std::make_shared<JsonConnection>(std::move(socket), this));
    }
    Accept(acceptor);
  });
}

void ConnectionSet::Admit(std::shared_ptr<JsonConnection> c) {
  if (waiting_.size() >= limits_.max_unauthenticated) {
    // Room for the newcomer: the connection that has waited longest without saying hello goes.
    auto oldest = waiting_.front().lock();
    waiting_.pop_front();
    if (oldest) {
      oldest->unauth_pos_ = waiting_.end();
      oldest->Fail(Status::ResourceExhausted(
          fmt::format("more than {} connections are waiting to authenticate; the oldest is closed",
                      limits_.max_unauthenticated)));
    }
  }
  all_.push_back(c);
  c->unauth_pos_ = waiting_.insert(waiting_.end(), c);
  on_accept_(std::move(c));
}

std::shared_ptr<JsonConnection> ConnectionSet::Adopt(tcp::socket socket) {
  auto c = std::make_shared<JsonConnection>(std::move(socket), this);
  all_.push_back(c);
  return c;
}

void ConnectionSet::Remove(JsonConnection* c) {
  if (c->unauth_pos_ != waiting_.end()) {
    waiting_.erase(c->unauth_pos_);
    c->unauth_pos_ = waiting_.end();
  }
  auto it = std::find_if(all_.begin(), all_.end(), [c](const auto& p) { return p.get() == c; });
  if (it != all_.end()) {
    std::swap(*it, all_.back());
    all_.pop_back();
  }
}

void ConnectionSet::CloseAll() {
  auto all = all_;
  for (const auto& c : all) c->Close();
}

void RaiseFileLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

void Periodic::Start(std::chrono::milliseconds period, std::function<void()> fn) {
  period_ = period;
  fn_ = std::move(fn);
  running_ = true;
  Arm();
}

void Periodic::Arm() {
  timer_.expires_after(period_);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || !running_) return;
    fn_();
    if (running_) Arm();
  });
}

void Periodic::Stop() {
  running_ = false;
  timer_.cancel();
}

}  // namespace moreh::net
