#include "runtime/client/channel.h"

#include <fmt/format.h>
#include <poll.h>

#include <cerrno>
#include <cstdlib>

#include "runtime/net/protocol.h"

namespace moreh::client {
namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;

Status Channel::Open(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument("address '" + address + "' is not HOST:PORT");
  }
  boost::system::error_code ec;
  const std::string host = address.substr(0, colon), port = address.substr(colon + 1);
  // A numeric address needs no resolver (getaddrinfo costs more than the connection on loopback).
  const auto ip = asio::ip::make_address(host, ec);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (!ec && end != port.c_str() && *end == '\0' && p > 0 && p < 65536) {
    socket_.connect(tcp::endpoint(ip, static_cast<uint16_t>(p)), ec);
  } else {
    ec.clear();
    tcp::resolver resolver(socket_.get_executor());
    auto eps = resolver.resolve(host, port, ec);
    if (!ec) asio::connect(socket_, eps, ec);
  }
  if (ec) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("cannot connect to {}: {}", address, ec.message()));
  }
  return Status::Ok();
}

Status Channel::Send(const json& m) {
  boost::system::error_code ec;
  asio::write(socket_, asio::buffer(net::EncodeFrame(m)), ec);
  if (ec) return Status::Unavailable("connection lost: sending failed: " + ec.message());
  return Status::Ok();
}

StatusOr<json> Channel::Call(const json& m) {
  Status s = Send(m);
  if (!s.ok()) return s;
  return Receive();
}

StatusOr<json> Channel::Receive() { return Receive(std::chrono::milliseconds(-1)); }

StatusOr<json> Channel::Receive(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!decoder_.HasMessage()) {
    if (timeout.count() >= 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{socket_.native_handle(), POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
      if (r == 0)
        return Status::DeadlineExceeded(fmt::format("no reply within {} ms", timeout.count()));
      if (r < 0 && errno != EINTR) return Status::Unavailable("connection lost: poll failed");
      if (r < 0) continue;
    }
    boost::system::error_code ec;
    const size_t n = socket_.read_some(asio::buffer(buf_), ec);
    if (ec) return Status::Unavailable("connection lost: " + ec.message());
    Status s = decoder_.Feed(std::string_view(buf_.data(), n));
    if (!s.ok()) return s;
  }
  return decoder_.Pop();
}

bool ConnectionLost(const Status& s) {
  return s.code() == StatusCode::kUnavailable &&
         s.message().find("connection lost") != std::string::npos;
}

void Channel::Shutdown() {
  boost::system::error_code ec;
  socket_.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
}

void Channel::Close() {
  boost::system::error_code ec;
  socket_.close(ec);
}

Status ReplyError(const StatusOr<json>& r, const std::string& what) {
  if (!r.ok()) return r.status();
  auto type = net::TypeOf(r.value());
  if (!type.ok()) return Status::FailedPrecondition(what + ": " + type.status().message());
  if (*type == net::Msg::kError) {
    auto e = net::ErrorReply::FromJson(r.value());
    return Status::FailedPrecondition(what + ": " + (e.ok() ? e->message : e.status().message()));
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<Channel>> ConnectScheduler(asio::io_context& io,
                                                    const std::string& address,
                                                    const std::string& token) {
  auto ch = std::make_unique<Channel>(io);
  Status s = ch->Open(address);
  if (!s.ok()) return s;
  net::SchedulerHello hello;
  hello.token = token;
  s = ReplyError(ch->Call(hello.ToJson()), "scheduler " + address);
  if (!s.ok()) return s;
  return ch;
}

}  // namespace moreh::client
