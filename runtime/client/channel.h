// Channel: a blocking, framed control connection (runtime/net/framing.h) for clients and tools:
// Open(HOST:PORT), Call(message) -> reply, Send, Receive (optionally with a time-out). Not
// thread-safe, except Shutdown.
#pragma once

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>, so the standard
// headers must come first (and clang-format must not sort boost in among them).
// clang-format off
#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include <boost/asio.hpp>
#include <nlohmann/json.hpp>
// clang-format on

#include "runtime/core/status.h"
#include "runtime/net/framing.h"

namespace moreh::client {

class Channel {
 public:
  explicit Channel(boost::asio::io_context& io) : socket_(io) {}
  Status Open(const std::string& address);
  StatusOr<nlohmann::json> Call(const nlohmann::json& m);
  Status Send(const nlohmann::json& m);
  StatusOr<nlohmann::json> Receive();
  // DeadlineExceeded when no whole message arrives within `timeout`.
  StatusOr<nlohmann::json> Receive(std::chrono::milliseconds timeout);
  void Close();
  int fd() { return socket_.native_handle(); }
  // Ends the connection while another thread may be blocked in Call/Receive on it (which then
  // returns an error); Close() afterwards.
  void Shutdown();

 private:
  boost::asio::ip::tcp::socket socket_;
  net::FrameDecoder decoder_;
  std::array<char, 16384> buf_;
};

// Connects to a scheduler as a client with `token` (hello); errors name the address.
StatusOr<std::unique_ptr<Channel>> ConnectScheduler(boost::asio::io_context& io,
                                                    const std::string& address,
                                                    const std::string& token);
// A reply of type "error" as a Status naming `what`.
Status ReplyError(const StatusOr<nlohmann::json>& r, const std::string& what);
// Status Unavailable carries "connection lost" when the peer went away (ReplyError keeps it).
bool ConnectionLost(const Status& s);

}  // namespace moreh::client
