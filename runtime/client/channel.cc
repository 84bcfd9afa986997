#include "runtime/client/channel.h"

#include <fmt/format.h>

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
  tcp::resolver resolver(socket_.get_executor());
  auto eps = resolver.resolve(address.substr(0, colon), address.substr(colon + 1), ec);
  if (!ec) asio::connect(socket_, eps, ec);
  if (ec) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("cannot connect to {}: {}", address, ec.message()));
  }
  return Status::Ok();
}

StatusOr<json> Channel::Call(const json& m) {
  boost::system::error_code ec;
  asio::write(socket_, asio::buffer(net::EncodeFrame(m)), ec);
  if (ec) return Status(StatusCode::kUnavailable, "send failed: " + ec.message());
  return Receive();
}

StatusOr<json> Channel::Receive() {
  while (!decoder_.HasMessage()) {
    boost::system::error_code ec;
    const size_t n = socket_.read_some(asio::buffer(buf_), ec);
    if (ec) return Status(StatusCode::kUnavailable, "connection lost: " + ec.message());
    Status s = decoder_.Feed(std::string_view(buf_.data(), n));
    if (!s.ok()) return s;
  }
  return decoder_.Pop();
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
  if (r.value().value("type", std::string()) == "error") {
    return Status(StatusCode::kFailedPrecondition,
                  what + ": " + r.value().value("message", std::string("?")));
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<Channel>> ConnectScheduler(asio::io_context& io,
                                                    const std::string& address,
                                                    const std::string& token) {
  auto ch = std::make_unique<Channel>(io);
  Status s = ch->Open(address);
  if (!s.ok()) return s;
  s = ReplyError(
      ch->Call({{"type", "hello"}, {"version", 1}, {"role", "client"}, {"token", token}}),
      "scheduler " + address);
  if (!s.ok()) return s;
  return ch;
}

}  // namespace moreh::client
